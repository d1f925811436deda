"""What the node (`p2pnode.runtime.Runtime`) needs of a transport, and no more.

Two implement it: `Transport` (libp2p, one per process) and `MemoryTransport`
(many nodes in one trio loop, for tests). Both move opaque bytes; neither
knows the protocol's messages.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from p2pnode.transport._transport import InboundMessage, RequestHandler


class PeerTransport(Protocol):
    """Bytes between peers: a broadcast on a topic, or a request to one peer
    that either returns the peer's answer (delivered) or raises
    `PeerUnreachable` (not delivered, or not known to be)."""

    peer_id: str
    incoming: trio.MemoryReceiveChannel[InboundMessage]  # what others published on our topics

    @property
    def listen_addrs(self) -> list[str]:
        """Where peers reach us (what the node gossips as its addresses)."""

    @property
    def host(self) -> Any:
        """The libp2p host, for services that speak their own libp2p protocols
        (IPFS bitswap); None on a transport without one."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started()` once requests and publishes work."""

    async def aclose(self) -> None:
        """Drop every connection now (idempotent)."""

    def on_request(self, handler: RequestHandler) -> None:
        """Answer every inbound request with `handler(sender, request) -> response`."""

    async def publish(self, topic: str, data: bytes) -> None:
        """Broadcast on `topic` to every peer that subscribes to it (best effort)."""

    async def request(
        self,
        peer_id: str,
        data: bytes,
        *,
        timeout: float | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> bytes:
        """The peer's answer, or `PeerUnreachable`. Requests to one peer are
        handled there in the order they were started: with `nursery.start`,
        the caller resumes once its request is in line to leave."""

    def connected_peers(self) -> list[str]:
        """Peers we can send to without dialling first."""

    async def connect(self, address: str) -> None:
        """Reach a peer at one of the addresses it gossips, or raise `PeerUnreachable`."""
