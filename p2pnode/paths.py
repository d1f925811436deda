"""Turning a job's names into host paths without leaving their folder.

The spec checks names as text (`protocols.paths`); this checks again where a
name becomes a path on this host, after resolving symlinks, because a folder
a job wrote to may hold a link that points anywhere.
"""

from __future__ import annotations

from pathlib import Path

from protocols.paths import relative_name


class PathOutside(ValueError):
    """A name would lead outside the folder it must stay in."""


def inside(root: Path, name: str, what: str = "name") -> Path:
    """`root / name`, refused unless it resolves to a place under `root`."""
    try:
        relative_name(name, what)
    except ValueError as error:
        raise PathOutside(str(error)) from None
    base = root.resolve()
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise PathOutside(f"{what} {name!r} leads outside {root} (through a link?); it was refused")
    return path
