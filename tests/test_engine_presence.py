"""A node offers an engine only while it can run it (a Docker daemon that
stops or comes back), and a job for an engine no node has fails saying so."""

from __future__ import annotations

from typing import Any

from protocols.events import EnginesChanged
from protocols.jobspec import JobSpec, job_spec_from_data
from protocols.records import JobState
from tests.cluster import Cluster
from tests.test_node import configs, settled


def docker_spec(job_type: str = "batch", count: int | None = 1) -> JobSpec:
    document: dict[str, Any] = {
        "Type": job_type,
        "Tasks": [{"Engine": {"Type": "docker", "Params": {"Image": "local/busybox:1"}},
                   "Resources": {"CPU": "100m", "Memory": "64Mb"}}],
    }
    if count is not None:
        document["Count"] = count
    return job_spec_from_data(document).spec


def test_a_docker_job_fails_saying_no_node_has_a_docker_engine() -> None:
    cluster = settled(Cluster(configs(3, engines=("wasm",))))
    cluster.submit(0, "j", docker_spec())
    cluster.run(5)
    job = cluster.job("j")
    assert job.header.state == JobState.FAILED
    assert "no suitable node" in job.header.message
    assert "3 node(s): this node has no docker engine" in job.header.message


def test_a_node_whose_daemon_comes_back_gets_docker_work_and_one_whose_daemon_stops_does_not() -> None:
    cluster = settled(Cluster(configs(3, engines=("wasm",))))
    cluster.inject(1, EnginesChanged(("wasm", "docker")))
    cluster.run(cluster.now + 1)
    assert all("docker" in node.membership.info(cluster.configs[1].node_id).engines for node in cluster.nodes.values())
    cluster.submit(0, "j", docker_spec())
    cluster.run(cluster.now + 5)
    job = cluster.job("j")
    assert job.header.state == JobState.COMPLETED
    assert {e.node_id for e in job.executions.values()} == {cluster.configs[1].node_id}

    cluster.inject(1, EnginesChanged(("wasm",)))
    cluster.run(cluster.now + 1)
    cluster.submit(2, "k", docker_spec())
    cluster.run(cluster.now + 5)
    assert cluster.job("k", 2).header.state == JobState.FAILED
    assert "no docker engine" in cluster.job("k", 2).header.message
