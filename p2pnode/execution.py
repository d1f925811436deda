"""Running one won execution on this node: fetch inputs, run, publish.

Each execution gets a directory of its own under the node's data directory:

    executions/<execution id>/inputs/...    what the input sources brought
    executions/<execution id>/results/NAME  one per ResultPath, mounted writable
    executions/<execution id>/stdout, stderr, exitCode

Input sources and publishers live in `p2pnode.storage`; this module only
dispatches on their type. The `local` publisher leaves the results there and
any peer streams them (see `p2pnode.results`); `s3` uploads them. Only the
engines this node offers are run here; the leader never places other work on it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

import trio

from p2pnode.engines.docker import BindMount, DockerEngine, DockerOutcome, DockerRun
from p2pnode.engines.wasm import Mount, WasmEngine, WasmOutcome, WasmRun, decode_data_url
from p2pnode.ipfs.service import IpfsService
from p2pnode.storage import ipfs as ipfs_storage
from p2pnode.storage import s3, url
from p2pnode.storage.local import FileEntry, LocalResults, Manifest, result_files, sha256_file
from p2pnode.storage.paths import UnsafePath, inside, safe_relative
from protocols.events import ExecutionEnded, ExecutionProgressed, Input
from protocols.jobspec import JobDefaults
from protocols.paths import mount_point
from protocols.records import ExecutionRecord, ExecutionResult, ExecutionState, JobHeader

log = logging.getLogger("p2pnode.execution")

OUTPUT_IN_RECORD = 4096  # bytes of stdout/stderr carried in the replicated record


class InputError(Exception):
    """An input source could not be fetched or is not allowed here."""


class ExecutionRunner:
    def __init__(self, root: Path, cache_dir: Path, allowed_paths: tuple[str, ...] = (),
                 results: LocalResults | None = None, s3_access: s3.S3Access | None = None,
                 url_policy: url.UrlPolicy | None = None, defaults: JobDefaults = JobDefaults(),
                 ipfs: IpfsService | None = None, docker: DockerEngine | None = None) -> None:
        self.root = root
        self.ipfs = ipfs
        self.defaults = defaults  # for a spec that came without them (a node that fills none)
        self.allowed_paths = tuple(Path(p).resolve() for p in allowed_paths)
        self.results = results or LocalResults(root, retention=7 * 86400, quota=10 << 30)
        self.s3 = s3_access or s3.S3Access()
        self.url_policy = url_policy or url.UrlPolicy()
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
                module = await self._fetch_bytes(params.entry_module, workdir / "modules" / "entry")
                imports = []
                for index, source in enumerate(params.import_modules):
                    name = source.alias or PurePosixPath(source.target).stem or f"import{index}"
                    imports.append((name, await self._fetch_bytes(source, workdir / "modules" / str(index))))
                mounts = await self._mount_inputs(task.input_sources, workdir / "inputs")
                mounts += _result_mounts(task.result_paths, workdir / "results")
            except (InputError, ipfs_storage.IpfsStorageError, ValueError) as error:  # ValueError: a name that leaves its folder
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
            return await self._finish(execution, header, workdir, cancel, progressed, outcome, _node_fault(outcome.error))
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
            domains=tuple(task.network.domains),
            disk_limit=task.resources.disk,
            timeout=float(task.timeouts.total_timeout) or None,
        )
        try:
            outcome = await trio.to_thread.run_sync(self.docker.run, run, cancel, abandon_on_cancel=True)
        except trio.Cancelled:  # the node stops: its container goes with it
            cancel.set()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.docker.remove_execution, execution.id)
            raise
        return await self._finish(execution, header, workdir, cancel, progressed, outcome, outcome.node_fault)

    async def _finish(
        self,
        execution: ExecutionRecord,
        header: JobHeader,
        workdir: Path,
        cancel: threading.Event,
        progressed: Callable[[Input], Awaitable[None]],
        outcome: WasmOutcome | DockerOutcome,
        node_fault: bool,
    ) -> ExecutionEnded:
        """How every engine's run ends: stopped with its reason, or published.
        A failure that is not the node's is the job's own verdict (not retried elsewhere)."""
        if cancel.is_set():
            return _failed(execution, self._reasons.get(execution.id, "cancelled"))
        await progressed(ExecutionProgressed(execution.id, ExecutionState.PUBLISHING, "publishing results"))
        (workdir / "exitCode").write_text(f"{outcome.exit_code}\n")
        try:
            location = await self._publish(execution, header, workdir, outcome.exit_code)
        except (s3.S3Error, ipfs_storage.IpfsStorageError, OSError) as error:
            return _failed(execution, f"publishing: {error}")
        publisher = header.spec.task.publisher
        result = ExecutionResult(
            exit_code=outcome.exit_code,
            stdout=outcome.stdout[:OUTPUT_IN_RECORD],
            stderr=outcome.stderr[:OUTPUT_IN_RECORD],
            publisher=publisher.type if publisher is not None else "",
            location=location,
            error=outcome.error or ("" if outcome.exit_code == 0 else f"exit code {outcome.exit_code}"),
            job_fault=not outcome.ok and not node_fault,
        )
        return ExecutionEnded(execution.id, outcome.ok, result, "completed" if outcome.ok else result.error)

    async def _publish(self, execution: ExecutionRecord, header: JobHeader, workdir: Path, exit_code: int) -> str:
        """Publish the result layout; the location peers ask for it by."""
        publisher = header.spec.task.publisher
        if publisher is not None and publisher.type == "ipfs":
            names = [result_path.name for result_path in header.spec.task.result_paths]
            location = await ipfs_storage.publish(self.ipfs, workdir, exit_code, names)
            await trio.to_thread.run_sync(self.results.publish_here, execution.id)  # kept and swept as local ones
            return location
        if publisher is None or publisher.type != "s3":
            await trio.to_thread.run_sync(self.results.publish_here, execution.id)
            return f"local:{execution.node_id}/{execution.id}"
        params = dict(publisher.params)
        if params.get("Endpoint"):
            try:
                await url.check_endpoint(str(params["Endpoint"]), self.url_policy)
            except url.UrlError as error:
                raise s3.S3Error(f"the s3 publisher's {error}") from None
        prefix = s3.resolve_key(str(params["Key"]), header.id, execution.id, execution.node_id)

        def upload() -> str:
            files = result_files(workdir)
            entries = [(s3_entry(name, path), path) for name, path in files]
            location = s3.publish(self.s3, params, prefix, entries)
            manifest = Manifest("s3", tuple(e for e, _ in entries), time.time(), location,
                                str(params.get("Region") or ""), str(params.get("Endpoint") or ""))
            self.results.write_manifest(execution.id, manifest)
            shutil.rmtree(workdir / "results", ignore_errors=True)  # S3 holds them now; stdout/stderr stay for logs
            return location

        return await trio.to_thread.run_sync(upload)

    # ------------------------------------------------------------ inputs

    async def _fetch_bytes(self, source: object, staging: Path) -> bytes:
        """A module's bytes (modules are small: they are compiled whole)."""
        kind = source.source.type  # type: ignore[attr-defined]
        params = source.source.params  # type: ignore[attr-defined]
        if kind == "inline":
            try:
                return decode_data_url(str(params.get("URL", "")))
            except ValueError as error:
                raise InputError(str(error)) from error
        if kind == "localDirectory":
            path = self._allowed(str(params.get("SourcePath", "")))
            if not path.is_file():
                raise InputError(f"{path} is not a file")
            return path.read_bytes()
        if await self._fetch_to(kind, params, staging):
            raise InputError("a module must be one object, not an S3 prefix")
        return staging.read_bytes()

    async def _fetch_to(self, kind: str, params: dict, destination: Path) -> bool:
        """Stream a url or s3 input to `destination`; whether it is a folder."""
        if kind == "url":
            try:
                await url.download(str(params.get("URL", "")), destination, self.url_policy,
                                   params.get("ChecksumSHA256") or None)
            except url.UrlError as error:
                raise InputError(str(error)) from None
            return False
        if kind == "s3":
            try:
                if params.get("Endpoint"):
                    await url.check_endpoint(str(params["Endpoint"]), self.url_policy)
                return await trio.to_thread.run_sync(
                    s3.fetch_input, self.s3, dict(params), destination, self.url_policy.max_bytes)
            except (s3.S3Error, url.UrlError, UnsafePath, OSError) as error:
                raise InputError(str(error)) from None
        if kind == "ipfs":
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                fetched = await ipfs_storage.fetch_input(self.ipfs, params, destination)
            except ipfs_storage.IpfsStorageError as error:
                raise InputError(str(error)) from None
            return fetched.is_dir()
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
                mounts.append(Mount(path, mount_point(source.target, "Target"), read_only=not read_write))
                continue
            target = PurePosixPath(mount_point(source.target, "Target"))
            staged = root / "staged" / str(index)
            if kind == "inline":
                staged.parent.mkdir(parents=True, exist_ok=True)
                staged.write_bytes(await self._fetch_bytes(source, staged))
                folder = False
            else:
                folder = await self._fetch_to(kind, dict(source.source.params), staged)
            if folder:
                mounts.append(Mount(staged, str(target), read_only=True))
                continue
            parent = str(target.parent)
            if parent not in by_parent:
                by_parent[parent] = root / str(index)
                by_parent[parent].mkdir(parents=True, exist_ok=True)
                mounts.append(Mount(by_parent[parent], parent, read_only=True))
            staged.replace(inside(by_parent[parent], target.name, "Target"))
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


def s3_entry(name: str, path: Path) -> FileEntry:
    safe_relative(name)
    return FileEntry(name, path.stat().st_size, sha256_file(path))


def _result_mounts(result_paths: object, outputs: Path) -> list[Mount]:
    """A writable folder per ResultPath, each checked to stay in `outputs`."""
    outputs.mkdir(parents=True, exist_ok=True)
    mounts = []
    for result_path in result_paths:  # type: ignore[attr-defined]
        folder = inside(outputs, result_path.name, "ResultPaths Name")
        folder.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(folder, mount_point(result_path.path, "ResultPaths Path"), read_only=False))
    return mounts
def _node_fault(error: str | None) -> bool:
    """An engine error that is this node's, not the job's: another node may run it."""
    return bool(error) and error.startswith(("engine failure", "cannot mount"))


def _failed(execution: ExecutionRecord, why: str) -> ExecutionEnded:
    return ExecutionEnded(execution.id, False, ExecutionResult(exit_code=-1, error=why), why)
