"""Names that become paths, checked twice: as text, then as resolved paths.

A file name from a peer, a job or an S3 key is only ever a relative POSIX
path without `..`, NUL, backslashes or a drive; and the file it names, once
every symlink on the way is resolved, must still lie under its root. The
first check gives a clear message; the second catches symlinks planted on
disk (by a job, or left in an output directory)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePath(ValueError):
    """A name would reach outside the folder it belongs in."""


def safe_relative(name: str) -> PurePosixPath:
    """`name` as a relative path that stays inside whatever folder it joins."""
    if not isinstance(name, str) or not name:
        raise UnsafePath("an empty file name")
    if "\x00" in name or "\\" in name:
        raise UnsafePath(f"{name!r} holds a NUL or a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafePath(f"{name!r} is absolute; only relative names are allowed")
    path = PurePosixPath(name)
    if any(part in ("..", ".") for part in name.split("/")) or not path.parts:
        raise UnsafePath(f"{name!r} climbs out with '..' or has empty parts")
    if any(part == "" for part in name.split("/")):
        raise UnsafePath(f"{name!r} has empty parts")
    return path


def inside(root: Path, name: str) -> Path:
    """The path `name` names under `root`, refused if it (or a symlink on
    its way) leads elsewhere. Parents are not created here."""
    relative = safe_relative(name)
    base = root.resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise UnsafePath(f"{name!r} resolves to {target}, outside {base}")
    return base / relative
