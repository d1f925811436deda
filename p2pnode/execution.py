"""Running one won execution on this node: fetch inputs, run, publish.

Each execution gets a directory of its own under the node's data directory:

    executions/<execution id>/inputs/...    what the input sources brought
    executions/<execution id>/results/NAME  one per ResultPath, mounted writable
    executions/<execution id>/stdout, stderr

The `local` publisher leaves the results there; any peer fetches them with a
`ResultFetch` over a stream. Only the engines this node offers are run here;
the leader never places other work on it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
import trio

from p2pnode.engines.docker import BindMount, DockerEngine, DockerRun
from p2pnode.engines.wasm import Mount, WasmEngine, WasmRun, decode_data_url
from p2pnode.paths import inside
from protocols.jobspec import JobDefaults
from protocols.paths import mount_point
from protocols.events import ExecutionEnded, ExecutionProgressed, Input
from protocols.records import ExecutionRecord, ExecutionResult, ExecutionState, JobHeader
from protocols.wire import message

log = logging.getLogger("p2pnode.execution")

OUTPUT_IN_RECORD = 4096  # bytes of stdout/stderr carried in the replicated record
MAX_RESULT_BYTES = 900 * 1024  # what one ResultFiles message may carry
MAX_DOWNLOAD_BYTES = 256 << 20


@message("result-fetch")
@dataclass(frozen=True, slots=True)
class ResultFetch:
    execution_id: str


@message("result-files")
@dataclass(frozen=True, slots=True)
class ResultFiles:
    """An execution's published files, by path relative to its result."""

    execution_id: str
    files: tuple[tuple[str, bytes], ...] = ()
    error: str = ""


class InputError(Exception):
    """An input source could not be fetched or is not allowed here."""


