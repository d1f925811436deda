"""The WebAssembly engine: runs a WASI module under wasmtime, bounded in memory and time.

`WasmEngine.run` blocks, so the node calls it from a worker thread; one engine
serves many threads at once. Everything that goes wrong while running (a bad
module, a missing export, a trap, a timeout, a cancel) comes back in
`WasmOutcome.error`; only invalid arguments raise `WasmError`.

Time is bounded with epoch interruption: one ticker thread per engine bumps
the epoch every `TICK_SECONDS` while runs are active, and each run's store
asks a callback at every tick whether to go on (its deadline and its cancel
event). Host calls that block inside WASI (a long `poll_oneoff` sleep) are not
interrupted until they return to wasm.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import importlib
import math
import os
import tempfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from p2pnode.lazy import lazy_import

# Loaded by the first run, not when the node starts (≈7 MiB with its engine).
wasmtime = lazy_import("wasmtime")

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TICK_SECONDS = 0.01
DEFAULT_MEMORY_LIMIT = 4 * GIB
DEFAULT_OUTPUT_CAP = 1 * MIB
MODULES_IN_MEMORY = 64
WASM_PAGE = 64 * KIB
_CACHE_MAGIC = b"p2pnode-cwasm-1\n"
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE


def _bindings() -> ModuleType:
    """wasmtime's C bindings (for the epoch callback its Python API lacks)."""
    return importlib.import_module("wasmtime._bindings")


def _epoch_callback_types() -> tuple[Any, Any]:
    """The C callback type for epoch deadlines, and a null finalizer."""
    argtypes = _bindings()._wasmtime_store_epoch_deadline_callback.argtypes
    return argtypes[1], argtypes[3]()


class WasmError(ValueError):
    """The engine was called with invalid arguments (a caller's bug, not the module's)."""


class DataURLError(ValueError):
    """An `inline` source's URL is not a valid `data:` URL."""


@dataclass(frozen=True)
class Mount:
    """A host directory the module sees at `guest_path` (a WASI preopened dir)."""

    host_path: Path
    guest_path: str
    read_only: bool = True

    def __post_init__(self) -> None:
        if not self.guest_path.startswith("/") or "\0" in self.guest_path:
            raise WasmError(f"mount target {self.guest_path!r} must be an absolute path like /inputs")


@dataclass(frozen=True, kw_only=True)
class WasmRun:
    """Everything one execution needs. `module` is a WebAssembly binary (WAT text
    is accepted too). `import_modules` are (name, bytes): each is instantiated in
    order (so later ones may import earlier ones) and its exports satisfy imports
    from module `name`. argv[0] is the entrypoint's name."""

    module: bytes
    output_dir: Path
    entrypoint: str = "_start"
    arguments: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    import_modules: tuple[tuple[str, bytes], ...] = ()
    memory_limit: int | None = None  # bytes; 0/None = DEFAULT_MEMORY_LIMIT
    timeout: float | None = None  # seconds; 0/None = no limit
    stdout_cap: int = DEFAULT_OUTPUT_CAP  # bytes of stdout (and of stderr) returned as text

    def __post_init__(self) -> None:
        if not isinstance(self.module, (bytes, bytearray)):
            raise WasmError("module must be the module's bytes")
        if not self.entrypoint:
            raise WasmError("entrypoint must name an exported function, e.g. _start")
        for text in (self.entrypoint, *self.arguments, *self.environment.keys(), *self.environment.values()):
            if "\0" in text:
                raise WasmError(f"{text!r} contains a NUL character, which WASI cannot pass")
        for key in self.environment:
            if not key or "=" in key:
                raise WasmError(f"environment variable name {key!r} must be non-empty and contain no '='")
        for name, _ in self.import_modules:
            if not name:
                raise WasmError("every import module needs the module name its importers use")
        if self.memory_limit is not None and self.memory_limit < 0:
            raise WasmError(f"memory_limit must be a number of bytes >= 0, not {self.memory_limit}")
        if self.timeout is not None and not (self.timeout >= 0 and math.isfinite(self.timeout)):
            raise WasmError(f"timeout must be a number of seconds >= 0, not {self.timeout}")
        if self.stdout_cap < 0:
            raise WasmError(f"stdout_cap must be >= 0, not {self.stdout_cap}")


