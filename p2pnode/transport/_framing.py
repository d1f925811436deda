"""Bytes on the wire that are ours: the pubsub header and the size limits
(stream frames are `_channels`')."""

from __future__ import annotations

import struct

import trio
from libp2p.abc import INetStream
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize

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
