"""The node's libp2p transport: bytes in, bytes out.

Theory of operation
-------------------
One `Transport` per node process owns one libp2p host with gossipsub on top.
It knows nothing of our protocol's messages: it moves opaque bytes, either
broadcast on a pubsub topic (`publish` / `incoming`) or sent to one peer as a
request on a stream that gets one response (`request` / `on_request`).

What it promises on top of libp2p (whose traps `_settings` lists):
- `publish` never lets libp2p drop a message on our side: it waits while any
  peer's send queue is nearly full (up to a bound, then says so in the log).
- `incoming` is drained from libp2p at once into a channel of 1024; if the
  node falls that far behind, drops are logged, never silent.
- Every pubsub payload carries a small header (version, send time): our own
  echoes, messages older than `MAX_MESSAGE_AGE`, and copies of one already
  delivered (same origin and seqno) never reach the node.
- A request is a frame on a long-lived channel to the peer (`_channels`: one
  stream per peer and direction, numbered requests, batching, back-pressure,
  reopened when it breaks), never a new negotiated stream. It raises
  `PeerUnreachable` for every way it can fail, `RequestRejected` (a kind of
  it) when the peer's handler failed.
- A handler's exception is logged and answered as a failure; a peer's broken
  stream is reset; neither reaches the host.
- A peer that sends us frames is alive; a quiet one is pinged, and its
  connection closed when it neither answers nor speaks (`_watch_liveness`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import trio
from libp2p.abc import IHost, INetStream, ISubscriptionAPI
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.network.health.ping_probe import ping_connection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import OutBoundQueueSize
from libp2p.tools.anyio_service.context import background_trio_service
from multiaddr import Multiaddr

from p2pnode.transport._addresses import check_can_listen, dialable, listen_address, peer_address
from p2pnode.transport._channels import DEFAULT_WINDOW, Channel, serve_channel
from p2pnode.transport._errors import ListenFailed, NotRunning, PayloadTooLarge, PeerUnreachable
from p2pnode.transport._framing import CLOSE_TIMEOUT, MAX_FRAME_BYTES, MAX_PUBLISH_BYTES, Envelope
from p2pnode.transport._settings import (
    LIVENESS_INTERVAL,
    PING_TIMEOUT,
    QUIET_BEFORE_PING,
    build_gossipsub,
    build_host,
    build_pubsub,
)

log = logging.getLogger("p2pnode.transport")

RPC_PROTOCOL = TProtocol("/p2pnode/rpc/2.0.0")
"""Our request channels: long-lived streams of framed, numbered requests (`_channels`)."""

MAX_MESSAGE_AGE = 120.0
"""Pubsub messages sent longer ago than this (by the sender's clock) are
dropped: they are replays from a peer's cache (trap 9)."""

INCOMING_CAPACITY = 1024
BOOTSTRAP_REDIAL_INTERVAL = 5.0
SEND_ROOM_WAIT = 2.0

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]


@dataclass(frozen=True)
class InboundMessage:
    topic: str
    sender: str
    data: bytes
    via: Literal["pubsub"] = "pubsub"