@dataclass(frozen=True)
class WasmOutcome:
    """How a run ended. `exit_code` is the WASI exit code (0 when the entrypoint
    returns), or -1 when the module did not get to exit. `error` is None unless
    the run failed for a reason other than its own exit code."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    error: str | None
    duration: float

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0


class WasmEngine:
    """One wasmtime engine (epoch interruption on), its ticker and its module cache."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._closed = False
        self._started: tuple[_EpochTicker, _ModuleCache] | None = None  # made by the first run

    def _start(self) -> None:
        """The wasmtime engine, its ticker and its cache, made once."""
        with self._lock:
            if self._closed:
                raise WasmError("this WasmEngine is closed")
            if self._started is None:
                config = wasmtime.Config()
                config.epoch_interruption = True
                self._engine = wasmtime.Engine(config)
                self._ticker = _EpochTicker(self._engine)
                self._modules = _ModuleCache(self._engine, self._cache_dir)
                self._started = (self._ticker, self._modules)

    @property
    def compilations(self) -> int:
        """How many modules this engine compiled (cache misses, memory and disk)."""
        return self._started[1].compilations if self._started is not None else 0

    def close(self) -> None:
        """Stop the ticker thread. Runs after this raise WasmError."""
        with self._lock:
            self._closed = True
            started = self._started
        if started is not None:
            started[0].close()

    def run(self, run: WasmRun, cancel: threading.Event | None = None) -> WasmOutcome:
        """Run `run` to its end. Setting `cancel` from any thread stops it within a tick."""
        if not isinstance(run, WasmRun):
            raise WasmError("run needs a WasmRun")
        stdout_path, stderr_path = run.output_dir / "stdout", run.output_dir / "stderr"
        self._start()
        stop = _Stop(run.timeout, cancel)
        started = time.monotonic()
        with self._ticker.running():
            try:
                run.output_dir.mkdir(parents=True, exist_ok=True)
                for path in (stdout_path, stderr_path):
                    path.write_bytes(b"")
                exit_code, error = self._execute(run, stop, stdout_path, stderr_path)
            except (wasmtime.WasmtimeError, wasmtime.Trap, OSError) as exc:
                exit_code, error = -1, f"engine failure: {_summary(exc)}"
        stdout, stdout_truncated = _read_capped(stdout_path, run.stdout_cap)
        stderr, stderr_truncated = _read_capped(stderr_path, run.stdout_cap)
        return WasmOutcome(
            exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, time.monotonic() - started
        )

    def _execute(self, run: WasmRun, stop: _Stop, stdout_path: Path, stderr_path: Path) -> tuple[int, str | None]:
        if reason := stop.reason():
            return -1, reason
        try:
            module = self._modules.load(bytes(run.module))
        except wasmtime.WasmtimeError as exc:
            return -1, f"invalid module: {_compile_error(run.module, exc)}"
        imports = []
        for name, data in run.import_modules:
            try:
                imports.append((name, self._modules.load(bytes(data))))
            except wasmtime.WasmtimeError as exc:
                return -1, f"invalid import module {name!r}: {_compile_error(data, exc)}"

        limit = run.memory_limit or DEFAULT_MEMORY_LIMIT
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=limit)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [run.entrypoint, *run.arguments]
        wasi.env = list(run.environment.items())
        wasi.stdout_file = str(stdout_path)
        wasi.stderr_file = str(stderr_path)
        for mount in run.mounts:
            if not Path(mount.host_path).is_dir():
                return -1, f"cannot mount {mount.host_path} at {mount.guest_path}: not a directory on this node"
            wasi.preopen_dir(str(mount.host_path), mount.guest_path, fs_mutable=not mount.read_only)
        store.set_wasi(wasi)
        stop.install(store)
        linker = wasmtime.Linker(self._engine)
        linker.define_wasi()

        instance = None
        try:
            for name, imported in imports:
                linker.define_instance(store, name, linker.instantiate(store, imported))
            instance = linker.instantiate(store, module)
            exports = instance.exports(store)
            entry = exports.get(run.entrypoint)
            if not isinstance(entry, wasmtime.Func):
                return -1, f"module has no exported function {run.entrypoint!r}"
            if entry.type(store).params:
                return -1, f"entrypoint {run.entrypoint!r} must take no parameters"
            initialize = exports.get("_initialize")
            if run.entrypoint not in ("_start", "_initialize") and isinstance(initialize, wasmtime.Func):
                initialize(store)  # a WASI reactor sets itself up before any export is called
            entry(store)
            return 0, None
        except wasmtime.ExitTrap as exit_:
            error = _memory_error(store, instance, limit) if exit_.code != 0 else None
            return exit_.code, error
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            if stop.fired:
                return -1, stop.fired
            if error := _memory_error(store, instance, limit, exc):
                return -1, error
            prefix = "cannot instantiate module" if instance is None else "trap"
            return -1, f"{prefix}: {_summary(exc)}"


