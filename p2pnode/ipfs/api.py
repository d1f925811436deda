"""The node's IPFS routes: files and blocks in, blocks out (verified), connect, id.

`ipfs add` streams each large file as the body of `POST /add`, and the node
makes and stores its DAG as the bytes come (as Kubo's API does): the file is
hashed once, here, where it has to be anyway since the client is not
trusted. The client makes a tree's directory nodes (and small files' blocks)
itself and uploads those (`PUT /blocks`), which the node checks.
`ipfs get` walks the DAG on the client's side and downloads blocks, which
the node fetches over bitswap when it lacks them. So the client verifies
every block itself, and neither side ever holds a whole file. Before that,
`ipfs get` asks the node to pull the whole DAG (`POST /pull`): from one of
our own peers it comes as one stream, much faster than block by block.
A DAG the node holds whole comes to the client as one stream too (`POST /dag`),
in the order the client writes it out: no window of blocks asked for and waited on.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from typing import Any

import trio
from libp2p.peer.id import ID
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from p2pnode.ipfs.bitswap import BlockUnavailable
from p2pnode.ipfs.blockstore import MAX_BLOCK_BYTES, CorruptBlock, check
from p2pnode.ipfs.cid import CID, CIDError, varint
from p2pnode.ipfs.frames import BadUpload, next_upload
from p2pnode.ipfs.importer import Added, FileImporter, Options

PREFIX = "/api/v1/ipfs"
MAX_BATCH = 64  # blocks a batch request may name (the client asks 32 at a time)
STORE_BATCH = 4 << 20  # bytes of uploaded blocks checked and written in one worker-thread call
ADD_PATH = PREFIX + "/add"


def add_options(query: Any) -> Options:
    """`POST /add`'s query (cid-version=0|1, raw-leaves=true|false) as the
    importer's options; ValueError says what is wrong."""
    version = query.get("cid-version", "0")
    if version not in ("0", "1"):
        raise ValueError(f"cid-version must be 0 or 1, not {version[:20]!r}")
    raw = query.get("raw-leaves")
    if raw not in (None, "true", "false"):
        raise ValueError(f"raw-leaves must be true or false, not {raw[:20]!r}")
    return Options(cid_version=int(version), raw_leaves=None if raw is None else raw == "true")


