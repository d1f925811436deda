"""Blocks on disk, appended to pack files and found through an index.

Why packs: creating a file costs about a millisecond on ext4 (measured on
the development machine; 8 µs on tmpfs), so one file per 256 KiB block
capped imports and fetches at 90–150 MiB/s, while appending the same blocks
to large files runs at the speed of a plain disk copy. Blocks are appended to
`packs/NNNNNN.pack`, a new pack begun past about 64 MiB. The index
(`index.sqlite`, SQLite in WAL mode) maps each block's sha2-256 digest to its
pack, offset and length, and to when it was last used (`pins` drops the least
recently used cache first). The digest, not the CID, names a block: the same
bytes under CIDv0 and CIDv1 (or raw and dag-pb codecs) are one block.

Crashes. A write appends the bytes first and commits their index rows after,
and nothing is fsynced. A crash between the two leaves bytes no row names:
dead space, which compaction reclaims. A power cut may leave rows naming bytes
that never reached the disk (a pack cut short, or zeros): every read checks
the bytes against the digest, so such a block, like one that rotted on disk,
is dropped from the index and reported (`CorruptBlock`), never served, and is
fetched again. An index lost or damaged (it will not open) is rebuilt from
the key file beside each pack (`packs`) when the store opens; the damaged file
is kept aside. Blocks deleted but not yet compacted away come back then, as
cache, and go again at the next collection past their hour (`pins`).

Deleting a block drops its row; its bytes stay, dead, until `compact` (which
`pins.collect` runs, in a worker thread) copies the live blocks of a mostly
dead pack forward and removes the file. A process appends only to packs it
created, so a command reading a node's store beside the node never tangles
the node's appends. A store in the old layout (one file per block,
`xx/<digest>`) is moved into packs when opened.

Threads (bitswap, the API's batched upload, the importer) share one store.
Appends go one writer at a time (`_writing`: the pack's end, the index's
writing connection); reads take another lock (`_reading`: a reading
connection, the open packs) held only for a lookup and a pread, so a reader,
the event loop's `has` among them, never waits behind a batch being written.
Hashing happens outside both. Compaction takes both while it moves a step.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from p2pnode.ipfs.cid import CID
from p2pnode.ipfs.packs import Buffer, Packs, migrate_file_per_block

log = logging.getLogger(__name__)

MAX_BLOCK_BYTES = 2 << 20  # bitswap's limit for one block
COMPACT_DEAD_SHARE = 0.5  # a pack whose bytes are more than half dead is rewritten
_COMPACT_STEP = 16  # blocks moved under the locks at a time, so readers and writers go on meanwhile
_STAMP_EVERY = 1.0  # seconds between writes of "last used" stamps: a read writes nothing itself
_INDEX_ROWS = "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)"  # (digest, pack, offset, length, used)
_IN_BATCH = 500  # digests in one SQL statement
_SCHEMA = ("CREATE TABLE IF NOT EXISTS blocks (digest BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
           " offset INTEGER NOT NULL, length INTEGER NOT NULL, used REAL NOT NULL) WITHOUT ROWID;"
           " CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks (pack)")


class BlockMissing(LookupError):
    """This store does not hold the block."""


class CorruptBlock(ValueError):
    """A block's bytes do not hash to its CID."""


class IndexDamaged(RuntimeError):
    """The index is damaged and cannot be made again: the node stops with the way out, not a traceback."""


def check(cid: CID, block: bytes) -> None:
    """Refuse (CorruptBlock) a block given from outside that is too big or does not hash to `cid`."""
    if len(block) > MAX_BLOCK_BYTES:
        raise CorruptBlock(f"block {cid} is {len(block)} bytes, over the {MAX_BLOCK_BYTES}-byte limit")
    if not cid.verifies(block):
        raise CorruptBlock(f"the bytes given for {cid} do not hash to it")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # durable enough: a lost row is a block fetched again
    db.execute("PRAGMA wal_autocheckpoint=8192")  # 32 MiB: a checkpoint syncs, and each one waits on the disk
    return db


