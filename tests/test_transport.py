"""The libp2p transport with real peers on loopback: some in this process,
some as separate OS processes (tests/transport_peer.py)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2pnode.identity import KEY_FILE, IdentityError, load_or_create_identity
from p2pnode.transport import (
    MAX_FRAME_BYTES,
    MAX_MESSAGE_AGE,
    MAX_PUBLISH_BYTES,
    RPC_PROTOCOL,
    InvalidAddress,
    ListenFailed,
    NotRunning,
    PayloadTooLarge,
    PeerUnreachable,
    RequestRejected,
    Transport,
)
from p2pnode.transport._channels import HEADER, REQUEST
from p2pnode.transport._framing import Envelope
from protocols import wire

TOPIC = "p2pnode/test"
PEER_SCRIPT = Path(__file__).with_name("transport_peer.py")
PATIENCE = 15.0  # generous: a bound on a hang, not a performance claim


# ---------------------------------------------------------------- helpers


def peer_id_of(key_pair: Any) -> str:
    """The base58 peer ID other nodes know a key pair by."""
    return ID.from_pubkey(key_pair.public_key).to_base58()


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[Transport]:
    transport = Transport(create_new_key_pair(), topics=[TOPIC], **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        yield transport
        nursery.cancel_scope.cancel()


class PeerProcess:
    """A transport_peer.py process and the events it has printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._pending = b""
        self.peer_id = ""
        self.addrs: list[str] = []

    async def send(self, **command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def wait_for(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event (seen before or arriving now) that `wanted` accepts; consumed."""
        with trio.fail_after(PATIENCE):
            while True:
                for event in self.events:
                    if wanted(event):
                        self.events.remove(event)
                        return event
                await self._read_events()

    async def _read_events(self) -> None:
        assert self.process.stdout is not None
        chunk = await self.process.stdout.receive_some()
        if not chunk:
            raise EOFError(f"peer process exited with {self.process.returncode}")
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        self.events.extend(json.loads(line) for line in lines if line.strip())

    async def subscribers(self) -> list[str]:
        await self.send(op="subscribers", topic=TOPIC)
        return (await self.wait_for(lambda e: e["event"] == "subscribers"))["peers"]


@asynccontextmanager
async def peer_process(data_dir: Path, bootstrap: list[str]) -> AsyncIterator[PeerProcess]:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(PEER_SCRIPT), str(data_dir), TOPIC, *bootstrap],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    peer = PeerProcess(process)
    try:
        ready = await peer.wait_for(lambda e: e["event"] == "ready")
        peer.peer_id, peer.addrs = ready["peer_id"], ready["addrs"]
        yield peer
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


async def eventually(condition: Callable[[], Any], what: str) -> None:
    with trio.move_on_after(PATIENCE):
        while not await _call(condition):
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting until {what}")


async def _call(condition: Callable[[], Any]) -> Any:
    result = condition()
    return await result if hasattr(result, "__await__") else result


async def next_message(transport: Transport) -> Any:
    with trio.fail_after(PATIENCE):
        return await transport.incoming.receive()


async def echo_with_name(sender: str, data: bytes) -> bytes:
    return b"in-process got " + data


# ---------------------------------------------------------------- identity


def test_identity_is_created_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    again = load_or_create_identity(tmp_path)
    assert peer_id_of(first) == peer_id_of(again)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert peer_id_of(load_or_create_identity(tmp_path / "other")) != peer_id_of(first)


def test_a_corrupt_identity_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="corrupt"):
        load_or_create_identity(tmp_path)


# ---------------------------------------------------------------- bad input, no network needed


def test_bad_addresses_are_refused_up_front() -> None:
    key = create_new_key_pair()
    with pytest.raises(InvalidAddress, match="not a peer address"):
        Transport(key, topics=[TOPIC], bootstrap=["/ip4/127.0.0.1/tcp/4001"])  # no /p2p/ID
    with pytest.raises(InvalidAddress, match="not a multiaddr"):
        Transport(key, topics=[TOPIC], listen=["localhost:4001"])


async def test_using_a_transport_that_is_not_running_says_so() -> None:
    transport = Transport(create_new_key_pair(), topics=[TOPIC])
    with pytest.raises(NotRunning, match="run"):
        await transport.publish(TOPIC, b"x")
    with pytest.raises(NotRunning):
        await transport.request(transport.peer_id, b"x")
    assert transport.connected_peers() == [] and transport.listen_addrs == []


def _pubsub_message(origin: Any, seqno: int, payload: bytes) -> rpc_pb2.Message:
    return rpc_pb2.Message(
        from_id=ID.from_pubkey(origin.public_key).to_bytes(),
        seqno=seqno.to_bytes(8, "big"),
        data=payload,
        topicIDs=[TOPIC],
    )


def test_stale_duplicate_foreign_and_own_messages_are_dropped() -> None:
    me, other = create_new_key_pair(), create_new_key_pair()
    transport = Transport(me, topics=[TOPIC])
    now = time.time()
    fresh = _pubsub_message(other, 1, Envelope.wrap(b"hello", now))
    accepted = transport._accept(TOPIC, fresh)
    assert accepted is not None and accepted.data == b"hello" and accepted.sender == peer_id_of(other)
    assert transport._accept(TOPIC, fresh) is None  # the same (origin, seqno) again
    stale = _pubsub_message(other, 2, Envelope.wrap(b"old", now - MAX_MESSAGE_AGE - 5))
    assert transport._accept(TOPIC, stale) is None  # a replay from someone's cache
    assert transport._accept(TOPIC, _pubsub_message(other, 3, b"no header")) is None
    assert transport._accept(TOPIC, _pubsub_message(me, 4, Envelope.wrap(b"mine", now))) is None


# ---------------------------------------------------------------- in this process


async def test_oversized_payloads_are_refused_with_a_clear_error() -> None:
    async with running() as a:
        with pytest.raises(PayloadTooLarge, match="limit"):
            await a.publish(TOPIC, b"x" * (MAX_PUBLISH_BYTES + 1))
        with pytest.raises(PayloadTooLarge, match="limit"):
            await a.request(a.peer_id, b"x" * (MAX_FRAME_BYTES + 1))


async def test_the_largest_message_the_wire_allows_crosses_a_stream() -> None:
    assert wire.MAX_MESSAGE_BYTES <= MAX_FRAME_BYTES  # a job's whole record must fit one request
    async with running() as a, running(bootstrap=a.listen_addrs) as b:
        b.on_request(echo_with_name)
        await eventually(lambda: b.peer_id in a.connected_peers(), "a is connected to b")
        big = bytes(wire.MAX_MESSAGE_BYTES - 100)
        with trio.fail_after(PATIENCE):
            assert await a.request(b.peer_id, big) == b"in-process got " + big


async def test_a_taken_port_is_refused_instead_of_shared() -> None:
    # libp2p listens with SO_REUSEPORT: without our check both nodes would start.
    async with running() as a:
        port = a.listen_addrs[0].split("/tcp/")[1].split("/")[0]
        second = Transport(create_new_key_pair(), topics=[TOPIC], listen=[f"/ip4/127.0.0.1/tcp/{port}"])
        with pytest.raises(ListenFailed, match="cannot listen on .* another node using this port"):
            await second.run()


async def test_a_hostile_frame_closes_only_its_stream_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    async with running() as a, running(bootstrap=a.listen_addrs) as b:
        a.on_request(echo_with_name)
        b.on_request(echo_with_name)
        await eventually(lambda: b.peer_id in a.connected_peers(), "a is connected to b")
        assert await a.request(b.peer_id, b"before") == b"in-process got before"  # a's channel to b is open
        assert a._host is not None and b._host is not None  # raw streams, to send what our framing never would
        for hostile in (HEADER.pack(MAX_FRAME_BYTES + 1, REQUEST, 1), HEADER.pack(3, 9, 1) + b"abc"):
            stream = await a._host.new_stream(b._host.get_id(), [RPC_PROTOCOL])
            await stream.write(hostile)
            with trio.fail_after(PATIENCE), pytest.raises(Exception):
                await stream.read(1)  # reset by b
        assert "over the" in caplog.text and "unknown kind 9" in caplog.text
        # The connection and the channels on it live on, both ways.
        assert await a.request(b.peer_id, b"still there?") == b"in-process got still there?"
        assert await b.request(a.peer_id, b"and you?") == b"in-process got and you?"
        assert b.peer_id in a.connected_peers()


async def test_requests_share_one_long_lived_stream_and_a_burst_is_answered_whole() -> None:
    async with running() as a, running(bootstrap=a.listen_addrs) as b:
        b.on_request(echo_with_name)
        await eventually(lambda: b.peer_id in a.connected_peers(), "a is connected to b")
        answers: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            answers[i] = await a.request(b.peer_id, b"%d" % i)

        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(ask, i)
        assert answers == {i: b"in-process got %d" % i for i in range(300)}
        assert list(a._channels) == [b.peer_id]
        (connection,) = a._host.get_network().connections[ID.from_base58(b.peer_id)]  # type: ignore[union-attr]
        ours = [s for s in connection.get_streams() if s.get_protocol() == RPC_PROTOCOL]
        assert len(ours) == 1  # one request stream from a to b, not one per request


async def test_a_slow_peer_pushes_back_on_its_callers_instead_of_queueing_without_bound() -> None:
    window = 4
    release = trio.Event()
    running_now, most = 0, 0

    async def slow(sender: str, data: bytes) -> bytes:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        await release.wait()
        running_now -= 1
        return data

    async with running(window=window) as a, running(bootstrap=a.listen_addrs) as b:
        b.on_request(slow)
        await eventually(lambda: b.peer_id in a.connected_peers(), "a is connected to b")
        done: list[bytes] = []
        queued = 0

        async def ask(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            done.append(await a.request(b.peer_id, b"%d" % i, task_status=task_status))

        async with trio.open_nursery() as nursery:
            for i in range(window):
                await nursery.start(ask, i)  # each returns once its request is in line to leave
                queued += 1
            for i in range(window, window + 6):
                nursery.start_soon(ask, i)  # these wait for room in the window
            await eventually(lambda: running_now == 1, "b runs the first request")
            channel = a._channels[b.peer_id]
            await eventually(lambda: channel.in_flight() == window, "the window is full")
            assert channel.in_flight() == window and queued == window  # the other six wait at a, not in a queue
            release.set()
        assert sorted(done) == sorted(b"%d" % i for i in range(window + 6))
        assert most == 1  # b answers one request of a stream at a time, in order


async def test_a_request_to_an_unknown_peer_fails_at_once() -> None:
    async with running() as a:
        stranger = peer_id_of(create_new_key_pair())
        with pytest.raises(PeerUnreachable, match="no known address"):
            await a.request(stranger, b"hello")
        with pytest.raises(PeerUnreachable, match="not a valid peer id"):
            await a.request("0OIl", b"hello")


async def test_a_burst_of_publishes_arrives_whole() -> None:
    # libp2p drops what overflows a peer's 32-RPC send queue; publish() must pace.
    async with running() as a, running(bootstrap=a.listen_addrs) as b:
        await eventually(lambda: b.peer_id in a.subscribers(TOPIC), "a knows b subscribes")
        for i in range(300):
            await a.publish(TOPIC, b"%d" % i)
        received = {(await next_message(b)).data for _ in range(300)}
        assert received == {b"%d" % i for i in range(300)}


async def test_mdns_finds_a_peer_without_bootstrap_addresses() -> None:
    async with running(mdns=True) as a, running(mdns=True) as b:
        await eventually(lambda: b.peer_id in a.connected_peers(), "mDNS brings a and b together")


# ---------------------------------------------------------------- with other OS processes


async def test_two_peers_exchange_pubsub_messages_both_ways(tmp_path: Path) -> None:
    async with running() as a, peer_process(tmp_path / "p", a.listen_addrs) as p:
        await eventually(lambda: p.peer_id in a.subscribers(TOPIC), "a knows p subscribes")
        await eventually(lambda: _has(p.subscribers(), a.peer_id), "p knows a subscribes")
        await a.publish(TOPIC, b"from a")
        got = await p.wait_for(lambda e: e["event"] == "message")
        assert got == {"event": "message", "topic": TOPIC, "sender": a.peer_id, "data": "from a"}
        await p.send(op="publish", topic=TOPIC, data="from p")
        message = await next_message(a)
        assert (message.topic, message.sender, message.data) == (TOPIC, p.peer_id, b"from p")
        with pytest.raises(trio.WouldBlock):
            a.incoming.receive_nowait()  # a's own message never came back to it


async def _has(peers: Any, peer_id: str) -> bool:
    return peer_id in await peers


async def test_a_message_crosses_a_line_of_three_peers_through_gossip(tmp_path: Path) -> None:
    async with (
        running() as a,
        peer_process(tmp_path / "b", a.listen_addrs) as b,
        peer_process(tmp_path / "c", b.addrs) as c,
    ):
        assert c.peer_id not in a.connected_peers()
        await eventually(lambda: b.peer_id in a.subscribers(TOPIC), "a knows b subscribes")
        await eventually(lambda: _has(b.subscribers(), c.peer_id), "b knows c subscribes")
        # Until b has grafted c into its mesh, b may not forward: publish until c hears one.
        with trio.fail_after(PATIENCE):
            while not any(e["event"] == "message" for e in c.events):
                await a.publish(TOPIC, b"hop")
                with trio.move_on_after(0.5):
                    await c._read_events()
        got = await c.wait_for(lambda e: e["event"] == "message")
        assert (got["sender"], got["data"]) == (a.peer_id, "hop")
        assert c.peer_id not in a.connected_peers()  # it came through b


async def test_requests_both_ways_and_a_failing_handler_leaves_the_host_up(tmp_path: Path) -> None:
    async with running() as a, peer_process(tmp_path / "p", a.listen_addrs) as p:
        a.on_request(echo_with_name)
        # p has dialled a; a registers the inbound connection a moment later.
        await eventually(lambda: p.peer_id in a.connected_peers(), "a is connected to p")
        assert await a.request(p.peer_id, b"hi") == b"echo:hi"
        with pytest.raises(RequestRejected, match="ValueError: asked to fail"):
            await a.request(p.peer_id, b"fail, please")
        assert await a.request(p.peer_id, b"again") == b"echo:again"
        await p.send(op="request", peer=a.peer_id, data="from p")
        got = await p.wait_for(lambda e: e["event"] in ("reply", "error"))
        assert got == {"event": "reply", "data": "in-process got from p"}


async def test_a_killed_peer_is_unreachable_and_leaves_connected_peers(tmp_path: Path) -> None:
    async with running() as a, peer_process(tmp_path / "p", a.listen_addrs) as p:
        await eventually(lambda: p.peer_id in a.connected_peers(), "a is connected to p")
        p.process.kill()  # SIGKILL: no goodbye
        await p.process.wait()
        with trio.fail_after(PATIENCE), pytest.raises(PeerUnreachable):
            await a.request(p.peer_id, b"are you there?", timeout=3)
        await eventually(lambda: p.peer_id not in a.connected_peers(), "p has left a's peers")


async def test_a_frozen_peer_is_dropped_by_the_health_check(tmp_path: Path) -> None:
    async with running() as a, peer_process(tmp_path / "p", a.listen_addrs) as p:
        await eventually(lambda: p.peer_id in a.connected_peers(), "a is connected to p")
        os.kill(p.process.pid, signal.SIGSTOP)  # the socket stays open; only pings notice
        try:
            await eventually(lambda: p.peer_id not in a.connected_peers(), "a drops the frozen p")
        finally:
            os.kill(p.process.pid, signal.SIGCONT)


async def test_a_restarted_peer_keeps_its_id_and_its_new_messages_are_not_taken_as_seen(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "p"
    async with running() as a:
        async with peer_process(data_dir, a.listen_addrs) as p:
            await eventually(lambda: p.peer_id in a.subscribers(TOPIC), "a knows p subscribes")
            await eventually(lambda: _has(p.subscribers(), a.peer_id), "p knows a subscribes")
            # A burst: without pacing some would be lost, and with seqnos counted
            # from int(time.time()) a restart within 30 s would reuse them.
            for i in range(30):
                await p.send(op="publish", topic=TOPIC, data=f"before {i}")
            received = [(await next_message(a)).data for _ in range(30)]
            assert sorted(received) == sorted(f"before {i}".encode() for i in range(30))
            first_id = p.peer_id
            p.process.kill()
        async with peer_process(data_dir, a.listen_addrs) as again:
            assert again.peer_id == first_id
            await eventually(lambda: _has(again.subscribers(), a.peer_id), "the restarted p knows a subscribes")
            await again.send(op="publish", topic=TOPIC, data="after restart")
            message = await next_message(a)
            assert (message.sender, message.data) == (first_id, b"after restart")


async def test_requests_reach_a_restarted_peer_on_a_new_channel(tmp_path: Path) -> None:
    data_dir = tmp_path / "p"
    async with running() as a:
        async with peer_process(data_dir, a.listen_addrs) as p:
            await eventually(lambda: p.peer_id in a.connected_peers(), "a is connected to p")
            assert await a.request(p.peer_id, b"one") == b"echo:one"
            first_channel = a._channels[p.peer_id]
            p.process.kill()
            await p.process.wait()
            await eventually(lambda: first_channel.broken is not None, "a's channel to the killed p is broken")
            with pytest.raises(PeerUnreachable):
                await a.request(p.peer_id, b"nobody home", timeout=3)
        async with peer_process(data_dir, a.listen_addrs) as again:
            await eventually(lambda: again.peer_id in a.connected_peers(), "the restarted p dialled a")
            assert await a.request(again.peer_id, b"two") == b"echo:two"
            assert a._channels[again.peer_id] is not first_channel


async def test_a_private_network_stream_carries_bulk_bytes_intact_through_the_buffered_psk_reads() -> None:
    """PskConn's reads are buffered (transport/_settings.py, Trap 16): bytes
    written in uneven pieces arrive whole and in order, and both ends agree."""
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from p2pnode.transport._settings import PSK_READ_BYTES, build_host

    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    psk = "5a" * 32
    reader, writer = (build_host(create_new_key_pair(), listen, mdns=False, psk=psk) for _ in range(2))
    payload = os.urandom(3 * PSK_READ_BYTES + 777)
    received = bytearray()
    done = trio.Event()

    async def drain(stream: Any) -> None:
        while len(received) < len(payload) and (data := await stream.read(100_003)):
            received.extend(data)
        done.set()

    reader.set_stream_handler("/test/bulk/1", drain)
    with trio.fail_after(PATIENCE):
        async with reader.run(listen), writer.run(listen):
            await writer.connect(info_from_p2p_addr(Multiaddr(str(reader.get_addrs()[0]))))
            stream = await writer.new_stream(reader.get_id(), ["/test/bulk/1"])
            at, step = 0, 1
            while at < len(payload):  # 1 byte, 2, 4 ... up to 512 KiB a write
                await stream.write(payload[at:at + step])
                at, step = at + step, min(step * 2, 512 << 10)
            await done.wait()
            for host in (reader, writer):
                await host.close()
    assert bytes(received) == payload