class ExecutionRunner:
    def __init__(
        self,
        root: Path,
        cache_dir: Path,
        allowed_paths: tuple[str, ...] = (),
        defaults: JobDefaults = JobDefaults(),
        docker: DockerEngine | None = None,
    ) -> None:
        self.root = root
        self.defaults = defaults  # for a spec that came without them (a node that fills none)
        self.allowed_paths = tuple(Path(p).resolve() for p in allowed_paths)
        self.wasm = WasmEngine(cache_dir)
        self.docker = docker
        self._cancels: dict[str, threading.Event] = {}
        self._reasons: dict[str, str] = {}

    def cancel(self, execution_id: str, reason: str) -> None:
        event = self._cancels.get(execution_id)
        if event is not None:
            self._reasons[execution_id] = reason
            event.set()

    async def run(
        self,
        execution: ExecutionRecord,
        header: JobHeader,
        progressed: Callable[[Input], Awaitable[None]],
    ) -> ExecutionEnded:
        task = header.spec.task
        workdir = self.root / execution.id
        cancel = self._cancels.setdefault(execution.id, threading.Event())
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            if task.engine.type == "docker" and self.docker is not None:
                return await self._run_docker(execution, header, workdir, cancel, progressed)
            if task.engine.type != "wasm":
                return _failed(execution, f"this node has no {task.engine.type} engine")
            params = task.engine.params
            try:
                module = await self._fetch_bytes(params.entry_module)
                imports = []
                for index, source in enumerate(params.import_modules):
                    name = source.alias or PurePosixPath(source.target).stem or f"import{index}"
                    imports.append((name, await self._fetch_bytes(source)))
                mounts = await self._mount_inputs(task.input_sources, workdir / "inputs")
                mounts += _result_mounts(task.result_paths, workdir / "results")
            except (InputError, ValueError) as error:  # ValueError: a name that leaves its folder
                return _failed(execution, f"inputs: {error}")
            run = WasmRun(
                module=module,
                entrypoint=params.entrypoint or "_start",
                arguments=tuple(params.parameters),
                environment=dict(params.environment_variables),
                mounts=tuple(mounts),
                import_modules=tuple(imports),
                memory_limit=task.resources.memory or self.defaults.memory or None,
                timeout=float(task.timeouts.total_timeout) or None,
                output_dir=workdir,
            )
            outcome = await trio.to_thread.run_sync(self.wasm.run, run, cancel)
            if cancel.is_set():
                return _failed(execution, self._reasons.get(execution.id, "cancelled"))
            await progressed(ExecutionProgressed(execution.id, ExecutionState.PUBLISHING, "publishing results"))
            result = ExecutionResult(
                exit_code=outcome.exit_code,
                stdout=outcome.stdout[:OUTPUT_IN_RECORD],
                stderr=outcome.stderr[:OUTPUT_IN_RECORD],
                publisher=task.publisher.type if task.publisher is not None else "",
                location=f"local:{execution.node_id}/{execution.id}",
                error=outcome.error or ("" if outcome.exit_code == 0 else f"exit code {outcome.exit_code}"),
            )
            ok = outcome.error is None and outcome.exit_code == 0
            return ExecutionEnded(execution.id, ok, result, "completed" if ok else result.error)
        finally:
            self._cancels.pop(execution.id, None)
            self._reasons.pop(execution.id, None)

    async def _run_docker(
        self,
        execution: ExecutionRecord,
        header: JobHeader,
        workdir: Path,
        cancel: threading.Event,
        progressed: Callable[[Input], Awaitable[None]],
    ) -> ExecutionEnded:
        assert self.docker is not None
        task = header.spec.task
        params = task.engine.params
        try:
            mounts = await self._mount_inputs(task.input_sources, workdir / "inputs")
            mounts += _result_mounts(task.result_paths, workdir / "results")
        except (InputError, ValueError) as error:  # ValueError: a name that leaves its folder
            return _failed(execution, f"inputs: {error}")
        run = DockerRun(
            execution_id=execution.id,
            image=params.image,
            output_dir=workdir,
            entrypoint=params.entrypoint,
            parameters=tuple(params.parameters),
            working_directory=params.working_directory,
            environment=dict(params.environment_variables),
            mounts=tuple(BindMount(m.host_path, m.guest_path, m.read_only) for m in mounts),
            cpu_millicores=task.resources.cpu,
            memory_limit=task.resources.memory or self.defaults.memory,
            gpus=task.resources.gpu,
            network=str(task.network.type),
            timeout=float(task.timeouts.total_timeout) or None,
        )
        try:
            outcome = await trio.to_thread.run_sync(self.docker.run, run, cancel, abandon_on_cancel=True)
        except trio.Cancelled:  # the node stops: its container goes with it
            cancel.set()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.docker.remove_execution, execution.id)
            raise
        if cancel.is_set():
            return _failed(execution, self._reasons.get(execution.id, "cancelled"))
        await progressed(ExecutionProgressed(execution.id, ExecutionState.PUBLISHING, "publishing results"))
        return _ended(execution, task, outcome.exit_code, outcome.stdout, outcome.stderr, outcome.error)

    def result_files(self, execution_id: str) -> ResultFiles:
        """The files an execution published here, within one message's size."""
        workdir = self.root / execution_id
        if not workdir.is_dir() or "/" in execution_id or execution_id.startswith("."):
            return ResultFiles(execution_id, error="this node holds no results for that execution")
        files: list[tuple[str, bytes]] = []
        total = 0
        results = workdir / "results"
        found = [(workdir / "stdout", "stdout"), (workdir / "stderr", "stderr")]
        found += [(path, str(path.relative_to(results))) for path in sorted(results.rglob("*"))]
        for path, name in found:
            if not path.is_file():
                continue
            data = path.read_bytes()
            total += len(data)
            if total > MAX_RESULT_BYTES:
                return ResultFiles(execution_id, error=f"results exceed {MAX_RESULT_BYTES} bytes; fetch them from the node's disk")
            files.append((name, data))
        return ResultFiles(execution_id, tuple(files))

    # ------------------------------------------------------------ inputs

    async def _fetch_bytes(self, source: object) -> bytes:
        kind = source.source.type  # type: ignore[attr-defined]
        params = source.source.params  # type: ignore[attr-defined]
        if kind == "inline":
            try:
                return decode_data_url(str(params.get("URL", "")))
            except ValueError as error:
                raise InputError(str(error)) from error
        if kind == "url":
            return await _download(str(params.get("URL", "")))
        if kind == "localDirectory":
            path = self._allowed(str(params.get("SourcePath", "")))
            if not path.is_file():
                raise InputError(f"{path} is not a file")
            return path.read_bytes()
        raise InputError(f"{kind} sources are not available on this node")

    async def _mount_inputs(self, sources: object, root: Path) -> list[Mount]:
        """Mount each input at its target. WASI mounts directories, so a
        single file lands in a directory mounted at the target's parent."""
        mounts: list[Mount] = []
        by_parent: dict[str, Path] = {}
        for index, source in enumerate(sources):  # type: ignore[attr-defined]
            kind = source.source.type
            if kind == "localDirectory":
                path = self._allowed(str(source.source.params.get("SourcePath", "")))
                read_write = bool(source.source.params.get("ReadWrite", False))
                mounts.append(Mount(path, source.target, read_only=not read_write))
                continue
            data = await self._fetch_bytes(source)
            target = PurePosixPath(mount_point(source.target, "Target"))
            parent = str(target.parent)
            if parent not in by_parent:
                by_parent[parent] = root / str(index)
                by_parent[parent].mkdir(parents=True, exist_ok=True)
                mounts.append(Mount(by_parent[parent], parent, read_only=True))
            inside(by_parent[parent], target.name, "Target").write_bytes(data)
        return mounts

    def _allowed(self, source_path: str) -> Path:
        path = Path(source_path).resolve()
        if not any(path == allowed or allowed in path.parents for allowed in self.allowed_paths):
            raise InputError(
                f"{source_path} is not under this node's allowed local paths; "
                "the node's operator can allow it with Node.Compute.AllowedLocalPaths"
            )
        return path

    def forget(self, execution_id: str) -> None:
        shutil.rmtree(self.root / execution_id, ignore_errors=True)


