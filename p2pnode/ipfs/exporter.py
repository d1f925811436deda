"""Write a UnixFS DAG back to files, fetching and verifying block by block.

Blocks come from a `Fetch` (the local store, bitswap, or a node's API), or
from a `PreOrder` stream (a node's `POST /dag`); each one is checked against
its CID here, whoever supplied it. A file is written
in order while the next `WINDOW` sibling blocks are fetched (so the network
never waits for the disk): at most AHEAD + 1 windows are in memory at each
level of the DAG, so a file of any size streams. Names from the DAG become paths only when they are single,
plain components, and nothing is written through an existing entry.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from p2pnode.ipfs.cid import CID, RAW
from p2pnode.ipfs.dagpb import DIRECTORY, FILE, HAMT_SHARD, RAW as UNIXFS_RAW, SYMLINK, DagError, decode_node, decode_unixfs
from p2pnode.lazy import lazy_import

trio = lazy_import("trio")  # the CLI imports this module; `p2pnode --help` need not load trio

WINDOW = 32  # sibling blocks fetched together (8 MiB of 256 KiB chunks)
# Windows fetched ahead of the one being written. One alone left every stage
# idle in turn (the node's bitswap round trip, its disk, the answer, our
# hashing): with three, the peer serving, the node storing and this side
# writing overlap. At most AHEAD + 1 windows (32 MiB) a level are in memory.
AHEAD = 3

Fetch = Callable[[Sequence[CID]], Awaitable[list[bytes]]]


class PreOrder:
    """Blocks that come in the order the exporter visits them: each node
    before the blocks it links to, links in order, a block linked twice
    coming twice (`dagstream.preorder_run`). Nothing is asked for: each block
    is the next one off the stream, checked against the CID it is visited
    as. `receive` gives each block with its SHA-256 (hashed as it arrived,
    off the event loop), and raises ExportError when the stream broke."""

    def __init__(self, receive: Callable[[], Awaitable[tuple[bytes, bytes]]]) -> None:
        self._receive = receive

    async def next(self, cid: CID) -> bytes:
        digest, block = await self._receive()
        if digest != cid.digest:
            raise ExportError(f"block {cid} does not hash to its CID: refused")
        return block


Source = Fetch | PreOrder


class ExportError(ValueError):
    """The DAG cannot be written out: a bad block, name or node type."""


async def _blocks(fetch: Fetch, cids: Sequence[CID]) -> list[bytes]:
    blocks = await fetch(cids)
    if len(blocks) != len(cids):
        raise ExportError(f"asked for {len(cids)} blocks, got {len(blocks)}")
    # hashing releases the GIL: a worker thread leaves the event loop free
    bad = await trio.to_thread.run_sync(_first_bad, cids, blocks)
    if bad is not None:
        raise ExportError(f"block {bad} does not hash to its CID: refused")
    return blocks


def _first_bad(cids: Sequence[CID], blocks: Sequence[bytes]) -> CID | None:
    return next((cid for cid, block in zip(cids, blocks) if not cid.verifies(block)), None)


Visit = Callable[[CID, bytes], Awaitable[None]]


async def _each(fetch: Source, cids: Sequence[CID], visit: Visit) -> None:
    """`visit` each block in order, window by window, the next AHEAD windows
    being fetched while this one is visited. A failed fetch is raised as itself."""
    if isinstance(fetch, PreOrder):  # the stream is already in visiting order
        for cid in cids:
            await visit(cid, await fetch.next(cid))
        return
    windows = [cids[start:start + WINDOW] for start in range(0, len(cids), WINDOW)]
    if not windows:
        return
    failed: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            started = [_Ahead(nursery, fetch, window) for window in windows[:AHEAD + 1]]
            for index, window in enumerate(windows):
                current = started[index]
                if index + AHEAD + 1 < len(windows):
                    started.append(_Ahead(nursery, fetch, windows[index + AHEAD + 1]))
                blocks = await current.result()
                started[index] = None  # type: ignore[call-overload]  # its blocks go once visited
                for cid, block in zip(window, blocks):
                    await visit(cid, block)
                del blocks
        except Exception as error:  # noqa: BLE001 - raised below as itself, not in a nursery's group
            failed = error
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed


class _Ahead:
    """One window's fetch, started now, its result or error taken later."""

    def __init__(self, nursery: trio.Nursery, fetch: Fetch, cids: Sequence[CID]) -> None:
        self._done = trio.Event()
        self._blocks: list[bytes] = []
        self._error: BaseException | None = None
        nursery.start_soon(self._run, fetch, cids)

    async def _run(self, fetch: Fetch, cids: Sequence[CID]) -> None:
        try:
            self._blocks = await _blocks(fetch, cids)
        except Exception as error:  # noqa: BLE001 - handed to whoever takes the result
            self._error = error
        finally:
            self._done.set()

    async def result(self) -> list[bytes]:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        blocks, self._blocks = self._blocks, []
        return blocks


