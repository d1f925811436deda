"""The executor checks names again before it mounts or writes (issue 12):
a spec that slipped past validation (an old peer, a forged record) still
cannot reach outside the execution's folder."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from p2pnode.execution import ExecutionRunner
from protocols.jobspec import JobSpec, ResultPath, parse_job
from protocols.records import DesiredState, ExecutionRecord, ExecutionState, JobHeader, JobState
from tests.wasm_fixtures import COPY, build


def _spec() -> JobSpec:
    module = "data:application/wasm;base64," + base64.b64encode(build(COPY)).decode()
    return parse_job(
        "Type: batch\nTasks:\n- Engine: {Type: wasm, Params: {EntryModule: {Source: {Type: inline, Params: {URL: '%s'}}}}}\n"
        "  InputSources: [{Target: /in/data.txt, Source: {Type: inline, Params: {URL: 'data:,secret'}}}]\n"
        "  ResultPaths: [{Name: out, Path: /out}]\n" % module
    ).spec


def _with(spec: JobSpec, **task_fields: object) -> JobSpec:
    """The spec with task fields replaced unchecked, as a forged record could carry them."""
    return spec.model_copy(update={"tasks": (spec.task.model_copy(update=task_fields),)})


async def _run(tmp_path: Path, spec: JobSpec):
    runner = ExecutionRunner(tmp_path / "node" / "executions", tmp_path / "node" / "cache")
    header = JobHeader("j1", spec, "j1", JobState.RUNNING, "", 1, 1, 1, "n1", (), 0.0, 0.0)
    execution = ExecutionRecord("e1", "j1", "n1", 0, ExecutionState.RUNNING, DesiredState.RUNNING, 1, 1, 0.0, 0.0)

    async def progressed(_: object) -> None:
        pass

    return await runner.run(execution, header, progressed)


async def test_a_valid_job_writes_its_result_in_its_own_folder(tmp_path: Path) -> None:
    ended = await _run(tmp_path, _spec())
    assert ended.ok, ended.message
    assert (tmp_path / "node" / "executions" / "e1" / "results" / "out" / "copy.txt").read_text() == "secret"


@pytest.mark.parametrize("name", ["/", "../../escaped", "out/../../../escaped"])
async def test_a_hostile_result_name_fails_the_run_and_writes_nothing_outside(tmp_path: Path, name: str) -> None:
    ended = await _run(tmp_path, _with(_spec(), result_paths=(ResultPath.model_construct(name=name, path="/out"),)))
    assert not ended.ok
    assert "ResultPaths Name" in ended.message
    assert not (tmp_path / "node" / "escaped").exists() and not (tmp_path / "escaped").exists()


async def test_a_result_path_at_the_tasks_root_fails_the_run(tmp_path: Path) -> None:
    ended = await _run(tmp_path, _with(_spec(), result_paths=(ResultPath.model_construct(name="out", path="/"),)))
    assert not ended.ok and "task's root" in ended.message


async def test_a_hostile_input_target_fails_the_run_and_writes_nothing_outside(tmp_path: Path) -> None:
    source = _spec().task.input_sources[0].model_copy(update={"target": "/in/../../../../escaped"})
    ended = await _run(tmp_path, _with(_spec(), input_sources=(source,)))
    assert not ended.ok and "Target" in ended.message
    assert not list(tmp_path.rglob("escaped"))
