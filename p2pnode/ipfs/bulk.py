"""Whole DAGs between our own peers over TLS, beside bitswap.

Why: py-libp2p's Python Noise and yamux carry 26–30 MiB/s on this machine,
a thirtieth of a disk copy, so a job's input of a gigabyte would take a
minute to arrive. When both ends are p2pnode peers, the fetcher asks the
holder for the whole DAG instead, and it comes on a plain TCP connection
under TLS (OpenSSL, in a worker thread) as a stream of blocks
(`dagstream`): one request, no round trip per block. A peer that does not
speak this (Kubo) or cannot be reached on it is fetched from over bitswap.

Trust comes from libp2p, not from TLS certificates. The fetcher asks over
the libp2p connection it already has (Noise, keyed by the peer ID, and by the
network key in a private network) for a ticket; the answer names the holder's
TLS port, the SHA-256 of its certificate (a self-signed one, made at start)
and a single-use ticket for that root, good for TICKET_SECONDS. The fetcher
connects, checks the certificate against the digest (so it talks to the peer
it asked) and sends the ticket (so the holder serves only a peer it would
serve over libp2p). Every block is still checked against the link it came
for, as over bitswap.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import queue
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cbor2
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from p2pnode.ipfs.blockstore import BlockStore
from p2pnode.ipfs.cid import CID, CIDError
from p2pnode.ipfs.dagstream import DagCheck, walk
from p2pnode.ipfs.frames import BadUpload, next_upload, upload_frame
from p2pnode.transport import ListenFailed

log = logging.getLogger("p2pnode.ipfs.bulk")

PROTOCOL = "/p2pnode/ipfs-dag/1"
TICKET_SECONDS = 30.0
MAX_TICKETS = 256  # outstanding; the oldest go first
MAX_SENDS = 4  # DAGs sent at once (and handshakes at once); a further fetcher waits its turn
GREET_SECONDS = 5.0  # for a connection's TLS handshake and ticket
MAX_OPEN = 32  # connections accepted at once (sending or waiting); more are closed at once
IDLE_SECONDS = 20.0  # a TLS connection quiet this long is dropped, on either side
STORE_BATCH = 4 << 20  # bytes of received blocks checked and stored in one go
STORE_QUEUE = 4  # batches read but not yet stored: what a fetch holds in memory at most
SEND_BATCH = 1 << 20  # bytes of blocks handed to TLS in one call


class BulkUnavailable(LookupError):
    """The peer would not or could not send the DAG this way; bitswap still can."""


class StreamPortUnreachable(BulkUnavailable):
    """The peer's DAG stream port does not answer (a firewall, say): not worth asking again soon."""