async def export(root: CID, fetch: Source, dest: Path) -> None:
    """Write the file, directory or symlink `root` at `dest` (which must not exist)."""
    if os.path.lexists(dest):
        raise ExportError(f"{dest} already exists; give a new path")
    block = await fetch.next(root) if isinstance(fetch, PreOrder) else (await _blocks(fetch, [root]))[0]
    await _export(root, block, fetch, dest)


async def _export(cid: CID, block: bytes, fetch: Source, dest: Path) -> None:
    if cid.codec == RAW:
        with _create(dest) as out:
            out.write(block)
        return
    try:
        node = decode_node(block)
        meta = decode_unixfs(node.data or b"")
    except DagError as error:
        raise ExportError(f"{cid}: {error}") from None
    if meta.type == DIRECTORY:
        dest.mkdir()
        names = [link.name for link in node.links]
        for name in names:
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise ExportError(f"directory {cid} has an entry named {name!r}: refused")
        if len(set(names)) != len(names):
            raise ExportError(f"directory {cid} names an entry twice: refused")
        names_by_index = [link.name for link in node.links]
        position = iter(range(len(names_by_index)))

        async def visit(child_cid: CID, child: bytes) -> None:
            await _export(child_cid, child, fetch, dest / names_by_index[next(position)])

        await _each(fetch, [link.cid for link in node.links], visit)
    elif meta.type in (FILE, UNIXFS_RAW):
        with _create(dest) as out:
            await write_file(cid, block, fetch, out)
    elif meta.type == SYMLINK:
        os.symlink(meta.data.decode(errors="replace"), dest)
    elif meta.type == HAMT_SHARD:
        raise ExportError(f"{cid} is a sharded (HAMT) directory, which this node cannot read yet")
    else:
        raise ExportError(f"{cid} is a UnixFS node of type {meta.type}, which holds no file")


def _create(path: Path) -> BinaryIO:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


async def write_file(cid: CID, block: bytes, fetch: Source, out: BinaryIO) -> int:
    """Append the file under `cid` to `out`; returns the bytes written."""
    if cid.codec == RAW:
        out.write(block)
        return len(block)
    try:
        node = decode_node(memoryview(block))  # the chunk is written from the block, not copied out
        meta = decode_unixfs(node.data or b"")
    except DagError as error:
        raise ExportError(f"{cid}: {error}") from None
    if meta.type not in (FILE, UNIXFS_RAW):
        raise ExportError(f"{cid} is inside a file but is not a file node")
    out.write(meta.data)
    written = len(meta.data)

    async def visit(child_cid: CID, child: bytes) -> None:
        nonlocal written
        written += await write_file(child_cid, child, fetch, out)

    await _each(fetch, [link.cid for link in node.links], visit)
    if meta.filesize is not None and written != meta.filesize:
        raise ExportError(f"{cid} says it holds {meta.filesize} bytes but its blocks hold {written}")
    return written
