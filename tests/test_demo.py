"""`make demo`, the README's main command: three real peers on loopback run
the example wasm job end to end, and the results come back through another
peer. Run as a user runs it, in its own process."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)


def test_the_demo_runs_the_example_job_end_to_end_and_stops_its_peers() -> None:
    done = subprocess.run([sys.executable, "-m", "p2pnode", "demo"], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("  peer ") == 3 and "API http://127.0.0.1:" in out  # each peer on one line, whole
    assert "Job Completed" in out
    assert "stdout: 'hello, p2p world!'" in out and "exitCode: '0'" in out
    assert "outputs/greeting.txt: 'hello, p2p world!'" in out
    left = subprocess.run(["pgrep", "-f", "p2pnode-demo-"], capture_output=True, text=True).stdout
    assert not left.strip(), f"the demo left peers running: {left}"
