"""A small local network: N `p2pnode serve` processes on loopback, each with
its own data directory, all bootstrapped from the first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from p2pnode.netkey import new_key
from p2pnode.serve import READY_FILE, free_port

NETWORK_KEY = "network.key"


class DevstackError(RuntimeError):
    """A node of the local network did not come up."""


@dataclass(frozen=True)
class Peer:
    index: int
    node_id: str
    addresses: tuple[str, ...]
    api: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def start_peer(index: int, data_dir: Path, bootstrap: list[str], extra: list[str] | None = None, timeout: float = 60,
               api_port: int = 0) -> Peer:
    """Start one node process and wait until it says it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / READY_FILE).unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "p2pnode", "serve",
        "--data-dir", str(data_dir),
        "--api-port", str(api_port or free_port()),
        "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}",
    ]
    for address in bootstrap:
        command += ["--peer", address]
    command += extra or []
    log = open(data_dir / "node.log", "ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    ready = data_dir / READY_FILE
    try:
        while not ready.exists():
            if process.poll() is not None:
                raise DevstackError(f"node {index} exited with {process.returncode}; see {data_dir / 'node.log'}")
            if time.monotonic() > deadline:
                raise DevstackError(f"node {index} did not start within {timeout:.0f} s; see {data_dir / 'node.log'}")
            time.sleep(0.05)
    except BaseException:  # also Ctrl-C or SIGTERM while it starts: leave no process behind
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    info = json.loads(ready.read_text())
    return Peer(index, info["NodeID"], tuple(info["Addresses"]), info["API"], data_dir, process)


def stop_peer(peer: Peer, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not go."""
    if peer.process.poll() is None:
        peer.process.send_signal(signal.SIGTERM)
        try:
            peer.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(peer.process.pid, signal.SIGKILL)
            peer.process.wait()


@contextmanager
def devstack(nodes: int, base: Path, extra: list[str] | None = None, api_port: int = 0) -> Iterator[list[Peer]]:
    """N connected peers sharing a network key of their own (`base/network.key`);
    all stopped on the way out, whatever happens. The first one's API listens
    on `api_port` if given (the others on free ports)."""
    if nodes < 1:
        raise DevstackError("a network needs at least one node")
    peers: list[Peer] = []
    key = base / NETWORK_KEY
    if not key.exists():
        base.mkdir(parents=True, exist_ok=True)
        new_key(key)
    extra = ["--network-key", str(key), *(extra or [])]
    try:
        first = start_peer(0, base / "node-0", [], extra, api_port=api_port)
        peers.append(first)
        for index in range(1, nodes):
            peers.append(start_peer(index, base / f"node-{index}", list(first.addresses[:1]), extra))
        yield peers
    finally:
        for peer in reversed(peers):
            stop_peer(peer)
