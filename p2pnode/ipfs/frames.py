"""The frames of a batch upload (`PUT /api/v1/ipfs/blocks`) and of a DAG
stream between peers (`bulk`), in a module light enough for the CLI to import.

A frame is a uvarint length and a CID's bytes, then a uvarint length and the
block: the node can check and store each block as the body streams in.
"""

from __future__ import annotations

from p2pnode.ipfs.blockstore import MAX_BLOCK_BYTES
from p2pnode.ipfs.cid import CID, CIDError, read_varint, varint


class BadUpload(ValueError):
    """An upload body that is not a sequence of (CID, block) frames."""


def frame_at(buffer: bytearray, at: int, end: int) -> tuple[CID, int, int] | None:
    """The frame at `at` in `buffer[:end]`: its CID and where its block's
    bytes begin and end; None while it is still coming. A frame is a
    uvarint length and the CID's bytes, then a uvarint length and the block."""
    try:
        cid_length, start = read_varint(buffer, at, end)
    except CIDError:
        if end - at < 10:
            return None
        raise BadUpload("a bad CID length") from None
    if cid_length > 128:
        raise BadUpload(f"a {cid_length}-byte CID")
    try:
        block_length, block_start = read_varint(buffer, start + cid_length, end)
    except CIDError:
        if end - start - cid_length < 10:
            return None
        raise BadUpload("a bad block length") from None
    if block_length > MAX_BLOCK_BYTES:
        raise BadUpload(f"a {block_length}-byte block, over the {MAX_BLOCK_BYTES}-byte limit")
    block_end = block_start + block_length
    if block_end > end:
        return None
    try:
        cid = CID.from_bytes(bytes(buffer[start:start + cid_length]))
    except CIDError as error:
        raise BadUpload(str(error)) from None
    return cid, block_start, block_end


def next_upload(buffer: bytearray, at: int) -> tuple[CID, bytes, int] | None:
    """The (CID, block) frame at `at` and the offset after it; None while it is still coming."""
    frame = frame_at(buffer, at, len(buffer))
    if frame is None:
        return None
    cid, start, end = frame
    view = memoryview(buffer)
    try:
        block = bytes(view[start:end])  # one copy
    finally:
        view.release()
    return cid, block, end


def upload_frame(cid: CID, block: bytes) -> list[bytes]:
    """One block of a batch upload (`PUT /blocks`), in pieces to join once."""
    raw = cid.to_bytes()
    return [varint(len(raw)), raw, varint(len(block)), block]
