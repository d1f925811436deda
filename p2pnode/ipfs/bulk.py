"""Whole DAGs between our own peers over plain TCP, beside bitswap.

Why: py-libp2p's Python Noise and yamux carry 26–30 MiB/s on this machine,
a thirtieth of a disk copy, so a job's input of a gigabyte would take a
minute to arrive. When both ends are p2pnode peers, the fetcher asks the
holder for the whole DAG instead, and it comes on a TCP connection of its
own as a stream of blocks (`dagstream`): one request, no round trip per
block. A peer that does not speak this (Kubo) or cannot be reached on it is
fetched from over bitswap.

Trust comes from libp2p. The fetcher asks over the libp2p connection it
already has (Noise, keyed by the peer ID, and by the network key in a
private network) for a ticket; the answer names the holder's port, a
single-use secret for that root, good for TICKET_SECONDS, and a fresh
AES-128 key. The fetcher connects and sends the secret (so the holder serves
only a peer it would serve over libp2p); the holder sends the blocks
encrypted with AES-CTR under that key (so nobody on the path reads them).

Why CTR and not TLS or an AEAD: integrity is already end to end. The fetcher
chose the root; it accepts a block only if a block it accepted links to it
and only if the bytes hash to that link (`DagCheck`), and frame lengths are
bounded. Bytes changed on the path can only make the stream stop, as
dropping the connection can. What encryption must add is secrecy, and a
key used for one stream only needs nothing more than CTR for that. TLS cost
3–4 CPU-seconds a GiB in Python's ssl (a 16 KiB record a call); CTR costs
0.15 on each side, so most of a fetch is the hashing it cannot skip.

The fetcher reads and decrypts on one thread into a few large buffers,
which two threads hash while a third checks the links and appends the
blocks to the store: each of these lets go of the GIL, so a fetch uses every
core the machine has.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cbor2
import trio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from p2pnode.ipfs.blockstore import MAX_BLOCK_BYTES, BlockStore
from p2pnode.ipfs.cid import CID, CIDError, hash_blocks, varint
from p2pnode.ipfs.dagstream import DagCheck, walk
from p2pnode.ipfs.frames import BadUpload, frame_at
from p2pnode.transport import ListenFailed

log = logging.getLogger("p2pnode.ipfs.bulk")

PROTOCOL = "/p2pnode/ipfs-dag/2"  # 1 was the same over TLS
TICKET_SECONDS = 30.0
MAX_TICKETS = 256  # outstanding; the oldest go first
MAX_SENDS = 4  # DAGs sent at once (and greetings at once); a further fetcher waits its turn
GREET_SECONDS = 5.0  # for a connection's ticket to arrive
MAX_OPEN = 32  # connections accepted at once (sending or waiting); more are closed at once
IDLE_SECONDS = 20.0  # a connection quiet this long is dropped, on either side
SECRET_BYTES = 32
KEY_BYTES = 16  # AES-128: a key for one stream
SEND_BATCH = 1 << 20  # bytes of frames encrypted and handed to the socket in one call
RECEIVE_BYTES = 1024 << 10  # bytes read from the socket in one call
SLAB_BYTES = 4 << 20  # a buffer of received frames (filled to about 1 MiB short of a big block's room)
SLABS = 4  # slabs in use at once: what a fetch holds in memory at most
SLABS_A_STORE = 2  # slabs' blocks stored in one index transaction at most, when they wait
HASHERS = 2
_MAX_FRAME = MAX_BLOCK_BYTES + 256  # a block and its CID and lengths
_CUT_AT = SLAB_BYTES - RECEIVE_BYTES - _MAX_FRAME  # past this, a slab is handed on before the next read
assert _CUT_AT > 0, "a slab must hold a read past the cut and a whole frame cut in two"
_SLACK = 16  # the cipher may want a block's worth of room past what it writes


def _cipher(key: bytes) -> Cipher:  # type: ignore[type-arg]
    """AES-CTR from a counter of zero: each key serves one stream, so no counter repeats."""
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16)))


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
    secret: bytes  # sent to the holder: which root, and that libp2p asked
    key: bytes  # the stream's AES key


class DagServer:
    """The holder's side: tickets asked for over libp2p, DAGs sent over TCP."""

    def __init__(self, store: BlockStore, host: str, port: int) -> None:
        self.store = store
        self.bind = (host, port)
        self.port = 0
        self._tickets: dict[bytes, tuple[CID, bytes, float]] = {}  # secret -> root, key, expiry
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
        """Answer a ticket request: {"root": CID bytes} -> {"port", "ticket", "key"} or {"error"}."""
        try:
            with trio.fail_after(IDLE_SECONDS):
                request = cbor2.loads(await _read_message(stream))
                root = CID.from_bytes(bytes(request["root"]))
                if self.store.has(root):
                    secret, key = self._issue(root)
                    answer = {"port": self.port, "ticket": secret, "key": key}
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

    def _issue(self, root: CID) -> tuple[bytes, bytes]:
        secret, key = os.urandom(SECRET_BYTES), os.urandom(KEY_BYTES)
        now = time.monotonic()
        with self._lock:
            for old, (_, _, expires) in list(self._tickets.items()):
                if expires < now:
                    del self._tickets[old]
            while len(self._tickets) >= MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            self._tickets[secret] = (root, key, now + TICKET_SECONDS)
        return secret, key

    def _redeem(self, secret: bytes) -> tuple[CID, bytes] | None:
        with self._lock:
            root, key, expires = self._tickets.pop(secret, (None, b"", 0.0))
        return (root, key) if root is not None and expires >= time.monotonic() else None

    async def _send(self, connection: trio.socket.SocketType) -> None:
        """Take the ticket within GREET_SECONDS, then send the DAG when a
        sending slot is free. Both run in threads of their own limiters: a
        flood of connections never takes the node's threads."""
        plain = socket.socket(fileno=connection.detach())
        hangup = Hangup()
        hangup.attach(plain)
        try:
            greeted = None
            with trio.move_on_after(GREET_SECONDS):
                greeted = await trio.to_thread.run_sync(self._greet, plain, limiter=self._greetings,
                                                        abandon_on_cancel=True)
            if greeted is None:
                log.info("a DAG stream connection gave no valid ticket in %g s: closed", GREET_SECONDS)
                return
            await trio.to_thread.run_sync(self._send_dag, plain, *greeted, limiter=self._sends,
                                          abandon_on_cancel=True)
        except Exception as error:  # noqa: BLE001 - one fetcher's failure is its own
            log.info("a DAG send ended early: %s", error)
        finally:
            self._open -= 1
            hangup()
            plain.close()

    def _greet(self, plain: socket.socket) -> tuple[CID, bytes] | None:
        """In a thread: the ticket's secret; (root, key), or None if it is no good."""
        plain.setblocking(True)
        plain.settimeout(GREET_SECONDS)
        greeted = self._redeem(_receive_exactly(plain, SECRET_BYTES))
        plain.settimeout(IDLE_SECONDS)
        return greeted

    def _send_dag(self, plain: socket.socket, root: CID, key: bytes) -> None:
        """In a thread: every block of the DAG as frames (`frames`), encrypted
        straight into one reused buffer: no block is copied on the way."""
        encrypt = _cipher(key).encryptor()
        out = bytearray(SEND_BATCH + _MAX_FRAME + _SLACK)
        view = memoryview(out)
        filled = 0
        scratch = bytearray(MAX_BLOCK_BYTES)  # each block is read into it, then encrypted out of it
        where: dict[bytes, tuple[int, int, int]] = {}  # a node's links, looked up at once

        def read(cid: CID) -> bytes | memoryview:
            return self.store.get_unchecked(cid, scratch, where.pop(cid.digest, None))  # the fetcher hashes each

        for cid, block in walk(root, read, lambda links: where.update(self.store.locate(links))):
            raw = cid.to_bytes()
            filled += encrypt.update_into(varint(len(raw)) + raw + varint(len(block)), view[filled:])
            filled += encrypt.update_into(block, view[filled:])
            if filled >= SEND_BATCH:
                plain.sendall(view[:filled])
                filled = 0
        plain.sendall(view[:filled])
        plain.shutdown(socket.SHUT_WR)
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
        ticket = Ticket(int(answer["port"]), bytes(answer["ticket"]), bytes(answer["key"]))
    except (KeyError, TypeError, ValueError):
        raise BulkUnavailable(f"{peer} answered a ticket request with {answer!r:.200}") from None
    if (address is None or not 0 < ticket.port < 65536 or len(ticket.secret) != SECRET_BYTES
            or len(ticket.key) != KEY_BYTES):
        raise BulkUnavailable(f"{peer} answered a ticket request with an unusable ticket")
    return address[0], ticket


