"""Names that become paths on this host, checked twice: as text, then as
resolved paths.

A file name from a peer, a job or an S3 key is only ever a relative name as
`protocols.paths` defines it (no `..`, NUL, backslash, drive or root); that
check gives a clear message. Then the file it names, once every symlink on
the way is resolved, must still lie under its root: that catches links
planted on disk, by a job or left in an output directory."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from protocols.paths import relative_name


class UnsafePath(ValueError):
    """A name would reach outside the folder it belongs in."""


def safe_relative(name: str, what: str = "name") -> PurePosixPath:
    """`name` as a relative path that stays inside whatever folder it joins."""
    if not isinstance(name, str):
        raise UnsafePath(f"{what} {name!r} is not text")
    try:
        relative_name(name, what)
    except ValueError as error:
        raise UnsafePath(str(error)) from None
    return PurePosixPath(name)


def inside(root: Path, name: str, what: str = "name") -> Path:
    """The path `name` names under `root`, refused if it (or a symlink on
    its way) leads elsewhere. Parents are not created here."""
    relative = safe_relative(name, what)
    base = root.resolve()
    target = (base / relative).resolve()
    if target == base or base not in target.parents:
        raise UnsafePath(f"{what} {name!r} resolves to {target}, outside {base} (through a link?); it was refused")
    return base / relative
