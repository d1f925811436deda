"""Bytes on the wire that are ours: the pubsub header and stream frames."""

from __future__ import annotations

import struct

import trio
from libp2p.abc import INetStream
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize

from p2pnode.transport._errors import PayloadTooLarge

MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Largest request or response body on a stream."""

MAX_PUBLISH_BYTES = DefaultMaxMessageSize - 64 * 1024
"""Largest pubsub payload: libp2p drops RPCs over 1 MiB, and the signature,
key, topic and our header need room."""

CLOSE_TIMEOUT = 3.0


class Envelope:
    """Version byte and send time (ms) in front of every pubsub payload, so
    replays from a peer's message cache can be dropped by age (trap 9)."""

    VERSION = 1
    HEADER = struct.Struct(">BQ")

    @classmethod
    def wrap(cls, data: bytes, now: float) -> bytes:
        return cls.HEADER.pack(cls.VERSION, int(now * 1000)) + data

    @classmethod
    def unwrap(cls, payload: bytes) -> tuple[float, bytes]:
        """The send time and the data; ValueError for what we did not make."""
        if len(payload) < cls.HEADER.size:
            raise ValueError(f"{len(payload)} bytes is shorter than our header")
        version, sent_ms = cls.HEADER.unpack_from(payload)
        if version != cls.VERSION:
            raise ValueError(f"header version {version}, we speak {cls.VERSION}")
        return sent_ms / 1000, payload[cls.HEADER.size :]


# A frame is a 4-byte big-endian length and that many bytes. A response frame
# starts with a status byte: OK and the handler's answer, or FAILED and why.
_LENGTH = struct.Struct(">I")
OK, FAILED = b"\x00", b"\x01"


async def write_frame(stream: INetStream, body: bytes) -> None:
    if len(body) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(f"a frame of {len(body)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    await stream.write(_LENGTH.pack(len(body)) + body)


async def read_frame(stream: INetStream) -> bytes:
    (length,) = _LENGTH.unpack(await _read_exactly(stream, _LENGTH.size))
    if length > MAX_FRAME_BYTES:
        raise PayloadTooLarge(f"the peer announced a {length}-byte frame, over the {MAX_FRAME_BYTES}-byte limit")
    return await _read_exactly(stream, length)


async def _read_exactly(stream: INetStream, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = await stream.read(missing)
        if not chunk:
            raise EOFError(f"the stream ended {missing} bytes short of a frame")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


async def reset_quietly(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001 - the stream is being thrown away
            pass


async def close_quietly(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        try:
            await stream.close()
        except Exception:  # noqa: BLE001 - the exchange is complete either way
            pass
