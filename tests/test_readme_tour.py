"""The README's tour, run as written: every line, in order, in a shell."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from p2pnode.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(400)


def tour_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## A tour\n.*?```sh\n(.*?)```", readme, re.S)
    assert block, "the README has a tour in a sh block"
    return block.group(1).strip().splitlines()


def test_the_shipped_module_is_built_from_its_source() -> None:
    built = wasmtime.wat2wasm((ROOT / "examples" / "hello.wat").read_text())
    assert (ROOT / "examples" / "hello.wasm").read_bytes() == built


def test_readme_tour(tmp_path: Path) -> None:
    lines = tour_lines()
    assert lines[0] == ". .venv/bin/activate"  # this test's interpreter stands for the venv
    port = str(free_port())
    script = "set -e\n" + "\n".join(line.replace("1234", port) for line in lines[1:]) + "\n"
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {key: value for key, value in os.environ.items() if not key.startswith("P2PNODE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # devstack stops its peers on SIGTERM
            process.wait(30)
        for ready in (tmp_path / "tour-peers").glob("node-*/node.json"):  # anything left behind
            try:
                os.kill(json.loads(ready.read_text())["PID"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass
    assert process.returncode == 0, output
    assert "hello, tour!" in output
    assert json.loads((tmp_path / "tour-job.json").read_text())["Job"]["State"]["StateType"] == "Completed"
    greetings = list((tmp_path / "tour-results").rglob("greeting.txt"))
    assert [path.read_text() for path in greetings] == ["hello, tour!\n"]
    assert not list((tmp_path / "tour-peers").glob("node-*/node.json"))  # the network stopped cleanly