class _Stop:
    """When one run must end: its deadline and its cancel event, asked at every epoch tick."""

    def __init__(self, timeout: float | None, cancel: threading.Event | None) -> None:
        self.timeout = timeout or None
        self.deadline = time.monotonic() + timeout if timeout else None
        self.cancel = cancel
        self.fired: str | None = None  # why the callback stopped the run, if it did
        callback_type, self._no_finalizer = _epoch_callback_types()
        self._callback = callback_type(self._on_tick)  # kept alive as long as the store may call it

    def reason(self) -> str | None:
        if self.cancel is not None and self.cancel.is_set():
            return "cancelled"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"timed out after {self.timeout:g} s"
        return None

    def install(self, store: wasmtime.Store) -> None:
        _bindings().wasmtime_store_epoch_deadline_callback(store.ptr(), self._callback, None, self._no_finalizer)
        store.set_epoch_deadline(1)

    def _on_tick(self, _context: object, _data: object, delta: ctypes.Array, kind: ctypes.Array) -> int:
        reason = self.reason()
        if reason is not None:
            self.fired = reason
            error = _bindings().wasmtime_error_new(f"p2pnode: {reason}".encode())
            return ctypes.cast(error, ctypes.c_void_p).value or 0
        delta[0] = 1
        kind[0] = _CONTINUE
        return 0


