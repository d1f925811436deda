"""Content identifiers: CIDv0 (base58btc, dag-pb, sha2-256) and CIDv1 (base32).

Only sha2-256 is made and accepted: it is what `ipfs add` uses by default,
and a block whose hash function we cannot check must never be trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
_CODECS = {DAG_PB: "dag-pb", RAW: "raw"}

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


class CIDError(ValueError):
    """A string or bytes that is not a CID this node can verify."""


@dataclass(frozen=True, slots=True)
class CID:
    version: int
    codec: int
    digest: bytes  # the sha2-256 digest of the block

    @classmethod
    def of(cls, block: bytes, *, version: int = 0, codec: int = DAG_PB) -> CID:
        """The CID of a block. CIDv0 exists only for dag-pb, as in Kubo."""
        if version == 0 and codec != DAG_PB:
            version = 1
        return cls(version, codec, hashlib.sha256(block).digest())

    @classmethod
    def parse(cls, text: str) -> CID:
        text = text.strip()
        if text.startswith("/ipfs/"):
            text = text[len("/ipfs/"):]
        if len(text) == 46 and text.startswith("Qm"):
            return cls.from_bytes(_b58decode(text))
        if text[:1] == "b":
            return cls.from_bytes(_b32decode(text[1:]))
        if text[:1] == "z":
            return cls.from_bytes(_b58decode(text[1:]))
        raise CIDError(f"{text!r} is not a CID (expected Qm… or b…)")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CID:
        if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:
            return cls(0, DAG_PB, raw[2:])
        version, at = read_varint(raw, 0)
        codec, at = read_varint(raw, at)
        if version != 1:
            raise CIDError(f"CID version {version} is not supported")
        if codec not in _CODECS:
            raise CIDError(f"codec 0x{codec:x} is not supported (dag-pb and raw are)")
        hash_code, at = read_varint(raw, at)
        length, at = read_varint(raw, at)
        if hash_code != SHA2_256 or length != 32 or len(raw) != at + 32:
            raise CIDError("only sha2-256 CIDs are supported")
        return cls(1, codec, raw[at:])

    def to_bytes(self) -> bytes:
        multihash = bytes([SHA2_256, 32]) + self.digest
        if self.version == 0:
            return multihash
        return varint(1) + varint(self.codec) + multihash

    def prefix(self) -> bytes:
        """Bitswap's block prefix: version, codec, hash function, length."""
        return varint(self.version) + varint(self.codec) + varint(SHA2_256) + varint(32)

    def verifies(self, block: bytes) -> bool:
        return hashlib.sha256(block).digest() == self.digest

    def __str__(self) -> str:
        if self.version == 0:
            return _b58encode(self.to_bytes())
        return "b" + _b32encode(self.to_bytes())

    def __repr__(self) -> str:
        return f"CID({self})"


def hash_blocks(blocks: Sequence[bytes | memoryview]) -> list[bytes]:
    """The SHA-256 of each block (what a CID names), in one call: a worker
    thread hashes a batch while the event loop or a reader goes on."""
    return [hashlib.sha256(block).digest() for block in blocks]


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, at: int, end: int | None = None) -> tuple[int, int]:
    """An unsigned varint at `at` (before `end`, the data's end by default);
    returns it and the offset after it."""
    end = len(data) if end is None else end
    value = shift = 0
    while True:
        if at >= end or shift > 63:
            raise CIDError("truncated or oversized varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _b58encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _B58[digit] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58.find(char)
        if digit < 0:
            raise CIDError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def _b32encode(raw: bytes) -> str:
    bits = int.from_bytes(raw, "big")
    count = len(raw) * 8
    pad = (-count) % 5
    bits <<= pad
    count += pad
    return "".join(_B32[(bits >> shift) & 31] for shift in range(count - 5, -1, -5))


def _b32decode(text: str) -> bytes:
    bits = count = 0
    for char in text.lower():
        digit = _B32.find(char)
        if digit < 0:
            raise CIDError(f"{char!r} is not a base32 character")
        bits = (bits << 5) | digit
        count += 5
    extra = count % 8
    return (bits >> extra).to_bytes(count // 8, "big")
