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
fetched again.

Deleting a block drops its row; its bytes stay, dead, until `compact` (which
`pins.collect` runs, in a worker thread) copies the live blocks of a mostly
dead pack forward and removes the file. A process appends only to packs it
created, so a command reading a node's store beside the node never tangles
the node's appends. A store in the old layout (one file per block,
`xx/<digest>`) is moved into packs when opened.

Threads (bitswap, the API's batched upload, the importer) share one store:
one lock guards the index connection, the pack files and the offsets; block
hashing happens outside it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from p2pnode.ipfs.cid import CID
from p2pnode.ipfs.packs import Packs

MAX_BLOCK_BYTES = 2 << 20  # bitswap's limit for one block
COMPACT_DEAD_SHARE = 0.5  # a pack whose bytes are more than half dead is rewritten
COMPACT_STEP = 16 << 20  # bytes copied under the lock at a time, so readers and writers go on meanwhile
_STAMP_EVERY = 1.0  # seconds between writes of "last used" stamps: a read writes nothing itself
_BATCH = 500  # digests in one SQL statement


class BlockMissing(LookupError):
    """This store does not hold the block."""


class CorruptBlock(ValueError):
    """A block's bytes do not hash to its CID."""


def check(cid: CID, block: bytes) -> None:
    """Refuse (CorruptBlock) a block given from outside that is too big or does not hash to `cid`."""
    if len(block) > MAX_BLOCK_BYTES:
        raise CorruptBlock(f"block {cid} is {len(block)} bytes, over the {MAX_BLOCK_BYTES}-byte limit")
    if not cid.verifies(block):
        raise CorruptBlock(f"the bytes given for {cid} do not hash to it")


class BlockStore:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time, pack_bytes: int = 64 << 20) -> None:
        self.root = root
        self.clock = clock  # stamps "last used" (tests turn it back)
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._packs = Packs(root / "packs", pack_bytes)
        self._db = sqlite3.connect(root / "index.sqlite", timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable enough: a lost row is a block fetched again
        self._db.execute("CREATE TABLE IF NOT EXISTS blocks (digest BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
                         " offset INTEGER NOT NULL, length INTEGER NOT NULL, used REAL NOT NULL) WITHOUT ROWID")
        self._db.execute("CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks (pack)")
        self._db.commit()
        self._used: dict[bytes, float] = {}  # reads not yet stamped in the index
        self._stamped = time.monotonic()
        self._migrate_file_per_block()

    def has(self, cid: CID) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM blocks WHERE digest = ?", (cid.digest,)).fetchone() is not None

    def put(self, cid: CID, block: bytes) -> None:
        """Store a block; one that does not hash to `cid` is refused."""
        check(cid, block)
        self.put_made(cid, block)

    def put_made(self, cid: CID, block: bytes) -> None:
        """Store a block whose CID the caller just computed from it (the importer)."""
        self.put_many([(cid, block)])

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """`put_made` for many blocks in one index transaction (their CIDs
        already checked or computed by the caller)."""
        self.put_digests([(cid.digest, block) for cid, block in blocks])

    def put_digests(self, blocks: list[tuple[bytes, bytes]], used: list[float] | None = None) -> None:
        """Append the blocks not yet held and index them (`used`: their last use; default now)."""
        now = self.clock()
        with self._lock:
            held = self._held([digest for digest, _ in blocks])
            rows = []
            for i, (digest, block) in enumerate(blocks):
                if digest in held:
                    continue
                held.add(digest)
                pack, offset = self._packs.append(block)
                rows.append((digest, pack, offset, len(block), now if used is None else used[i]))
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)", rows)
                self._db.commit()

    def get(self, cid: CID) -> bytes:
        """The block, checked against its digest; a read marks it used (see `pins`)."""
        with self._lock:
            for _ in range(3):  # another process may compact the pack away meanwhile: look again
                row = self._db.execute("SELECT pack, offset, length FROM blocks WHERE digest = ?",
                                       (cid.digest,)).fetchone()
                if row is None:
                    raise BlockMissing(f"block {cid} is not held here")
                block = self._packs.read(*row)
                if block is not None:
                    break
            self._used[cid.digest] = self.clock()
            if time.monotonic() - self._stamped > _STAMP_EVERY:
                self._stamp()
        if block is None or hashlib.sha256(block).digest() != cid.digest:
            with self._lock:
                self._db.execute("DELETE FROM blocks WHERE digest = ? AND pack = ? AND offset = ?", (cid.digest, *row[:2]))
                self._db.commit()
            raise CorruptBlock(f"block {cid} was corrupted on disk; it has been dropped, fetch it again")
        return block

    def location(self, cid: CID) -> tuple[Path, int, int]:
        """Where a block's bytes lie: (pack file, offset, length), for tools and tests."""
        with self._lock:
            row = self._db.execute("SELECT pack, offset, length FROM blocks WHERE digest = ?", (cid.digest,)).fetchone()
        if row is None:
            raise BlockMissing(f"block {cid} is not held here")
        return self._packs.path(row[0]), row[1], row[2]

    def delete(self, cid: CID) -> None:
        self.delete_digests([cid.digest])

    def delete_digests(self, digests: Iterable[bytes]) -> None:
        """Forget these blocks; their bytes are dead until `compact`."""
        with self._lock:
            self._db.executemany("DELETE FROM blocks WHERE digest = ?", ((d,) for d in digests))
            self._db.commit()

    def usage(self) -> list[tuple[bytes, int, float]]:
        """(digest, length, last used) of every block held."""
        with self._lock:
            self._stamp()
            return self._db.execute("SELECT digest, length, used FROM blocks").fetchall()

    def size(self) -> int:
        """Bytes the packs take on disk, dead ones included until compacted."""
        return self._packs.disk_bytes()

    def compact(self, dead_share: float = COMPACT_DEAD_SHARE) -> int:
        """Rewrite each pack (other than the one being appended to) whose
        bytes are more than `dead_share` dead: its live blocks are copied
        forward, the file removed. Returns the bytes freed."""
        with self._lock:
            live = dict(self._db.execute("SELECT pack, SUM(length) FROM blocks GROUP BY pack"))
            sizes = self._packs.sizes()
        freed = 0
        for pack, size in sizes.items():
            if pack == self._packs.writing or size - live.get(pack, 0) <= dead_share * size:
                continue
            while self._move_some(pack):
                pass
            with self._lock:
                if self._db.execute("SELECT 1 FROM blocks WHERE pack = ? LIMIT 1", (pack,)).fetchone() is None:
                    self._packs.remove(pack)
                    freed += size
        return freed

    def _move_some(self, pack: int) -> bool:
        """Copy up to COMPACT_STEP bytes of `pack`'s live blocks forward; False once none are left."""
        with self._lock:
            rows = self._db.execute("SELECT digest, offset, length FROM blocks WHERE pack = ? ORDER BY offset"
                                    " LIMIT ?", (pack, max(1, COMPACT_STEP // (256 << 10)))).fetchall()
            moved = []
            for digest, offset, length in rows:
                block = self._packs.read(pack, offset, length)
                if block is None or len(block) != length:  # cut short (or gone): nothing to keep
                    self._db.execute("DELETE FROM blocks WHERE digest = ?", (digest,))
                    continue
                moved.append((*self._packs.append(block), digest))
            self._db.executemany("UPDATE blocks SET pack = ?, offset = ? WHERE digest = ?", moved)
            self._db.commit()
            return bool(rows)

    def close(self) -> None:
        """Write the pending "last used" stamps and release the files."""
        with self._lock:
            self._stamp()
            self._db.close()
            self._packs.close()

    def _stamp(self) -> None:
        """Write the reads' "last used" stamps in one transaction (under the lock)."""
        if self._used:
            self._db.executemany("UPDATE blocks SET used = ? WHERE digest = ?",
                                 ((used, digest) for digest, used in self._used.items()))
            self._db.commit()
            self._used.clear()
        self._stamped = time.monotonic()

    def _migrate_file_per_block(self) -> None:
        """Move the old layout's block files (`xx/<digest>`) into packs, their
        mtime kept as last use; a file whose bytes do not hash to its name is
        dropped, as a read would have. A crash midway only repeats some of it."""
        for directory in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            paths = sorted(p for p in directory.iterdir() if p.is_file())
            batch: list[tuple[bytes, bytes]] = []
            used: list[float] = []
            for path in paths:
                try:
                    block, mtime = path.read_bytes(), path.stat().st_mtime
                    digest = bytes.fromhex(path.name)
                except (OSError, ValueError):  # a temporary file a crash left
                    continue
                if hashlib.sha256(block).digest() == digest:
                    batch.append((digest, block))
                    used.append(mtime)
                if len(batch) >= 64:
                    self.put_digests(batch, used)
                    batch, used = [], []
            self.put_digests(batch, used)
            for path in paths:
                path.unlink(missing_ok=True)
            try:
                directory.rmdir()
            except OSError:
                pass  # something else lives there: left alone

    def _held(self, digests: list[bytes]) -> set[bytes]:
        """Which of `digests` the index holds (under the lock)."""
        held: set[bytes] = set()
        for start in range(0, len(digests), _BATCH):
            part = digests[start:start + _BATCH]
            query = f"SELECT digest FROM blocks WHERE digest IN ({','.join('?' * len(part))})"
            held.update(digest for (digest,) in self._db.execute(query, part))
        return held
