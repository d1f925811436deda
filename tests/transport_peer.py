"""A transport peer in its own OS process, driven by tests/test_transport.py.

Talks JSON lines: commands on stdin, events on stdout. Payloads are text.
It answers requests with b"echo:" + request, and fails on a request that
starts with b"fail" (to test a failing handler).

    python tests/transport_peer.py DATA_DIR TOPIC [BOOTSTRAP_ADDR ...]

Commands: {"op": "publish", "topic", "data"}, {"op": "request", "peer", "data"},
          {"op": "subscribers", "topic"}
Events:   {"event": "ready", "peer_id", "addrs"}, {"event": "message", "topic",
          "sender", "data"}, {"event": "reply", "data"} | {"event": "error", "error"},
          {"event": "subscribers", "peers"}
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode.identity import load_or_create_identity  # noqa: E402
from p2pnode.transport import Transport, TransportError  # noqa: E402


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


async def echo(sender: str, data: bytes) -> bytes:
    if data.startswith(b"fail"):
        raise ValueError("asked to fail")
    return b"echo:" + data


async def forward_messages(transport: Transport) -> None:
    async for message in transport.incoming:
        emit(event="message", topic=message.topic, sender=message.sender, data=message.data.decode())


async def obey(transport: Transport, command: dict[str, str]) -> None:
    try:
        match command["op"]:
            case "publish":
                await transport.publish(command["topic"], command["data"].encode())
            case "request":
                reply = await transport.request(command["peer"], command["data"].encode())
                emit(event="reply", data=reply.decode())
            case "subscribers":
                emit(event="subscribers", peers=transport.subscribers(command["topic"]))
    except TransportError as error:
        emit(event="error", error=str(error))


async def main(data_dir: str, topic: str, bootstrap: list[str]) -> None:
    transport = Transport(load_or_create_identity(Path(data_dir)), topics=[topic], bootstrap=bootstrap)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        transport.on_request(echo)
        nursery.start_soon(forward_messages, transport)
        emit(event="ready", peer_id=transport.peer_id, addrs=transport.listen_addrs)
        while line := await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            nursery.start_soon(obey, transport, json.loads(line))
        nursery.cancel_scope.cancel()  # stdin closed: the test is done with us


if __name__ == "__main__":
    # On stderr, which pytest shows when a test fails.
    logging.basicConfig(level=logging.WARNING, format="peer %(process)d %(name)s %(levelname)s %(message)s")
    logging.getLogger("p2pnode").setLevel(logging.INFO)
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3:])