def _known_addresses(host: IHost, peer: ID) -> list[Multiaddr]:
    try:
        return host.get_peerstore().addrs(peer)
    except PeerStoreError:  # raised for a peer it has never heard of
        return []


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Transport:
    """One libp2p host with gossipsub and a request/response protocol."""

    def __init__(
        self,
        key_pair: KeyPair,
        *,
        listen: list[str] | None = None,
        bootstrap: list[str] | None = None,
        topics: list[str],
        mdns: bool = False,
        request_timeout: float = 10.0,
        network_key: str | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._key_pair = key_pair
        self.peer_id: str = ID.from_pubkey(key_pair.public_key).to_base58()
        self._listen = [listen_address(a) for a in (listen or ["/ip4/127.0.0.1/tcp/0"])]
        self._bootstrap = [peer_address(a) for a in (bootstrap or [])]
        self._topics = list(topics)
        self._mdns = mdns
        self._network_key = network_key
        self._request_timeout = request_timeout
        self._incoming_send, self.incoming = trio.open_memory_channel[InboundMessage](INCOMING_CAPACITY)
        self._handler: RequestHandler | None = None
        self._handler_set = trio.Event()
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._running = False
        self._publish_lock = trio.Lock()
        self._recent: dict[bytes, float] = {}  # (origin + seqno) -> when we may forget it
        self._overflowed = 0
        self._unreached: set[ID] = set()  # bootstrap peers we already said we could not reach
        self._window = window
        self._channels: dict[str, Channel] = {}  # peer -> our open channel to it
        self._opening: dict[str, trio.Lock] = {}  # peer -> held while a channel to it opens
        self._nursery: trio.Nursery | None = None
        self._heard: dict[str, float] = {}  # peer -> when it last sent us a frame or answered a ping
        self._probing: set[str] = set()  # peers being pinged now

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, join the topics, dial the bootstrap peers; run until cancelled."""
        for address in self._listen:
            check_can_listen(address)
        host = build_host(self._key_pair, self._listen, mdns=self._mdns, psk=self._network_key)
        router = build_gossipsub()
        pubsub = build_pubsub(host, router)
        host.set_stream_handler(RPC_PROTOCOL, self._serve_stream)
        self._host, self._pubsub = host, pubsub
        stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(self._run_libp2p, host, router, pubsub, stop)
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    stop.set()
        finally:
            self._running = False
            self._incoming_send.close()

    async def _run_libp2p(
        self,
        host: IHost,
        router: GossipSub,
        pubsub: Pubsub,
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Trap 6: leaving host.run() leaves connections open, and once our
        # cancellation has reached libp2p's own tasks, host.close() can no
        # longer close them (peers then wait for a failed ping). So libp2p runs
        # shielded, and we close the host first, then tear the rest down.
        with trio.CancelScope(shield=True) as scope:
            # Trap 7: pubsub must run before the host accepts connections, or
            # an early inbound pubsub stream crashes the host.
            async with background_trio_service(pubsub), background_trio_service(router):
                async with host.run(listen_addrs=self._listen), trio.open_nursery() as nursery:
                    await self._start_serving(host, pubsub, nursery)
                    self._running = True
                    log.info("transport %s listening on %s", self.peer_id, self.listen_addrs)
                    task_status.started()
                    await stop.wait()
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT  # shutdown never hangs
                    await self.aclose()
                    nursery.cancel_scope.cancel()

    async def _start_serving(self, host: IHost, pubsub: Pubsub, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        if not host.get_transport_addrs():  # lost a race for the port with another process
            raise ListenFailed(f"could not listen on any of {[str(a) for a in self._listen]}")
        await pubsub.wait_until_ready()
        for topic in self._topics:
            subscription = await pubsub.subscribe(topic)
            nursery.start_soon(self._read_topic, topic, subscription)
        if self._mdns:
            self._follow_mdns(nursery)
        await self._dial_all(self._bootstrap)
        nursery.start_soon(self._keep_bootstrap_peers)
        nursery.start_soon(self._watch_liveness, host, nursery)

    async def aclose(self) -> None:
        """Close every connection now (idempotent; run() does it on its way out)."""
        self._running = False
        if self._host is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await self._host.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    log.debug("error closing the libp2p host", exc_info=True)
        if self._pubsub is not None:
            # Trap 13: Pubsub's seen-cache sweeper thread is never stopped by libp2p.
            self._pubsub.seen_messages.stop()

    # ------------------------------------------------------------ what the node reads

    @property
    def listen_addrs(self) -> list[str]:
        """Our full multiaddrs (with /p2p/ID), real ports once running."""
        if self._host is None:
            return []
        bound = self._host.get_transport_addrs()
        return [f"{address}/p2p/{self.peer_id}" for each in bound for address in dialable(each)]

    def connected_peers(self) -> list[str]:
        if self._host is None:
            return []
        connections = self._host.get_network().connections
        return [peer.to_base58() for peer, conns in list(connections.items()) if conns]

    def subscribers(self, topic: str) -> list[str]:
        """Connected peers known to subscribe to `topic`: who hears a publish now."""
        if self._pubsub is None:
            return []
        return [peer.to_base58() for peer in self._pubsub.peer_topics.get(topic, ())]

    # ------------------------------------------------------------ pubsub

    async def publish(self, topic: str, data: bytes) -> None:
        """Broadcast `data` on `topic`; waits while a peer's send queue is nearly full."""
        if len(data) > MAX_PUBLISH_BYTES:
            raise PayloadTooLarge(
                f"a {len(data)}-byte pubsub message is over the {MAX_PUBLISH_BYTES}-byte limit; "
                "send large data over a request stream instead"
            )
        pubsub = self._require_pubsub()
        async with self._publish_lock:
            await self._wait_for_send_room(pubsub)
            await pubsub.publish(topic, Envelope.wrap(data, time.time()))

    async def _wait_for_send_room(self, pubsub: Pubsub) -> None:
        """Trap 2: a full per-peer queue (32 RPCs) drops what comes next without
        a word, so we publish only when every queue has room for one more burst."""
        high_water = OutBoundQueueSize * 3 // 4
        with trio.move_on_after(SEND_ROOM_WAIT):
            while True:
                full = [peer for peer, queue in list(pubsub.peer_queues.items()) if len(queue) >= high_water]
                if not full:
                    return
                await trio.sleep(0.002)
        log.warning("pubsub send queues to %s stayed full for %.0f s; publishing anyway", full, SEND_ROOM_WAIT)

    async def _read_topic(self, topic: str, subscription: ISubscriptionAPI) -> None:
        """Trap 2: libp2p's subscription channel holds 32 messages and drops the
        rest, so we drain it at once into our larger channel."""
        while True:
            try:
                message = await subscription.get()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return  # unsubscribed: pubsub is shutting down
            inbound = self._accept(topic, message)
            if inbound is None:
                continue
            try:
                self._incoming_send.send_nowait(inbound)
            except trio.WouldBlock:
                self._overflowed += 1
                log.warning(
                    "incoming pubsub channel is full (%d messages): dropped one from %s on %s "
                    "(%d dropped so far); the node is not keeping up",
                    INCOMING_CAPACITY,
                    inbound.sender,
                    topic,
                    self._overflowed,
                )
            except trio.ClosedResourceError:
                return

    def _accept(self, topic: str, message: rpc_pb2.Message) -> InboundMessage | None:
        """Our own echoes, stale replays, duplicates and foreign payloads stop here."""
        # The origin, not the forwarder: with strict signing (`_settings`) pubsub
        # dropped the message unless `from_id`'s own key signed it.
        sender = ID(message.from_id).to_base58()
        if sender == self.peer_id:
            return None  # pubsub hands us back what we published
        try:
            sent_at, data = Envelope.unwrap(message.data)
        except ValueError as error:
            log.warning("dropped a pubsub message from %s on %s: %s", sender, topic, error)
            return None
        now = time.time()
        if abs(now - sent_at) > MAX_MESSAGE_AGE:
            log.debug("dropped a pubsub message from %s sent %.0f s ago", sender, now - sent_at)
            return None
        key = bytes(message.from_id) + bytes(message.seqno)
        self._forget_old(now)
        if key in self._recent:
            return None
        # Kept long enough that a copy can no longer pass the age check.
        self._recent[key] = now + 2 * MAX_MESSAGE_AGE
        return InboundMessage(topic, sender, data)

    def _forget_old(self, now: float) -> None:
        for key, expiry in list(self._recent.items()):  # oldest first
            if expiry > now:
                break
            del self._recent[key]

    # ------------------------------------------------------------ requests

    def on_request(self, handler: RequestHandler) -> None:
        """Answer every inbound request with `handler(sender, request) -> response`."""
        self._handler = handler
        self._handler_set.set()

    async def request(
        self,
        peer_id: str,
        data: bytes,
        *,
        timeout: float | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> bytes:
        """Send one request on our long-lived channel to the peer and return
        its answer. With `nursery.start`, the caller resumes as soon as the
        request is in line to leave (or has failed), so requests started one
        after another leave in that order."""
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
            host = self._require_host()
            with trio.fail_after(limit):
                channel = await self._channel(host, peer_id)
                return await channel.request(data, queued)
        except trio.TooSlowError:
            raise PeerUnreachable(peer_id, f"no answer within {limit:g} s") from None
        finally:
            queued()

    async def _channel(self, host: IHost, peer_id: str) -> Channel:
        """Our open channel to the peer, opened now if it has none (or it broke)."""
        channel = self._channels.get(peer_id)
        if channel is not None and channel.broken is None:
            return channel
        lock = self._opening.setdefault(peer_id, trio.Lock())
        async with lock:
            channel = self._channels.get(peer_id)
            if channel is not None and channel.broken is None:
                return channel  # another request opened it while we waited
            peer = self._known_peer(host, peer_id)
            try:
                stream = await host.new_stream(peer, [RPC_PROTOCOL])
            except Exception as error:  # libp2p raises a zoo of types; all mean the same here
                log.debug("opening a channel to %s failed", peer_id, exc_info=True)
                raise PeerUnreachable(peer_id, _describe(error)) from error
            channel = self._channels[peer_id] = Channel(peer_id, stream, self._window, self._hearer(peer_id))
            assert self._nursery is not None
            self._nursery.start_soon(self._run_channel, channel)
            return channel

    async def _run_channel(self, channel: Channel) -> None:
        try:
            await channel.run()
        finally:
            if self._channels.get(channel.peer_id) is channel:
                del self._channels[channel.peer_id]
            log.debug("channel to %s closed: %s", channel.peer_id, channel.broken)

    def _known_peer(self, host: IHost, peer_id: str) -> ID:
        try:
            peer = ID.from_base58(peer_id)
        except Exception:  # noqa: BLE001 - base58 raises ValueError or worse
            raise PeerUnreachable(peer_id, "not a valid peer id") from None
        if peer not in host.get_network().connections and not _known_addresses(host, peer):
            raise PeerUnreachable(
                peer_id, "not connected and no known address; connect() to one of its multiaddrs first"
            )
        return peer

    async def _serve_stream(self, stream: INetStream) -> None:
        """A peer's channel to us: answered until it closes (requests may
        arrive before the node has set its handler, so they wait for it)."""
        sender = stream.muxed_conn.peer_id.to_base58()  # proven by the connection's Noise handshake
        await self._handler_set.wait()
        assert self._handler is not None
        await serve_channel(stream, sender, self._handler, self._hearer(sender))

    # ------------------------------------------------------------ liveness

    def _hearer(self, peer_id: str) -> Callable[[], None]:
        heard = self._heard

        def hear() -> None:
            heard[peer_id] = trio.current_time()

        return hear

    async def _watch_liveness(self, host: IHost, nursery: trio.Nursery) -> None:
        """Trap 10: a frozen peer's socket stays open. A peer that sent us a
        frame lately is alive; one gone quiet is pinged, and if it neither
        answers nor says anything else meanwhile, its connection is closed
        (its channels fail at once, and it is redialled when it is back).
        A busy peer's slow ping is no verdict while it keeps talking."""
        while True:
            await trio.sleep(LIVENESS_INTERVAL)
            now = trio.current_time()
            for peer, conns in list(host.get_network().connections.items()):
                key = peer.to_base58()
                if not conns or key in self._probing or now - self._heard.get(key, -math.inf) < QUIET_BEFORE_PING:
                    continue
                self._probing.add(key)
                nursery.start_soon(self._probe, key, list(conns) if isinstance(conns, list) else [conns])

    async def _probe(self, peer_id: str, conns: list[Any]) -> None:
        try:
            for conn in conns:
                asked = trio.current_time()
                try:
                    answered = (await ping_connection(conn, ping_timeout=PING_TIMEOUT)).success
                except Exception:  # noqa: BLE001 - a failed ping is the answer
                    answered = False
                if answered:
                    self._heard[peer_id] = trio.current_time()
                elif self._heard.get(peer_id, -math.inf) < asked:
                    log.info("closing the connection to %s: quiet, and no answer to a ping within %g s",
                             peer_id, PING_TIMEOUT)
                    try:
                        await conn.close()
                    except Exception:  # noqa: BLE001 - closing is best effort
                        log.debug("error closing the connection to %s", peer_id, exc_info=True)
        finally:
            self._probing.discard(peer_id)

    # ------------------------------------------------------------ connections

    async def connect(self, address: str) -> None:
        """Dial a peer by its full multiaddr (…/p2p/ID)."""
        info = peer_address(address)
        host = self._require_host()
        try:
            with trio.fail_after(self._request_timeout):
                await host.connect(info)
        except trio.TooSlowError:
            reason = f"no connection within {self._request_timeout:g} s"
            raise PeerUnreachable(info.peer_id.to_base58(), reason) from None
        except Exception as error:  # noqa: BLE001 - see request()
            raise PeerUnreachable(info.peer_id.to_base58(), _describe(error)) from error

    async def _dial_all(self, peers: list[PeerInfo]) -> None:
        async with trio.open_nursery() as nursery:
            for info in peers:
                nursery.start_soon(self._dial_quietly, info)

    async def _dial_quietly(self, info: PeerInfo) -> None:
        host = self._host
        assert host is not None
        if info.peer_id == host.get_id() or info.peer_id in host.get_network().connections:
            return
        try:
            with trio.fail_after(self._request_timeout):
                await host.connect(info)
        except Exception as error:  # noqa: BLE001 - best effort, retried by the caller's loop
            first_time = info.peer_id not in self._unreached
            self._unreached.add(info.peer_id)
            level = logging.INFO if first_time else logging.DEBUG
            log.log(level, "could not reach %s: %s (will retry)", info.peer_id, _describe(error))
        else:
            self._unreached.discard(info.peer_id)

    async def _keep_bootstrap_peers(self) -> None:
        """Trap 11: libp2p redials bootstrap peers only if told, and gives up
        after three failures; we redial lost ones for as long as we run."""
        while True:
            await trio.sleep(BOOTSTRAP_REDIAL_INTERVAL)
            await self._dial_all(self._bootstrap)

    def _follow_mdns(self, nursery: trio.Nursery) -> None:
        """Dial what mDNS finds: libp2p's listener only fills the peerstore, from
        zeroconf's thread, through a handler list shared by the whole process."""
        token = trio.lowlevel.current_trio_token()

        def dial_soon(info: PeerInfo) -> None:  # runs in trio's thread
            try:
                nursery.start_soon(self._dial_quietly, info)
            except RuntimeError:  # the nursery is closing: we are shutting down
                pass

        def discovered(info: PeerInfo) -> None:  # runs in zeroconf's thread
            try:
                token.run_sync_soon(dial_soon, info)
            except trio.RunFinishedError:
                pass

        peerDiscovery.register_peer_discovered_handler(discovered)
        nursery.start_soon(self._unregister_on_exit, discovered)

    @staticmethod
    async def _unregister_on_exit(handler: Callable[[PeerInfo], None]) -> None:
        try:
            await trio.sleep_forever()
        finally:
            peerDiscovery.unregister_peer_discovered_handler(handler)

    # ------------------------------------------------------------ guards

    @property
    def host(self) -> IHost:
        """The running libp2p host, for protocols of their own (bitswap)."""
        return self._require_host()

    def _require_host(self) -> IHost:
        if not self._running or self._host is None:
            raise NotRunning("the transport is not running: start Transport.run() first")
        return self._host

    def _require_pubsub(self) -> Pubsub:
        self._require_host()
        assert self._pubsub is not None
        return self._pubsub
