"""Results as streams between peers: a manifest, then chunks by offset.

The node that ran an execution answers two requests over the ordinary
request/response transport: `ResultManifestAsk` (names, sizes, sha256 of each
file) and `ResultChunkAsk` (at most `CHUNK` bytes of one file from an offset).
Any peer can therefore relay results of any size without holding a file
whole, and a transfer cut by a dropped connection or a restart of either side
resumes at the offset it reached. Files are served from local disk (`local`
publisher) or read back from S3 (`s3` publisher) by the node that published
them, with its own credentials.

Everything a peer sends back is checked here before it can become a path:
names must be safe relative paths (see `storage.paths`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import trio

from p2pnode.storage import s3
from p2pnode.storage.local import FileEntry, LocalResults, Manifest, ResultsGone
from p2pnode.storage.paths import UnsafePath, safe_relative
from p2pnode.transport import TransportError
from protocols import wire
from protocols.wire import message

log = logging.getLogger("p2pnode.results")

CHUNK = 1 << 20  # bytes per chunk: well under the transport's 4 MiB frame
PATIENCE = 60.0  # seconds a transfer keeps retrying a silent node before it gives up
RETRY_EVERY = 1.0
GONE_PATIENCE = 20.0  # ... or this long once the network counts it as gone
REQUEST_TIMEOUT = 30.0


@message("result-manifest-ask")
@dataclass(frozen=True, slots=True)
class ResultManifestAsk:
    execution_id: str


@message("result-manifest")
@dataclass(frozen=True, slots=True)
class ResultManifest:
    execution_id: str
    files: tuple[tuple[str, int, str], ...] = ()  # name, size, sha256 hex
    error: str = ""


@message("result-chunk-ask")
@dataclass(frozen=True, slots=True)
class ResultChunkAsk:
    execution_id: str
    name: str
    offset: int
    length: int


@message("result-chunk")
@dataclass(frozen=True, slots=True)
class ResultChunk:
    execution_id: str
    name: str
    offset: int
    data: bytes = b""
    error: str = ""


class ResultsUnavailable(Exception):
    """Results cannot be had now; the message says why and what to do."""


Request = Callable[[str, bytes, float], Awaitable[bytes]]


@dataclass(frozen=True)
class ExecutionFiles:
    execution_id: str
    node_id: str
    files: tuple[FileEntry, ...]
    error: str = ""


class ResultServer:
    """The executing node's side: answers manifest and chunk requests."""

    def __init__(self, local: LocalResults, access: s3.S3Access) -> None:
        self.local = local
        self.access = access

    async def answer(self, ask: ResultManifestAsk | ResultChunkAsk) -> ResultManifest | ResultChunk:
        if isinstance(ask, ResultManifestAsk):
            try:
                manifest = self.local.manifest(ask.execution_id)
            except ResultsGone as error:
                return ResultManifest(ask.execution_id, error=str(error))
            return ResultManifest(ask.execution_id, tuple((f.name, f.size, f.sha256) for f in manifest.files))
        length = max(0, min(ask.length, CHUNK))
        try:
            data = await self.read(ask.execution_id, ask.name, max(0, ask.offset), length)
        except (ResultsGone, s3.S3Error, OSError) as error:
            return ResultChunk(ask.execution_id, ask.name, ask.offset, error=str(error))
        return ResultChunk(ask.execution_id, ask.name, ask.offset, data)

    async def read(self, execution_id: str, name: str, offset: int, length: int) -> bytes:
        manifest = self.local.manifest(execution_id)
        if manifest.publisher == "s3":
            entry = next((f for f in manifest.files if f.name == name), None)
            if entry is None:
                raise ResultsGone(f"execution {execution_id} published no file {name!r}")
            if offset >= entry.size:
                return b""
            return await trio.to_thread.run_sync(s3.read_range, self.access, manifest, name, offset, length)
        return await trio.to_thread.run_sync(self.local.read, execution_id, name, offset, length)


class ResultFetcher:
    """Any peer's side: manifests and file streams from the node that holds them."""

    def __init__(self, node_id: str, request: Request, server: ResultServer,
                 is_gone: Callable[[str], bool] = lambda node: False,
                 patience: float = PATIENCE, gone_patience: float = GONE_PATIENCE) -> None:
        self.node_id = node_id
        self.patience, self.gone_patience = patience, gone_patience
        self._request = request
        self._server = server
        self._is_gone = is_gone

    async def manifest(self, node_id: str, execution_id: str) -> ExecutionFiles:
        """The checked manifest of one execution; `error` set if unavailable."""
        try:
            answer = await self._ask(node_id, ResultManifestAsk(execution_id), ResultManifest)
        except ResultsUnavailable as error:
            return ExecutionFiles(execution_id, node_id, (), str(error))
        if answer.error:
            return ExecutionFiles(execution_id, node_id, (), f"node {node_id}: {answer.error}")
        try:
            files = tuple(_checked_entry(entry) for entry in answer.files)
        except UnsafePath as error:
            log.warning("node %s sent an unsafe result file name: %s", node_id, error)
            return ExecutionFiles(execution_id, node_id, (), f"node {node_id} sent an unsafe file name: {error}")
        return ExecutionFiles(execution_id, node_id, files)

    async def stream(self, node_id: str, execution_id: str, entry: FileEntry, offset: int = 0) -> AsyncIterator[bytes]:
        """The file's bytes from `offset`, chunk by chunk; a node that stops
        answering is asked again at the same offset for `PATIENCE` seconds."""
        while offset < entry.size:
            ask = ResultChunkAsk(execution_id, entry.name, offset, min(CHUNK, entry.size - offset))
            chunk = await self._ask(node_id, ask, ResultChunk)
            if chunk.error:
                raise ResultsUnavailable(f"node {node_id}: {chunk.error}")
            if chunk.offset != offset or not chunk.data or len(chunk.data) > entry.size - offset:
                raise ResultsUnavailable(f"node {node_id} sent a bad chunk of {entry.name} at offset {offset}")
            offset += len(chunk.data)
            yield chunk.data

    async def _ask(self, node_id: str, ask: object, expected: type) -> object:
        if node_id == self.node_id:
            return await self._server.answer(ask)  # type: ignore[arg-type]
        data = wire.encode(ask, self.node_id)
        started = trio.current_time()
        while True:
            try:
                reply = wire.decode(await self._request(node_id, data, REQUEST_TIMEOUT))
            except (TransportError, wire.WireError, trio.TooSlowError) as error:
                waited = trio.current_time() - started
                if self._is_gone(node_id) and waited > self.gone_patience:
                    raise ResultsUnavailable(_gone(node_id, f"the network counts it as gone ({error})")) from None
                if waited > self.patience:
                    raise ResultsUnavailable(_gone(node_id, f"it did not answer for {self.patience:g} s ({error})")) from None
                log.info("node %s did not answer a result request (%s); asking again", node_id, error)
                await trio.sleep(RETRY_EVERY)
                continue
            if reply.sender != node_id or not isinstance(reply.message, expected):
                raise ResultsUnavailable(f"node {node_id} answered a result request with {type(reply.message).__name__}")
            return reply.message


def _checked_entry(entry: tuple[str, int, str]) -> FileEntry:
    name, size, digest = entry
    safe_relative(name)
    if size < 0 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UnsafePath(f"{name!r} comes with a bad size or sha256")
    return FileEntry(name, size, digest)


def _gone(node_id: str, why: str) -> str:
    return (f"the node {node_id} that holds these results cannot be reached: {why}. Results kept by the local "
            "publisher live only on the node that ran the job; try again when it is back, or publish to s3 or ipfs")
