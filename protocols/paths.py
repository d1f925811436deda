"""Names that become paths, and the rules that keep a job inside its folder.

A job names places. Some become folders and files on the node that runs it
(a ResultPaths `Name`, a file name a peer sends back to `job get`); some are
places inside the task (an input's `Target`, a ResultPaths `Path`), under
which the node mounts folders of its own. A hostile or careless name must
never reach outside: `Name: /` once mounted the host's root into a job, and
`Name: ../../x` wrote beside the execution's folder.

So every such name is checked here, as text, when the spec is read (the user
sees the field and the fix), and again by whoever turns it into a host path,
on the resolved path (`p2pnode.paths`), because only there are symlinks seen.

- A *relative name* is one or more components joined by `/`, none of them
  empty, `.` or `..`; it holds no NUL or other control character, no
  backslash, and does not start with a drive (`C:`).
- A *mount point* is a path inside the task: it starts with `/`, and what
  follows is a relative name (so never the task's root itself).
"""

from __future__ import annotations

import re

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def relative_name(value: str, what: str = "name") -> str:
    """`value` if it is a safe relative name; else ValueError saying why."""
    if value.startswith("/") or _DRIVE.match(value):
        raise ValueError(f"{what} {value!r} is absolute; write a relative name like outputs")
    problem = _problem(value)
    if problem:
        raise ValueError(f"{what} {value!r} {problem}; write a relative name like outputs/logs")
    return value


def mount_point(value: str, what: str = "path") -> str:
    """`value` without a trailing `/` if it is a safe absolute path inside
    the task; else ValueError saying why."""
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} is not an absolute path; write it like /data")
    rest = value[1:].rstrip("/")
    if not rest:
        raise ValueError(f"{what} {value!r} is the task's root; mount at a folder like /data")
    problem = _problem(rest)
    if problem:
        raise ValueError(f"{what} {value!r} {problem}; write it like /data")
    return "/" + rest


def _problem(value: str) -> str:
    if not value:
        return "is empty"
    if _CONTROL.search(value):
        return "holds a control character (NUL, newline, ...)"
    if "\\" in value:
        return "holds a backslash"
    if any(part in ("", ".", "..") for part in value.split("/")):
        return "has an empty, '.' or '..' part"
    return ""
