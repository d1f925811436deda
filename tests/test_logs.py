"""An execution's log files read by offset, and trimmed to a bound when it ends."""

from __future__ import annotations

from pathlib import Path

from p2pnode.logs import LogFiles, LogRead


def test_reads_by_offset_and_keeps_the_tail_once_sealed(tmp_path: Path) -> None:
    logs = LogFiles(tmp_path, keep_bytes=10)
    workdir = tmp_path / "e-1"
    workdir.mkdir()
    (workdir / "stdout").write_bytes(b"0123456789abcdef")
    (workdir / "stderr").write_bytes(b"oops\n")
    first = logs.read(LogRead("e-1"))
    assert (first.stdout, first.stdout_offset, first.stderr) == (b"0123456789abcdef", 0, b"oops\n")
    later = logs.read(LogRead("e-1", stdout_offset=12, stderr_offset=5))
    assert (later.stdout, later.stdout_offset, later.stderr) == (b"cdef", 12, b"")

    logs.seal("e-1")
    assert (workdir / "stdout").read_bytes() == b"6789abcdef"  # the last 10 bytes
    sealed = logs.read(LogRead("e-1"))
    assert (sealed.stdout, sealed.stdout_offset) == (b"6789abcdef", 6)  # offsets stay the whole stream's
    assert logs.read(LogRead("e-1", stdout_offset=14)).stdout == b"ef"
    assert sealed.stderr == b"oops\n"


def test_no_logs_for_unknown_or_unsafe_ids(tmp_path: Path) -> None:
    logs = LogFiles(tmp_path)
    for execution_id in ("e-none", "../etc", ".hidden", ""):
        assert logs.read(LogRead(execution_id)).error
