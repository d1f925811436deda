"""The Docker engine: runs a task's container on a Docker daemon through the Docker SDK.

`DockerEngine.run` blocks, so the node calls it from a worker thread. What
goes wrong while running (an image that cannot be pulled, a timeout, a
cancel, the memory limit) comes back in `DockerOutcome.error`; the daemon
being unreachable too, since it may go away at any time.

Every container this node creates carries the label `p2pnode.node=<node id>`
and is removed when its run ends, whatever happened. A node killed while a
container ran finds it by that label when it starts again
(`remove_leftovers`).

Network: `None` gets a container with no network at all (`network_mode
none`), `Full` shares the node's (`host`), `HTTP` joins a namespace whose
only reachable address is the node's filtering proxy for the job's Domains
(`docker_egress`, `egress_proxy`).

Disk: a daemon whose storage driver can cap a container's writable layer
(`--storage-opt size`: overlay2 on xfs with pquota, btrfs, zfs…) gets the cap;
whatever the driver, the run is also watched: the container's writable layer
plus its writable mounts (result paths) over the job's Disk kills it, saying
so. Overlay2 on ext4 (this machine) cannot cap, so the watch is what holds
there; a burst written between two looks is caught when the run ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pnode.engines.docker_egress import EgressUnavailable, http_egress
from p2pnode.engines.egress_proxy import EgressPolicy, ProxyUnavailable

log = logging.getLogger("p2pnode.docker")

OWNER_LABEL = "p2pnode.node"
EXECUTION_LABEL = "p2pnode.execution"
POLL_SECONDS = 0.2  # how often a run looks at its deadline and cancel event
API_TIMEOUT = 300  # seconds for one daemon call (a pull may be slow)
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DEFAULT_OUTPUT_CAP = 1 << 20
DISK_POLL_SECONDS = 1.0  # how often a run with a Disk limit is measured


class DockerUnavailable(RuntimeError):
    """No Docker daemon answers at the address this node was given."""


@dataclass(frozen=True)
class BindMount:
    """A host path the container sees at `target`."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class DockerRun:
    """Everything one container needs. `entrypoint` None keeps the image's;
    `parameters` are its command (the image's CMD when empty)."""

    execution_id: str
    image: str
    output_dir: Path  # gets `stdout` and `stderr`, appended as the container writes
    entrypoint: tuple[str, ...] | None = None
    parameters: tuple[str, ...] = ()
    working_directory: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[BindMount, ...] = ()
    cpu_millicores: int = 0  # 0: no limit
    memory_limit: int = 0  # bytes; 0: no limit
    gpus: int = 0
    network: str = "None"  # None, Full or HTTP
    domains: tuple[str, ...] = ()  # what an HTTP network may reach
    disk_limit: int = 0  # bytes written to the container's layer and writable mounts; 0: no limit
    timeout: float | None = None  # seconds; None or 0: no limit
    stdout_cap: int = DEFAULT_OUTPUT_CAP  # bytes of each stream returned as text


@dataclass(frozen=True)
class DockerOutcome:
    """How a run ended. `exit_code` is the container's, or -1 when it did not
    get to exit by itself; `error` is None unless the run failed for another
    reason than its own exit code."""

    exit_code: int
    stdout: str
    stderr: str
    error: str | None
    node_fault: bool = False  # the node's failure (no daemon, no image), not the job's: another node may run it

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0