def receive_dag(address: str, ticket: Ticket, root: CID, store: BlockStore,
                hangup: Hangup | None = None) -> DagCheck:
    """In a worker thread: connect, redeem the ticket and store every block
    of `root`'s DAG as it is checked. Raises BulkUnavailable when the DAG
    did not come whole (what came is kept).

    This thread reads and decrypts into a slab; a full slab's blocks are
    hashed by the HASHERS while the next slab fills, and a checker thread
    takes the slabs in order: their links checked, their blocks stored, the
    slab freed for reuse."""
    check = DagCheck(root)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(SLABS):
        free.put(bytearray(SLAB_BYTES + _SLACK))
    ready: queue.Queue[tuple[bytearray, list[_Frame], Future[list[bytes]]] | None] = queue.Queue()
    refused: list[Exception] = []
    hashers = ThreadPoolExecutor(HASHERS, thread_name_prefix="dag-hash")

    def check_and_store() -> None:
        done = False
        while not done:
            slabs = [ready.get()]  # then what else is waiting, to store in one index transaction
            while slabs[-1] is not None and len(slabs) < SLABS_A_STORE and not ready.empty():
                slabs.append(ready.get())
            if slabs[-1] is None:
                done = True
                slabs.pop()
            try:
                if not refused:
                    blocks = []
                    for slab, frames, digests in slabs:
                        view = memoryview(slab)
                        blocks += [(check.accept(cid, view[start:end], digest), view[start:end])
                                   for (cid, start, end), digest in zip(frames, digests.result())]
                    store.put_many(blocks)
            except Exception as error:  # noqa: BLE001 - raised by the reader
                refused.append(error)
            finally:
                for slab, _, _ in slabs:
                    free.put(slab)

    checker = threading.Thread(target=check_and_store, name="dag-check", daemon=True)
    checker.start()
    try:
        with _connect(address, ticket) as plain:
            if hangup is not None:
                hangup.attach(plain)
            _read_slabs(plain, _cipher(ticket.key).decryptor(), free, ready, hashers, refused)
    except OSError as error:
        raise BulkUnavailable(f"the DAG stream from {address} broke: {error}") from None
    except (BadUpload, CIDError) as error:
        raise BulkUnavailable(f"the DAG stream from {address} was refused: {error}") from None
    finally:
        ready.put(None)
        checker.join()
        hashers.shutdown()
    if refused:
        raise BulkUnavailable(f"the DAG stream from {address} was refused: {refused[0]}")
    if not check.whole:
        raise BulkUnavailable(f"the DAG stream from {address} ended with {len(check.waiting)} block(s) missing")
    return check


