"""Waiting for a job's change through the API (long-poll), against one real node process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from tests.integration_support import SLEEPER_WAT, data_url, wasm_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    started = start_peer(0, tmp_path_factory.mktemp("long-poll") / "node", [])
    try:
        yield started
    finally:
        stop_peer(started)


def test_each_wait_answers_with_a_change_until_the_job_ends(peer: Peer) -> None:
    with ApiClient(peer.api) as client:
        job_id = client.submit(wasm_job(data_url(SLEEPER_WAT), "2"))["JobID"]
        url = f"{peer.api}/api/v1/orchestrator/jobs/{job_id}"
        revision, states = -1, []
        while True:
            answer = httpx.get(url, params={"wait": "60", "since": str(revision)}, timeout=90).json()["Job"]
            assert answer["Revision"] != revision  # it answered because the job changed, not because time ran out
            revision = answer["Revision"]
            states.append(answer["State"]["StateType"])
            if states[-1] in ("Completed", "Failed", "Stopped"):
                break
        assert states[-1] == "Completed" and "Running" in states
        # An ended job is answered at once, whatever `since` says.
        again = httpx.get(url, params={"wait": "60", "since": str(revision)}, timeout=90).json()["Job"]
        assert again["Revision"] == revision and again["State"]["StateType"] == "Completed"
        assert client.wait(job_id, timeout=60)["Executions"]["Items"][0]["RunOutput"]["Stdout"] == "slept\n"


def test_a_bad_wait_is_refused_with_a_hint(peer: Peer) -> None:
    with ApiClient(peer.api) as client:
        job_id = client.submit(wasm_job(data_url(SLEEPER_WAT), "0"))["JobID"]
        url = f"{peer.api}/api/v1/orchestrator/jobs/{job_id}"
        response = httpx.get(url, params={"wait": "soon", "since": "1"})
        assert response.status_code == 400 and "wait must be a number" in response.json()["error"]
        assert "since" in response.json()["hint"]


def test_until_ended_answers_once_at_the_end(peer: Peer) -> None:
    with ApiClient(peer.api) as client:
        job_id = client.submit(wasm_job(data_url(SLEEPER_WAT), "1"))["JobID"]
        url = f"{peer.api}/api/v1/orchestrator/jobs/{job_id}"
        answer = httpx.get(url, params={"wait": "60", "since": "-1", "until": "ended"}, timeout=90).json()["Job"]
        assert answer["State"]["StateType"] == "Completed"  # not the first change it saw: the end
        response = httpx.get(url, params={"wait": "1", "until": "soon"})
        assert response.status_code == 400 and "until must be" in response.json()["error"]
