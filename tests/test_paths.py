"""Names that become paths stay inside their folder (issue 12: confinement)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pnode.storage.paths import UnsafePath, inside
from protocols.paths import mount_point, relative_name

HOSTILE_NAMES = ["", "/", "/etc", "..", "../x", "a/../../b", "a//b", "./a", "a/.", "C:\\x", "c:x", "a\\b", "a\x00b", "a\nb"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_relative_name_is_refused_with_a_reason(name: str) -> None:
    with pytest.raises(ValueError, match="relative name|absolute"):
        relative_name(name, "Name")


@pytest.mark.parametrize("name", ["outputs", "a/b/c", "file.txt", "...", "a..b", "é"])
def test_a_plain_relative_name_passes_unchanged(name: str) -> None:
    assert relative_name(name) == name


@pytest.mark.parametrize("path", ["data", "/", "//", "/a/../b", "/a/./b", "/a\x00", "C:/x"])
def test_a_hostile_mount_point_is_refused(path: str) -> None:
    with pytest.raises(ValueError):
        mount_point(path, "Target")


def test_a_mount_point_loses_its_trailing_slash() -> None:
    assert mount_point("/outputs/") == "/outputs"
    assert mount_point("/a/b") == "/a/b"


def test_inside_refuses_names_that_leave_the_root(tmp_path: Path) -> None:
    for name in HOSTILE_NAMES:
        with pytest.raises(UnsafePath):
            inside(tmp_path, name)
    assert inside(tmp_path, "a/b") == tmp_path.resolve() / "a" / "b"


def test_inside_refuses_a_link_that_points_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    os.symlink(root / "kept", root / "fine")
    with pytest.raises(UnsafePath, match="outside"):
        inside(root, "escape/passwd")
    assert inside(root, "fine/x") == root.resolve() / "fine" / "x"  # a link that stays inside is fine
