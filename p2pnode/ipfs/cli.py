"""`p2pnode ipfs add|get|connect|id`: the client's side of the node's IPFS.

`add` streams each file of 1 MiB or more to the node (`POST /add`), which
makes and stores its DAG, hashing it once; smaller files, symlinks and the
directory nodes are made here and uploaded as blocks, a few MiB a request.
`--only-hash` makes the whole DAG here and needs no node, and so does a node
from before the add route. `get` walks the DAG here and verifies every block
the node hands over. Neither holds a whole file in memory.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import click

from p2pnode.client import API_ENV, DEFAULT_API, TOKEN_ENV
from p2pnode.ipfs.blockstore import MAX_BLOCK_BYTES
from p2pnode.ipfs.cid import CID, CIDError, hash_blocks, read_varint
from p2pnode.ipfs.exporter import ExportError, PreOrder, export
from p2pnode.ipfs.frames import upload_frame
from p2pnode.ipfs.importer import Added, Options, add_file, add_path, discard
from p2pnode.lazy import lazy_import
from p2pnode.memory import reuse_freed_memory
from p2pnode.storage.ipfs import location_cid

httpx = lazy_import("httpx")  # loaded by the first request, not by `p2pnode --help`
h11 = lazy_import("h11")
trio = lazy_import("trio")

UPLOADS_IN_FLIGHT = 2  # batches being sent while the next is made
UPLOAD_BATCH = 4 << 20  # at most this many bytes a request (a node's default body cap)
FRAME_OVERHEAD = 48  # at most, beside a block, in its frame (its CID and two lengths)
STREAM_FROM = 1 << 20  # files this large or larger are streamed to the node, which makes their DAG
SEND_BYTES = 1 << 20  # bytes of a file read and sent at a time (through httpx: over TLS, or a proxy)
SEND_TIMEOUT = 60.0  # seconds a send or the answer may take before the add fails
ADD_ROUTE = "/api/v1/ipfs/add"

api_option = click.option(
    "--api", default=lambda: os.environ.get(API_ENV, DEFAULT_API), show_default=f"${API_ENV} or {DEFAULT_API}",
    help="URL of the node's API to talk to.",
)


def _headers() -> dict[str, str]:
    """The API token given to `p2pnode --token` (or $P2PNODE_API_TOKEN), as a header."""
    context = click.get_current_context(silent=True)
    token = (context.find_root().params.get("token") if context is not None else None) or os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{body.get('error', response.text)} ({body.get('hint', '')})"
    except ValueError:
        return f"the node answered {response.status_code}: {response.text[:200]}"


class _Uploader:
    """A `Put` that sends blocks to the node in batches of UPLOAD_BATCH bytes,
    a few batches at a time (one request per block cost more than the add)."""

    def __init__(self, api: str) -> None:
        self.http = httpx.Client(base_url=api.rstrip("/"), timeout=60, headers=_headers())
        self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT)
        self._pending: list[Future[None]] = []
        self._batch: list[tuple[CID, bytes]] = []
        self._batch_bytes = 0
        self._batches = True  # a node from before the batch route takes one block a request

    def __call__(self, cid: CID, block: bytes) -> None:
        size = len(block) + FRAME_OVERHEAD
        if self._batch_bytes + size > UPLOAD_BATCH:
            self._submit()
        self._batch.append((cid, block))
        self._batch_bytes += size

    def _submit(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:
            self._pending.append(self._pool.submit(self._send_batch, batch))
        while len(self._pending) > UPLOADS_IN_FLIGHT:
            self._pending.pop(0).result()

    def _send_batch(self, batch: list[tuple[CID, bytes]]) -> None:
        if self._batches:
            body = b"".join(part for cid, block in batch for part in upload_frame(cid, block))
            response = self.http.put("/api/v1/ipfs/blocks", content=body)
            if response.status_code < 400:
                return
            # 404/405: a node from before the batch route; 413: its operator set a body cap under ours
            if response.status_code not in (404, 405, 413) or (response.status_code != 413 and _is_api_error(response)):
                raise click.ClickException(f"the node refused blocks {batch[0][0]}…: {_error_text(response)}")
            self._batches = False
        for cid, block in batch:
            self._send(cid, block)

    def _send(self, cid: CID, block: bytes) -> None:
        response = self.http.put(f"/api/v1/ipfs/blocks/{cid}", content=block)
        if response.status_code >= 400:
            raise click.ClickException(f"the node refused block {cid}: {_error_text(response)}")

    def finish(self) -> None:
        self._submit()
        for pending in self._pending:
            pending.result()
        self._pool.shutdown()
        self.http.close()


class _Streamer:
    """Adds a regular file by streaming its bytes to the node (`POST /add`),
    which makes and stores its DAG (the one `add_file` makes here); a small
    file is made here and goes out with the other blocks."""

    def __init__(self, api: str, http: httpx.Client, uploader: _Uploader, options: Options) -> None:
        self._api, self._http, self._uploader, self._options = api, http, uploader, options
        query = {"cid-version": str(options.cid_version)}
        if options.raw_leaves is not None:
            query["raw-leaves"] = "true" if options.raw_leaves else "false"
        self._target = f"{ADD_ROUTE}?{urlencode(query)}"

    def __call__(self, path: Path) -> Added:
        with path.open("rb", buffering=0) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size < STREAM_FROM:
                return add_file(stream, self._uploader, self._options)
            plain = _plain_http(self._api)
            if plain is not None:  # the kernel sends the file: no copy through this process
                status, body = _send_file(plain, self._target, stream, size, path)
            else:
                response = self._http.post(self._target, content=_read(stream, size, path),
                                           headers={"Content-Length": str(size)})
                status, body = response.status_code, response.content
        try:
            answer = json.loads(body)
            if status >= 400:
                raise click.ClickException(f"the node refused {path}: {answer.get('error')} ({answer.get('hint', '')})")
            return Added(CID.parse(answer["Cid"]), int(answer["Size"]), int(answer["FileSize"]))
        except (ValueError, KeyError, TypeError, AttributeError, CIDError):
            raise click.ClickException(f"the node answered {status} to adding {path}: {body[:200]!r}") from None


def _read(stream: Any, size: int, path: Path) -> Any:
    """The `size` bytes of a file, a MiB at a time; a file that changes meanwhile fails the add."""
    left = size
    while left:
        chunk = stream.read(min(SEND_BYTES, left))
        if not chunk:
            raise click.ClickException(f"{path} shrank while being added")
        left -= len(chunk)
        yield chunk
    if stream.read(1):
        raise click.ClickException(f"{path} grew while being added")


_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def _plain_http(api: str) -> tuple[str, int, str] | None:
    """(host, port, Host header) of an API reached over plain HTTP with no
    proxy, which `_send_file` talks to itself; None: httpx does (TLS, proxies)."""
    url = urlsplit(api)
    if url.scheme != "http" or not url.hostname or any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    return url.hostname, url.port or 80, url.netloc.rpartition("@")[2]


class _FileBody:
    """The body h11 is told of, without its bytes: `socket.sendfile` sends them (h11's "sendfile" recipe)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def _send_file(server: tuple[str, int, str], target: str, stream: Any, size: int, path: Path) -> tuple[int, bytes]:
    """POST the file as the body with `socket.sendfile` (the kernel copies it
    from the page cache: httpx's reads and writes cost the client about a
    CPU-second per GiB more). Returns the status and the answer's body."""
    client = h11.Connection(h11.CLIENT)
    host, port, netloc = server
    headers = [("Host", netloc), ("Content-Length", str(size)), ("Content-Type", "application/octet-stream"),
               *_headers().items()]
    with socket.create_connection((host, port), timeout=SEND_TIMEOUT) as sock:
        sock.sendall(client.send(h11.Request(method="POST", target=target, headers=headers)))
        client.send_with_data_passthrough(h11.Data(data=_FileBody(size)))
        try:
            sent = sock.sendfile(stream, 0, size)
        except OSError:  # the node may have answered (and closed) early: a refusal says why
            sent = -1
        else:
            client.send(h11.EndOfMessage())
            if sent < size:
                raise click.ClickException(f"{path} shrank while being added")
            if os.fstat(stream.fileno()).st_size != size:
                raise click.ClickException(f"{path} changed size while being added")
        status, body = 0, bytearray()
        try:
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(sock.recv(1 << 16))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
        except (OSError, h11.ProtocolError) as error:
            raise httpx.TransportError(f"the node closed the connection while taking {path}: {error}") from None
        if not status:
            raise httpx.TransportError(f"the node closed the connection while taking {path}")
        return status, bytes(body)


def _has_add_route(http: httpx.Client) -> bool:
    """Whether the node makes DAGs itself (405: the route is there, for POST); older nodes answer 404."""
    return http.get(ADD_ROUTE).status_code == 405


def _add(api: str, path: Path, options: Options) -> Added:
    """`path` added through the node at `api` (not yet pinned)."""
    uploader = _Uploader(api)
    try:
        http = uploader.http
        streamer = _Streamer(api, http, uploader, options) if _has_add_route(http) else None
        return add_path(path, uploader, options, add_file_at=streamer)
    finally:
        uploader.finish()


@click.group("ipfs")
def ipfs() -> None:
    """Add and get files by CID; connect to IPFS peers (Kubo included)."""


@ipfs.command("add")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--only-hash", "-n", is_flag=True, help="Only print the CID; store nothing (no node needed).")
@click.option("--cid-version", type=click.Choice(["0", "1"]), default="0", show_default=True)
@click.option("--raw-leaves/--no-raw-leaves", default=None, help="Leaves as raw blocks (default: on for CIDv1, as Kubo).")
@click.option("--hidden", "-H", is_flag=True, help="Include files whose names start with a dot.")
@api_option
def add(path: Path, only_hash: bool, cid_version: str, raw_leaves: bool | None, hidden: bool, api: str) -> None:
    """Add a file or directory; prints its root CID (the last line)."""
    options = Options(cid_version=int(cid_version), raw_leaves=raw_leaves, hidden=hidden)
    reuse_freed_memory()  # files are read a MiB at a time: see p2pnode/memory.py
    try:
        if only_hash:
            added = add_path(path, discard, options)
        else:
            added = _add(api, path, options)
            _call(api, "POST", "/api/v1/ipfs/pins", json={"Cid": str(added.cid)})  # kept, and announced as held
    except httpx.TransportError as error:
        _fail(f"cannot reach a node at {api}: {error} (start one with `p2pnode serve`, or use --only-hash)")
    except (OSError, ValueError) as error:
        _fail(str(error))
    click.echo(f"added {added.cid} {path.name}")
    click.echo(str(added.cid))


@ipfs.command("get")
@click.argument("cid")
@click.option("--output", "-o", "output", type=click.Path(path_type=Path), help="Where to write it (default: ./CID).")
@click.option("--timeout", type=float, default=60, show_default=True, help="Seconds the node may wait for each block.")
@api_option
def get(cid: str, output: Path | None, timeout: float, api: str) -> None:
    """Write a file or directory by its CID, verifying every block."""
    try:
        root = CID.parse(cid)
    except CIDError as error:
        _fail(str(error))
    dest = output or Path(cid)
    reuse_freed_memory()  # the DAG is read a MiB at a time: see p2pnode/memory.py
    try:
        trio.run(_get, api, root, dest, timeout, "", _headers())
    except httpx.TransportError as error:
        _fail(f"cannot reach a node at {api}: {error}")
    except (ExportError, OSError, LookupError) as error:
        _fail(str(error))
    click.echo(str(dest))


def get_results(api: str, executions: list[dict[str, Any]], output_dir: Path, timeout: float = 60) -> list[Path]:
    """`job get` for results published to IPFS: each execution's directory,
    fetched through the node at `api` (asking the publishing node first) and
    verified block by block, at output_dir/<execution id>."""
    written: list[Path] = []
    for execution in executions:
        result = execution.get("PublishedResult") or {}
        location = result.get("Params", {}).get("Location", "")
        root = location_cid(location)
        if result.get("Type") != "ipfs" or root is None:
            continue
        dest = output_dir / execution["ID"]
        output_dir.mkdir(parents=True, exist_ok=True)
        trio.run(_get, api, root, dest, timeout, execution.get("NodeID", ""), _headers())
        written += sorted(p for p in dest.rglob("*") if p.is_file())
    return written


PULL_SECONDS = 3600.0  # a whole DAG may be large; the node ends a pull that stops moving by itself


async def _get(api: str, root: CID, dest: Path, timeout: float, provider: str = "",
               headers: dict[str, str] | None = None) -> None:
    _read_big_chunks()
    async with httpx.AsyncClient(base_url=api.rstrip("/"), timeout=timeout + 10, headers=headers) as http:
        batches = [True]  # the node answers several blocks a request (older nodes: one at a time)

        async def one(cid: CID, slot: list[Any], index: int) -> None:
            try:
                response = await http.get(f"/api/v1/ipfs/blocks/{cid}", params={"timeout": timeout, "provider": provider})
            except httpx.TransportError as error:
                slot[index] = error
                return
            slot[index] = response.content if response.status_code < 400 else LookupError(
                f"block {cid}: {_error_text(response)}")

        async def each(cids: Sequence[CID]) -> list[bytes]:
            blocks: list[Any] = [None] * len(cids)
            async with trio.open_nursery() as nursery:
                for index, cid in enumerate(cids):
                    nursery.start_soon(one, cid, blocks, index)
            for block in blocks:
                if isinstance(block, Exception):
                    raise block
            return blocks

        async def fetch(cids: Sequence[CID]) -> list[bytes]:
            if not batches[0]:
                return await each(cids)
            question = {"Cids": [str(cid) for cid in cids], "Timeout": timeout, "Provider": provider}
            async with http.stream("POST", "/api/v1/ipfs/blocks", json=question) as response:
                if response.status_code >= 400:
                    await response.aread()
                    if response.status_code in (404, 405) and not _is_api_error(response):
                        batches[0] = False  # a node from before the batch route: no such route
                    else:
                        raise LookupError(f"blocks {cids[0]}…: {_error_text(response)}")
                else:  # read as it comes: no window-sized buffer (the exporter checks each block's hash)
                    frames = _Frames(len(cids))
                    async for chunk in response.aiter_raw():
                        frames.feed(chunk)
                    return frames.end()
            return await each(cids)

        try:  # the whole DAG into the node first, as one stream if a p2pnode peer holds it
            await http.post("/api/v1/ipfs/pull", json={"Cid": str(root), "Provider": provider},
                            timeout=httpx.Timeout(timeout + 10, read=PULL_SECONDS))
        except httpx.TransportError:
            pass  # block by block it is; a node that is down fails there with a clear error
        if not await _export_stream(http, root, dest):
            await export(root, fetch, dest)


def _read_big_chunks() -> None:
    """httpcore reads 64 KiB a call: a GiB is 16,384 trips through it and h11. A MiB a call."""
    import httpcore

    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = max(httpcore.AsyncHTTP11Connection.READ_NUM_BYTES, 1 << 20)


async def _export_stream(http: Any, root: CID, dest: Path) -> bool:
    """Write `root` from the node's stream of the whole DAG (`POST /dag`),
    each block checked against the CID it comes as; False when the node
    cannot send it so (it lacks part of it, or is older, or uses a daemon)."""
    async with http.stream("POST", "/api/v1/ipfs/dag", json={"Cid": str(root)}) as response:
        if response.status_code in (404, 405):
            await response.aread()
            return False
        if response.status_code >= 400:
            await response.aread()
            raise LookupError(f"{root}: {_error_text(response)}")
        send, receive = trio.open_memory_channel(64)  # 16 MiB of 256 KiB blocks at most

        async def produce() -> None:
            """Blocks off the wire, hashed in a worker thread a read at a time."""
            async with send:
                frames = _DagFrames()
                try:
                    async for chunk in response.aiter_raw():
                        blocks = frames.feed(chunk)
                        if blocks:
                            digests = await trio.to_thread.run_sync(hash_blocks, blocks)
                            for item in zip(digests, blocks):
                                await send.send(item)
                    frames.end()
                except (LookupError, httpx.TransportError) as error:
                    await send.send(ExportError(f"the node's stream of {root} broke: {error}"))

        async def next_block() -> tuple[bytes, bytes]:
            try:
                item = await receive.receive()
            except trio.EndOfChannel:
                raise ExportError(f"the node's stream of {root} ended before the DAG did") from None
            if isinstance(item, Exception):
                raise item
            return item  # type: ignore[no-any-return]

        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            try:
                await export(root, PreOrder(next_block), dest)
            except Exception as error:  # noqa: BLE001 - raised below as itself, not in a group
                failed = error
            nursery.cancel_scope.cancel()
        if failed is not None:
            raise failed
        return True


class _DagFrames:
    """Blocks from a `POST /dag` stream as chunks arrive: each a uvarint of
    its length + 1 and the bytes; a uvarint 0, then why, ends it early."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._why: bytearray | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._why is not None:
            self._why += chunk
            return []
        self._buffer += chunk
        blocks, at = [], 0
        while True:
            start = at
            try:
                length, at = read_varint(self._buffer, start)
            except CIDError:
                if len(self._buffer) - start < 4:
                    break  # the length is still coming
                raise LookupError("a bad block length") from None
            if length == 0:
                self._why = self._buffer[at:]
                self._buffer.clear()
                return blocks
            if length - 1 > MAX_BLOCK_BYTES:
                raise LookupError(f"a {length - 1}-byte block, over the limit")
            if at + length - 1 > len(self._buffer):
                at = start
                break  # the block is still coming
            with memoryview(self._buffer) as view:
                blocks.append(bytes(view[at:at + length - 1]))  # one copy
            at += length - 1
        del self._buffer[:at]
        return blocks

    def end(self) -> None:
        if self._why is not None:
            raise LookupError(f"the node could not send it: {self._why.decode(errors='replace')}")
        if self._buffer:
            raise LookupError("the stream ended inside a block")


def _is_api_error(response: httpx.Response) -> bool:
    """The node's own error (a JSON body with "error"), not "no such route"."""
    try:
        return isinstance(response.json(), dict) and "error" in response.json()
    except ValueError:
        return False


class _Frames:
    """Blocks from a batch answer, each a uvarint length and the bytes, parsed as chunks arrive."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.blocks: list[bytes] = []
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        at = 0
        while len(self.blocks) < self.count:
            start = at
            try:
                length, at = read_varint(self._buffer, start)
            except CIDError:
                if len(self._buffer) - start < 4:  # a block's length takes at most 4 bytes
                    del self._buffer[:start]
                    return  # the length is still coming
                raise LookupError("the node's answer holds a bad block length") from None
            if length > MAX_BLOCK_BYTES:
                raise LookupError(f"the node's answer holds a {length}-byte block, over the limit")
            if at + length > len(self._buffer):
                del self._buffer[:start]
                return  # the block is still coming
            view = memoryview(self._buffer)
            try:
                self.blocks.append(bytes(view[at:at + length]))
            finally:
                view.release()
            at += length
        del self._buffer[:at]
        if self._buffer:
            raise LookupError("the node's answer holds more than the blocks asked for")

    def end(self) -> list[bytes]:
        if len(self.blocks) != self.count or self._buffer:
            raise LookupError(f"the node's answer ended after {len(self.blocks)} of {self.count} blocks")
        return self.blocks


def _frames(body: bytes, count: int) -> list[bytes]:
    """`count` blocks from a whole batch answer."""
    frames = _Frames(count)
    frames.feed(body)
    return frames.end()


@ipfs.command("connect")
@click.argument("multiaddr")
@api_option
def connect(multiaddr: str, api: str) -> None:
    """Connect the node to an IPFS peer (/ip4/…/tcp/…/p2p/ID)."""
    click.echo(_call(api, "POST", "/api/v1/ipfs/connect", json={"Address": multiaddr})["Connected"])


@ipfs.command("id")
@api_option
def identity(api: str) -> None:
    """The node's peer ID and its IPFS addresses."""
    answer = _call(api, "GET", "/api/v1/ipfs/id")
    click.echo(answer["ID"])
    for address in answer["Addresses"]:
        click.echo(address)


def _call(api: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = httpx.request(method, api.rstrip("/") + path, timeout=60, headers=_headers(), **kwargs)
    except httpx.TransportError as error:
        _fail(f"cannot reach a node at {api}: {error} (start one with `p2pnode serve`)")
    if response.status_code >= 400:
        _fail(_error_text(response))
    return response.json()
