"""Only peers holding the network key join (issue 12: admission)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import trio

from p2pnode.netkey import NetworkKeyError, load_key, new_key
from p2pnode.transport import PeerUnreachable
from tests.test_transport import PATIENCE, TOPIC, echo_with_name, eventually, running


def test_a_new_key_is_written_once_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "swarm.key"
    new_key(path)
    assert len(load_key(path)) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(NetworkKeyError, match="exists"):
        new_key(path)


@pytest.mark.parametrize("text", ["", "abc", "/key/swarm/psk/1.0.0/\n/base16/\nxyz\n", "/key/swarm/psk/1.0.0/\n/base64/\n" + "a" * 64])
def test_a_malformed_key_file_says_how_to_make_one(tmp_path: Path, text: str) -> None:
    path = tmp_path / "swarm.key"
    path.write_text(text)
    with pytest.raises(NetworkKeyError, match="new-key"):
        load_key(path)


def test_a_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(NetworkKeyError, match="p2pnode network new-key"):
        load_key(tmp_path / "nope")


async def test_peers_with_the_key_talk_and_a_peer_without_it_reaches_nothing() -> None:
    key, other = secrets.token_hex(32), secrets.token_hex(32)
    async with running(network_key=key) as a, running(network_key=key, bootstrap=a.listen_addrs) as b:
        b.on_request(echo_with_name)
        await eventually(lambda: b.peer_id in a.connected_peers(), "a is connected to b")
        with trio.fail_after(PATIENCE):
            assert await a.request(b.peer_id, b"hi") == b"in-process got hi"
        for rogue_key in (other, None):
            async with running(network_key=rogue_key) as rogue:
                rogue.on_request(echo_with_name)
                with trio.move_on_after(3):  # a dial that cannot finish its handshake; bounded here
                    await rogue.connect(a.listen_addrs[0])
                assert rogue.peer_id not in a.connected_peers()
                assert a.peer_id not in rogue.connected_peers()
                with pytest.raises(PeerUnreachable):
                    await rogue.request(a.peer_id, b"let me in", timeout=2)
                await a.publish(TOPIC, b"members only")
                with trio.move_on_after(0.5):
                    heard = await rogue.incoming.receive()
                    pytest.fail(f"the rogue heard {heard!r}")
        with trio.fail_after(PATIENCE):  # and the members still talk
            assert await a.request(b.peer_id, b"still here") == b"in-process got still here"


def test_a_rogue_peer_with_another_key_or_none_sees_nothing_and_changes_nothing(tmp_path: Path) -> None:
    from p2pnode.client import ApiClient, ApiClientError
    from p2pnode.devstack import devstack, start_peer, stop_peer
    from tests.integration_support import alive_count, data_url, eventually, wasm_job
    from tests.test_api_cli import HELLO_WAT

    with devstack(2, tmp_path / "net") as peers, ApiClient(peers[0].api) as member:
        eventually(lambda: alive_count(member) == 2, what="the members see each other")
        job_id = member.submit(wasm_job(data_url(HELLO_WAT), "members"))["JobID"]
        assert member.wait(job_id, timeout=60)["Job"]["State"]["StateType"] == "Completed"
        new_key(tmp_path / "other.key")
        for index, extra in enumerate((["--network-key", str(tmp_path / "other.key")], [])):
            rogue = start_peer(9 + index, tmp_path / f"rogue-{index}", list(peers[0].addresses[:1]), extra)
            try:
                with ApiClient(rogue.api) as outsider:
                    time.sleep(3.0)  # let it try to join: members see each other well within this
                    assert [n["Info"]["NodeID"] for n in outsider.nodes()["Items"]] == [rogue.node_id]
                    with pytest.raises(ApiClientError) as unknown:
                        outsider.get_job(job_id)
                    assert unknown.value.status == 404
                    outsider.submit(wasm_job(data_url(HELLO_WAT), "rogue"))  # runs on the rogue alone, if anywhere
                assert alive_count(member) == 2
                assert len(member.list_jobs()["Items"]) == 1
                assert member.get_job(job_id)["Job"]["State"]["StateType"] == "Completed"
            finally:
                stop_peer(rogue)
