"""dag-pb nodes and the UnixFS data inside them, encoded as Kubo encodes them.

A dag-pb node is a protobuf `PBNode { repeated PBLink Links = 2; bytes Data = 1; }`
written links first; a link is `{ bytes Hash = 1; string Name = 2; uint64 Tsize = 3; }`,
and Kubo always writes Name and Tsize, even empty or zero. UnixFS `Data` is
`{ Type = 1; Data = 2; filesize = 3; repeated blocksizes = 4 (unpacked); ... }`.
Both are small enough that encoding them by hand beats a protobuf dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.ipfs.cid import CID, CIDError, read_varint, varint

RAW, DIRECTORY, FILE, METADATA, SYMLINK, HAMT_SHARD = range(6)


class DagError(ValueError):
    """A block that is not a well-formed dag-pb / UnixFS node."""


@dataclass(frozen=True, slots=True)
class Link:
    cid: CID
    name: str
    tsize: int  # the linked node's block plus everything under it


@dataclass(frozen=True, slots=True)
class UnixFS:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    links: tuple[Link, ...] = ()
    data: bytes | None = None


def _key(number: int, length: int) -> bytes:
    return varint(number << 3 | 2) + varint(length)


def _field(number: int, payload: bytes) -> bytes:
    return b"".join((_key(number, len(payload)), payload))


def _uint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def encode_node(links: list[Link] | tuple[Link, ...], data: bytes | None) -> bytes:
    parts = []
    for link in links:
        body = _field(1, link.cid.to_bytes()) + _field(2, link.name.encode()) + _uint(3, link.tsize)
        parts += (_key(2, len(body)), body)
    if data is not None:
        parts += (_key(1, len(data)), data)
    return b"".join(parts)  # one copy of a chunk's bytes, however large


def file_leaf_pieces(size: int) -> tuple[bytes, bytes]:
    """What goes before and after `size` (> 0) bytes of a chunk in its dag-pb
    leaf: `prefix + chunk + suffix == encode_node([], encode_unixfs(UnixFS(FILE,
    chunk, size)))`, so a leaf is hashed and written without copying the chunk."""
    inner = _uint(1, FILE) + _key(2, size)
    suffix = _uint(3, size)
    return _key(1, len(inner) + size + len(suffix)) + inner, suffix


def encode_unixfs(meta: UnixFS) -> bytes:
    parts = [_uint(1, meta.type)]
    if meta.data:
        parts += (_key(2, len(meta.data)), meta.data)
    if meta.filesize is not None:
        parts.append(_uint(3, meta.filesize))
    parts += (_uint(4, size) for size in meta.blocksizes)
    return b"".join(parts)


def _fields(data: bytes):
    """(field number, wire type, value) for each protobuf field."""
    at = 0
    try:
        while at < len(data):
            key, at = read_varint(data, at)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, at = read_varint(data, at)
            elif wire == 2:
                length, at = read_varint(data, at)
                if at + length > len(data):
                    raise DagError("a field runs past the end of the block")
                value, at = data[at:at + length], at + length
            else:
                raise DagError(f"unexpected protobuf wire type {wire}")
            yield number, wire, value
    except CIDError as error:
        raise DagError(str(error)) from None


def decode_node(block: bytes) -> Node:
    links: list[Link] = []
    data: bytes | None = None
    for number, wire, value in _fields(block):
        if number == 1 and wire == 2:
            data = value
        elif number == 2 and wire == 2:
            links.append(_decode_link(value))
        else:
            raise DagError(f"unexpected field {number} in a dag-pb node")
    return Node(tuple(links), data)


def _decode_link(body: bytes) -> Link:
    cid, name, tsize = None, "", 0
    for number, wire, value in _fields(bytes(body)):  # a node read as a memoryview: links are small
        if number == 1 and wire == 2:
            try:
                cid = CID.from_bytes(value)
            except CIDError as error:
                raise DagError(f"a link's hash: {error}") from None
        elif number == 2 and wire == 2:
            try:
                name = value.decode()
            except UnicodeDecodeError:
                raise DagError("a link's name is not UTF-8") from None
        elif number == 3 and wire == 0:
            tsize = value
    if cid is None:
        raise DagError("a link has no hash")
    return Link(cid, name, tsize)


def decode_unixfs(data: bytes) -> UnixFS:
    kind, payload, filesize, sizes = None, b"", None, []
    for number, wire, value in _fields(data):
        if number == 1 and wire == 0:
            kind = value
        elif number == 2 and wire == 2:
            payload = value
        elif number == 3 and wire == 0:
            filesize = value
        elif number == 4 and wire == 0:
            sizes.append(value)
        elif number == 4 and wire == 2:  # a packed encoding, should anyone write one
            at = 0
            while at < len(value):
                size, at = read_varint(value, at)
                sizes.append(size)
    if kind is None or kind > HAMT_SHARD:
        raise DagError("not a UnixFS node (no valid Type)")
    return UnixFS(kind, payload, filesize, tuple(sizes))
