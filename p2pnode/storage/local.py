"""The `local` publisher: results stay on the node that ran the job.

An execution's folder under the node's data dir holds what `job get` hands
out, laid out as the reference does:

    executions/<id>/stdout, stderr, exitCode
    executions/<id>/results/<ResultPath Name>/...
    executions/<id>/manifest.json     names, sizes and sha256, written once at publish

Any peer reads them in chunks by offset (see `p2pnode.results`). Results are
kept `retention` seconds and under `quota` bytes in all; past either, the
oldest are expired: their files go, an `expired.json` stays to say why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from p2pnode.storage.paths import UnsafePath, inside, safe_relative

MANIFEST = "manifest.json"
EXPIRED = "expired.json"
TOP_FILES = ("stdout", "stderr", "exitCode")
HASH_BLOCK = 1 << 20


class ResultsGone(LookupError):
    """The results cannot be served here; the message says why and what to do."""


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative POSIX path in the execution's result layout
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class Manifest:
    """What one execution published, and where: `local` files here or an
    `s3` tree (`location` is then s3://bucket/prefix)."""

    publisher: str
    files: tuple[FileEntry, ...]
    published_at: float
    location: str = ""
    region: str = ""
    endpoint: str = ""

    def to_json(self) -> str:
        return json.dumps({
            "Publisher": self.publisher, "PublishedAt": self.published_at, "Location": self.location,
            "Region": self.region, "Endpoint": self.endpoint,
            "Files": [[f.name, f.size, f.sha256] for f in self.files],
        })

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        files = tuple(FileEntry(str(n), int(s), str(h)) for n, s, h in raw["Files"])
        return cls(raw["Publisher"], files, float(raw["PublishedAt"]), raw.get("Location", ""),
                   raw.get("Region", ""), raw.get("Endpoint", ""))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def result_files(workdir: Path) -> list[tuple[str, Path]]:
    """Every regular file of an execution's result layout, by name. Symlinks
    and special files a job made are left out: they could point anywhere."""
    found = [(name, workdir / name) for name in TOP_FILES if _regular(workdir / name)]
    results = workdir / "results"
    for folder, directories, files in os.walk(results, followlinks=False):
        directories.sort()
        for file in sorted(files):
            path = Path(folder) / file
            if _regular(path):
                found.append((path.relative_to(results).as_posix(), path))
    return found


def file_path(workdir: Path, name: str) -> Path:
    """Where the file `name` of the layout lives, confined to the workdir."""
    relative = safe_relative(name)
    if str(relative) in TOP_FILES:
        return inside(workdir, str(relative))
    return inside(workdir / "results", str(relative))


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


class LocalResults:
    """The results this node serves, with their retention and quota."""

    def __init__(self, root: Path, retention: float, quota: int) -> None:
        self.root = root
        self.retention = retention
        self.quota = quota
        # What the last sweep kept, plus what was published since: a publish
        # walks the folder (every manifest, O(results held)) only when this
        # says the quota or the retention may now be passed. Publishes and
        # the periodic sweep run in worker threads, hence the lock.
        self._lock = threading.Lock()
        self._held: dict[str, tuple[float, int]] | None = None  # execution id -> (published at, bytes)
        self._total = 0
        self._oldest = float("inf")

    def workdir(self, execution_id: str) -> Path:
        if "/" in execution_id or "\\" in execution_id or execution_id.startswith(".") or not execution_id:
            raise ResultsGone(f"{execution_id!r} is not an execution id")
        return self.root / execution_id

    def write_manifest(self, execution_id: str, manifest: Manifest) -> None:
        path = self.workdir(execution_id) / MANIFEST
        path.with_suffix(".tmp").write_text(manifest.to_json())
        path.with_suffix(".tmp").replace(path)

    def publish_here(self, execution_id: str, now: float | None = None) -> Manifest:
        """Record what a finished execution leaves here (hashing each file
        once), then keep the quota. Slow for big results: run in a thread."""
        workdir = self.workdir(execution_id)
        entries = tuple(FileEntry(name, path.stat().st_size, sha256_file(path)) for name, path in result_files(workdir))
        manifest = Manifest("local", entries, time.time() if now is None else now)
        self.write_manifest(execution_id, manifest)
        self._keep(execution_id, manifest)
        return manifest

    def _keep(self, execution_id: str, manifest: Manifest) -> None:
        """Count a publish in; sweep if the quota or the retention may be passed
        (or no sweep has counted what is here yet)."""
        with self._lock:
            if self._held is not None:
                size = sum(f.size for f in manifest.files)
                self._total += size - self._held.get(execution_id, (0.0, 0))[1]
                self._held[execution_id] = (manifest.published_at, size)
                self._oldest = min(self._oldest, manifest.published_at)
                if self._total <= self.quota and manifest.published_at - self._oldest <= self.retention:
                    return
        self.sweep(manifest.published_at)

    def manifest(self, execution_id: str) -> Manifest:
        workdir = self.workdir(execution_id)
        expired = workdir / EXPIRED
        if expired.exists():
            raise ResultsGone(json.loads(expired.read_text())["Why"])
        try:
            return Manifest.from_json((workdir / MANIFEST).read_text())
        except FileNotFoundError:
            raise ResultsGone(f"this node holds no published results for execution {execution_id}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ResultsGone(f"the results of execution {execution_id} are damaged on this node: {error}") from None

    def read(self, execution_id: str, name: str, offset: int, length: int) -> bytes:
        """`length` bytes (or fewer, at the end) of a local result file."""
        manifest = self.manifest(execution_id)
        if manifest.publisher != "local":
            raise ResultsGone(f"execution {execution_id} published to {manifest.publisher}, not here")
        if not any(entry.name == name for entry in manifest.files):
            raise ResultsGone(f"execution {execution_id} published no file {name!r}")
        try:
            path = file_path(self.workdir(execution_id), name)
        except UnsafePath as error:
            raise ResultsGone(str(error)) from None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def sweep(self, now: float) -> list[str]:
        """Expire what is past its retention, then the oldest until the
        quota holds. Returns the expired execution ids."""
        with self._lock:
            return self._sweep(now)

    def _sweep(self, now: float) -> list[str]:
        kept: list[tuple[float, int, str]] = []
        expired = []
        for workdir in self.root.iterdir() if self.root.is_dir() else ():
            if (workdir / EXPIRED).exists() or not (workdir / MANIFEST).exists():
                continue
            try:
                manifest = Manifest.from_json((workdir / MANIFEST).read_text())
            except (ValueError, KeyError, TypeError, OSError):
                continue
            if manifest.publisher != "local":
                continue
            if now - manifest.published_at > self.retention:
                self._expire(workdir, f"the results of execution {workdir.name} expired: this node keeps "
                                      f"results for {self.retention:g} s; run the job again, or publish to s3 or ipfs")
                expired.append(workdir.name)
                continue
            kept.append((manifest.published_at, sum(f.size for f in manifest.files), workdir.name))
        total = sum(size for _, size, _ in kept)
        for _, size, execution_id in sorted(kept):
            if total <= self.quota:
                break
            self._expire(self.root / execution_id,
                         f"the results of execution {execution_id} were removed: this node's results quota "
                         f"({self.quota} bytes) was full; run the job again, or publish to s3 or ipfs")
            expired.append(execution_id)
            total -= size
        gone = set(expired)
        self._held = {execution_id: (published_at, size) for published_at, size, execution_id in kept
                      if execution_id not in gone}
        self._total = sum(size for _, size in self._held.values())
        self._oldest = min((published_at for published_at, _ in self._held.values()), default=float("inf"))
        return expired

    def _expire(self, workdir: Path, why: str) -> None:
        shutil.rmtree(workdir / "results", ignore_errors=True)
        for name in TOP_FILES:
            (workdir / name).unlink(missing_ok=True)
        (workdir / EXPIRED).write_text(json.dumps({"Why": why}))
