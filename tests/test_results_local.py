"""The local publisher's store and the checks on names that become paths."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from p2pnode.storage.local import EXPIRED, LocalResults, ResultsGone
from p2pnode.storage.paths import UnsafePath, inside, safe_relative

HOSTILE = ["../x", "/etc/passwd", "a/../../b", "C:\\x", "C:x", "a\x00b", "", "a//b", ".", "./a", "a/..", "..", "\\\\srv\\share"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_refused_with_its_reason(name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_relative(name)


def test_a_plain_nested_name_is_accepted() -> None:
    assert str(safe_relative("outputs/sub/file.txt")) == "outputs/sub/file.txt"


def test_a_symlink_on_the_way_out_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="outside"):
        inside(root, "link/file")
    assert inside(root, "real/file") == root.resolve() / "real" / "file"


def _execution(root: Path, execution_id: str, payload: bytes) -> Path:
    workdir = root / execution_id
    (workdir / "results" / "outputs" / "sub").mkdir(parents=True)
    (workdir / "stdout").write_text("out\n")
    (workdir / "stderr").write_text("")
    (workdir / "exitCode").write_text("0\n")
    (workdir / "results" / "outputs" / "sub" / "data.bin").write_bytes(payload)
    return workdir


def test_published_files_are_listed_hashed_and_read_by_offset(tmp_path: Path) -> None:
    store = LocalResults(tmp_path, retention=100, quota=1 << 30)
    payload = os.urandom(300_000)
    workdir = _execution(tmp_path, "e-1", payload)
    (workdir / "results" / "outputs" / "passwd").symlink_to("/etc/passwd")  # a job's planted link
    manifest = store.publish_here("e-1", now=10.0)
    names = {f.name: f for f in manifest.files}
    assert sorted(names) == ["exitCode", "outputs/sub/data.bin", "stderr", "stdout"]
    assert names["outputs/sub/data.bin"].sha256 == hashlib.sha256(payload).hexdigest()
    assert names["outputs/sub/data.bin"].size == len(payload)
    assert store.read("e-1", "outputs/sub/data.bin", 100_000, 50_000) == payload[100_000:150_000]
    with pytest.raises(ResultsGone, match="no file"):
        store.read("e-1", "outputs/passwd", 0, 10)
    assert store.manifest("e-1") == manifest  # kept on disk, as published


def test_results_expire_after_their_retention_and_say_so(tmp_path: Path) -> None:
    store = LocalResults(tmp_path, retention=100, quota=1 << 30)
    _execution(tmp_path, "e-1", b"x" * 10)
    store.publish_here("e-1", now=10.0)
    assert store.sweep(now=50.0) == []
    assert store.sweep(now=111.0) == ["e-1"]
    assert (tmp_path / "e-1" / EXPIRED).exists() and not (tmp_path / "e-1" / "results").exists()
    with pytest.raises(ResultsGone, match="expired.*100 s"):
        store.manifest("e-1")


def test_a_publish_expires_what_outlived_its_retention_meanwhile(tmp_path: Path) -> None:
    store = LocalResults(tmp_path, retention=100, quota=1 << 30)
    for index, now in enumerate((0.0, 80.0, 150.0)):  # (the store counts publishes without walking the folder)
        _execution(tmp_path, f"e-{index}", b"z" * 10)
        store.publish_here(f"e-{index}", now=now)
    with pytest.raises(ResultsGone, match="expired"):
        store.manifest("e-0")
    assert store.manifest("e-1").publisher == "local" and store.manifest("e-2").publisher == "local"


def test_the_oldest_results_go_first_when_the_quota_is_full(tmp_path: Path) -> None:
    store = LocalResults(tmp_path, retention=1e9, quota=2500)
    for index in range(3):
        _execution(tmp_path, f"e-{index}", b"y" * 1000)
        store.publish_here(f"e-{index}", now=float(index))
    with pytest.raises(ResultsGone, match="quota"):
        store.manifest("e-0")
    assert [f.size for f in store.manifest("e-2").files if f.name.startswith("outputs")] == [1000]
    assert store.manifest("e-1").publisher == "local"


def test_an_unknown_or_hostile_execution_id_gets_a_clear_answer(tmp_path: Path) -> None:
    store = LocalResults(tmp_path, retention=100, quota=100)
    with pytest.raises(ResultsGone, match="no published results"):
        store.manifest("nothing-here")
    with pytest.raises(ResultsGone, match="not an execution id"):
        store.manifest("../etc")
