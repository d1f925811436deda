"""Append-only pack files: where the block store's bytes live; and the move
from the old layout (one file a block) into them.

Only `BlockStore` (under its locks) calls this; the index of what lies where
is the store's. A process appends only to a pack it created (`O_EXCL`), so
no two processes ever write one file. Read descriptors are kept open, a few
dozen at most; one whose file was removed (compacted by another process) is
noticed by its link count and reopened, so a reused pack number never
serves an old file's bytes.

Beside each pack, `NNNNNN.keys` names what it holds: one fixed-size record a
block (its digest, offset and length), written after the block's bytes and
before the index's rows. The index is the store's only map in use; the keys
are there for the day it is lost or damaged (`BlockStore` then rebuilds it
from them), so a lost `index.sqlite` costs a rescan, not every block. A
record cut short at the end of the file (a crash) is ignored, as is one that
names bytes past the end of its pack. A pack written before key files
existed is given one from the index the next time a store opens (`name`).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

_SUFFIX = ".pack"
_KEYS = ".keys"
_KEY = struct.Struct(">32sQI")  # a block's sha2-256 digest, its offset in the pack, its length
_OPEN_READERS = 64
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class Packs:
    def __init__(self, directory: Path, pack_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.pack_bytes = pack_bytes  # a new pack begins once a block would take this one past it
        self.writing: int | None = None  # the pack this process appends to
        self._fd = -1
        self._end = 0
        self._keys_fd = -1
        self._keys_end = 0
        self._readers: dict[int, int] = {}  # pack -> read descriptor, oldest first

    def path(self, pack: int) -> Path:
        return self.directory / f"{pack:06d}{_SUFFIX}"

    def append(self, digest: bytes, block: bytes | memoryview) -> tuple[int, int]:
        """Write `block` at the end of this process's pack; returns (pack, offset)."""
        pack, offset, _ = self.append_pieces([(digest, (block,))])[0]
        return pack, offset

    def append_pieces(self, blocks: Sequence[tuple[bytes, Sequence[Buffer]]]) -> list[tuple[int, int, int]]:
        """Write blocks given in pieces (each with its digest, for the key
        file), each run of them that lands in one pack written by one
        `pwritev`; returns each block's (pack, offset, length)."""
        where: list[tuple[int, int, int]] = []
        run: list[Buffer] = []
        keys: list[bytes] = []
        start = 0
        for digest, pieces in blocks:
            length = sum(map(len, pieces))
            if self.writing is None or (self._end and self._end + length > self.pack_bytes):
                self._write_run(run, start, keys)
                run, keys = [], []
                self._begin()
            if not run:
                start = self._end
            assert self.writing is not None
            where.append((self.writing, self._end, length))
            keys.append(_KEY.pack(digest, self._end, length))
            run += pieces
            self._end += length
            if len(run) >= _IOV_MAX - 8:
                self._write_run(run, start, keys)
                run, keys = [], []
        self._write_run(run, start, keys)
        return where

    def keys(self, pack: int) -> list[tuple[bytes, int, int]]:
        """(digest, offset, length) of each block the pack's key file names
        whose bytes lie within the pack; [] for a pack without one."""
        try:
            data = self.keys_path(pack).read_bytes()
            size = self.path(pack).stat().st_size
        except OSError:
            return []
        whole = len(data) - len(data) % _KEY.size  # a record cut short by a crash is left out
        return [(digest, offset, length) for digest, offset, length in _KEY.iter_unpack(data[:whole])
                if offset + length <= size]

    def name(self, pack: int, blocks: Sequence[tuple[bytes, int, int]]) -> None:
        """Give a pack made before key files existed the key file its blocks
        (digest, offset, length) make, unless it has one by now."""
        try:
            fd = os.open(self.keys_path(pack), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return
        try:
            os.write(fd, b"".join(_KEY.pack(*block) for block in blocks))
        finally:
            os.close(fd)

    def keys_path(self, pack: int) -> Path:
        return self.directory / f"{pack:06d}{_KEYS}"

    def _write_run(self, pieces: list[Buffer], start: int, keys: list[bytes]) -> None:
        """The run's bytes, then their key records (a crash between leaves
        bytes no key names: dead space, as without the index row)."""
        self._write_at(pieces, start)
        if keys:
            record = b"".join(keys)
            at = self._keys_end
            while record:  # at our own offset: a failed write is written over next time
                wrote = os.pwrite(self._keys_fd, record, at)
                record, at = record[wrote:], at + wrote
            self._keys_end = at

    def _write_at(self, pieces: list[Buffer], start: int) -> None:
        """Write the pieces, one after the other, from `start` to the end of
        the pack being appended to (our own offsets: if that fails, a full
        disk say, the pack's end goes back to `start`, and the next append
        writes over what was left)."""
        if not pieces:
            return
        try:
            done = os.pwritev(self._fd, pieces, start)
            at, skip = start + done, done
            if at < self._end:  # cut short: the rest piece by piece (or the error)
                for piece in pieces:
                    view = memoryview(piece)
                    if skip >= len(view):
                        skip -= len(view)
                        continue
                    view, skip = view[skip:], 0
                    while view:
                        wrote = os.pwrite(self._fd, view, at)
                        view, at = view[wrote:], at + wrote
        except BaseException:
            self._end = start
            raise

    def read(self, pack: int, offset: int, length: int, into: bytearray | None = None) -> bytes | memoryview | None:
        """The bytes at `offset` (fewer if the pack was cut short); None if
        the pack is gone. Read into `into` (a view of it returned) when given:
        a sender reusing one buffer allocates nothing a block."""
        fd = self._readers.pop(pack, None)
        if fd is not None and os.fstat(fd).st_nlink == 0:  # removed since opened
            os.close(fd)
            fd = None
        if fd is None:
            try:
                fd = os.open(self.path(pack), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            if len(self._readers) >= _OPEN_READERS:
                os.close(self._readers.pop(next(iter(self._readers))))
        self._readers[pack] = fd  # now the most recently used
        if into is None:
            return os.pread(fd, length, offset)
        view = memoryview(into)[:length]
        return view[:os.preadv(fd, [view], offset)]

    def sizes(self) -> dict[int, int]:
        """Each pack on disk and its size in bytes."""
        found = {}
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                found[int(path.stem)] = path.stat().st_size
            except (ValueError, OSError):
                continue
        return found

    def disk_bytes(self) -> int:
        return sum(self.sizes().values())

    def remove(self, pack: int) -> None:
        fd = self._readers.pop(pack, None)
        if fd is not None:
            os.close(fd)
        self.path(pack).unlink(missing_ok=True)
        self.keys_path(pack).unlink(missing_ok=True)

    def close(self) -> None:
        for fd in [self._fd, self._keys_fd, *self._readers.values()]:
            if fd >= 0:
                os.close(fd)
        self._fd, self._keys_fd, self.writing, self._readers = -1, -1, None, {}

    def _begin(self) -> None:
        """Start a new pack, numbered past every pack on disk, and its key file."""
        for fd in (self._fd, self._keys_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._keys_fd = -1
        number = max(self.sizes(), default=0) + 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            try:
                self._fd = os.open(self.path(number), flags, 0o644)
                break
            except FileExistsError:
                number += 1
        self.keys_path(number).unlink(missing_ok=True)  # a key file whose pack was removed: never this one's
        self._keys_fd = os.open(self.keys_path(number), flags, 0o644)
        self.writing, self._end, self._keys_end = number, 0, 0


def migrate_file_per_block(root: Path, put: Callable[[list[tuple[bytes, bytes]], list[float]], None]) -> None:
    """Move the old layout's block files (`root/xx/<digest>`) into packs
    through `put` (blocks, last uses), each file's mtime kept as its last use;
    a file whose bytes do not hash to its name is dropped, as a read would
    have dropped it. A crash midway only repeats some of the work."""
    for directory in sorted(root.glob("[0-9a-f][0-9a-f]")):
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
                put(batch, used)
                batch, used = [], []
        put(batch, used)
        for path in paths:
            path.unlink(missing_ok=True)
        try:
            directory.rmdir()
        except OSError:
            pass  # something else lives there: left alone
