"""`MemoryTransport`: what the runtime relies on of a transport, kept in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from p2pnode.transport import PayloadTooLarge, PeerUnreachable, RequestRejected
from p2pnode.transport.memory import MemoryNetwork, MemoryTransport


@asynccontextmanager
async def running(network: MemoryNetwork, *peers: tuple[str, list[str]]) -> AsyncIterator[list[MemoryTransport]]:
    async with trio.open_nursery() as nursery:
        transports = [network.transport(peer, topics, request_timeout=2.0) for peer, topics in peers]
        for transport in transports:
            await nursery.start(transport.run)
        yield transports
        nursery.cancel_scope.cancel()


async def test_a_publish_reaches_the_topics_subscribers_only() -> None:
    network = MemoryNetwork()
    async with running(network, ("a", ["nodes"]), ("b", ["nodes"]), ("c", ["other"])) as (a, b, c):
        await a.publish("nodes", b"hello")
        inbound = b.incoming.receive_nowait()
        assert (inbound.topic, inbound.sender, inbound.data) == ("nodes", "a", b"hello")
        for deaf in (a, c):  # not our own echo, not a peer off the topic
            with pytest.raises(trio.WouldBlock):
                deaf.incoming.receive_nowait()


async def test_requests_are_answered_in_order_and_failures_come_back_named() -> None:
    network = MemoryNetwork()
    async with running(network, ("a", []), ("b", [])) as (a, b):
        taken: list[bytes] = []

        async def handler(sender: str, data: bytes) -> bytes:
            if data == b"bad":
                raise ValueError("no thanks")
            await trio.sleep(0.01 * (5 - int(data)))  # the first is the slowest: order is kept all the same
            taken.append(data)
            return sender.encode() + data

        b.on_request(handler)
        answers: list[bytes] = []

        async def ask(data: bytes, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            answers.append(await a.request("b", data, task_status=task_status))

        async with trio.open_nursery() as nursery:
            for i in range(5):
                await nursery.start(ask, str(i).encode())
        assert taken == [b"0", b"1", b"2", b"3", b"4"] and sorted(answers) == [b"a0", b"a1", b"a2", b"a3", b"a4"]
        with pytest.raises(RequestRejected, match="ValueError: no thanks"):
            await a.request("b", b"bad")
        with pytest.raises(PeerUnreachable, match="not running"):
            await a.request("nobody", b"1")
        with pytest.raises(PayloadTooLarge):
            await a.request("b", b"x" * (64 << 20))


async def test_a_peer_that_stops_fails_the_requests_it_had_not_answered() -> None:
    network = MemoryNetwork()
    async with running(network, ("a", []), ("b", [])) as (a, b):
        async def stuck(sender: str, data: bytes) -> bytes:
            await trio.sleep_forever()
            return b""

        b.on_request(stuck)
        failed: list[str] = []

        async def ask() -> None:
            try:
                await a.request("b", b"1")
            except PeerUnreachable as error:
                failed.append(error.reason)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(0.05)
            await b.aclose()
        assert failed == ["the peer stopped (stream reset)"]
        assert a.connected_peers() == []
        with pytest.raises(PeerUnreachable):
            await a.connect(b.listen_addrs[0])
