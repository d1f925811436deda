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
whatever tree stands when the data ends. We build the same tree as the
leaves come (`_Balanced`): one node's links per level are held, and a level's
node is made once it is full and another leaf comes, or at the end.

Speed (`FileImporter`): no chunk is ever copied in Python. A file is read
straight into a few reused 4 MiB slabs (fresh large objects cost page
faults); a request's body is kept as it came, a chunk being views of one or
two of its pieces. Two worker threads hash 4 MiB of chunks a call (hashlib
lets go of the GIL) and hand the leaves to the `Put` in pieces (a dag-pb
leaf is a few bytes, the chunk, a few bytes: never joined when the Put
writes pieces, as the block store does with one pwritev). The leaves go into
the tree in the order of the file, so the DAG is the same whatever the
threads do. On the 2-core development machine two hashing threads gain
little over one (both cores' SHA units are not there to be had), but
hashing beside the reading, the receiving and the writing does.

Directories are `Directory` nodes with their entries' links sorted by name,
each link's Tsize the entry's whole DAG size. As in `ipfs add -r`, hidden
entries (names starting with a dot) are left out unless asked for, and
symlinks become `Symlink` nodes holding their target (never followed).
Kubo shards directories whose links pass 256 KiB into HAMTs; we do not, so
such huge directories get a different (still valid) CID than Kubo's.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from p2pnode.ipfs.cid import CID, DAG_PB, RAW
from p2pnode.ipfs.dagpb import DIRECTORY, FILE, SYMLINK, Link, UnixFS, encode_node, encode_unixfs, file_leaf_pieces

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
SLAB_BYTES = 4 << 20  # bytes of a file hashed by one worker call (16 chunks)
HASHERS = 2  # worker threads hashing, shared by every import in the process
SLABS = HASHERS + 2  # batches an import has at most: one a thread, one queued, one being filled

Put = Callable[[CID, bytes], None]
"""Where each block goes as soon as it is made (a block store, or nowhere).
Called from one thread at a time, in the order the blocks are made."""

Pieces = Sequence["bytes | memoryview"]
"""A block in pieces (a dag-pb leaf: header, chunk, trailer), joined only if need be."""


class PiecesPut(Protocol):
    """A `Put` that also takes the leaves of a slab as pieces, from the
    hashing threads, several at once; the pieces' memory is reused once it
    returns, so it stores (or drops) them before."""

    def __call__(self, cid: CID, block: bytes) -> None: ...

    def put_pieces(self, blocks: list[tuple[CID, Pieces]]) -> None: ...


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


class _Discard:
    """A Put for --only-hash: the blocks are made and dropped."""

    def __call__(self, cid: CID, block: bytes) -> None:
        pass

    def put_pieces(self, blocks: list[tuple[CID, Pieces]]) -> None:
        pass


discard = _Discard()

AddFile = Callable[[Path], Added]
"""How a regular file of a tree is added (by default: `add_file` here)."""


def add_path(path: Path, put: Put, options: Options = Options(), *, add_file_at: AddFile | None = None) -> Added:
    """Add a file, a directory (recursively) or a symlink; `add_file_at`, if
    given, adds each regular file instead (`ipfs add` has the node import them)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return _add_block(encode_node([], encode_unixfs(UnixFS(SYMLINK, os.readlink(path).encode()))), put, options, 0)
    if stat.S_ISDIR(info.st_mode):
        return add_directory(path, put, options, add_file_at=add_file_at)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is neither a file, a directory nor a symlink")
    if add_file_at is not None:
        return add_file_at(path)
    with path.open("rb", buffering=0) as stream:
        return add_file(stream, put, options)


def add_directory(path: Path, put: Put, options: Options = Options(), *, add_file_at: AddFile | None = None) -> Added:
    links: list[Link] = []
    total = 0
    for entry in sorted(os.listdir(path)):
        if entry.startswith(".") and not options.hidden:
            continue
        child = add_path(path / entry, put, options, add_file_at=add_file_at)
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
    with FileImporter(put, options) as importer:
        importer.take(data)
        return importer.finish()


def add_file(stream: BinaryIO, put: Put, options: Options = Options()) -> Added:
    """A file's DAG from a stream, read straight into the importer's slabs."""
    with FileImporter(put, options) as importer:
        while True:
            space = importer.space()
            got = stream.readinto(space)
            if not got:
                break
            importer.wrote(got)
        return importer.finish()


def _add_block(block: bytes, put: Put, options: Options, filesize: int) -> Added:
    cid = CID.of(block, version=options.cid_version)
    put(cid, block)
    return Added(cid, len(block), filesize)


_hashers: ThreadPoolExecutor | None = None
_hashers_made = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The hashing threads, shared by every import in this process (made on first use)."""
    global _hashers
    with _hashers_made:
        if _hashers is None:
            _hashers = ThreadPoolExecutor(HASHERS, thread_name_prefix="importer-hash")
        return _hashers


_Leaf = tuple[CID, Pieces, int]  # a leaf's CID, its block in pieces, its chunk's length


class FileImporter:
    """One file's DAG from its bytes, in pieces of any size, then `finish`.
    Either read into `space()` and say how much with `wrote` (reused slabs:
    a file), or hand over `bytes` with `take` (never copied: a request's
    body). Each few MiB of whole chunks go to the hashing threads; `ready`
    says whether they can take more now, `make_room` waits until they can.
    Use it in a `with`: leaving waits for the threads, whatever happened."""

    def __init__(self, put: Put, options: Options = Options()) -> None:
        self._put = put
        self._pieces = getattr(put, "put_pieces", None)  # None: the put takes whole blocks
        self._options = options
        self._chunk = options.chunk_size
        self._batch = max(1, SLAB_BYTES // self._chunk)  # chunks hashed in one thread call
        self._hashing: deque[tuple[Future[list[_Leaf]], bytearray | None]] = deque()
        self._tree = _Balanced(put, options)
        self._wrapped: dict[int, tuple[bytes, bytes]] = {}
        self._sent = 0  # batches handed to the threads so far
        self.bytes = 0
        # with `space`/`wrote`: reused slabs of whole chunks
        self._free: list[bytearray] = []
        self._slabs = 0  # made so far (at most SLABS)
        self._slab: bytearray | None = None
        self._filled = 0
        # with `take`: the chunks gathered, each a list of views of the bytes given
        self._leaves: list[list[memoryview]] = []
        self._leaf: list[memoryview] = []
        self._leaf_bytes = 0

    def space(self) -> memoryview:
        """Where the next bytes go (the rest of the slab being filled); waits
        for the hashing threads when every slab is theirs."""
        if self._slab is None:
            self._slab = self._take_slab()
        return memoryview(self._slab)[self._filled:]

    def wrote(self, count: int) -> None:
        """`count` bytes were put at the start of `space()`."""
        self._filled += count
        self.bytes += count
        if self._filled == len(self._slab or b""):
            self._send_slab()

    def take(self, data: bytes) -> None:
        """The next bytes of the file, kept (not copied) until hashed and stored."""
        view = memoryview(data)
        self.bytes += len(view)
        while view:
            part = view[:self._chunk - self._leaf_bytes]
            view = view[len(part):]
            self._leaf.append(part)
            self._leaf_bytes += len(part)
            if self._leaf_bytes == self._chunk:
                self._leaves.append(self._leaf)
                self._leaf, self._leaf_bytes = [], 0
                if len(self._leaves) == self._batch:
                    self._send(self._leaves, None)
                    self._leaves = []

    def ready(self) -> bool:
        """Whether the hashing threads take more without waiting (an event
        loop calls `make_room` in a thread when not)."""
        return len(self._hashing) < SLABS - 1

    def make_room(self) -> None:
        """Wait until `ready`, putting what was hashed into the tree."""
        while not self.ready():
            self._retire()

    def finish(self) -> Added:
        """The file's root, once every leaf is stored."""
        if self._leaf:
            self._leaves.append(self._leaf)
            self._leaf = []
        if self._leaves:
            self._send(self._leaves, None, last=True)
            self._leaves = []
        self._send_slab(last=True)
        while self._hashing:
            self._retire()
        root = self._tree.finish()
        if root is None:  # an empty file is one empty leaf
            return self._tree.leaf_of(b"")
        return root

    def __enter__(self) -> FileImporter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for future, _ in self._hashing:  # an import cut short: nothing may still write from our slabs
            future.cancel()
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first error is already on its way
                pass
        self._hashing.clear()

    def _take_slab(self) -> bytearray:
        """A free slab: a new one while fewer than SLABS exist, else the oldest's once its leaves are in."""
        while not self._free:
            if self._slabs < SLABS:
                self._slabs += 1
                return bytearray(self._chunk * self._batch)
            self._retire()
        return self._free.pop()

    def _send_slab(self, last: bool = False) -> None:
        if not self._filled:
            return
        slab, size = self._slab, self._filled
        assert slab is not None
        self._slab, self._filled = None, 0
        view = memoryview(slab)
        self._send([[view[at:min(at + self._chunk, size)]] for at in range(0, size, self._chunk)], slab, last)

    def _send(self, leaves: list[list[memoryview]], slab: bytearray | None, last: bool = False) -> None:
        """Hand chunks to the hashing threads (`slab`: theirs, freed once they are in the tree)."""
        if last and not self._sent:
            future: Future[list[_Leaf]] = Future()  # the whole file in one batch: no thread hop
            future.set_result(self._hash(leaves))
        else:
            future = _pool().submit(self._hash, leaves)
        self._sent += 1
        self._hashing.append((future, slab))

    def _hash(self, leaves: list[list[memoryview]]) -> list[_Leaf]:
        """(In a hashing thread) the leaves of some chunks, handed to a pieces Put."""
        made: list[_Leaf] = []
        raw = self._options.leaves_raw
        for views in leaves:
            length = sum(map(len, views))
            if raw:
                digest = hashlib.sha256()
                for view in views:
                    digest.update(view)
                made.append((CID(1, RAW, digest.digest()), views, length))
                continue
            wrap = self._wrapped.get(length)
            if wrap is None:
                wrap = self._wrapped[length] = file_leaf_pieces(length)
            head, tail = wrap
            digest = hashlib.sha256(head)
            for view in views:
                digest.update(view)
            digest.update(tail)
            made.append((CID(self._options.cid_version, DAG_PB, digest.digest()), [head, *views, tail], length))
        if self._pieces is not None:
            self._pieces([(cid, pieces) for cid, pieces, _ in made])
        return made

    def _retire(self) -> None:
        """Put the oldest batch's leaves into the tree, and free its slab."""
        future, slab = self._hashing.popleft()
        leaves = future.result()
        for cid, pieces, length in leaves:
            if self._pieces is None:
                self._put(cid, b"".join(pieces))
            self._tree.push(Added(cid, sum(map(len, pieces)), length))
        if slab is not None:
            self._free.append(slab)


class _Balanced:
    """Kubo's balanced layout (boxo/ipld/unixfs/importer/balanced), built as
    the leaves come. Kubo's recursion fills a root of depth 1 with up to
    `max_links` leaves, then while data is left makes the root the first
    child of one a level deeper and fills the rest of it with full trees of
    the level below; so each level's nodes are runs of `max_links` nodes of
    the level under it (the last run short), and the root is the lowest
    level with one node. `_levels[d]`: the children of the node at height
    d + 1 still open."""

    def __init__(self, put: Put, options: Options) -> None:
        self._put = put
        self._options = options
        self._levels: list[list[Added]] = [[]]

    def push(self, leaf: Added) -> None:
        self._add(0, leaf)

    def finish(self) -> Added | None:
        """The root (None: no leaves at all)."""
        depth = 0
        while True:
            level = self._levels[depth]
            if depth == len(self._levels) - 1 and len(level) <= 1:
                return level[0] if level else None
            self._levels[depth] = []
            self._add(depth + 1, self._node(level))
            depth += 1

    def leaf_of(self, chunk: bytes) -> Added:
        """The leaf of one chunk, made here (an empty file's)."""
        if self._options.leaves_raw:
            cid = CID.of(chunk, version=1, codec=RAW)
            self._put(cid, chunk)
            return Added(cid, len(chunk), len(chunk))
        block = encode_node([], encode_unixfs(UnixFS(FILE, chunk, len(chunk))))
        return _add_block(block, self._put, self._options, len(chunk))

    def _add(self, depth: int, child: Added) -> None:
        if depth == len(self._levels):
            self._levels.append([])
        if len(self._levels[depth]) == self._options.max_links:  # full, and more comes: its node is done
            full, self._levels[depth] = self._levels[depth], []
            self._add(depth + 1, self._node(full))
        self._levels[depth].append(child)

    def _node(self, children: list[Added]) -> Added:
        meta = UnixFS(FILE, filesize=sum(c.filesize for c in children), blocksizes=tuple(c.filesize for c in children))
        links = [Link(c.cid, "", c.tsize) for c in children]
        block = encode_node(links, encode_unixfs(meta))
        cid = CID.of(block, version=self._options.cid_version, codec=DAG_PB)
        self._put(cid, block)
        return Added(cid, len(block) + sum(c.tsize for c in children), meta.filesize or 0)