class Hangup:
    """Ends a worker thread's blocking socket from trio's side: a cancelled
    transfer (the node stopping, a fetch given up) stops at once, not at the
    socket's time-out."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self.called = False

    def attach(self, sock: socket.socket) -> None:
        self._socket = sock
        if self.called:
            self()

    def __call__(self) -> None:
        self.called = True
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already


@dataclass(frozen=True)
class Ticket:
    port: int
    certificate: bytes  # SHA-256 of the holder's DER certificate
    secret: bytes


class DagServer:
    """The holder's side: tickets asked for over libp2p, DAGs sent over TLS."""

    def __init__(self, store: BlockStore, host: str, port: int) -> None:
        self.store = store
        self.bind = (host, port)
        self.port = 0
        self._context, self.certificate = _server_context()
        self._tickets: dict[bytes, tuple[CID, float]] = {}
        self._lock = threading.Lock()
        self._sends = trio.CapacityLimiter(MAX_SENDS)
        self._greetings = trio.CapacityLimiter(MAX_SENDS)
        self._open = 0  # connections accepted and not yet done
        self.dags_sent = 0

    async def run(self, libp2p: IHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_INET6 if ":" in self.bind[0] else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            await listener.bind(self.bind)
        except OSError as error:
            listener.close()
            raise ListenFailed(
                f"cannot listen for DAG streams on {self.bind[0]} port {self.bind[1]}: {error.strerror or error}; "
                "set --ipfs-stream-port to a free port, 0 for any, or off for bitswap only"
            ) from None
        listener.listen(16)
        self.port = listener.getsockname()[1]
        libp2p.set_stream_handler(PROTOCOL, self._offer)  # type: ignore[arg-type]
        task_status.started()
        with listener:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        connection, _ = await listener.accept()
                    except OSError as error:  # out of file descriptors, say: not the node's end
                        log.warning("the DAG stream port could not accept: %s", error)
                        await trio.sleep(0.1)
                        continue
                    if self._open >= MAX_OPEN:
                        connection.close()  # a flood of connections gets no thread and no memory
                        continue
                    self._open += 1  # counted here: the task starts later
                    nursery.start_soon(self._send, connection)

    async def _offer(self, stream: INetStream) -> None:
        """Answer a ticket request: {"root": CID bytes} -> {"port", "cert", "ticket"} or {"error"}."""
        try:
            with trio.fail_after(IDLE_SECONDS):
                request = cbor2.loads(await _read_message(stream))
                root = CID.from_bytes(bytes(request["root"]))
                if self.store.has(root):
                    answer = {"port": self.port, "cert": self.certificate, "ticket": self._issue(root)}
                else:
                    answer = {"error": f"{root} is not held here"}
                await _write_message(stream, cbor2.dumps(answer))
        except Exception as error:  # noqa: BLE001 - a peer's bad request never reaches the host
            log.info("refused a DAG ticket request: %s", error)
        finally:
            try:
                await stream.close()
            except Exception:  # noqa: BLE001
                pass

    def _issue(self, root: CID) -> bytes:
        secret = os.urandom(32)
        now = time.monotonic()
        with self._lock:
            for old, (_, expires) in list(self._tickets.items()):
                if expires < now:
                    del self._tickets[old]
            while len(self._tickets) >= MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            self._tickets[secret] = (root, now + TICKET_SECONDS)
        return secret

    def _redeem(self, secret: bytes) -> CID | None:
        with self._lock:
            root, expires = self._tickets.pop(secret, (None, 0.0))
        return root if expires >= time.monotonic() else None

    async def _send(self, connection: trio.socket.SocketType) -> None:
        """Greet (TLS handshake, ticket) within GREET_SECONDS, then send the
        DAG when a sending slot is free. Both run in threads of their own
        limiters: a flood of connections never takes the node's threads."""
        plain = socket.socket(fileno=connection.detach())
        hangup = Hangup()
        try:
            greeted = None
            with trio.move_on_after(GREET_SECONDS):
                greeted = await trio.to_thread.run_sync(self._greet, plain, hangup, limiter=self._greetings,
                                                        abandon_on_cancel=True)
            if greeted is None:
                log.info("a DAG stream connection gave no valid ticket in %g s: closed", GREET_SECONDS)
                return
            await trio.to_thread.run_sync(self._send_dag, *greeted, limiter=self._sends, abandon_on_cancel=True)
        except Exception as error:  # noqa: BLE001 - one fetcher's failure is its own
            log.info("a DAG send ended early: %s", error)
        finally:
            self._open -= 1
            hangup()
            plain.close()

    def _greet(self, plain: socket.socket, hangup: Hangup) -> tuple[ssl.SSLSocket, CID] | None:
        """In a thread: the TLS handshake and the ticket; None if the ticket is no good."""
        plain.setblocking(True)
        plain.settimeout(GREET_SECONDS)
        tls = self._context.wrap_socket(plain, server_side=True, do_handshake_on_connect=False)
        hangup.attach(tls)
        tls.do_handshake()
        root = self._redeem(_receive_exactly(tls, 32))
        if root is None:  # a stale, used or made-up ticket: hang up
            tls.close()
            return None
        tls.settimeout(IDLE_SECONDS)
        return tls, root

    def _send_dag(self, tls: ssl.SSLSocket, root: CID) -> None:
        with tls:
            pending: list[bytes] = []
            size = 0
            for cid, block in walk(root, self.store.get_unchecked):  # the fetcher hashes each
                pending += upload_frame(cid, block)
                size += len(block)
                if size >= SEND_BATCH:
                    tls.sendall(b"".join(pending))
                    pending, size = [], 0
            tls.sendall(b"".join(pending))
            self.dags_sent += 1


async def request_ticket(libp2p: IHost, peer: ID, root: CID) -> tuple[str, Ticket]:
    """Ask `peer` over libp2p for a ticket to `root`: (its IP address, the ticket)."""
    try:
        with trio.fail_after(IDLE_SECONDS):
            stream = await libp2p.new_stream(peer, [PROTOCOL])  # type: ignore[list-item]
            try:
                await _write_message(stream, cbor2.dumps({"root": root.to_bytes()}))
                answer = cbor2.loads(await _read_message(stream))
                address = stream.get_remote_address()
            finally:
                try:
                    await stream.close()
                except Exception:  # noqa: BLE001
                    pass
    except trio.TooSlowError:
        raise BulkUnavailable(f"{peer} did not answer a DAG ticket request in {IDLE_SECONDS:g} s") from None
    except Exception as error:  # noqa: BLE001 - Kubo, an older node, a reset: bitswap it is
        raise BulkUnavailable(f"{peer} offers no DAG stream: {error}") from None
    if not isinstance(answer, dict) or "error" in answer:
        reason = answer.get("error") if isinstance(answer, dict) else "a malformed answer"
        raise BulkUnavailable(f"{peer}: {str(reason)[:200]}")
    try:
        ticket = Ticket(int(answer["port"]), bytes(answer["cert"]), bytes(answer["ticket"]))
    except (KeyError, TypeError, ValueError):
        raise BulkUnavailable(f"{peer} answered a ticket request with {answer!r:.200}") from None
    if address is None or not 0 < ticket.port < 65536 or len(ticket.secret) != 32 or len(ticket.certificate) != 32:
        raise BulkUnavailable(f"{peer} answered a ticket request with an unusable ticket")
    return address[0], ticket


def receive_dag(address: str, ticket: Ticket, root: CID, store: BlockStore,
                hangup: Hangup | None = None) -> DagCheck:
    """In a worker thread: connect, check the holder's certificate, redeem
    the ticket and store every block of `root`'s DAG as it is checked.
    Raises BulkUnavailable when the DAG did not come whole (what came is kept).

    Reading (TLS) and checking (hashing) each take most of a core: a second
    thread checks and stores the blocks read so far while this one reads on."""
    check = DagCheck(root)
    batches: queue.Queue[list[tuple[CID, bytes]] | None] = queue.Queue(maxsize=STORE_QUEUE)
    refused: list[Exception] = []

    def check_and_store() -> None:
        while (batch := batches.get()) is not None:
            if refused:
                continue  # drained, so the reader never blocks on a full queue
            try:
                store.put_many([(check.accept(cid, block), block) for cid, block in batch])
            except Exception as error:  # noqa: BLE001 - raised by the reader
                refused.append(error)

    checker = threading.Thread(target=check_and_store, name="dag-check", daemon=True)
    checker.start()
    try:
        with _connect(address, ticket) as tls:
            if hangup is not None:
                hangup.attach(tls)
            buffer = bytearray()
            batch: list[tuple[CID, bytes]] = []
            batch_bytes = 0
            while not refused:
                data = tls.recv(65536)  # TLS hands over one 16 KiB record a call, whatever the size asked
                if not data:
                    break
                buffer += data
                at = 0
                while (frame := next_upload(buffer, at)) is not None:
                    cid, block, at = frame
                    batch.append((cid, block))
                    batch_bytes += len(block)
                del buffer[:at]
                if batch_bytes >= STORE_BATCH:
                    batches.put(batch)
                    batch, batch_bytes = [], 0
            batches.put(batch)
    except (OSError, ssl.SSLError) as error:
        raise BulkUnavailable(f"the DAG stream from {address} broke: {error}") from None
    except (BadUpload, CIDError) as error:
        raise BulkUnavailable(f"the DAG stream from {address} was refused: {error}") from None
    finally:
        batches.put(None)
        checker.join()
    if refused:
        raise BulkUnavailable(f"the DAG stream from {address} was refused: {refused[0]}")
    if not check.whole:
        raise BulkUnavailable(f"the DAG stream from {address} ended with {len(check.waiting)} block(s) missing")
    return check


def _connect(address: str, ticket: Ticket) -> ssl.SSLSocket:
    """A TLS connection to the holder that gave `ticket`, the ticket redeemed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # checked below against the digest libp2p vouched for
    try:
        plain = socket.create_connection((address, ticket.port), timeout=IDLE_SECONDS / 4)
    except OSError as error:
        raise StreamPortUnreachable(f"cannot reach {address} port {ticket.port}: {error}") from None
    plain.settimeout(IDLE_SECONDS)
    try:
        tls = context.wrap_socket(plain)
    except (OSError, ssl.SSLError) as error:
        plain.close()
        raise BulkUnavailable(f"no TLS with {address} port {ticket.port}: {error}") from None
    certificate = tls.getpeercert(binary_form=True) or b""
    if not hmac.compare_digest(hashlib.sha256(certificate).digest(), ticket.certificate):
        tls.close()
        raise BulkUnavailable(f"{address} port {ticket.port} is not the peer that gave the ticket")
    tls.sendall(ticket.secret)
    return tls


async def pull(libp2p: IHost, peer: ID, root: CID, store: BlockStore) -> DagCheck:
    """Bring `root`'s whole DAG from `peer` into `store`; BulkUnavailable if not."""
    address, ticket = await request_ticket(libp2p, peer, root)
    hangup = Hangup()
    try:
        return await trio.to_thread.run_sync(receive_dag, address, ticket, root, store, hangup,
                                             abandon_on_cancel=True)
    finally:
        hangup()


def _server_context() -> tuple[ssl.SSLContext, bytes]:
    """A TLS 1.3 server context with a new self-signed certificate, and its digest."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2pnode")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .sign(key, hashes.SHA256()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory() as scratch:  # ssl loads keys from files only
        pem = Path(scratch) / "tls.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        context.load_cert_chain(pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    return context, hashlib.sha256(der).digest()


def _receive_exactly(tls: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = tls.recv(size - len(data))
        if not more:
            raise ConnectionError("the fetcher hung up")
        data += more
    return data


async def _write_message(stream: INetStream, body: bytes) -> None:
    await stream.write(len(body).to_bytes(4, "big") + body)


async def _read_message(stream: INetStream, limit: int = 4096) -> bytes:
    header = await _read_exactly(stream, 4)
    size = int.from_bytes(header, "big")
    if size > limit:
        raise ValueError(f"a {size}-byte message, over the {limit}-byte limit")
    return await _read_exactly(stream, size)


async def _read_exactly(stream: INetStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = await stream.read(size - len(data))
        if not more:
            raise ConnectionError("the stream ended early")
        data += more
    return data

