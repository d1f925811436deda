"""Live logs: an execution's stdout and stderr, read by offset from the
node that runs it, through any peer.

Engines append to `executions/<id>/stdout` and `stderr` as the task runs.
Any peer asks the executing node for what lies past the offsets it has
(`LogRead` over the transport, answered with a `LogChunk`); the node that
serves the API keeps the offsets and asks again while the execution runs.
When an execution ends or is stopped its files are trimmed to their last
`keep_bytes` (`seal`); a `<stream>.start` file remembers how many bytes
went, so offsets stay those of the whole stream.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.records import ExecutionRecord, ExecutionState
from protocols.wire import message

STREAMS = ("stdout", "stderr")
MAX_CHUNK = 256 * 1024  # bytes of each stream one LogChunk carries
DEFAULT_KEEP_BYTES = 1 << 20  # of each stream, once the execution ended
FOLLOW_POLL = 0.5  # seconds between reads of a running execution's files
_NEVER_RAN = frozenset(
    {ExecutionState.NEW, ExecutionState.ASK_FOR_BID, ExecutionState.ASK_FOR_BID_ACCEPTED,
     ExecutionState.ASK_FOR_BID_REJECTED, ExecutionState.BID_ACCEPTED, ExecutionState.BID_REJECTED}
)


@message("log-read")
@dataclass(frozen=True, slots=True)
class LogRead:
    """Send me what an execution wrote past these offsets."""

    execution_id: str
    stdout_offset: int = 0
    stderr_offset: int = 0


@message("log-chunk")
@dataclass(frozen=True, slots=True)
class LogChunk:
    """What an execution wrote from `*_offset` on (an offset later than the
    one asked for means the bytes between were trimmed away)."""

    execution_id: str
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_offset: int = 0
    stderr_offset: int = 0
    error: str = ""


class LogFiles:
    """The stdout/stderr files of the executions on this node."""

    def __init__(self, root: Path, keep_bytes: int = DEFAULT_KEEP_BYTES) -> None:
        self.root = root
        self.keep_bytes = keep_bytes

    def read(self, request: LogRead) -> LogChunk:
        workdir = self._workdir(request.execution_id)
        if workdir is None or not any((workdir / stream).is_file() for stream in STREAMS):
            return LogChunk(request.execution_id, error="this node holds no logs for that execution")
        data: dict[str, Any] = {}
        for stream, asked in zip(STREAMS, (request.stdout_offset, request.stderr_offset)):
            start = _start(workdir, stream)
            offset = max(asked, start, 0)
            try:
                with (workdir / stream).open("rb") as file:
                    file.seek(offset - start)
                    data[stream] = file.read(MAX_CHUNK)
            except OSError:
                data[stream] = b""
            data[f"{stream}_offset"] = offset
        return LogChunk(request.execution_id, **data)

    def seal(self, execution_id: str) -> None:
        """The execution ended: keep the last `keep_bytes` of each stream."""
        workdir = self._workdir(execution_id)
        if workdir is None:
            return
        for stream in STREAMS:
            path = workdir / stream
            try:
                size = path.stat().st_size
                if size <= self.keep_bytes:
                    continue
                with path.open("rb") as file:
                    file.seek(size - self.keep_bytes)
                    tail = file.read()
                with tempfile.NamedTemporaryFile(dir=workdir, prefix=f".{stream}-", delete=False) as tmp:
                    tmp.write(tail)
                (workdir / f".{stream}.start").write_text(str(_start(workdir, stream) + size - len(tail)))
                os.replace(tmp.name, path)
            except OSError:
                continue  # the logs stay as they are; nothing is lost but disk

    def _workdir(self, execution_id: str) -> Path | None:
        if not execution_id or "/" in execution_id or "\\" in execution_id or execution_id.startswith("."):
            return None
        workdir = self.root / execution_id
        return workdir if workdir.is_dir() else None


def _start(workdir: Path, stream: str) -> int:
    try:
        return int((workdir / f".{stream}.start").read_text())
    except (OSError, ValueError):
        return 0


ReadLog = Callable[[ExecutionRecord, LogRead], Awaitable[LogChunk | None]]


async def stream_job_logs(
    lookup: Callable[[], Awaitable[Any]],
    read: ReadLog,
    sleep: Callable[[float], Awaitable[None]],
    *,
    follow: bool,
    execution_id: str = "",
) -> AsyncIterator[dict[str, Any]]:
    """Every started execution's output as {ExecutionID, NodeID, Type, Line}
    pieces, in the order written; with `follow`, until the job ended and
    every execution's output was read. `read` answers None when the node
    that ran it cannot be reached: then the record's copy of the output is
    given once the execution ended."""
    offsets: dict[str, list[int]] = {}
    decoders: dict[tuple[str, str], codecs.IncrementalDecoder] = {}
    finished: set[str] = set()
    while True:
        replica = await lookup()
        ended = replica.header.state.terminal
        executions = sorted(replica.executions.values(), key=lambda e: (e.create_time, e.id))
        for execution in executions:
            if execution.id in finished or execution.state in _NEVER_RAN:
                continue
            if execution_id and not execution.id.startswith(execution_id):
                continue
            was_terminal = execution.state.terminal
            while True:
                at = offsets.setdefault(execution.id, [0, 0])
                chunk = await read(execution, LogRead(execution.id, at[0], at[1]))
                if chunk is None or chunk.error:
                    if was_terminal:
                        finished.add(execution.id)
                        if chunk is None and execution.result is not None:
                            for stream, text in (("stdout", execution.result.stdout), ("stderr", execution.result.stderr)):
                                if text:
                                    yield _piece(execution, stream, text)
                    break
                got = False
                for index, stream in enumerate(STREAMS):
                    data, offset = getattr(chunk, stream), getattr(chunk, f"{stream}_offset")
                    at[index] = offset + len(data)
                    decoder = decoders.setdefault((execution.id, stream), codecs.getincrementaldecoder("utf-8")("replace"))
                    text = decoder.decode(data, final=False)
                    if text:
                        got = True
                        yield _piece(execution, stream, text)
                if not got and not (chunk.stdout or chunk.stderr):
                    if was_terminal:
                        finished.add(execution.id)
                    break
        if not follow:
            return
        wanted = [e for e in executions if not execution_id or e.id.startswith(execution_id)]
        if ended and all(e.id in finished or e.state in _NEVER_RAN for e in wanted):
            return
        await sleep(FOLLOW_POLL)


def _piece(execution: ExecutionRecord, stream: str, text: str) -> dict[str, Any]:
    return {"ExecutionID": execution.id, "NodeID": execution.node_id, "Type": stream, "Line": text}
