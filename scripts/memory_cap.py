"""Put a running process under a memory limit of its own: a child of this
process's memory cgroup, as root, with cgroup v2 (`memory.max`) or v1
(`memory.limit_in_bytes`), whichever mounts the memory controller here.

For benchmarks: `bench_node.py --memory-cap 256M` starts each peer in a cap of its own and reports
the peak the kernel charged and whether it ever had to reclaim or kill.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class MemoryCapError(RuntimeError):
    """No writable memory cgroup here; the message says what was looked for."""


def parse_size(text: str) -> int:
    """256M, 1G, 300000000: bytes (K, M, G are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (say 256M, 1G or a number of bytes)")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path for `controller` (v1), or its v2 path for ''."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers.split(",") == [controller] or (controller == "" and controllers == ""):
            return path.lstrip("/")
    raise MemoryCapError(f"this process has no {controller or 'v2'} cgroup (/proc/self/cgroup)")


class MemoryCap:
    """One capped cgroup; processes started `entered()` live in it."""

    def __init__(self, limit: int, name: str = "") -> None:
        self.limit = limit
        name = name or f"p2pnode-cap-{uuid.uuid4().hex[:8]}"
        if (ROOT / "memory" / "memory.limit_in_bytes").exists():
            self.version = 1
            self.path = ROOT / "memory" / _own_cgroup("memory") / name
            files = {"memory.limit_in_bytes": limit}
        elif "memory" in _controllers(ROOT):
            self.version = 2
            self.path = ROOT / _own_cgroup("") / name
            files = {"memory.max": limit, "memory.swap.max": 0}
        else:
            raise MemoryCapError("no memory cgroup controller under /sys/fs/cgroup (v1 memory/ or v2 cgroup.controllers)")
        try:
            self.path.mkdir()
            for file, value in files.items():
                if (self.path / file).exists():
                    (self.path / file).write_text(str(value))
        except OSError as error:
            raise MemoryCapError(f"cannot make a memory cgroup at {self.path}: {error} (run as root)") from error

    @contextmanager
    def entered(self) -> Iterator[None]:
        """This process inside the cgroup meanwhile, so the processes it starts
        are born there and all their memory is charged to it (memory a process
        already holds stays charged where it was when it moves)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))
        try:
            yield
        finally:
            (self.path.parent / "cgroup.procs").write_text(str(os.getpid()))

    def report(self) -> dict[str, int]:
        """The peak charged, and how often the limit was hit or a process killed."""
        if self.version == 1:
            oom = dict(line.split() for line in self._read("memory.oom_control").splitlines())
            return {"limit": self.limit, "peak": int(self._read("memory.max_usage_in_bytes")),
                    "hit_limit": int(self._read("memory.failcnt")), "oom_kills": int(oom.get("oom_kill", 0))}
        events = dict(line.split() for line in self._read("memory.events").splitlines())
        peak = self._read("memory.peak") if (self.path / "memory.peak").exists() else "0"
        return {"limit": self.limit, "peak": int(peak), "hit_limit": int(events.get("max", 0)),
                "oom_kills": int(events.get("oom_kill", 0))}

    def remove(self) -> None:
        """Remove the cgroup once its processes have ended."""
        try:
            self.path.rmdir()
        except OSError:
            pass

    def _read(self, file: str) -> str:
        return (self.path / file).read_text().strip()


def _controllers(root: Path) -> list[str]:
    try:
        return (root / "cgroup.controllers").read_text().split()
    except OSError:
        return []

