"""Transports in memory: many real nodes (`Runtime`) in one trio loop, for tests.

`MemoryNetwork` is the wire: it knows which `MemoryTransport`s are running.
A publish reaches every other running transport subscribed to the topic; a
request is queued to the peer and answered there one at a time, in the order
each sender's requests were started (as `_channels` serves a stream). A peer
that is not running, or stops before answering, is `PeerUnreachable`, as a
reset stream is on libp2p. The same size limits apply as on libp2p, so what
passes here passes there. There is no libp2p host: IPFS (bitswap) does not
run over it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from p2pnode.transport._errors import NotRunning, PayloadTooLarge, PeerUnreachable, RequestRejected
from p2pnode.transport._framing import MAX_FRAME_BYTES, MAX_PUBLISH_BYTES
from p2pnode.transport._transport import INCOMING_CAPACITY, InboundMessage, RequestHandler

log = logging.getLogger("p2pnode.transport")

ADDRESS_PREFIX = "memory:"  # not a multiaddr (no leading "/"): the runtime never dials it


class MemoryNetwork:
    """The transports of one test, by peer id."""

    def __init__(self) -> None:
        self.running: dict[str, MemoryTransport] = {}

    def transport(self, peer_id: str, topics: list[str], *, request_timeout: float = 10.0) -> MemoryTransport:
        """A new transport on this network (it joins once it runs)."""
        return MemoryTransport(self, peer_id, topics, request_timeout=request_timeout)


@dataclass(eq=False)
class _Request:
    data: bytes
    done: trio.Event = field(default_factory=trio.Event)
    reply: bytes | None = None
    error: PeerUnreachable | None = None


class MemoryTransport:
    """One node's end of a `MemoryNetwork` (a `PeerTransport`)."""

    def __init__(self, network: MemoryNetwork, peer_id: str, topics: list[str], *, request_timeout: float = 10.0) -> None:
        self.network = network
        self.peer_id = peer_id
        self.topics = frozenset(topics)
        self._request_timeout = request_timeout
        self._incoming_send, self.incoming = trio.open_memory_channel[InboundMessage](INCOMING_CAPACITY)
        self._handler: RequestHandler | None = None
        self._handler_set = trio.Event()
        self._queues: dict[str, trio.MemorySendChannel[_Request]] = {}  # sender -> its requests to us
        self._unanswered: set[_Request] = set()
        self._nursery: trio.Nursery | None = None

    @property
    def listen_addrs(self) -> list[str]:
        return [ADDRESS_PREFIX + self.peer_id]

    @property
    def host(self) -> None:
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.peer_id in self.network.running:
            raise RuntimeError(f"peer {self.peer_id} already runs on this memory network")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.network.running[self.peer_id] = self
                task_status.started()
                await trio.sleep_forever()
        finally:
            await self.aclose()
            self._incoming_send.close()

    async def aclose(self) -> None:
        """Leave the network: requests to us fail from now on, those not yet answered too."""
        if self.network.running.get(self.peer_id) is self:
            del self.network.running[self.peer_id]
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        for queue in self._queues.values():
            queue.close()
        self._queues.clear()
        for request in list(self._unanswered):
            self._fail(request, PeerUnreachable(self.peer_id, "the peer stopped (stream reset)"))

    def on_request(self, handler: RequestHandler) -> None:
        self._handler = handler
        self._handler_set.set()

    def connected_peers(self) -> list[str]:
        return [peer for peer in self.network.running if peer != self.peer_id]

    async def connect(self, address: str) -> None:
        peer = address.removeprefix(ADDRESS_PREFIX)
        if peer not in self.network.running:
            raise PeerUnreachable(peer, "not running on this memory network")

    async def publish(self, topic: str, data: bytes) -> None:
        if len(data) > MAX_PUBLISH_BYTES:
            raise PayloadTooLarge(f"a {len(data)}-byte pubsub message is over the {MAX_PUBLISH_BYTES}-byte limit")
        if self.network.running.get(self.peer_id) is not self:
            raise NotRunning("this memory transport is not running")
        for peer, other in list(self.network.running.items()):
            if peer != self.peer_id and topic in other.topics:
                other._deliver(InboundMessage(topic, self.peer_id, data))

    def _deliver(self, inbound: InboundMessage) -> None:
        try:
            self._incoming_send.send_nowait(inbound)
        except trio.WouldBlock:
            log.warning("incoming channel of %s is full: dropped a message from %s", self.peer_id, inbound.sender)
        except trio.ClosedResourceError:
            pass

    async def request(
        self,
        peer_id: str,
        data: bytes,
        *,
        timeout: float | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> bytes:
        limit = self._request_timeout if timeout is None else timeout
        started = False

        def queued() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            if len(data) > MAX_FRAME_BYTES:
                raise PayloadTooLarge(f"a {len(data)}-byte request is over the {MAX_FRAME_BYTES}-byte limit")
            peer = self.network.running.get(peer_id)
            if peer is None:
                raise PeerUnreachable(peer_id, "not running on this memory network")
            request = peer._take(self.peer_id, data)
            queued()
            with trio.move_on_after(limit):
                await request.done.wait()
            if not request.done.is_set():
                raise PeerUnreachable(peer_id, f"no answer within {limit:g} s")
            if request.error is not None:
                raise request.error
            assert request.reply is not None
            return request.reply
        finally:
            queued()

    def _take(self, sender: str, data: bytes) -> _Request:
        """Queue a request from `sender`; its queue is served in order by one task."""
        request = _Request(data)
        queue = self._queues.get(sender)
        if queue is None:
            assert self._nursery is not None
            queue, receive = trio.open_memory_channel[_Request](float("inf"))
            self._queues[sender] = queue
            self._nursery.start_soon(self._serve, sender, receive)
        self._unanswered.add(request)
        queue.send_nowait(request)
        return request

    async def _serve(self, sender: str, requests: trio.MemoryReceiveChannel[_Request]) -> None:
        await self._handler_set.wait()  # requests may come before the node set its handler
        assert self._handler is not None
        async for request in requests:
            try:
                reply = await self._handler(sender, request.data)
                if not isinstance(reply, bytes):
                    raise TypeError(f"the request handler returned {type(reply).__name__}, not bytes")
            except Exception as error:  # as on libp2p: the handler's failure is the caller's answer
                log.warning("request from %s failed in its handler: %s", sender, error)
                self._fail(request, RequestRejected(self.peer_id, f"{type(error).__name__}: {error}"))
                continue
            request.reply = reply
            self._unanswered.discard(request)
            request.done.set()

    def _fail(self, request: _Request, error: PeerUnreachable) -> None:
        request.error = error
        self._unanswered.discard(request)
        request.done.set()
