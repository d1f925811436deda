"""The Docker engine on a real (private) Docker daemon, without the network of peers."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.engines.docker import BindMount, DockerEngine, DockerRun
from tests.docker_daemon import ECHO_IMAGE, IMAGE, PrivateDockerd

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def engine(dockerd: PrivateDockerd) -> Iterator[DockerEngine]:
    engine = DockerEngine("test-node", dockerd.host)
    yield engine
    assert engine.remove_leftovers() == 0, "a run left its container behind"


def shell(script: str, tmp_path: Path, **fields: object) -> DockerRun:
    return DockerRun(execution_id="e1", image=IMAGE, output_dir=tmp_path / "out",
                     parameters=("sh", "-c", script), **fields)  # type: ignore[arg-type]


def test_env_workdir_entrypoint_and_parameters_reach_the_process(engine: DockerEngine, tmp_path: Path) -> None:
    run = DockerRun(
        execution_id="e1", image=IMAGE, output_dir=tmp_path,
        entrypoint=("sh", "-c", 'echo "$GREETING $WHO in $(pwd): $0 $1"'), parameters=("first", "second"),
        working_directory="/tmp", environment={"GREETING": "hello", "WHO": "docker"},
    )
    outcome = engine.run(run)
    assert (outcome.exit_code, outcome.error) == (0, None)
    assert outcome.stdout == "hello docker in /tmp: first second\n"
    assert (tmp_path / "stdout").read_text() == outcome.stdout


def test_a_null_entrypoint_keeps_the_images(engine: DockerEngine, tmp_path: Path) -> None:
    run = DockerRun(execution_id="e1", image=ECHO_IMAGE, output_dir=tmp_path, parameters=("--query", "x"),
                    timeout=1)  # it sleeps after printing
    outcome = engine.run(run)
    assert outcome.stdout == "--query x\n"
    assert "TotalTimeout of 1 s" in (outcome.error or "")


def test_exit_code_and_stderr_come_back(engine: DockerEngine, tmp_path: Path) -> None:
    outcome = engine.run(shell("echo oops >&2; exit 3", tmp_path))
    assert (outcome.exit_code, outcome.stderr, outcome.error) == (3, "oops\n", "exit code 3")


def test_read_only_input_cannot_be_written_and_result_path_can(engine: DockerEngine, tmp_path: Path) -> None:
    data, results = tmp_path / "data", tmp_path / "results"
    data.mkdir()
    results.mkdir()
    (data / "in.txt").write_text("input\n")
    script = "cat /data/in.txt > /outputs/copy.txt; echo no > /data/in.txt && echo wrote || echo refused"
    run = shell(script, tmp_path, mounts=(BindMount(data, "/data"), BindMount(results, "/outputs", read_only=False)))
    outcome = engine.run(run)
    assert outcome.stdout == "refused\n", outcome
    assert (data / "in.txt").read_text() == "input\n"
    assert (results / "copy.txt").read_text() == "input\n"


def test_over_memory_fails_saying_so(engine: DockerEngine, tmp_path: Path) -> None:
    outcome = engine.run(shell("exec dd if=/dev/zero of=/dev/null bs=64M count=1", tmp_path, memory_limit=16 << 20))
    assert outcome.error is not None and "exceeded its memory limit of 16 MiB" in outcome.error


def test_total_timeout_kills_a_sleeping_container(engine: DockerEngine, tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = engine.run(shell("sleep 60", tmp_path, timeout=1.5))
    assert outcome.error == "the task exceeded its TotalTimeout of 1.5 s and was killed"
    assert time.monotonic() - started < 60


def test_cancel_kills_it_and_output_is_written_while_it_runs(engine: DockerEngine, tmp_path: Path) -> None:
    cancel = threading.Event()
    run = shell("echo started; sleep 60", tmp_path)
    ended: list[object] = []
    runner = threading.Thread(target=lambda: ended.append(engine.run(run, cancel)))
    runner.start()
    deadline = time.monotonic() + 30
    stdout = tmp_path / "out" / "stdout"
    while not (stdout.exists() and stdout.read_text() == "started\n"):
        assert time.monotonic() < deadline, "the output did not appear while the container ran"
        time.sleep(0.05)
    cancel.set()
    runner.join(30)
    assert ended and ended[0].error == "cancelled"  # type: ignore[attr-defined]


def test_cpu_millicores_become_a_cpu_quota(engine: DockerEngine, tmp_path: Path) -> None:
    script = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max"
    outcome = engine.run(shell(script, tmp_path, cpu_millicores=250))
    numbers = [int(n) for n in outcome.stdout.split()]
    assert numbers[0] / numbers[1] == 0.25


def test_network_none_cannot_reach_a_server_on_the_host(engine: DockerEngine, tmp_path: Path) -> None:
    with _loopback_server() as port:
        script = f"echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {port} | head -1; ip -o link | cut -d' ' -f2"
        cut_off = engine.run(shell(script, tmp_path))
        assert cut_off.stdout == "lo:\n", cut_off  # no answer, and no interface but its own loopback
        assert "can't connect" in cut_off.stderr
        # The same request with the node's network reaches it: the check above can tell.
        full = engine.run(shell(script, tmp_path / "full", network="Full"))
        assert full.stdout.startswith("HTTP/1.0 200"), full


def test_gpus_are_refused_with_a_reason(engine: DockerEngine, tmp_path: Path) -> None:
    error = engine.run(shell("true", tmp_path, gpus=1)).error
    assert error is not None and "asks for 1 GPU(s) and this node has 0" in error


def test_an_image_that_cannot_be_pulled_fails_clearly(engine: DockerEngine, tmp_path: Path) -> None:
    # A registry on a loopback port nobody listens on: no traffic leaves the machine.
    port = _unused_port()
    outcome = engine.run(DockerRun(execution_id="e1", image=f"127.0.0.1:{port}/nothing:1", output_dir=tmp_path))
    assert outcome.error is not None
    assert outcome.error.startswith(f"image '127.0.0.1:{port}/nothing:1' is not on this node and could not be pulled")


def test_leftover_containers_of_this_node_are_removed_and_others_kept(dockerd: PrivateDockerd) -> None:
    import docker

    client = docker.DockerClient(base_url=dockerd.host)
    mine = client.containers.create(IMAGE, ["sleep", "60"], labels={"p2pnode.node": "node-a"}, network_mode="none")
    other = client.containers.create(IMAGE, ["sleep", "60"], labels={"p2pnode.node": "node-b"}, network_mode="none")
    try:
        mine.start()
        assert DockerEngine("node-a", dockerd.host).remove_leftovers() == 1
        names = dockerd.containers()
        assert mine.name not in names and other.name in names
    finally:
        other.remove(force=True)
        client.close()


def test_no_daemon_means_not_available(tmp_path: Path) -> None:
    engine = DockerEngine("n", f"unix://{tmp_path / 'none.sock'}")
    assert not engine.available()
    outcome = engine.run(DockerRun(execution_id="e1", image=IMAGE, output_dir=tmp_path))
    assert outcome.error is not None and "Docker" in outcome.error


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _loopback_server:
    """An HTTP server on 127.0.0.1 for the length of a `with`."""

    def __enter__(self) -> int:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