class DockerEngine:
    """One node's view of one Docker daemon. `base_url` None means the
    environment's (DOCKER_HOST, else the default socket)."""

    def __init__(self, node_id: str, base_url: str | None = None, gpus: int = 0,
                 egress: EgressPolicy = EgressPolicy()) -> None:
        self.node_id = node_id
        self.base_url = base_url
        self.gpus = gpus
        self.egress = egress
        self._storage_size_works: bool | None = None  # whether the daemon takes --storage-opt size
        self._client: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the daemon

    def client(self) -> Any:
        """The SDK client (created once; it connects lazily)."""
        with self._lock:
            if self._client is None:
                import docker  # lazy: a node without docker jobs never pays for the SDK

                try:
                    if self.base_url:
                        self._client = docker.DockerClient(base_url=self.base_url, timeout=API_TIMEOUT)
                    else:
                        self._client = docker.from_env(timeout=API_TIMEOUT)
                except docker.errors.DockerException as error:
                    raise DockerUnavailable(f"no Docker daemon at {self._where()}: {error}") from error
            return self._client

    def available(self) -> bool:
        """Whether a daemon answers now."""
        address = self.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        if address.startswith("unix://") and not Path(address.removeprefix("unix://")).exists():
            return False  # no daemon, and no need to load the SDK to know it
        try:
            return bool(self.client().api.ping())
        except Exception:  # noqa: BLE001 - any failure means "not now"
            return False

    def remove_leftovers(self) -> int:
        """Remove every container this node owns (left by a node killed while
        they ran). Returns how many were removed."""
        removed = 0
        for container in self._owned():
            try:
                container.remove(force=True)
                removed += 1
            except Exception as error:  # noqa: BLE001 - the next start tries again
                log.warning("could not remove leftover container %s: %s", container.short_id, error)
        if removed:
            log.info("removed %d leftover container(s) of this node", removed)
        return removed

    def remove_execution(self, execution_id: str) -> None:
        """Remove an execution's container now, if it has one (the node is stopping)."""
        for container in self._owned(execution_id):
            try:
                container.remove(force=True)
            except Exception as error:  # noqa: BLE001 - remove_leftovers gets it at the next start
                log.warning("could not remove container %s: %s", container.short_id, error)

    def _owned(self, execution_id: str | None = None) -> list[Any]:
        filters = [f"{OWNER_LABEL}={self.node_id}"]
        if execution_id is not None:
            filters.append(f"{EXECUTION_LABEL}={execution_id}")
        return list(self.client().containers.list(all=True, filters={"label": filters}))

    def _where(self) -> str:
        return self.base_url or "DOCKER_HOST or the default socket"

    # ------------------------------------------------------------ running

    def run(self, run: DockerRun, cancel: threading.Event | None = None) -> DockerOutcome:
        """Run `run` to its end. Setting `cancel` from any thread kills the container."""
        cancel = cancel or threading.Event()
        run.output_dir.mkdir(parents=True, exist_ok=True)
        stdout_path, stderr_path = run.output_dir / "stdout", run.output_dir / "stderr"
        for path in (stdout_path, stderr_path):
            path.touch()
        error = self._refusal(run)
        exit_code, node_fault = -1, False
        if error is None:
            try:
                exit_code, error, node_fault = self._run(run, cancel, stdout_path, stderr_path)
            except (DockerUnavailable, EgressUnavailable, ProxyUnavailable) as unavailable:
                error, node_fault = str(unavailable), True
            except Exception as failure:  # noqa: BLE001 - the daemon's errors, reported as the run's
                error, node_fault = f"the Docker daemon failed the run: {_explain(failure)}", True
        stdout, _ = _read_capped(stdout_path, run.stdout_cap)
        stderr, _ = _read_capped(stderr_path, run.stdout_cap)
        return DockerOutcome(exit_code, stdout, stderr, error, node_fault)

    def _refusal(self, run: DockerRun) -> str | None:
        if run.network not in ("None", "Full", "HTTP"):
            return f"unknown network type {run.network!r}; use None, Full or HTTP"
        if run.gpus > self.gpus:
            return (
                f"the job asks for {run.gpus} GPU(s) and this node has {self.gpus} for docker jobs; "
                "submit it to a node with GPUs"
            )
        return None

    def _run(
        self, run: DockerRun, cancel: threading.Event, stdout_path: Path, stderr_path: Path
    ) -> tuple[int, str | None, bool]:
        """(exit code, error, whether the error is the node's)."""
        client = self.client()
        image_error = self._ensure_image(client, run.image)
        if image_error is not None:
            return -1, image_error, True
        if cancel.is_set():
            return -1, "cancelled before the container started", False
        labels = {OWNER_LABEL: self.node_id, EXECUTION_LABEL: run.execution_id}
        with ExitStack() as stack:
            network_mode, environment = "host" if run.network == "Full" else "none", dict(run.environment)
            if run.network == "HTTP":
                egress = stack.enter_context(http_egress(client, labels, run.domains, self.egress))
                network_mode, environment = egress.network_mode, {**environment, **egress.environment}
            container = self._create(client, run, labels, network_mode, environment)
            stack.callback(_remove, container)
            container.start()
            copiers = [
                threading.Thread(target=_copy_output, args=(client, container.id, name, path), daemon=True)
                for name, path in (("stdout", stdout_path), ("stderr", stderr_path))
            ]
            for copier in copiers:
                copier.start()
            stopped = self._wait(client, container, run, cancel)
            for copier in copiers:
                copier.join(timeout=10)
            container.reload()
            state = container.attrs.get("State", {})
            exit_code = int(state.get("ExitCode", -1))
            if stopped is not None:
                return -1, stopped, stopped.startswith("the Docker daemon")
            over_disk = self._over_disk(client, container, run)
            if over_disk is not None:
                return exit_code, over_disk, False
            if state.get("OOMKilled"):
                return exit_code, (
                    f"the task exceeded its memory limit of {_bytes(run.memory_limit)} and was killed; "
                    "ask for more Memory"
                ), False
            if exit_code == 137 and run.memory_limit:
                # SIGKILLed, not by us: the kernel's OOM killer, though the daemon
                # does not always flag it (a child killed, cgroup v2 races).
                return exit_code, (
                    f"the task was killed (exit code 137): it most likely exceeded its memory limit of "
                    f"{_bytes(run.memory_limit)}; ask for more Memory"
                ), False
            return exit_code, None if exit_code == 0 else f"exit code {exit_code}", False
        raise AssertionError("unreachable")  # pragma: no cover - the with block returns

    def _create(self, client: Any, run: DockerRun, labels: dict[str, str], network_mode: str,
                environment: dict[str, str]) -> Any:
        """The run's container, its writable layer capped at the Disk limit where the daemon can."""
        import docker

        options: dict[str, Any] = dict(
            command=list(run.parameters) or None,
            entrypoint=list(run.entrypoint) if run.entrypoint is not None else None,
            working_dir=run.working_directory or None,
            environment=environment,
            labels=labels,
            volumes={
                str(mount.source): {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}
                for mount in run.mounts
            },
            network_mode=network_mode,
            nano_cpus=run.cpu_millicores * 1_000_000 or None,
            mem_limit=run.memory_limit or None,
            memswap_limit=run.memory_limit or None,  # no swap beyond the limit
            device_requests=[docker.types.DeviceRequest(count=run.gpus, capabilities=[["gpu"]])] if run.gpus else None,
            detach=True,
        )
        if run.disk_limit and self._storage_size_works is not False:
            try:
                container = client.containers.create(run.image, storage_opt={"size": str(run.disk_limit)}, **options)
                self._storage_size_works = True
                return container
            except docker.errors.APIError as error:
                if "storage" not in _explain(error).lower():
                    raise
                log.info("the daemon cannot cap a container's disk (%s); watching its size instead", _explain(error))
                self._storage_size_works = False
        return client.containers.create(run.image, **options)

    def _wait(self, client: Any, container: Any, run: DockerRun, cancel: threading.Event) -> str | None:
        """Wait for the container to exit; kill it on timeout, cancel or too much disk, and say why."""
        import requests

        deadline = time.monotonic() + run.timeout if run.timeout else None
        next_disk_look = time.monotonic() + DISK_POLL_SECONDS
        while True:
            asked = time.monotonic()
            try:
                container.wait(timeout=POLL_SECONDS)
                return None
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                if time.monotonic() - asked < POLL_SECONDS / 2 and not self.available():
                    return "the Docker daemon stopped answering while the task ran"
            if cancel.is_set():
                _kill(container)
                return "cancelled"
            if deadline is not None and time.monotonic() >= deadline:
                _kill(container)
                return f"the task exceeded its TotalTimeout of {run.timeout:g} s and was killed"
            if run.disk_limit and time.monotonic() >= next_disk_look:
                over_disk = self._over_disk(client, container, run)
                if over_disk is not None:
                    _kill(container)
                    return over_disk
                next_disk_look = time.monotonic() + DISK_POLL_SECONDS

    def _over_disk(self, client: Any, container: Any, run: DockerRun) -> str | None:
        """Why the run is over its Disk limit, or None (also when it has none)."""
        if not run.disk_limit:
            return None
        used = _written(client, container.id) + sum(
            _tree_size(mount.source) for mount in run.mounts if not mount.read_only
        )
        if used <= run.disk_limit:
            return None
        return (
            f"the task wrote {_bytes(used)} to disk, over its Disk limit of {_bytes(run.disk_limit)}, "
            "and was stopped; ask for more Disk"
        )

    def _ensure_image(self, client: Any, image: str) -> str | None:
        """Use the image when present, pull it when not; an error text if neither works."""
        import docker

        try:
            client.images.get(image)
            return None
        except docker.errors.ImageNotFound:
            pass
        repository, tag = _split_image(image)
        try:
            client.images.pull(repository, tag=tag)
            return None
        except docker.errors.APIError as error:
            return (
                f"image {image!r} is not on this node and could not be pulled: {_explain(error)}; "
                "check its name, or load it on the node (docker load / docker import)"
            )


