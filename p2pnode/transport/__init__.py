"""The node's libp2p transport: bytes in, bytes out (see `_transport`)."""

from p2pnode.transport._errors import (
    InvalidAddress,
    ListenFailed,
    NotRunning,
    PayloadTooLarge,
    PeerUnreachable,
    RequestRejected,
    TransportError,
)
from p2pnode.transport._framing import MAX_FRAME_BYTES, MAX_PUBLISH_BYTES
from p2pnode.transport._transport import (
    MAX_MESSAGE_AGE,
    RPC_PROTOCOL,
    InboundMessage,
    RequestHandler,
    Transport,
)
from p2pnode.transport.interface import PeerTransport

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_MESSAGE_AGE",
    "MAX_PUBLISH_BYTES",
    "RPC_PROTOCOL",
    "InboundMessage",
    "InvalidAddress",
    "ListenFailed",
    "NotRunning",
    "PayloadTooLarge",
    "PeerTransport",
    "PeerUnreachable",
    "RequestHandler",
    "RequestRejected",
    "Transport",
    "TransportError",
]