class _EpochTicker:
    """Bumps the engine's epoch every tick, but only while some run is active."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._cond:
            if self._closed:
                raise WasmError("this WasmEngine is closed")
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasm-epoch-ticker", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._active == 0 and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(TICK_SECONDS)
            self._engine.increment_epoch()


class _ModuleCache:
    """Compiled modules by sha256 of their bytes: a small LRU in memory, and
    serialized files in `cache_dir` (checksummed, so a damaged file is recompiled)."""

    def __init__(self, engine: wasmtime.Engine, cache_dir: Path | None) -> None:
        self._engine = engine
        self._dir = cache_dir
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, wasmtime.Module] = OrderedDict()
        self.compilations = 0
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def load(self, wasm: bytes) -> wasmtime.Module:
        key = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        module = self._from_disk(key)
        if module is None:
            module = wasmtime.Module(self._engine, wasm)  # raises WasmtimeError on bad bytes
            with self._lock:
                self.compilations += 1
            self._to_disk(key, module)
        with self._lock:
            self._memory[key] = module
            while len(self._memory) > MODULES_IN_MEMORY:
                self._memory.popitem(last=False)
        return module

    def _path(self, key: str) -> Path | None:
        return None if self._dir is None else self._dir / f"{key}.cwasm"

    def _from_disk(self, key: str) -> wasmtime.Module | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        header = len(_CACHE_MAGIC) + 32
        payload = blob[header:]
        if blob[: len(_CACHE_MAGIC)] != _CACHE_MAGIC or blob[len(_CACHE_MAGIC) : header] != hashlib.sha256(payload).digest():
            return None
        try:
            return wasmtime.Module.deserialize(self._engine, payload)
        except wasmtime.WasmtimeError:
            return None  # written by another wasmtime version or config: recompile

    def _to_disk(self, key: str, module: wasmtime.Module) -> None:
        path = self._path(key)
        if path is None:
            return
        payload = bytes(module.serialize())
        try:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
                tmp.write(_CACHE_MAGIC + hashlib.sha256(payload).digest() + payload)
            os.replace(tmp.name, path)
        except OSError:
            pass  # a cache that cannot be written only costs a compile next time


def decode_data_url(url: str, max_bytes: int = 64 * MIB) -> bytes:
    """The bytes of a `data:[mediatype][;base64],data` URL (RFC 2397)."""
    if not isinstance(url, str) or not url[:5].lower() == "data:":
        raise DataURLError("an inline source needs a URL starting with 'data:', e.g. data:application/wasm;base64,AGFzbQ...")
    header, comma, data = url[5:].partition(",")
    if not comma:
        raise DataURLError("a data: URL needs a ',' between its media type and its data")
    if len(data) > max_bytes * 2 + 16:
        raise DataURLError(f"data: URL is larger than {max_bytes} bytes")
    payload = urllib.parse.unquote_to_bytes(data)
    if header.lower().split(";")[-1].strip() == "base64":
        try:
            payload = base64.b64decode(b"".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataURLError(f"data: URL is marked base64 but its data is not valid base64: {exc}") from exc
    if len(payload) > max_bytes:
        raise DataURLError(f"data: URL is larger than {max_bytes} bytes")
    return payload


def _read_capped(path: Path, cap: int) -> tuple[str, bool]:
    try:
        with path.open("rb") as file:
            data = file.read(cap)
            truncated = file.read(1) != b""
    except OSError:
        return "", False
    return data.decode("utf-8", errors="replace"), truncated


def _memory_error(
    store: wasmtime.Store, instance: wasmtime.Instance | None, limit: int, exc: BaseException | None = None
) -> str | None:
    """Name the memory limit when a failure likely came from it: an instance that
    could not get its initial memory, or an exported memory within an eighth of the
    limit. (wasmtime's C API tells only the module, as -1 from memory.grow, when a
    grow is refused; a failure after one large refused grow goes unnamed.)"""
    text = _summary(exc) if exc is not None else ""
    if "exceeds memory limits" in text:
        return f"memory limit of {_size(limit)} exceeded: {text}"
    if instance is None:
        return None
    for item in instance.exports(store).by_index:
        if isinstance(item, wasmtime.Memory) and item.data_len(store) + max(WASM_PAGE, limit // 8) > limit:
            detail = f" ({text})" if text else ""
            return f"memory limit of {_size(limit)} exceeded{detail}"
    return None


def _compile_error(data: bytes, exc: wasmtime.WasmtimeError) -> str:
    if data[:4] == b"\0asm":
        return _summary(exc)
    return f"neither a WebAssembly binary (which starts with \\0asm) nor WAT text ({_summary(exc)})"


def _summary(exc: BaseException) -> str:
    """The cause of a wasmtime error without its backtrace."""
    text = str(exc)
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = "; ".join(line.removeprefix("p2pnode: ").removeprefix("wasm trap: ") for line in lines)
    return text or type(exc).__name__


def _size(n: int) -> str:
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    return f"{n} bytes"
