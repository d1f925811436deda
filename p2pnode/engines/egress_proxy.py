"""A filtering forward proxy: a job with `Network: HTTP` reaches its `Domains` and nothing else.

How a container gets it: the container has no network of its own. The node
starts a tiny "holder" container with `network_mode none`, enters that
container's network namespace from a short-lived thread (`setns`, which needs
root) just long enough to open a listening socket on its loopback, and runs
the job's container in the same namespace (`network_mode container:<holder>`)
with HTTP_PROXY and friends pointing there. The socket stays in the
container's namespace; the threads that serve it connect out from the node's.
So the only thing the task can reach is this proxy: there is no bridge, no
route, no iptables rule, and nothing on the machine changes.

Alternatives judged and not taken: a Docker network (even `--internal`)
creates a bridge on the machine whose gateway address reaches every service
the node listens on; entering the job's own container after it started races
with the task's first request; running the proxy inside the container would
need a program in the job's image.

What is allowed: `CONNECT host:port` (HTTPS, relayed untouched) and plain
HTTP requests in absolute form (`GET http://host/path`), when `host` matches
one of the Domains and `port` is one the node allows (80 and 443 by default).
A domain matches itself; a domain written with a leading dot (`.example.com`)
matches itself and every subdomain (`a.b.example.com`), as in Squid's
`dstdomain`, which the reference uses. Letter case and a trailing dot do not
count. Anything else gets `403` with the reason. A matching name must still
resolve to public addresses only (the same rule and opt-in as `url` inputs,
`--url-allow-networks`), so a domain cannot be pointed at the node's own
loopback or LAN.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from p2pnode.storage.url import refusal

log = logging.getLogger("p2pnode.egress")

PROXY_PORT = 3128  # on the container's own loopback
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024
MAX_CONNECTIONS = 64  # open at once per job; more get 503 (each holds a thread)
_CLONE_NEWNET = 0x40000000
_DROPPED_HEADERS = ("proxy-connection", "proxy-authorization", "connection", "keep-alive")


class ProxyUnavailable(RuntimeError):
    """The proxy could not be put inside the container's namespace; the message says why."""


@dataclass(frozen=True)
class EgressPolicy:
    """What the node's operator allows a `Network: HTTP` job beyond its Domains' names."""

    ports: frozenset[int] = frozenset({80, 443})
    allow_networks: tuple[str, ...] = ()  # non-public networks the names may still resolve to

    def __post_init__(self) -> None:
        object.__setattr__(self, "ports", frozenset(self.ports))


