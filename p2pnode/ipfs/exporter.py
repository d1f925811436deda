"""Write a UnixFS DAG back to files, fetching and verifying block by block.

Blocks come from a `Fetch` (the local store, bitswap, or a node's API); each
one is checked against its CID here, whoever supplied it. A file is written
in order while at most `WINDOW` sibling blocks are in memory, so a file of
any size streams. Names from the DAG become paths only when they are single,
plain components, and nothing is written through an existing entry.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from p2pnode.ipfs.cid import CID, RAW
from p2pnode.ipfs.dagpb import DIRECTORY, FILE, HAMT_SHARD, RAW as UNIXFS_RAW, SYMLINK, DagError, decode_node, decode_unixfs

WINDOW = 32  # sibling blocks fetched together (8 MiB of 256 KiB chunks)

Fetch = Callable[[Sequence[CID]], Awaitable[list[bytes]]]


class ExportError(ValueError):
    """The DAG cannot be written out: a bad block, name or node type."""


async def _blocks(fetch: Fetch, cids: Sequence[CID]) -> list[bytes]:
    blocks = await fetch(cids)
    for cid, block in zip(cids, blocks, strict=True):
        if not cid.verifies(block):
            raise ExportError(f"block {cid} does not hash to its CID: refused")
    return blocks


async def export(root: CID, fetch: Fetch, dest: Path) -> None:
    """Write the file, directory or symlink `root` at `dest` (which must not exist)."""
    if os.path.lexists(dest):
        raise ExportError(f"{dest} already exists; give a new path")
    [block] = await _blocks(fetch, [root])
    await _export(root, block, fetch, dest)


async def _export(cid: CID, block: bytes, fetch: Fetch, dest: Path) -> None:
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
        for start in range(0, len(node.links), WINDOW):
            links = node.links[start:start + WINDOW]
            for link, child in zip(links, await _blocks(fetch, [l.cid for l in links])):
                await _export(link.cid, child, fetch, dest / link.name)
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


async def write_file(cid: CID, block: bytes, fetch: Fetch, out: BinaryIO) -> int:
    """Append the file under `cid` to `out`; returns the bytes written."""
    if cid.codec == RAW:
        out.write(block)
        return len(block)
    try:
        node = decode_node(block)
        meta = decode_unixfs(node.data or b"")
    except DagError as error:
        raise ExportError(f"{cid}: {error}") from None
    if meta.type not in (FILE, UNIXFS_RAW):
        raise ExportError(f"{cid} is inside a file but is not a file node")
    out.write(meta.data)
    written = len(meta.data)
    for start in range(0, len(node.links), WINDOW):
        links = node.links[start:start + WINDOW]
        for link, child in zip(links, await _blocks(fetch, [l.cid for l in links])):
            written += await write_file(link.cid, child, fetch, out)
    if meta.filesize is not None and written != meta.filesize:
        raise ExportError(f"{cid} says it holds {meta.filesize} bytes but its blocks hold {written}")
    return written
