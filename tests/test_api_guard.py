"""The API takes only what it can keep, and only from who may ask (issue 12),
against one real node process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from p2pnode.cli import main
from p2pnode.client import ApiClient, ApiClientError
from p2pnode.devstack import Peer, start_peer, stop_peer
from tests.integration_support import data_url, wasm_job

HELLO_WAT = (Path(__file__).resolve().parent.parent / "examples" / "hello.wat").read_text()
TOKEN = "t0ken-for-tests"
JOBS = "/api/v1/orchestrator/jobs"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    started = start_peer(0, tmp_path_factory.mktemp("guard") / "node", [], ["--api-token", TOKEN])
    try:
        yield started
    finally:
        stop_peer(started)


@pytest.fixture(scope="module")
def client(peer: Peer) -> Iterator[ApiClient]:
    with ApiClient(peer.api, token=TOKEN) as api:
        yield api


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_without_the_token_nothing_is_answered(peer: Peer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.get(peer.api + JOBS, headers=headers)
        assert response.status_code == 401
        assert "token" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(peer.api + JOBS, headers=AUTH).status_code == 200


def test_the_cli_passes_its_token(peer: Peer) -> None:
    runner = CliRunner()
    refused = runner.invoke(main, ["job", "list", "--api", peer.api], env={"P2PNODE_API_TOKEN": ""})
    assert refused.exit_code != 0 and "token" in refused.output
    allowed = runner.invoke(main, ["--token", TOKEN, "job", "list", "--api", peer.api, "-o", "json"])
    assert allowed.exit_code == 0, allowed.output
    assert "Items" in json.loads(allowed.output)


def test_a_6mb_body_gets_413_and_the_next_job_runs(peer: Peer, client: ApiClient) -> None:
    huge = json.dumps({"Job": {**wasm_job(data_url(HELLO_WAT)), "Meta": {"pad": "x" * (6 << 20)}}})
    response = httpx.put(peer.api + JOBS, content=huge, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
        for start in range(0, len(huge), 1 << 16):
            yield huge[start:start + (1 << 16)].encode()

    response = httpx.put(peer.api + JOBS, content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413

    job_id = client.submit(wasm_job(data_url(HELLO_WAT), "after"))["JobID"]
    assert client.wait(job_id, timeout=60)["Job"]["State"]["StateType"] == "Completed"


def test_a_job_too_large_to_keep_is_refused_before_it_is_acknowledged(peer: Peer, client: ApiClient) -> None:
    before = len(client.list_jobs()["Items"])
    job = {**wasm_job(data_url(HELLO_WAT)), "Meta": {"pad": "x" * (3 << 20)}}
    with pytest.raises(ApiClientError) as refused:
        client.submit(job)
    assert refused.value.status == 413 and "at most" in refused.value.message
    assert len(client.list_jobs()["Items"]) == before


@pytest.mark.parametrize("body", ['{"Job": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"Job": ' + "[" * 100 + "]" * 100 + "}"])
def test_deeply_nested_json_is_a_400_in_json(peer: Peer, body: str) -> None:
    response = httpx.put(peer.api + JOBS, content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 400
    assert "nests too deeply" in response.json()["error"]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--listen", "/ip4/0.0.0.0/tcp/0"], "--network-key FILE"),
        (["--api-host", "0.0.0.0"], "--api-token"),
    ],
)
def test_serve_exposed_without_guards_refuses_to_start(tmp_path: Path, flags: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), *flags], env={})
    assert result.exit_code == 1
    assert says in result.output and ("--network-open" in result.output or "--api-insecure" in result.output)


def test_serve_with_a_bad_network_key_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("not a key")
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--network-key", str(tmp_path / "key")])
    assert result.exit_code == 1 and "new-key" in result.output


@pytest.mark.parametrize("flag", ["--ipfs-stream-port", "--listen"])
def test_serve_on_a_port_in_use_says_so_without_a_traceback(tmp_path: Path, flag: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        value = str(port) if flag == "--ipfs-stream-port" else f"/ip4/127.0.0.1/tcp/{port}"
        result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--api-port", "0", flag, value])
    assert result.exit_code == 1, result.output
    assert "Address already in use" in result.output and "Traceback" not in result.output