_Frame = tuple[CID, int, int]  # a block's CID and where its bytes lie in a slab


def _read_slabs(plain: socket.socket, decrypt, free: queue.Queue[bytearray],  # type: ignore[no-untyped-def]
                ready: queue.Queue, hashers: ThreadPoolExecutor, refused: list[Exception]) -> None:
    """Read, decrypt and cut the stream into slabs of whole frames, each
    handed on with its blocks' hashes under way."""
    raw = bytearray(RECEIVE_BYTES)
    slab, filled = free.get(), 0
    while not refused:
        got = plain.recv_into(raw)
        if got:
            filled += decrypt.update_into(memoryview(raw)[:got], memoryview(slab)[filled:])
        if filled > _CUT_AT or not got:
            frames, used = _cut(slab, filled)
            view = memoryview(slab)
            digests = hashers.submit(hash_blocks, [view[start:end] for _, start, end in frames])
            following = free.get() if got else slab
            if got:
                following[:filled - used] = view[used:filled]  # a frame cut in two goes on in the next slab
            ready.put((slab, frames, digests))
            if not got and used != filled:
                raise ConnectionError(f"the stream ended inside a frame ({filled - used} bytes)")
            slab, filled = following, filled - used
        if not got:
            return


def _cut(slab: bytearray, filled: int) -> tuple[list[_Frame], int]:
    """The whole frames in `slab[:filled]`, and where the first unfinished one begins."""
    frames, at = [], 0
    while (frame := frame_at(slab, at, filled)) is not None:
        cid, start, at = frame
        frames.append((cid, start, at))
    return frames, at


def _connect(address: str, ticket: Ticket) -> socket.socket:
    """A connection to the holder that gave `ticket`, the ticket redeemed."""
    try:
        plain = socket.create_connection((address, ticket.port), timeout=IDLE_SECONDS / 4)
    except OSError as error:
        raise StreamPortUnreachable(f"cannot reach {address} port {ticket.port}: {error}") from None
    plain.settimeout(IDLE_SECONDS)
    plain.sendall(ticket.secret)
    return plain


async def pull(libp2p: IHost, peer: ID, root: CID, store: BlockStore) -> DagCheck:
    """Bring `root`'s whole DAG from `peer` into `store`; BulkUnavailable if not."""
    address, ticket = await request_ticket(libp2p, peer, root)
    hangup = Hangup()
    try:
        return await trio.to_thread.run_sync(receive_dag, address, ticket, root, store, hangup,
                                             abandon_on_cancel=True)
    finally:
        hangup()


def _receive_exactly(plain: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = plain.recv(size - len(data))
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