def domain_allowed(host: str, domains: Iterable[str]) -> bool:
    """Whether `host` matches a Domains entry (exact, or a suffix for a leading-dot entry)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    for entry in domains:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif entry and host == entry:
            return True
    return False


def listen_in_namespace(pid: int, port: int = PROXY_PORT) -> socket.socket:
    """A socket listening on 127.0.0.1:`port` inside the network namespace of
    process `pid`. A dedicated thread enters the namespace and ends after
    opening the socket, so no other code ever runs in it."""
    result: list[socket.socket | BaseException] = []

    def enter_and_listen() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error))
            finally:
                os.close(fd)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
            result.append(listener)
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            result.append(error)

    thread = threading.Thread(target=enter_and_listen, name="egress-setns", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise ProxyUnavailable(
            f"could not open the egress proxy inside the container's network namespace: {outcome} "
            "(the node must run as root to filter an HTTP network)"
        )
    return outcome


class EgressProxy:
    """Serves one job's container: accepts on `listener`, lets through only
    what `domains` and `policy` allow. `close` stops it and every relay."""

    def __init__(self, listener: socket.socket, domains: Iterable[str], policy: EgressPolicy,
                 resolve: Callable[[str, int], list[str]] | None = None) -> None:
        self.listener = listener
        self.domains = tuple(domains)
        self.policy = policy
        self.resolve = resolve or _resolve
        self._networks = _networks(policy.allow_networks)
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused: list[str] = []  # the reasons given, for the run's log
        self._thread = threading.Thread(target=self._accept, name="egress-accept", daemon=True)

    def start(self) -> EgressProxy:
        self.listener.settimeout(0.2)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self.listener.close()
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    # ------------------------------------------------------------ serving

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(HEAD_TIMEOUT)
            if not self._slots.acquire(blocking=False):
                _send_error(client, 503, f"more than {MAX_CONNECTIONS} connections open at once through the proxy")
                _close(client)
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), name="egress-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            self._serve_one(client)
        finally:
            self._slots.release()

    def _serve_one(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            head, rest = _read_head(client)
            method, target, version, headers = _parse_head(head)
            if method == "CONNECT":
                host, port = _split_host_port(target, 443)
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    raise _Refused(400, f"{target!r} is not an absolute http:// URL; send HTTPS through CONNECT")
                host, port = parts.hostname, parts.port or 80
            upstream = self._connect(host, port)
            self._track(upstream)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(_origin_request(method, target, version, headers) + rest)
                rest = b""
            if rest:
                upstream.sendall(rest)
            _relay(client, upstream, self._closed)
        except _Refused as refused:
            self.refused.append(refused.reason)
            _send_error(client, refused.status, refused.reason)
        except (OSError, ValueError) as error:
            log.debug("egress connection ended: %s", error)
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self._untrack(sock)
                    _close(sock)

    def _connect(self, host: str, port: int) -> socket.socket:
        if not domain_allowed(host, self.domains):
            raise _Refused(403, f"{host} is not among this job's Network.Domains ({', '.join(self.domains)})")
        if port not in self.policy.ports:
            allowed = ", ".join(str(p) for p in sorted(self.policy.ports))
            raise _Refused(403, f"port {port} is not an HTTP(S) port this node allows ({allowed})")
        try:
            addresses = self.resolve(host, port)
        except OSError as error:
            raise _Refused(502, f"cannot resolve {host}: {error}") from None
        if not addresses:
            raise _Refused(502, f"cannot resolve {host}")
        for address in addresses:
            why = refusal(address, self._networks)
            if why is not None:
                raise _Refused(403, f"{host} resolves to {why}")
        last: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
            except OSError as error:
                last = error
        raise _Refused(502, f"cannot connect to {host}:{port}: {last}")

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise _Refused(431, "the request head is too large")
        chunk = client.recv(CHUNK)
        if not chunk:
            raise ValueError("the client closed before sending a request")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _Refused(400, f"malformed request line {lines[0][:200]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    return parts[0].upper(), parts[1], parts[2], headers


def _split_host_port(target: str, default: int) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise _Refused(400, f"CONNECT needs host:port, not {target[:200]!r}")
    return host.strip("[]"), int(port)


def _origin_request(method: str, target: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    """The request as the origin server expects it: a path, no proxy headers, one request per connection."""
    parts = urlsplit(target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [(name, value) for name, value in headers if name.lower() not in _DROPPED_HEADERS]
    if not any(name.lower() == "host" for name, _ in kept):
        kept.insert(0, ("Host", parts.netloc))
    lines = [f"{method} {path} {version}", *(f"{name}: {value}" for name, value in kept), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _relay(a: socket.socket, b: socket.socket, closed: threading.Event) -> None:
    """Copy both ways until both sides are done (or the proxy closes)."""
    a.settimeout(None)
    b.settimeout(None)
    peers = {a: b, b: a}
    open_reads = {a, b}
    with selectors.DefaultSelector() as selector:
        for sock in open_reads:
            selector.register(sock, selectors.EVENT_READ)
        while open_reads and not closed.is_set():
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(CHUNK)
                if data:
                    peers[sock].sendall(data)
                    continue
                selector.unregister(sock)
                open_reads.discard(sock)
                try:
                    peers[sock].shutdown(socket.SHUT_WR)
                except OSError:
                    open_reads.clear()


def _send_error(client: socket.socket, status: int, reason: str) -> None:
    titles = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
              503: "Service Unavailable"}
    body = f"p2pnode egress proxy: {reason}\n".encode()
    head = (f"HTTP/1.1 {status} {titles.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    try:
        client.sendall(head.encode() + body)
    except OSError:
        pass


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))


def _networks(texts: tuple[str, ...]) -> tuple:  # type: ignore[type-arg]
    import ipaddress

    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
