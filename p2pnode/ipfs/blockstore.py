"""Blocks on disk, one file each, named by their sha2-256 digest.

The digest, not the CID, names the file: the same bytes under CIDv0 and
CIDv1 (or raw and dag-pb codecs) are one block. Every read checks the bytes
against the digest, so a block corrupted on disk is dropped and reported,
never served; writes go through a temporary file and a rename, so a crash
leaves no half block.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from p2pnode.ipfs.cid import CID

MAX_BLOCK_BYTES = 2 << 20  # bitswap's limit for one block


class BlockMissing(LookupError):
    """This store does not hold the block."""


class CorruptBlock(ValueError):
    """A block's bytes do not hash to its CID."""


class BlockStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, cid: CID) -> Path:
        name = cid.digest.hex()
        return self.root / name[-3:-1] / name

    def has(self, cid: CID) -> bool:
        return self._path(cid).is_file()

    def put(self, cid: CID, block: bytes) -> None:
        """Store a block; one that does not hash to `cid` is refused."""
        if len(block) > MAX_BLOCK_BYTES:
            raise CorruptBlock(f"block {cid} is {len(block)} bytes, over the {MAX_BLOCK_BYTES}-byte limit")
        if not cid.verifies(block):
            raise CorruptBlock(f"the bytes given for {cid} do not hash to it")
        self.put_made(cid, block)

    def put_made(self, cid: CID, block: bytes) -> None:
        """Store a block whose CID the caller just computed from it (the importer)."""
        path = self._path(cid)
        if path.is_file():
            return
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # threads write too
        try:
            temporary.write_bytes(block)
        except FileNotFoundError:  # the first block in this directory
            path.parent.mkdir(exist_ok=True)
            temporary.write_bytes(block)
        os.replace(temporary, path)

    def put_many(self, blocks: list[tuple[CID, bytes]]) -> None:
        """`put_made` for each (bitswap calls it in a worker thread)."""
        for cid, block in blocks:
            self.put_made(cid, block)

    def get(self, cid: CID) -> bytes:
        """The block, checked against its digest; a read marks it used (see `pins`)."""
        path = self._path(cid)
        try:
            block = path.read_bytes()
        except FileNotFoundError:
            raise BlockMissing(f"block {cid} is not held here") from None
        if hashlib.sha256(block).digest() != cid.digest:
            path.unlink(missing_ok=True)
            raise CorruptBlock(f"block {cid} was corrupted on disk; it has been dropped, fetch it again")
        try:
            os.utime(path)
        except OSError:
            pass  # dropped meanwhile: we have the bytes
        return block

    def get_unchecked(self, cid: CID) -> bytes:
        """The block as stored, not hashed: for a sender whose receiver checks
        every block anyway (`bulk`); a corrupt one is refused there, and found
        and dropped here by the next `get`."""
        try:
            return self._path(cid).read_bytes()
        except FileNotFoundError:
            raise BlockMissing(f"block {cid} is not held here") from None

    def delete(self, cid: CID) -> None:
        self._path(cid).unlink(missing_ok=True)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