class BlockStore:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time, pack_bytes: int = 64 << 20) -> None:
        self.root = root
        self.clock = clock  # stamps "last used" (tests turn it back)
        root.mkdir(parents=True, exist_ok=True)
        self._packs = Packs(root / "packs", pack_bytes)
        self._writing, self._reading = threading.Lock(), threading.Lock()  # taken in this order
        self._open_index(root / "index.sqlite")
        self._used: dict[bytes, float] = {}  # reads not yet stamped in the index
        self._stamped = time.monotonic()
        migrate_file_per_block(root, self.put_digests)

    def _open_index(self, index: Path) -> None:
        """Open the index; one lost or damaged is rebuilt from the packs' key
        files (`packs`), the damaged file kept aside for a look."""
        opened: list[sqlite3.Connection] = []
        try:
            opened.append(_connect(index))
            opened[0].executescript(_SCHEMA)
            empty = opened[0].execute("SELECT 1 FROM blocks LIMIT 1").fetchone() is None
            opened.append(_connect(index))
            self._wdb, self._rdb = opened
        except sqlite3.DatabaseError as error:
            for connection in opened:
                connection.close()
            aside = index.with_name(f"{index.name}.damaged-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                try:
                    index.with_name(index.name + suffix).replace(aside.with_name(aside.name + suffix))
                except FileNotFoundError:
                    pass
            log.warning("the block index %s is damaged (%s): moved to %s; rebuilding it from the packs", index, error, aside)
            try:
                self._wdb = _connect(index)
                self._wdb.executescript(_SCHEMA)
                self._rdb = _connect(index)
            except sqlite3.DatabaseError as again:
                raise IndexDamaged(
                    f"the block index {index} is damaged and could not be made again ({again}); check the disk, "
                    f"then move {index.parent} aside to start with an empty block store, or point --data-dir elsewhere"
                ) from again
            empty = True
        if empty and self._packs.sizes():
            self._rebuild_index()
        elif not empty:
            self._name_old_packs()

    def _name_old_packs(self) -> None:
        """Write the key file of each pack made before key files existed,
        from the index, so that its blocks too survive a lost index. A pack
        whose blocks have no rows yet is another process's, being begun."""
        for pack in self._packs.sizes():
            if self._packs.keys_path(pack).exists():
                continue
            rows = self._wdb.execute("SELECT digest, offset, length FROM blocks WHERE pack = ?", (pack,)).fetchall()
            if rows:
                self._packs.name(pack, rows)

    def _rebuild_index(self) -> None:
        """Index every block the packs' key files name; each is checked
        against its digest when read, as always."""
        now = self.clock()
        blocks, unnamed = 0, []
        for pack in sorted(self._packs.sizes()):
            keys = self._packs.keys(pack)
            if not keys:
                unnamed.append(pack)
                continue
            self._wdb.executemany(_INDEX_ROWS, [(digest, pack, offset, length, now) for digest, offset, length in keys])
            blocks += len(keys)
        self._wdb.commit()
        log.warning("rebuilt the block index of %s from the packs: %d blocks%s", self.root, blocks,
                    f"; {len(unnamed)} packs name no blocks (written before key files, or empty) and stay"
                    " until compaction removes them" if unnamed else "")

    def has(self, cid: CID) -> bool:
        with self._reading:
            return self._rdb.execute("SELECT 1 FROM blocks WHERE digest = ?", (cid.digest,)).fetchone() is not None

    def put(self, cid: CID, block: bytes) -> None:
        """Store a block; one that does not hash to `cid` is refused."""
        check(cid, block)
        self.put_made(cid, block)

    def put_made(self, cid: CID, block: bytes) -> None:
        """Store a block whose CID the caller just computed from it (the importer)."""
        self.put_digests([(cid.digest, block)])

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """`put_made` for many blocks in one index transaction (their CIDs
        already checked or computed by the caller)."""
        self.put_digests([(cid.digest, block) for cid, block in blocks])

    def put_pieces(self, blocks: Sequence[tuple[CID, Sequence[Buffer]]]) -> None:
        """`put_many` for blocks in pieces (the importer's leaves: header,
        chunk, trailer), written by one `pwritev`, never joined."""
        self._append([(cid.digest, pieces) for cid, pieces in blocks])

    def batch(self) -> Batch:
        """A `Put` for the importer that stores blocks a few MiB at a time (see `Batch`)."""
        return Batch(self)

    def put_digests(self, blocks: list[tuple[bytes, bytes]], used: list[float] | None = None) -> None:
        """Append the blocks not yet held and index them (`used`: their last use; default now)."""
        self._append([(digest, (block,)) for digest, block in blocks], used)

    def _append(self, blocks: list[tuple[bytes, Sequence[Buffer]]], used: list[float] | None = None) -> None:
        now = self.clock()
        with self._writing:
            held = self._held([digest for digest, _ in blocks])
            new, stamps = [], []
            for i, (digest, pieces) in enumerate(blocks):
                if digest not in held:
                    held.add(digest)
                    new.append((digest, pieces))
                    stamps.append(now if used is None else used[i])
            if new:  # the bytes first, then their rows: see the module's note on crashes
                where = self._packs.append_pieces(new)
                self._wdb.executemany(_INDEX_ROWS, [
                    (digest, *at, stamp) for (digest, _), at, stamp in zip(new, where, stamps)])
                self._wdb.commit()

    def get(self, cid: CID) -> bytes:
        """The block, checked against its digest; a read marks it used (see `pins`)."""
        row, block = self._read(cid)
        if block is None or hashlib.sha256(block).digest() != cid.digest:
            with self._writing:
                self._wdb.execute("DELETE FROM blocks WHERE digest = ? AND pack = ? AND offset = ?",
                                  (cid.digest, row[0], row[1]))
                self._wdb.commit()
            raise CorruptBlock(f"block {cid} was corrupted on disk; it has been dropped, fetch it again")
        return block

    def get_unchecked(self, cid: CID, into: bytearray | None = None,
                      where: tuple[int, int, int] | None = None) -> bytes | memoryview:
        """The block as stored, not hashed: for a sender whose receiver checks
        every block anyway (`bulk`); a corrupt one is refused there, and found
        and dropped here by the next `get`. With `into` (MAX_BLOCK_BYTES at
        least), a view of it, valid until the next read into it; `where`:
        its row from `locate`, so the index is not asked again."""
        _, block = self._read(cid, into, where)
        if block is None:
            raise BlockMissing(f"block {cid} is not held here: its pack is gone")
        return block

    def locate(self, cids: list[CID]) -> dict[bytes, tuple[int, int, int]]:
        """Where each of `cids` held lies, by digest: one index query for a
        node's links rather than one a block (`get_unchecked`'s `where`)."""
        found: dict[bytes, tuple[int, int, int]] = {}
        digests = [cid.digest for cid in cids]
        with self._reading:
            for start in range(0, len(digests), _IN_BATCH):
                part = digests[start:start + _IN_BATCH]
                query = f"SELECT digest, pack, offset, length FROM blocks WHERE digest IN ({','.join('?' * len(part))})"
                found.update((digest, (pack, offset, length))
                             for digest, pack, offset, length in self._rdb.execute(query, part))
        return found

    def _read(self, cid: CID, into: bytearray | None = None, where: tuple[int, int, int] | None = None,
              ) -> tuple[tuple[int, int, int], bytes | memoryview | None]:
        """(pack, offset, length) and the bytes there (None: the pack is gone); marks the block used."""
        with self._reading:
            block = None if where is None else self._packs.read(*where, into)
            row = where
            for _ in range(0 if block is not None else 3):  # another process may compact the pack away: look again
                row = self._rdb.execute("SELECT pack, offset, length FROM blocks WHERE digest = ?",
                                        (cid.digest,)).fetchone()
                if row is None:
                    raise BlockMissing(f"block {cid} is not held here")
                block = self._packs.read(*row, into)
                if block is not None:
                    break
            self._used[cid.digest] = self.clock()
        if time.monotonic() - self._stamped > _STAMP_EVERY and self._writing.acquire(blocking=False):
            try:  # never waits behind a writer: the stamps keep until the next read
                self._stamp()
            finally:
                self._writing.release()
        return row, block

    def location(self, cid: CID) -> tuple[Path, int, int]:
        """Where a block's bytes lie: (pack file, offset, length), for tools and tests."""
        with self._reading:
            row = self._rdb.execute("SELECT pack, offset, length FROM blocks WHERE digest = ?",
                                    (cid.digest,)).fetchone()
        if row is None:
            raise BlockMissing(f"block {cid} is not held here")
        return self._packs.path(row[0]), row[1], row[2]

    def delete(self, cid: CID) -> None:
        self.delete_digests([cid.digest])

    def delete_digests(self, digests: Iterable[bytes]) -> None:
        """Forget these blocks; their bytes are dead until `compact`."""
        with self._writing:
            self._wdb.executemany("DELETE FROM blocks WHERE digest = ?", ((d,) for d in digests))
            self._wdb.commit()

    def usage(self) -> list[tuple[bytes, int, float]]:
        """(digest, length, last used) of every block held."""
        with self._writing:
            self._stamp()
            return self._wdb.execute("SELECT digest, length, used FROM blocks").fetchall()

    def size(self) -> int:
        """Bytes the packs take on disk, dead ones included until compacted."""
        return self._packs.disk_bytes()

    def compact(self, dead_share: float = COMPACT_DEAD_SHARE) -> int:
        """Rewrite each pack (other than the one being appended to) whose
        bytes are more than `dead_share` dead: its live blocks are copied
        forward, the file removed. Returns the bytes freed."""
        with self._writing:
            live = dict(self._wdb.execute("SELECT pack, SUM(length) FROM blocks GROUP BY pack"))
            sizes = self._packs.sizes()
            sizes.pop(self._packs.writing, None)  # type: ignore[arg-type]
        freed = 0
        for pack, size in sizes.items():
            if size - live.get(pack, 0) > dead_share * size:
                while self._move_some(pack):
                    pass
                freed += size
        return freed

    def _move_some(self, pack: int) -> bool:
        """Copy a few of `pack`'s live blocks forward; once none are left, remove it and say False."""
        with self._writing, self._reading:
            rows = self._wdb.execute("SELECT digest, offset, length FROM blocks WHERE pack = ? ORDER BY offset"
                                     " LIMIT ?", (pack, _COMPACT_STEP)).fetchall()
            if not rows:
                self._packs.remove(pack)
                return False
            moved, torn = [], []
            for digest, offset, length in rows:
                block = self._packs.read(pack, offset, length)
                if block is None or len(block) != length:  # cut short (or gone): nothing to keep
                    torn.append((digest,))
                else:
                    moved.append((*self._packs.append(digest, block), digest))
            self._wdb.executemany("UPDATE blocks SET pack = ?, offset = ? WHERE digest = ?", moved)
            self._wdb.executemany("DELETE FROM blocks WHERE digest = ?", torn)
            self._wdb.commit()
            return True

    def close(self) -> None:
        """Write the pending "last used" stamps and release the files."""
        with self._writing:
            self._stamp()
            with self._reading:
                self._wdb.close()
                self._rdb.close()
                self._packs.close()

    def _stamp(self) -> None:
        """Write the reads' "last used" stamps in one transaction (holding `_writing`)."""
        with self._reading:
            used, self._used = self._used, {}
        if used:
            self._wdb.executemany("UPDATE blocks SET used = ? WHERE digest = ?", ((t, d) for d, t in used.items()))
            self._wdb.commit()
        self._stamped = time.monotonic()

    def _held(self, digests: list[bytes]) -> set[bytes]:
        """Which of `digests` the index holds (holding `_writing`)."""
        held: set[bytes] = set()
        for start in range(0, len(digests), _IN_BATCH):
            part = digests[start:start + _IN_BATCH]
            query = f"SELECT digest FROM blocks WHERE digest IN ({','.join('?' * len(part))})"
            held.update(digest for (digest,) in self._wdb.execute(query, part))
        return held


class Batch:
    """A `Put` (see `importer`) that stores blocks a few MiB at a time, one
    index commit each, written by a thread of its own while the importer
    reads and hashes the next ones (both let go of the GIL). The importer's
    leaves come through `put_pieces` instead, a slab at a time from its
    hashing threads. Use it in a `with`: leaving stores what is pending."""

    def __init__(self, store: BlockStore, limit: int = 8 << 20) -> None:
        self._store, self._limit = store, limit
        self._pending: list[tuple[CID, bytes]] = []
        self._bytes = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="blockstore-batch")
        self._written: Future[None] | None = None

    def __call__(self, cid: CID, block: bytes) -> None:
        self._pending.append((cid, block))
        self._bytes += len(block)
        if self._bytes >= self._limit:
            self._send()

    def _send(self) -> None:
        if self._written is not None:
            self._written.result()  # one batch in flight at most; its error is ours
        self._written = self._writer.submit(self._store.put_many, self._pending) if self._pending else None
        self._pending, self._bytes = [], 0

    def put_pieces(self, blocks: list[tuple[CID, Sequence[Buffer]]]) -> None:
        """The importer's leaves, written now, from its hashing threads (their memory is reused after)."""
        self._store.put_pieces(blocks)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            self._send()
            self._send()  # waits for the last one
        finally:
            self._writer.shutdown()