def _copy_output(client: Any, container_id: str, stream: str, path: Path) -> None:
    """Append one of the container's streams to its file as it comes (live logs read it)."""
    try:
        chunks = client.api.logs(container_id, stdout=stream == "stdout", stderr=stream == "stderr",
                                 stream=True, follow=True)
        with open(path, "ab", buffering=0) as file:
            for chunk in chunks:
                file.write(chunk)
    except Exception as error:  # noqa: BLE001 - output is best effort once the container is gone
        log.debug("%s of %s ended: %s", stream, container_id[:12], error)


def _remove(container: Any) -> None:
    import docker

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except Exception as error:  # noqa: BLE001 - found by label at the next start
        log.warning("could not remove container %s: %s", container.short_id, error)


def _written(client: Any, container_id: str) -> int:
    """Bytes in the container's writable layer, as the daemon counts them."""
    listed = client.api.containers(all=True, size=True, filters={"id": container_id})
    return int(listed[0].get("SizeRw") or 0) if listed else 0


def _tree_size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _kill(container: Any) -> None:
    try:
        container.kill()
    except Exception as error:  # noqa: BLE001 - it may have exited meanwhile
        log.debug("kill %s: %s", container.short_id, error)


def _split_image(image: str) -> tuple[str, str | None]:
    """`repo[:tag]` or `repo@digest` into (repository, tag-or-digest)."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def _explain(error: Exception) -> str:
    explanation = getattr(error, "explanation", None)
    text = explanation.decode() if isinstance(explanation, bytes) else explanation
    return str(text or error).strip()


def _read_capped(path: Path, cap: int) -> tuple[str, bool]:
    with open(path, "rb") as file:
        data = file.read(cap + 1)
    return data[:cap].decode("utf-8", errors="replace"), len(data) > cap


def _bytes(amount: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if amount >= size:
            return f"{amount / size:.3g} {unit}"
    return f"{amount} B"
