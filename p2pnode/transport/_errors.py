"""What can go wrong, named for the caller."""

from __future__ import annotations


class TransportError(Exception):
    """Something the transport could not do."""


class NotRunning(TransportError):
    """The transport is used before `run()` has started it, or after it ended."""


class InvalidAddress(TransportError, ValueError):
    """A multiaddr that cannot be used."""


class ListenFailed(TransportError):
    """A listen address cannot be bound."""


class PayloadTooLarge(TransportError, ValueError):
    """A message or frame is over the size limit."""


class PeerUnreachable(TransportError):
    """The peer did not take our request: no connection, no answer in time,
    or the stream broke."""

    def __init__(self, peer_id: str, reason: str) -> None:
        super().__init__(f"peer {peer_id} is unreachable: {reason}")
        self.peer_id = peer_id
        self.reason = reason


class RequestRejected(PeerUnreachable):
    """The peer answered, but its handler failed on our request.

    A `PeerUnreachable` too, because for the caller both mean the same thing:
    the request was not taken, and retrying elsewhere is the remedy."""

    def __init__(self, peer_id: str, reason: str) -> None:
        TransportError.__init__(self, f"peer {peer_id} rejected the request: {reason}")
        self.peer_id = peer_id
        self.reason = reason
