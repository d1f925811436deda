"""Real exec probes (programs in a temporary directory) and a real HTTP probe
server on 127.0.0.1."""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from p2pnode.probes import run_exec_probe, run_http_probe
from protocols.events import ProbeVerdict

DOCUMENT = {"node_id": "node-1", "job_id": "job-7", "spec": {"engine": "docker", "inputs": []}}


def program(tmp_path: Path, name: str, body: str) -> str:
    """A Python program file, made executable; returns the command to run it."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return shlex.quote(str(path))


async def test_exec_probe_reads_the_document_and_takes_a_matching_job(tmp_path: Path) -> None:
    command = program(
        tmp_path,
        "match.py",
        "import json, sys\n"
        "document = json.load(sys.stdin)\n"
        "wanted = sys.argv[1]\n"
        "if document['job_id'] != wanted:\n"
        "    print(f\"not {wanted}: {document['job_id']}\")\n"
        "    sys.exit(1)\n",
    )
    assert await run_exec_probe(f"{command} job-7", DOCUMENT) == ProbeVerdict(bid=True, reason="the exec probe exited 0")
    declined = await run_exec_probe(f"{command} 'job 8'", DOCUMENT)
    assert declined == ProbeVerdict(bid=False, reason="the exec probe exited with status 1: not job 8: job-7")


async def test_exec_probe_exit_status_declines_quoting_its_output(tmp_path: Path) -> None:
    command = program(tmp_path, "no.py", "import sys\nsys.stderr.write('disk nearly full\\n')\nsys.exit(3)\n")
    verdict = await run_exec_probe(command, DOCUMENT)
    assert verdict == ProbeVerdict(bid=False, reason="the exec probe exited with status 3: disk nearly full")


async def test_exec_probe_that_hangs_is_killed_and_declines(tmp_path: Path) -> None:
    command = program(tmp_path, "slow.py", "import time\ntime.sleep(60)\n")
    verdict = await run_exec_probe(command, DOCUMENT, timeout=0.3)
    assert not verdict.bid and not verdict.wait
    assert "did not finish within 0.3 s" in verdict.reason


async def test_exec_probe_that_cannot_start_declines(tmp_path: Path) -> None:
    verdict = await run_exec_probe(str(tmp_path / "missing-program"), DOCUMENT)
    assert not verdict.bid
    assert "could not start" in verdict.reason and "missing-program" in verdict.reason
    not_executable = tmp_path / "plain.txt"
    not_executable.write_text("hello")
    verdict = await run_exec_probe(str(not_executable), DOCUMENT)
    assert not verdict.bid and "could not start" in verdict.reason


async def test_exec_probe_with_a_bad_command_line_declines() -> None:
    assert "cannot be run" in (await run_exec_probe("check 'unclosed", DOCUMENT)).reason
    assert "empty" in (await run_exec_probe("   ", DOCUMENT)).reason


# ---------------------------------------------------------------- http

REPLIES: dict[str, tuple[int, bytes]] = {
    "/yes": (200, b'{"shouldBid": true, "reason": "welcome"}'),
    "/no": (200, b'{"shouldBid": false, "reason": "The job did not pass this specific validation: ...",}'),
    "/wait": (200, b'{"shouldBid": false, "shouldWait": true, "reason": "asking a human"}'),
    "/text": (200, b"fine by me"),
    "/broken": (500, b"Internal Server Error"),
}


class ProbeServer:
    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                server.received.append(json.loads(self.rfile.read(length)))
                if self.path == "/slow":
                    server.release.wait(10)
                status, body = REPLIES.get(self.path, (404, b"no such probe"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def probe_server() -> Iterator[ProbeServer]:
    server = ProbeServer()
    thread = threading.Thread(target=server.http.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.http.shutdown()
    server.http.server_close()
    thread.join()


HTTP_CASES = [
    ("/yes", ProbeVerdict(bid=True, reason="welcome")),
    ("/no", ProbeVerdict(bid=False, reason="The job did not pass this specific validation: ...")),
    ("/wait", ProbeVerdict(bid=False, wait=True, reason="asking a human")),
    ("/text", ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("/broken", ProbeVerdict(bid=False, reason="the http probe answered 500: Internal Server Error")),
    ("/absent", ProbeVerdict(bid=False, reason="the http probe answered 404: no such probe")),
]


@pytest.mark.parametrize(("path", "verdict"), HTTP_CASES, ids=[case[0] for case in HTTP_CASES])
async def test_http_probe_replies_decide(probe_server: ProbeServer, path: str, verdict: ProbeVerdict) -> None:
    assert await run_http_probe(probe_server.url + path, DOCUMENT) == verdict
    assert probe_server.received == [DOCUMENT]


async def test_http_probe_that_hangs_declines(probe_server: ProbeServer) -> None:
    verdict = await run_http_probe(probe_server.url + "/slow", DOCUMENT, timeout=0.3)
    assert not verdict.bid and not verdict.wait
    assert "did not answer within 0.3 s" in verdict.reason


async def test_http_probe_on_a_closed_port_declines() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verdict = await run_http_probe(f"http://127.0.0.1:{port}/probe", DOCUMENT)
    assert not verdict.bid
    assert "could not be reached" in verdict.reason and str(port) in verdict.reason


async def test_http_probe_with_a_bad_url_declines() -> None:
    for url in ("not a url", "ftp://127.0.0.1/probe", "http://"):
        verdict = await run_http_probe(url, DOCUMENT)
        assert not verdict.bid and url in verdict.reason
