"""The egress proxy on its own, on the host's loopback: what it lets through and what it refuses.

(Its use inside a container's namespace is tested on the real daemon in
tests/test_docker_egress.py.)"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from p2pnode.engines.egress_proxy import EgressPolicy, EgressProxy, domain_allowed

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("host", "domains", "allowed"), [
    ("example.com", ["example.com"], True),
    ("EXAMPLE.com.", ["example.com"], True),
    ("www.example.com", ["example.com"], False),
    ("www.example.com", [".example.com"], True),
    ("a.b.example.com", [".example.com"], True),
    ("example.com", [".example.com"], True),
    ("badexample.com", [".example.com"], False),
    ("example.com.evil.org", ["example.com"], False),
    ("ghcr.io", ["example.com", "ghcr.io"], True),
    ("127.0.0.1", ["example.com"], False),
    ("anything", [], False),
])
def test_domains_match_exactly_or_by_a_leading_dot(host: str, domains: list[str], allowed: bool) -> None:
    assert domain_allowed(host, domains) is allowed


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the path and Host it was asked for."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = f"{self.path} for {self.headers['Host']}; proxy headers: {self.headers.get('Proxy-Connection')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(origin: int) -> Iterator[tuple[int, EgressProxy]]:
    listener = socket.create_server(("127.0.0.1", 0))
    policy = EgressPolicy(ports=frozenset({origin}), allow_networks=("127.0.0.0/8",))
    served = EgressProxy(listener, ["localhost"], policy).start()
    try:
        yield listener.getsockname()[1], served
    finally:
        served.close()


def ask(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conversation:
        conversation.sendall(request)
        answer = b""
        while chunk := conversation.recv(65536):
            answer += chunk
    return answer


def test_plain_http_to_an_allowed_domain_reaches_it_as_an_origin_request(proxy: tuple[int, EgressProxy], origin: int) -> None:
    port, _ = proxy
    answer = ask(port, f"GET http://localhost:{origin}/a?b=1 HTTP/1.1\r\nHost: localhost:{origin}\r\n"
                       f"Proxy-Connection: keep-alive\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 200")
    assert answer.endswith(f"/a?b=1 for localhost:{origin}; proxy headers: None\n".encode())


def test_connect_to_an_allowed_domain_relays_both_ways(proxy: tuple[int, EgressProxy], origin: int) -> None:
    port, _ = proxy
    answer = ask(port, f"CONNECT localhost:{origin} HTTP/1.1\r\nHost: localhost:{origin}\r\n\r\n"
                       f"GET /tunnelled HTTP/1.0\r\nHost: inside\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200")
    assert answer.endswith(b"/tunnelled for inside; proxy headers: None\n")


@pytest.mark.parametrize(("request_line", "status", "reason"), [
    ("GET http://elsewhere.invalid/ HTTP/1.1", b"403", b"elsewhere.invalid is not among this job's Network.Domains (localhost)"),
    ("CONNECT 127.0.0.1:{origin} HTTP/1.1", b"403", b"127.0.0.1 is not among this job's Network.Domains"),
    ("CONNECT localhost:22 HTTP/1.1", b"403", b"port 22 is not an HTTP(S) port this node allows"),
    ("GET /relative HTTP/1.1", b"400", b"is not an absolute http:// URL"),
    ("GET https://localhost:{origin}/ HTTP/1.1", b"400", b"send HTTPS through CONNECT"),
    ("nonsense", b"400", b"malformed request line"),
])
def test_everything_else_is_refused_with_a_reason(proxy: tuple[int, EgressProxy], origin: int,
                                                  request_line: str, status: bytes, reason: bytes) -> None:
    port, served = proxy
    answer = ask(port, request_line.format(origin=origin).encode() + b"\r\nHost: x\r\n\r\n")
    assert answer.split(b" ")[1] == status, answer
    assert reason in answer, answer
    assert served.refused and reason.decode() in served.refused[-1]


def test_an_allowed_name_pointing_at_a_private_address_is_refused(origin: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    served = EgressProxy(listener, ["localhost"], EgressPolicy(ports=frozenset({origin}))).start()
    try:
        answer = ask(listener.getsockname()[1], f"GET http://localhost:{origin}/ HTTP/1.1\r\n\r\n".encode())
    finally:
        served.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"localhost resolves to 127.0.0.1 is a loopback" in answer
    assert b"--url-allow-networks" in answer
