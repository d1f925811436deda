"""`Network: HTTP` and `Disk` of docker runs on the real (private) daemon.

An HTTP network's container reaches its allowed domains through the node's
proxy and nothing else: not other names, not the host directly. The only
server anywhere is on the host's 127.0.0.1; the allowed domain is `localhost`
(the node resolves it, allowed to by the test's egress policy)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.engines.docker import BindMount, DockerEngine, DockerRun
from p2pnode.engines.egress_proxy import PROXY_PORT, EgressPolicy
from tests.docker_daemon import IMAGE, PrivateDockerd

pytestmark = pytest.mark.timeout(120)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = f"hello from the host at {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def engine(dockerd: PrivateDockerd, host_server: int) -> Iterator[DockerEngine]:
    policy = EgressPolicy(ports=frozenset({80, 443, host_server}), allow_networks=("127.0.0.0/8",))
    engine = DockerEngine("egress-node", dockerd.host, egress=policy)
    yield engine
    assert engine.remove_leftovers() == 0, "a run left its container (or holder) behind"
    assert dockerd.containers() == []


def http_run(script: str, tmp_path: Path, **fields: object) -> DockerRun:
    fields.setdefault("network", "HTTP")
    fields.setdefault("domains", ("localhost",))
    return DockerRun(execution_id="e1", image=IMAGE, output_dir=tmp_path / "out",
                     parameters=("sh", "-c", script), timeout=60, **fields)  # type: ignore[arg-type]


def test_an_allowed_domain_answers_through_the_proxy(engine: DockerEngine, tmp_path: Path, host_server: int) -> None:
    # busybox wget takes http_proxy from the environment the engine sets.
    script = (f"echo \"$http_proxy $HTTPS_PROXY\"; wget -q -O - http://localhost:{host_server}/plain; "
              f"printf 'CONNECT localhost:{host_server} HTTP/1.1\\r\\n\\r\\nGET /tunnel HTTP/1.0\\r\\n\\r\\n' "
              f"| nc 127.0.0.1 {PROXY_PORT} | grep -E '^HTTP|hello'")
    outcome = engine.run(http_run(script, tmp_path))
    assert (outcome.exit_code, outcome.error) == (0, None), outcome
    proxy = f"http://127.0.0.1:{PROXY_PORT}"
    assert outcome.stdout.replace("\r", "").splitlines() == [
        f"{proxy} {proxy}",
        "hello from the host at /plain",
        "HTTP/1.1 200 Connection established",
        "HTTP/1.0 200 OK",
        "hello from the host at /tunnel",
    ]


def test_other_domains_are_refused_saying_why(engine: DockerEngine, tmp_path: Path, host_server: int) -> None:
    script = (f"wget -q -O - http://elsewhere.invalid:{host_server}/ 2>&1; "
              f"printf 'GET http://127.0.0.1:{host_server}/ HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 {PROXY_PORT}")
    outcome = engine.run(http_run(script, tmp_path))
    assert "403 Forbidden" in outcome.stdout, outcome
    assert "127.0.0.1 is not among this job's Network.Domains (localhost)" in outcome.stdout
    assert "hello from the host" not in outcome.stdout


def test_the_container_cannot_reach_the_host_directly(engine: DockerEngine, tmp_path: Path, host_server: int) -> None:
    script = (f"echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {host_server} | head -1; "
              "ip -o link | cut -d' ' -f2; ip route | wc -l")
    outcome = engine.run(http_run(script, tmp_path))
    assert outcome.stdout == "lo:\n0\n", outcome  # no answer, its own loopback only, no route anywhere
    assert "can't connect" in outcome.stderr


def test_network_none_still_reaches_nothing_not_even_a_proxy(engine: DockerEngine, tmp_path: Path, host_server: int) -> None:
    script = (f"wget -q -O - http://localhost:{host_server}/ 2>&1 | head -1; "
              f"echo | nc -w 2 127.0.0.1 {PROXY_PORT} && echo proxy || echo no-proxy; env | grep -ci proxy")
    outcome = engine.run(http_run(script, tmp_path, network="None", domains=()))
    assert "hello" not in outcome.stdout, outcome
    assert outcome.stdout.splitlines()[-2:] == ["no-proxy", "0"], outcome


def test_a_run_over_its_disk_limit_fails_saying_so(engine: DockerEngine, tmp_path: Path) -> None:
    outcome = engine.run(http_run("dd if=/dev/zero of=/tmp/big bs=1M count=12 2>/dev/null", tmp_path,
                                  network="None", disk_limit=8 << 20))
    assert outcome.error == "the task wrote 12 MiB to disk, over its Disk limit of 8 MiB, and was stopped; ask for more Disk"
    assert not outcome.node_fault


def test_result_paths_count_and_a_writer_that_goes_on_is_stopped(engine: DockerEngine, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    script = "dd if=/dev/zero of=/outputs/big bs=1M count=12 2>/dev/null; sleep 60"
    outcome = engine.run(http_run(script, tmp_path, network="None", disk_limit=8 << 20,
                                  mounts=(BindMount(results, "/outputs", read_only=False),)))
    assert outcome.error is not None and "over its Disk limit of 8 MiB, and was stopped" in outcome.error, outcome
    assert outcome.exit_code == -1  # stopped before the sleep ended, not by TotalTimeout


def test_within_its_disk_limit_a_run_completes(engine: DockerEngine, tmp_path: Path) -> None:
    outcome = engine.run(http_run("dd if=/dev/zero of=/tmp/small bs=1M count=2 2>/dev/null && echo ok", tmp_path,
                                  network="None", disk_limit=8 << 20))
    assert (outcome.stdout, outcome.error) == ("ok\n", None)