async def _download(url: str) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise InputError(f"{url!r} is not an http(s) URL")
    try:
        async with httpx.AsyncClient(timeout=30, follow_redirects=True) as client:
            async with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise InputError(f"GET {url} answered {response.status_code}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise InputError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.HTTPError as error:
        raise InputError(f"could not download {url}: {error}") from error


def _ended(execution: ExecutionRecord, task: object, exit_code: int, stdout: str, stderr: str,
           error: str | None) -> ExecutionEnded:
    """How a docker run ends up in the record (as the wasm path above writes it)."""
    publisher = task.publisher  # type: ignore[attr-defined]
    result = ExecutionResult(
        exit_code=exit_code,
        stdout=stdout[:OUTPUT_IN_RECORD],
        stderr=stderr[:OUTPUT_IN_RECORD],
        publisher=publisher.type if publisher is not None else "",
        location=f"local:{execution.node_id}/{execution.id}",
        error=error or ("" if exit_code == 0 else f"exit code {exit_code}"),
    )
    ok = error is None and exit_code == 0
    return ExecutionEnded(execution.id, ok, result, "completed" if ok else result.error)


def _result_mounts(result_paths: object, outputs: Path) -> list[Mount]:
    """A writable folder per ResultPath, each checked to stay in `outputs`."""
    outputs.mkdir(parents=True, exist_ok=True)
    mounts = []
    for result_path in result_paths:  # type: ignore[attr-defined]
        folder = inside(outputs, result_path.name, "ResultPaths Name")
        folder.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(folder, mount_point(result_path.path, "ResultPaths Path"), read_only=False))
    return mounts


def _failed(execution: ExecutionRecord, why: str) -> ExecutionEnded:
    return ExecutionEnded(execution.id, False, ExecutionResult(exit_code=-1, error=why), why)
