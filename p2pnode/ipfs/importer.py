"""Build the UnixFS DAG that Kubo's `ipfs add` builds, streaming.

Kubo's defaults (v0.22): fixed 256 KiB chunks, the balanced layout with at
most 174 links a node, CIDv0 with dag-pb leaves (UnixFS `File` nodes holding
the chunk). `--cid-version 1` turns raw leaves on unless `--raw-leaves=false`
is given; with raw leaves a chunk is its own block (CIDv1, codec raw), even
under CIDv0 parents. A file of one chunk is that chunk's leaf, and an empty
file is one empty leaf.

The balanced layout grows a tree of depth 1 (a root over up to 174 leaves),
and when it is full makes it the first child of a deeper root and fills that
root's remaining children with full trees of the previous depth; the root is
whatever tree stands when the data ends. We mirror Kubo's recursion, so at
most one chunk and one node's links per level are in memory at a time.

Directories are `Directory` nodes with their entries' links sorted by name,
each link's Tsize the entry's whole DAG size. As in `ipfs add -r`, hidden
entries (names starting with a dot) are left out unless asked for, and
symlinks become `Symlink` nodes holding their target (never followed).
Kubo shards directories whose links pass 256 KiB into HAMTs; we do not, so
such huge directories get a different (still valid) CID than Kubo's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from p2pnode.ipfs.cid import CID, DAG_PB, RAW
from p2pnode.ipfs.dagpb import DIRECTORY, FILE, SYMLINK, Link, UnixFS, encode_node, encode_unixfs

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174

Put = Callable[[CID, bytes], None]
"""Where each block goes as soon as it is made (a block store, or nowhere)."""


@dataclass(frozen=True, slots=True)
class Options:
    cid_version: int = 0
    raw_leaves: bool | None = None  # None: Kubo's default for the CID version
    chunk_size: int = CHUNK_SIZE
    max_links: int = MAX_LINKS
    hidden: bool = False

    @property
    def leaves_raw(self) -> bool:
        return self.cid_version >= 1 if self.raw_leaves is None else self.raw_leaves


@dataclass(frozen=True, slots=True)
class Added:
    cid: CID
    tsize: int  # bytes of every block in the DAG (what a parent link records)
    filesize: int  # bytes of file content under it


def discard(cid: CID, block: bytes) -> None:
    """A Put for --only-hash: the blocks are made and dropped."""


def add_path(path: Path, put: Put, options: Options = Options()) -> Added:
    """Add a file, a directory (recursively) or a symlink."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return _add_block(encode_node([], encode_unixfs(UnixFS(SYMLINK, os.readlink(path).encode()))), put, options, 0)
    if stat.S_ISDIR(info.st_mode):
        return add_directory(path, put, options)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is neither a file, a directory nor a symlink")
    with path.open("rb") as stream:
        return add_file(stream, put, options)


def add_directory(path: Path, put: Put, options: Options = Options()) -> Added:
    links: list[Link] = []
    total = 0
    for entry in sorted(os.listdir(path)):
        if entry.startswith(".") and not options.hidden:
            continue
        child = add_path(path / entry, put, options)
        links.append(Link(child.cid, entry, child.tsize))
        total += child.filesize
    return _add_dir_node(links, put, options, total)


def add_directory_entries(entries: list[tuple[str, Added]], put: Put, options: Options = Options()) -> Added:
    """A directory node over already-added entries (name, DAG)."""
    links = [Link(added.cid, name, added.tsize) for name, added in sorted(entries, key=lambda item: item[0])]
    return _add_dir_node(links, put, options, sum(added.filesize for _, added in entries))


def _add_dir_node(links: list[Link], put: Put, options: Options, filesize: int) -> Added:
    block = encode_node(links, encode_unixfs(UnixFS(DIRECTORY)))
    cid = CID.of(block, version=options.cid_version)
    put(cid, block)
    return Added(cid, len(block) + sum(link.tsize for link in links), filesize)


def add_bytes(data: bytes, put: Put, options: Options = Options()) -> Added:
    import io

    return add_file(io.BytesIO(data), put, options)


def add_file(stream: BinaryIO, put: Put, options: Options = Options()) -> Added:
    return _Balanced(stream, put, options).build()


def _add_block(block: bytes, put: Put, options: Options, filesize: int) -> Added:
    cid = CID.of(block, version=options.cid_version)
    put(cid, block)
    return Added(cid, len(block), filesize)


class _Balanced:
    """Kubo's balanced layout (boxo/ipld/unixfs/importer/balanced) over a stream."""

    def __init__(self, stream: BinaryIO, put: Put, options: Options) -> None:
        self._stream = stream
        self._put = put
        self._options = options
        self._next = self._read_chunk()

    def _read_chunk(self) -> bytes:
        size = self._options.chunk_size
        parts, got = [], 0
        while got < size:
            part = self._stream.read(size - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _done(self) -> bool:
        return not self._next

    def _leaf(self) -> Added:
        chunk, self._next = self._next, self._read_chunk()
        return self._leaf_of(chunk)

    def _leaf_of(self, chunk: bytes) -> Added:
        if self._options.leaves_raw:
            cid = CID.of(chunk, version=1, codec=RAW)
            self._put(cid, chunk)
            return Added(cid, len(chunk), len(chunk))
        block = encode_node([], encode_unixfs(UnixFS(FILE, chunk, len(chunk))))
        return _add_block(block, self._put, self._options, len(chunk))

    def build(self) -> Added:
        if self._done():
            return self._leaf_of(b"")
        root = self._leaf()
        depth = 1
        while not self._done():
            root = self._fill([root], depth)
            depth += 1
        return root

    def _fill(self, children: list[Added], depth: int) -> Added:
        while len(children) < self._options.max_links and not self._done():
            children.append(self._leaf() if depth == 1 else self._fill([], depth - 1))
        meta = UnixFS(FILE, filesize=sum(c.filesize for c in children), blocksizes=tuple(c.filesize for c in children))
        links = [Link(c.cid, "", c.tsize) for c in children]
        block = encode_node(links, encode_unixfs(meta))
        cid = CID.of(block, version=self._options.cid_version, codec=DAG_PB)
        self._put(cid, block)
        return Added(cid, len(block) + sum(c.tsize for c in children), meta.filesize or 0)
