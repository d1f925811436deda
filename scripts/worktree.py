"""The code at another git revision, for benchmarks that compare (`--against REV`)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


@contextmanager
def checked_out(rev: str) -> Iterator[Path]:
    """A checkout of `rev` (a git worktree in a temporary directory), removed after."""
    with tempfile.TemporaryDirectory(prefix="p2pnode-against-") as scratch:
        into = Path(scratch) / "checkout"
        subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", "--quiet", str(into), rev],
                       check=True)
        try:
            yield into
        finally:
            subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "remove", "--force", str(into)], check=False)