def ipfs_routes(runtime: Any, api_error: type[Exception]) -> list[Route]:
    """The routes, raising the API's own error type (status, error, hint)."""

    def parse(request: Request) -> CID:
        try:
            return CID.parse(request.path_params["cid"])
        except CIDError as error:
            raise api_error(400, str(error), "give a CID such as Qm… or bafy…")

    async def put_block(request: Request) -> Response:
        """
        summary: 'Store a block'
        description: 'The body is the block; it must hash to the CID in the path.'
        """
        cid = parse(request)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BLOCK_BYTES:
                raise api_error(413, f"a block is at most {MAX_BLOCK_BYTES} bytes", "chunk the file: use `p2pnode ipfs add`")
        try:
            runtime.ipfs.store.put(cid, bytes(body))
        except CorruptBlock as error:
            raise api_error(400, str(error), "send the block's exact bytes")
        return JSONResponse({"Cid": str(cid), "Size": len(body)})

    async def put_blocks(request: Request) -> Response:
        """
        summary: 'Store many blocks in one request'
        description: 'The body is a sequence of frames, each a uvarint length and a CID''s bytes, then a uvarint
          length and the block; every block must hash to its CID. Read as it comes and written in batches, so
          `ipfs add` pays one request per few MiB instead of one per block.'
        """
        store = runtime.ipfs.store
        buffer, pending, pending_bytes, stored = bytearray(), [], 0, 0

        def put_all(blocks: list[tuple[CID, bytes]]) -> None:
            for cid, block in blocks:
                check(cid, block)
            store.put_many(blocks)  # one index transaction a batch

        async def flush() -> None:
            nonlocal pending, pending_bytes, stored
            try:
                await trio.to_thread.run_sync(put_all, pending)
            except CorruptBlock as error:
                raise api_error(400, str(error), "send each block's exact bytes after its CID")
            stored += len(pending)
            pending, pending_bytes = [], 0

        async for chunk in request.stream():
            buffer += chunk
            at = 0
            try:
                while (frame := next_upload(buffer, at)) is not None:
                    cid, block, at = frame
                    pending.append((cid, block))
                    pending_bytes += len(block)
            except BadUpload as error:
                raise api_error(400, f"the upload holds {error}", "send frames: uvarint length, CID bytes, uvarint length, block")
            del buffer[:at]
            if pending_bytes >= STORE_BATCH:
                await flush()
        if buffer:
            raise api_error(400, "the upload ended inside a block", "send whole frames")
        if pending:
            await flush()
        return JSONResponse({"Stored": stored})

    async def add(request: Request) -> Response:
        """
        summary: 'Add a file: its bytes are the body; this node makes and stores its UnixFS DAG'
        description: 'Query cid-version (0|1, default 0), raw-leaves (true|false, default: on for CIDv1), as in
          Kubo''s `ipfs add`, whose CID it gives. The body streams in (Content-Length or chunked) up to the
          node''s Node.IPFS.MaxAddSize and is never held whole. Answers {"Cid", "Size": bytes of every block (a
          parent link''s Tsize), "FileSize"}. Nothing is pinned: pin the root (POST /pins) once the whole tree is
          added. A body cut short adds nothing (what was stored of it stays unpinned, as cache).'
        """
        try:
            options = add_options(request.query_params)
        except ValueError as error:
            raise api_error(400, str(error), "as in Kubo: ?cid-version=1&raw-leaves=true")
        cap = runtime.settings.ipfs_max_add
        store = runtime.ipfs.store
        declared = request.headers.get("content-length", "")
        root = getattr(store, "root", None)  # None: an IPFS daemon's store (Node.IPFS.Connect)
        if declared.isdigit() and root is not None and int(declared) > (free := shutil.disk_usage(root).free):
            raise api_error(507, f"the file is {declared} bytes; this node has {free} free",
                            "free some disk on the node, or add the file on another")
        batch = store.batch() if hasattr(store, "batch") else contextlib.nullcontext(store.put_made)
        importer = FileImporter(batch.__enter__(), options)
        done = False
        try:
            async for chunk in request.stream():
                if importer.bytes + len(chunk) > cap:
                    raise api_error(413, f"the file is over this node's {cap}-byte limit",
                                    "the node's operator can raise Node.IPFS.MaxAddSize")
                if not importer.ready():  # the hashing threads are behind: wait for them off the event loop
                    await trio.to_thread.run_sync(importer.make_room)
                importer.take(chunk)  # kept as it is, not copied, until hashed and stored
            added: Added = await trio.to_thread.run_sync(_finish, importer, batch)
            done = True
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it: the client went away mid-file, nothing was added
        except OSError as error:
            raise api_error(507, f"could not store the file: {error}", "free some disk on the node")
        finally:
            if not done:  # the threads are done with the body before it goes; their errors are this one's
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_abandon, importer, batch)
        return JSONResponse({"Cid": str(added.cid), "Size": added.tsize, "FileSize": added.filesize})

    async def fetch(cids: list[CID], timeout_text: str, provider: str) -> list[bytes]:
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise api_error(400, "timeout must be a number of seconds")
        providers = []
        if provider and provider != runtime.node_id:  # a hint: the node that published it (from its execution)
            try:
                providers.append(ID.from_base58(provider))
            except Exception:  # noqa: BLE001 - any bad text
                raise api_error(400, f"{provider!r} is not a peer ID")
            if provider not in runtime.transport.connected_peers():
                await runtime._dial(provider)  # by the addresses its node info gossips
        try:
            return await runtime.ipfs.fetch(cids, timeout=timeout, providers=providers)
        except CorruptBlock as error:
            raise api_error(502, str(error), "the block is being fetched again; retry")
        except BlockUnavailable as error:
            raise api_error(404, str(error), "connect this node to a peer that holds it: `p2pnode ipfs connect MULTIADDR`")

    async def pull(request: Request) -> Response:
        """
        summary: 'Bring a whole DAG into this node as one stream from a p2pnode peer that holds it'
        description: 'Body {"Cid": CID, "Provider": a peer ID to ask first (optional)}. 404 when no holder
          sends it as a stream (a Kubo peer, or none found): fetch its blocks instead, over bitswap.'
        """
        try:
            body = await request.json()
            cid = CID.parse(str(body["Cid"]))
            provider = str(body.get("Provider") or "")
        except CIDError as error:
            raise api_error(400, str(error), "give a CID such as Qm… or bafy…")
        except Exception:
            raise api_error(400, 'the body must be {"Cid": CID}', "optional: Provider (a peer ID)")
        if not hasattr(runtime.ipfs, "pull"):
            raise api_error(404, "this node uses an IPFS daemon, which fetches by itself", "fetch the blocks instead")
        if str(cid) in runtime.ipfs.held():
            return JSONResponse({"Cid": str(cid), "Blocks": 0, "Bytes": 0, "Seconds": 0.0, "Held": True})
        started = time.perf_counter()
        providers = []
        if provider and provider != runtime.node_id:
            try:
                providers.append(ID.from_base58(provider))
            except Exception:  # noqa: BLE001 - any bad text
                raise api_error(400, f"{provider!r} is not a peer ID")
            if provider not in runtime.transport.connected_peers():
                await runtime._dial(provider)
        elif runtime.ipfs.locate is not None:
            providers = await runtime.ipfs.locate(str(cid))
        check = await runtime.ipfs.pull(cid, providers)
        if check is None:
            raise api_error(404, f"no peer sent {cid} as a stream ({len(providers)} asked)",
                            "fetch its blocks instead: POST /api/v1/ipfs/blocks")
        await runtime.ipfs.fetched(cid)
        return JSONResponse({"Cid": str(cid), "Blocks": check.blocks, "Bytes": check.bytes,
                             "Seconds": round(time.perf_counter() - started, 3), "Held": False})

    async def dag(request: Request) -> Response:
        """
        summary: 'A whole DAG this node holds, as one stream in the order a client writes it out'
        description: 'Body {"Cid": CID}. Each block in pre-order (a node before the blocks it links to, links
          in order, a block linked twice sent twice), each as a uvarint of its length + 1 and the bytes, so the
          client checks each block against the CID it expects next and writes as it reads. A uvarint 0 ends
          the stream early, followed by why. 404 unless the node holds the whole DAG (POST /pull first).'
        """
        try:
            body = await request.json()
            cid = CID.parse(str(body["Cid"]))
        except CIDError as error:
            raise api_error(400, str(error), "give a CID such as Qm… or bafy…")
        except Exception:
            raise api_error(400, 'the body must be {"Cid": CID}')
        if not hasattr(runtime.ipfs, "read_ahead"):
            raise api_error(404, "this node uses an IPFS daemon", "fetch the blocks instead: POST /api/v1/ipfs/blocks")
        if str(cid) not in runtime.ipfs.held():
            raise api_error(404, f"this node does not hold all of {cid}",
                            "pull it first (POST /api/v1/ipfs/pull) or fetch its blocks (POST /api/v1/ipfs/blocks)")

        async def frames():  # type: ignore[no-untyped-def]
            try:
                async for run in runtime.ipfs.read_ahead(cid):  # one piece a run: parsed on both sides
                    yield b"".join(part for _, block in run for part in (varint(len(block) + 1), block))
            except Exception as error:  # noqa: BLE001 - a block no peer has: the answer has begun, so said in it
                yield varint(0) + str(error).encode()[:1000]

        return StreamingResponse(frames(), media_type="application/octet-stream")

    async def get_block(request: Request) -> Response:
        """
        summary: 'A block, fetched from peers over bitswap if this node lacks it'
        description: 'Query timeout (seconds, default 60), provider (a peer ID to ask first).'
        """
        cid = parse(request)
        [block] = await fetch([cid], request.query_params.get("timeout", "60"), request.query_params.get("provider", ""))
        return Response(block, media_type="application/octet-stream")

    async def get_blocks(request: Request) -> Response:
        """
        summary: 'Several blocks in one answer, fetched from peers over bitswap if this node lacks them'
        description: 'Body {"Cids": [CID, …] (at most 64), "Timeout": seconds, "Provider": a peer ID to ask first}.
          The answer is each block in the order asked, as a uvarint length and the bytes; the client checks
          every block against its CID. One request per window of a DAG instead of one per block.'
        """
        try:
            body = await request.json()
            cids = [CID.parse(str(text)) for text in body["Cids"]]
            timeout_text, provider = str(body.get("Timeout", 60)), str(body.get("Provider") or "")
        except CIDError as error:
            raise api_error(400, str(error), "give CIDs such as Qm… or bafy…")
        except Exception:
            raise api_error(400, 'the body must be {"Cids": [CID, …]}', "optional: Timeout (seconds), Provider (a peer ID)")
        if not 0 < len(cids) <= MAX_BATCH:
            raise api_error(400, f"ask for 1 to {MAX_BATCH} blocks at a time, not {len(cids)}")
        blocks = await fetch(cids, timeout_text, provider)

        async def frames():  # type: ignore[no-untyped-def]
            for block in blocks:
                yield varint(len(block))
                yield block

        return StreamingResponse(frames(), media_type="application/octet-stream")

    async def connect(request: Request) -> Response:
        """
        summary: 'Connect to an IPFS peer'
        description: 'Body {"Address": "/ip4/…/tcp/…/p2p/ID"}; Kubo peers too.'
        """
        try:
            body = await request.json()
            address = str(body["Address"])
        except Exception:
            raise api_error(400, 'the body must be {"Address": MULTIADDR}', "give the peer's full multiaddr with /p2p/ID")
        try:
            await runtime.transport.connect(address)
        except Exception as error:  # noqa: BLE001 - every failure is the peer's or the address's
            raise api_error(502, f"could not connect to {address}: {error}", "check the address and that the peer runs")
        return JSONResponse({"Connected": address})

    async def pin(request: Request) -> Response:
        """
        summary: 'Pin a DAG this node holds, and announce this node as its provider'
        description: 'Body {"Cid": CID, "Seconds": optional, for good without}; `ipfs add` pins what it added.'
        """
        try:
            body = await request.json()
            cid = CID.parse(str(body["Cid"]))
            seconds = body.get("Seconds")
            seconds = None if seconds is None else float(seconds)
        except CIDError as error:
            raise api_error(400, str(error), "give a CID such as Qm… or bafy…")
        except Exception:
            raise api_error(400, 'the body must be {"Cid": CID} or {"Cid": CID, "Seconds": N}')
        if seconds is not None and not 0 < seconds < float("inf"):
            raise api_error(400, f"Seconds must be a positive number, not {body.get('Seconds')!r}", "leave it out to pin for good")
        if not runtime.ipfs.store.has(cid):
            raise api_error(404, f"this node does not hold {cid}", "add it first: `p2pnode ipfs add PATH`")
        await runtime.ipfs.pin(cid, seconds)
        return JSONResponse({"Pinned": str(cid), "Seconds": seconds})

    async def identity(request: Request) -> Response:
        """
        summary: 'This node''s IPFS identity and addresses'
        """
        return JSONResponse({"ID": runtime.node_id, "Addresses": runtime.transport.listen_addrs,
                             "Peers": runtime.transport.connected_peers()})

    return [
        Route(ADD_PATH, add, methods=["POST"]),
        Route(PREFIX + "/blocks/{cid}", put_block, methods=["PUT"]),
        Route(PREFIX + "/blocks/{cid}", get_block, methods=["GET"]),
        Route(PREFIX + "/blocks", get_blocks, methods=["POST"]),
        Route(PREFIX + "/blocks", put_blocks, methods=["PUT"]),
        Route(PREFIX + "/pull", pull, methods=["POST"]),
        Route(PREFIX + "/dag", dag, methods=["POST"]),
        Route(PREFIX + "/connect", connect, methods=["POST"]),
        Route(PREFIX + "/pins", pin, methods=["POST"]),
        Route(PREFIX + "/id", identity, methods=["GET"]),
    ]


def _finish(importer: FileImporter, batch: Any) -> Added:
    """(In a worker thread) the file's root, once the batch has stored every block."""
    added = importer.finish()
    batch.__exit__(None, None, None)
    return added


def _abandon(importer: FileImporter, batch: Any) -> None:
    """(In a worker thread) an add cut short: wait for the hashing threads, store what is pending, as cache."""
    importer.__exit__(None, None, None)
    try:
        batch.__exit__(None, None, None)
    except OSError:
        pass  # a full disk, most likely: the error on its way says so
