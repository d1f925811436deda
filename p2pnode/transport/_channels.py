"""Long-lived request channels: one libp2p stream per peer and direction.

Theory of operation
-------------------
Opening a libp2p stream costs a yamux open and two multistream-select round
trips (≈5 ms of CPU on this machine, far more under load), against ≈1 ms for
a frame on a stream that stays open. So each peer opens ONE stream to each
peer it sends requests to and keeps it: its requests go out on it as frames
tagged with a request id, and the answers come back on the same stream, tagged
with the id they answer. The other direction is the other peer's own stream.
No protocol is negotiated per message.

A frame is a header (body length u32, kind u8, request id u64) and the body.
Kinds: REQUEST, OK (the handler's answer) and FAILED (why the handler failed).

- Batching: frames queued while the stream is busy leave in one write; a
  server's empty acknowledgements wait up to `ACK_LINGER` for company.
- Back-pressure: at most `window` requests are in flight per channel; the
  next caller waits for room (within its own timeout), so a slow peer slows
  its callers instead of growing a queue without bound. A server answers one
  request of a stream at a time, in order, and does not read meanwhile, which
  pushes back on the sender through yamux's flow control.
- Reconnect: a channel whose stream breaks fails every request waiting on it
  (`PeerUnreachable`, with the reason) and is dropped; the next request opens
  a new one, on a new connection if the peer restarted.
- Hostile input: a frame announcing more than `MAX_FRAME_BYTES`, an unknown
  kind, or a reply on a stream we serve closes THAT stream with a logged
  reason; the connection and its other streams go on.
- Delivery and time-outs stay the caller's: a request either returns the
  answer or raises; a time-out gives up waiting (a late answer is ignored)
  without closing a stream that other requests share.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream

from p2pnode.transport._errors import PayloadTooLarge, PeerUnreachable, RequestRejected
from p2pnode.transport._framing import MAX_FRAME_BYTES, close_quietly, reset_quietly

log = logging.getLogger("p2pnode.transport")

HEADER = struct.Struct(">IBQ")
REQUEST, OK, FAILED = 0, 1, 2
DEFAULT_WINDOW = 128
ACK_LINGER = 0.005
"""Seconds an empty acknowledgement may wait to leave with other frames (in a
200-job burst, 5 ms took ≈13 % off the CPU per job; 20 ms no more)."""
READ_CHUNK = 256 * 1024

Handler = Callable[[str, bytes], Awaitable[bytes]]


def _nobody() -> None:
    pass


class ProtocolViolation(Exception):
    """The peer sent what our framing never would; its stream is closed."""


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _leaf(error: BaseException) -> BaseException:
    """The one exception inside the groups trio's nurseries wrap it in."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def frame(kind: int, request_id: int, body: bytes) -> bytes:
    if len(body) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(f"a frame of {len(body)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    return HEADER.pack(len(body), kind, request_id) + body


class FrameReader:
    """Whole frames out of a stream, read in large chunks (few reads per burst)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> tuple[int, int, bytes]:
        """(kind, request id, body); EOFError when the stream ends between frames."""
        await self._fill(HEADER.size)
        length, kind, request_id = HEADER.unpack_from(self._buffer)
        if length > MAX_FRAME_BYTES:
            raise ProtocolViolation(f"it announced a {length}-byte frame, over the {MAX_FRAME_BYTES}-byte limit")
        if kind not in (REQUEST, OK, FAILED):
            raise ProtocolViolation(f"it sent a frame of unknown kind {kind}")
        await self._fill(HEADER.size + length)
        body = bytes(self._buffer[HEADER.size : HEADER.size + length])
        del self._buffer[: HEADER.size + length]
        return kind, request_id, body

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            chunk = await self._stream.read(READ_CHUNK)
            if not chunk:
                raise EOFError("the stream ended" + (" inside a frame" if self._buffer else ""))
            self._buffer += chunk


class FrameWriter:
    """Frames queued by many tasks leave in order, those queued together in one write.

    `linger`: frames put as not `urgent` (a server's empty acknowledgements)
    wait up to this many seconds for company: the next urgent frame, or the
    time running out, takes them all in one write. Nobody waits for an
    acknowledgement on the critical path (senders resume once their request
    is queued), but each write costs ≈0.5 ms of CPU at both ends."""

    def __init__(self, stream: INetStream, linger: float = 0.0) -> None:
        self._stream = stream
        self._linger = linger
        self._queued: list[bytes] = []
        self._wakeup = trio.Event()
        self._urgent = trio.Event()

    def put(self, data: bytes, urgent: bool = True) -> None:
        self._queued.append(data)
        self._wakeup.set()
        if urgent:
            self._urgent.set()

    async def run(self) -> None:
        """Write until the stream breaks (raises) or the task is cancelled."""
        while True:
            await self._wakeup.wait()
            if self._linger and not self._urgent.is_set():
                with trio.move_on_after(self._linger):
                    await self._urgent.wait()
            # One more turn of the scheduler before taking the batch: the tasks
            # already runnable (a burst's handlers, a flush to many peers) queue
            # their frames too, and they leave in one Noise/yamux write instead
            # of one each.
            await trio.sleep(0)
            self._wakeup, self._urgent = trio.Event(), trio.Event()
            batch, self._queued = self._queued, []
            await self._stream.write(b"".join(batch))


class Channel:
    """Our requests to one peer on one stream we opened, answers matched by id."""

    def __init__(self, peer_id: str, stream: INetStream, window: int, heard: Callable[[], None] = _nobody) -> None:
        """`heard` is called at every frame the peer sends: it is alive."""
        self.peer_id = peer_id
        self._heard = heard
        self._stream = stream
        self._writer = FrameWriter(stream)
        self._room = trio.Semaphore(window)
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Answer] = {}
        self.broken: str | None = None  # why it can no longer carry requests

    async def run(self) -> None:
        """Read answers and write requests until the stream breaks; then fail
        every request still waiting, with the reason."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer.run)
                await self._read_answers()
                nursery.cancel_scope.cancel()
        except Exception as group:  # noqa: BLE001 - every way a stream breaks means the same here
            error = _leaf(group)
            if isinstance(error, ProtocolViolation):
                log.warning("closed our request stream to %s: %s", self.peer_id, error)
            self._break(describe(error))
        else:
            self._break("the peer closed the stream")
        finally:
            self._break("the channel was closed")
            await reset_quietly(self._stream)

    async def request(self, data: bytes, queued: Callable[[], None]) -> bytes:
        """The peer's answer; waits for room in the window first, and calls
        `queued` once the request is in line to leave. The caller bounds the time."""
        async with self._room:
            if self.broken is not None:
                raise PeerUnreachable(self.peer_id, self.broken)
            request_id = next(self._ids)
            answer = self._waiting[request_id] = _Answer()
            try:
                self._writer.put(frame(REQUEST, request_id, data))
                queued()
                await answer.ready.wait()
            finally:
                self._waiting.pop(request_id, None)
        if answer.failure is not None:
            raise PeerUnreachable(self.peer_id, answer.failure)
        if answer.kind == FAILED:
            raise RequestRejected(self.peer_id, answer.body.decode("utf-8", "replace"))
        return answer.body

    def in_flight(self) -> int:
        return len(self._waiting)

    async def _read_answers(self) -> None:
        reader = FrameReader(self._stream)
        while True:
            try:
                kind, request_id, body = await reader.next()
            except EOFError:
                return
            self._heard()
            if kind == REQUEST:
                raise ProtocolViolation("it sent a request on a stream that carries our requests")
            answer = self._waiting.get(request_id)
            if answer is None:
                log.debug("a late answer from %s to request %d (its caller gave up)", self.peer_id, request_id)
                continue
            answer.kind, answer.body = kind, body
            answer.ready.set()

    def _break(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        for answer in self._waiting.values():
            if not answer.ready.is_set():
                answer.failure = self.broken
                answer.ready.set()


class _Answer:
    __slots__ = ("ready", "kind", "body", "failure")

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.kind = OK
        self.body = b""
        self.failure: str | None = None


async def serve_channel(stream: INetStream, sender: str, handler: Handler, heard: Callable[[], None] = _nobody) -> None:
    """Answer a peer's requests on the stream it opened to us, one at a time
    and in order (the node's handler only queues the message, so this costs
    nothing and keeps a peer's messages in the order it sent them); while a
    handler runs we do not read, and yamux's flow control pushes back."""
    writer = FrameWriter(stream, ACK_LINGER)
    reader = FrameReader(stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            while True:
                try:
                    kind, request_id, body = await reader.next()
                except EOFError:
                    break
                heard()
                if kind != REQUEST:
                    raise ProtocolViolation(f"it sent an answer (kind {kind}) on a stream for its requests")
                answer = await _answer(sender, handler, request_id, body)
                writer.put(answer, urgent=len(answer) > HEADER.size or answer[4] != OK)
            nursery.cancel_scope.cancel()
    except Exception as group:  # a peer's broken stream must never reach the host
        error = _leaf(group)
        if isinstance(error, ProtocolViolation):
            log.warning("closed a request stream from %s: %s", sender, error)
        else:
            log.info("a request stream from %s ended: %s", sender, describe(error))
        await reset_quietly(stream)
        return
    await close_quietly(stream)


async def _answer(sender: str, handler: Handler, request_id: int, body: bytes) -> bytes:
    """The answer frame: OK and the handler's bytes, or FAILED and why."""
    try:
        reply = await handler(sender, body)
        if not isinstance(reply, bytes):
            raise TypeError(f"the request handler returned {type(reply).__name__}, not bytes")
        return frame(OK, request_id, reply)
    except Exception as error:
        log.warning("request from %s failed in its handler: %s", sender, describe(error), exc_info=True)
        return frame(FAILED, request_id, describe(error)[:1000].encode())
