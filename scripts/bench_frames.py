"""CPU per message on the real transport, sender and receiver apart, for the simulator's CPU model (sim/cpu.py).

Two peers on loopback in two processes: this one sends `--count` messages the
way the runtime does (`Runtime._send`: wire-encode, `Transport.request` on the
long-lived channel, wait for the empty answer), the child answers them the way
`Runtime._on_request` does (wire-decode, hand over, answer b""). Prints one
JSON object: CPU ms per message on each side, one at a time (`serial`) and
all queued at once (`burst`, frames and acks batched), and gossipsub publish.

    .venv/bin/python scripts/bench_frames.py --count 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair  # noqa: E402

from p2pnode.transport import Transport  # noqa: E402
from protocols import wire  # noqa: E402
from protocols.messages import Ping  # noqa: E402

TOPIC = "p2pnode/bench-frames"


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _receiver(pipe: Any) -> None:
    async def main() -> None:
        transport = Transport(create_new_key_pair(), topics=[TOPIC])
        heard = 0

        async def handle(sender: str, data: bytes) -> bytes:
            nonlocal heard
            wire.decode(data)
            heard += 1
            return b""

        transport.on_request(handle)
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.run)
            pipe.send((transport.peer_id, transport.listen_addrs))

            async def count_publishes() -> None:
                nonlocal heard
                async for _ in transport.incoming:
                    heard += 1

            nursery.start_soon(count_publishes)
            while True:
                command = await trio.to_thread.run_sync(pipe.recv)
                if command == "stop":
                    nursery.cancel_scope.cancel()
                    return
                pipe.send(heard)

    trio.run(main)


async def _measure(count: int, parent: Any, process: Any) -> dict[str, Any]:
    if not parent.poll(60):
        raise SystemExit("the receiving peer did not start")
    peer, addresses = parent.recv()
    sender = Transport(create_new_key_pair(), topics=[TOPIC])
    figures: dict[str, Any] = {"count": count}
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await sender.connect(addresses[0])
        me = sender.peer_id
        for _ in range(50):  # warm the channel up
            await sender.request(peer, wire.encode(Ping(0), me))

        def mark() -> tuple[float, float, float]:
            return time.process_time(), _cpu_of(process.pid), time.perf_counter()  # type: ignore[arg-type]

        def per_message(before: tuple[float, float, float], n: int) -> dict[str, float]:
            after = mark()
            return {
                "send_cpu_ms": round((after[0] - before[0]) * 1000 / n, 3),
                "receive_cpu_ms": round((after[1] - before[1]) * 1000 / n, 3),
                "wall_ms": round((after[2] - before[2]) * 1000 / n, 3),
            }

        before = mark()
        for i in range(count):
            await sender.request(peer, wire.encode(Ping(i), me))
        figures["serial"] = per_message(before, count)

        before = mark()
        async with trio.open_nursery() as burst:
            for i in range(count):
                await burst.start(sender.request, peer, wire.encode(Ping(i), me))
        figures["burst"] = per_message(before, count)

        for _ in range(20):  # gossipsub needs the peer in the topic's mesh
            if peer in sender.subscribers(TOPIC):
                break
            await trio.sleep(0.5)
        before = mark()
        for i in range(count):
            await sender.publish(TOPIC, wire.encode(Ping(i), me))
        await trio.sleep(2.0)  # let the last ones arrive; idle cost is small next to count messages
        figures["publish"] = per_message(before, count)
        nursery.cancel_scope.cancel()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per measure")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")  # a forked child would inherit this trio run
    parent, child = context.Pipe()
    process = context.Process(target=_receiver, args=(child,), daemon=True)
    process.start()
    try:
        print(json.dumps(trio.run(_measure, args.count, parent, process)))
    finally:
        parent.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()


if __name__ == "__main__":
    main()
