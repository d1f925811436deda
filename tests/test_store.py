"""The node's database: records come back whole, a SIGKILL loses nothing
committed, damaged rows are set aside, and counters survive restarts."""

from __future__ import annotations

import json
from dataclasses import replace
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.devstack import DevstackError, start_peer
from p2pnode.store import CHANGES_FROM, SCHEMA_VERSION, Store, StoreError
from protocols.jobspec import parse_job
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionResult,
    ExecutionState,
    HistoryEvent,
    JobDelta,
    JobHeader,
    JobState,
    HISTORY_LIMIT,
)
from protocols.wire import MAX_MESSAGE_BYTES

ROOT = Path(__file__).resolve().parent.parent

SPEC = parse_job(
    "Type: batch\nNamespace: lab\nLabels:\n  team: blue\nTasks:\n  - Engine:\n      Type: wasm\n      Params:\n"
    "        EntryModule:\n          Target: /m.wasm\n          Source:\n            Type: inline\n"
    "            Params:\n              URL: 'data:,x'\n"
).spec


def make_delta(job_id: str, *, revision: int = 1, state: JobState = JobState.RUNNING, executions: int = 2) -> JobDelta:
    """A whole record: a header, executions with results, and history."""
    header = JobHeader(
        job_id, SPEC, f"name-{job_id}", state, "placed", 1, revision, 1, "leader-a", ("b", "c"), 10.0, 10.0 + revision
    )
    records = tuple(
        ExecutionRecord(
            f"{job_id}-e{index}", job_id, f"node-{index}", index, ExecutionState.COMPLETED, DesiredState.STOPPED,
            1, revision, 10.0, 11.0, "done", ExecutionResult(0, "out", "err", "local", f"/results/{index}"),
        )
        for index in range(executions)
    )
    events = tuple(
        HistoryEvent(10.0 + index, index, "leader-a", "JobStateChanged", f"step {index}", "", "Pending", "Running")
        for index in range(3)
    )
    return JobDelta(header, records, events)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


def test_records_come_back_whole_after_reopening(db_path: Path) -> None:
    deltas = [make_delta("j1"), make_delta("j2", executions=0), make_delta("j3", state=JobState.COMPLETED),
              make_delta("j4", executions=30), make_delta("j5", executions=300)]  # (longer arrays: longer CBOR heads)
    store = Store(db_path)
    store.save_jobs(deltas)
    store.close()

    store = Store(db_path)
    assert store.load_jobs() == deltas
    store.close()


def test_saving_a_job_again_replaces_it_and_its_listing_columns(db_path: Path) -> None:
    store = Store(db_path)
    store.save_job(make_delta("j1", revision=1))
    newer = make_delta("j1", revision=2, state=JobState.COMPLETED)
    store.save_job(newer)
    assert store.load_jobs() == [newer]
    store.close()

    with sqlite3.connect(db_path) as raw:
        rows = raw.execute("SELECT job_id, name, namespace, state, type, modify_time, labels FROM jobs").fetchall()
    assert rows == [("j1", "name-j1", "lab", "Completed", "batch", 12.0, json.dumps({"team": "blue"}))]


def test_a_batch_that_fails_half_way_saves_nothing(db_path: Path) -> None:
    store = Store(db_path)

    def deltas():
        yield make_delta("j1")
        raise RuntimeError("the runtime broke mid-batch")

    with pytest.raises(RuntimeError):
        store.save_jobs(deltas())
    assert store.load_jobs() == []
    store.save_job(make_delta("j2"))  # and the store still works
    assert [delta.header.id for delta in store.load_jobs()] == ["j2"]
    store.close()


def test_a_record_too_big_for_the_wire_is_logged_and_the_rest_saved(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    huge = make_delta("huge")
    huge = JobDelta(huge.header, (), (HistoryEvent(1.0, 1, "a", "Note", "x" * MAX_MESSAGE_BYTES),))
    store = Store(db_path)
    store.save_jobs([make_delta("small"), huge])
    assert [delta.header.id for delta in store.load_jobs()] == ["small"]
    assert "job huge cannot be saved" in caplog.text
    store.close()


_WRITER = """
import sys, time
from pathlib import Path
from p2pnode.store import Store
from tests.test_store import make_delta

store = Store(Path(sys.argv[1]))
store.save_job(make_delta("seed"))
batch = 0
def batches_then_hang():
    for index in range(3):
        yield make_delta(f"hung-{index}")
    print("in-transaction", flush=True)
    time.sleep(600)  # killed here, inside an open transaction

while True:
    if batch == 20:
        store.save_jobs(batches_then_hang())
    store.save_jobs(make_delta(f"b{batch}-{index}") for index in range(5))
    print(f"committed {batch}", flush=True)
    batch += 1
"""


def test_sigkill_loses_no_committed_batch_and_no_half_batch_survives(db_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    committed = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("committed "):
                committed.append(int(line.split()[1]))
            elif line.strip() == "in-transaction":
                break
        else:
            child.wait()
            pytest.fail(f"the writer stopped early: {child.stderr.read()}")  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert committed == list(range(20))

    store = Store(db_path)
    saved = {delta.header.id for delta in store.load_jobs()}
    store.close()
    expected = {"seed"} | {f"b{batch}-{index}" for batch in committed for index in range(5)}
    assert saved == expected  # every committed job, and none of the batch cut short


def test_a_row_that_does_not_decode_is_quarantined_not_fatal(db_path: Path) -> None:
    store = Store(db_path)
    store.save_jobs([make_delta("good"), make_delta("garbled"), make_delta("misfiled")])
    store.close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE jobs SET record = ? WHERE job_id = 'garbled'", (b"\xff not cbor",))
        good_blob = raw.execute("SELECT record FROM jobs WHERE job_id = 'good'").fetchone()[0]
        raw.execute("UPDATE jobs SET record = ? WHERE job_id = 'misfiled'", (good_blob,))

    store = Store(db_path)
    assert [delta.header.id for delta in store.load_jobs()] == ["good"]
    quarantined = dict(store.quarantined())
    assert set(quarantined) == {"garbled", "misfiled"}
    assert "filed under misfiled" in quarantined["misfiled"]
    assert [delta.header.id for delta in store.load_jobs()] == ["good"]  # set aside once, not again
    assert len(store.quarantined()) == 2
    store.close()


def test_incarnation_grows_at_every_start(db_path: Path) -> None:
    seen = []
    for _ in range(3):
        store = Store(db_path)
        seen.append(store.next_incarnation())
        store.close()
    assert seen == [1, 2, 3]


def test_the_database_uses_wal_and_records_its_schema_version(db_path: Path) -> None:
    Store(db_path).close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_schema_is_refused_with_advice(db_path: Path) -> None:
    Store(db_path).close()
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer.*--data-dir"):
        Store(db_path)


def test_a_file_that_is_not_a_database_is_refused_with_advice(db_path: Path) -> None:
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="move the file aside"):
        Store(db_path)


def test_the_main_file_alone_holds_the_state_after_a_checkpoint(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2pnode.store.CHECKPOINT_INTERVAL", 0.0)
    store = Store(db_path)
    store.save_jobs(make_delta(f"j{i}") for i in range(20))
    copy = db_path.with_name("backup.db")
    copy.write_bytes(db_path.read_bytes())  # a naive backup: the main file, no WAL
    store.close()
    restored = Store(copy)
    assert len(restored.load_jobs()) == 20
    restored.close()


def test_closing_leaves_everything_in_the_main_file(db_path: Path) -> None:
    store = Store(db_path)
    store.save_jobs(make_delta(f"j{i}") for i in range(5))
    store.close()
    assert not db_path.with_name(db_path.name + "-wal").exists() or db_path.with_name(db_path.name + "-wal").stat().st_size == 0


def test_a_truncated_database_refuses_to_start_and_names_the_way_out(db_path: Path) -> None:
    store = Store(db_path)
    store.save_jobs(make_delta(f"j{i}-" + "x" * 2000) for i in range(200))
    store.close()
    data = db_path.read_bytes()
    db_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError) as refused:
        Store(db_path)
    message = str(refused.value)
    assert str(db_path) in message and "damaged" in message and "move the file aside" in message


def test_a_node_on_a_damaged_database_stops_with_its_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    store = Store(data_dir / "node.db")
    store.save_jobs(make_delta(f"j{i}-" + "x" * 2000) for i in range(200))
    store.close()
    data = (data_dir / "node.db").read_bytes()
    (data_dir / "node.db").write_bytes(data[: len(data) // 2])
    with pytest.raises(DevstackError, match="exited with 1"):
        start_peer(0, data_dir, [])
    log = (data_dir / "node.log").read_text()
    assert str(data_dir / "node.db") in log and "move the file aside" in log



BIG = 200  # executions: a record over `CHANGES_FROM`, whose saves write their changes


def _placed(job_id: str, executions: int) -> JobDelta:
    """A record whose executions were all just accepted (none ran yet)."""
    delta = make_delta(job_id, executions=executions)
    accepted = (replace(e, state=ExecutionState.BID_ACCEPTED, desired=DesiredState.RUNNING, result=None) for e in delta.executions)
    return JobDelta(delta.header, tuple(accepted), delta.events)


def _progress(delta: JobDelta, index: int, at: float) -> JobDelta:
    """`delta` with execution `index` moved on and one event more, as a
    leader's record changes: the other parts the very same objects."""
    executions = list(delta.executions)
    executions[index] = replace(executions[index], state=ExecutionState.RUNNING, revision=executions[index].revision + 1)
    event = HistoryEvent(at, index, "leader-a", "ExecutionStateChanged", f"run {index}", executions[index].id)
    return JobDelta(delta.header, tuple(executions), delta.events + (event,))


def test_a_save_writes_what_changed_and_the_record_comes_back_whole(db_path: Path) -> None:
    """An ops job on 400 nodes changes one execution at a time: each save
    writes that change, not the whole record again (which made saving it
    cost the square of its nodes)."""
    delta = _placed("ops", 400)
    store = Store(db_path)
    store.save_job(delta)
    whole = store.bytes_written
    for index in range(400):
        delta = _progress(delta, index, 100.0 + index)
        store.save_job(delta)
    written = store.bytes_written - whole
    store.close()

    assert written * 20 < 400 * whole  # a twentieth of writing the whole record at every save
    with sqlite3.connect(db_path) as raw:
        changes = raw.execute("SELECT count(*) FROM job_changes").fetchone()[0]
    assert 0 < changes < 400  # rewritten whole once the changes outweighed it
    store = Store(db_path)
    (loaded,) = store.load_jobs()
    assert loaded.header == delta.header and loaded.executions == delta.executions
    assert loaded.events == delta.events[-HISTORY_LIMIT:]
    store.close()


def test_a_small_record_is_written_whole_at_every_save(db_path: Path) -> None:
    """A batch job's record of a few kilobytes: one statement a save, as
    cheap as a change row, and nothing to merge at start."""
    delta = _placed("small", 3)
    store = Store(db_path)
    store.save_job(delta)
    assert store.bytes_written < CHANGES_FROM
    for index in range(3):
        delta = _progress(delta, index, 50.0 + index)
        store.save_job(delta)
    store.close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT count(*) FROM job_changes").fetchone()[0] == 0
    store = Store(db_path)
    assert store.load_jobs() == [delta]
    store.close()


def test_the_listing_columns_follow_each_change(db_path: Path) -> None:
    delta = make_delta("j1", executions=BIG)
    store = Store(db_path)
    store.save_job(delta)
    done = replace(delta.header, state=JobState.COMPLETED, modify_time=99.0)
    store.save_job(JobDelta(done, delta.executions, delta.events))
    store.close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT count(*) FROM job_changes").fetchone()[0] == 1
        assert raw.execute("SELECT state, modify_time FROM jobs").fetchall() == [("Completed", 99.0)]
    store = Store(db_path)
    assert [d.header for d in store.load_jobs()] == [done]
    store.close()


def test_a_late_event_older_than_the_newest_is_saved_too(db_path: Path) -> None:
    delta = make_delta("j1", executions=BIG)
    store = Store(db_path)
    store.save_job(delta)
    late = HistoryEvent(10.5, 7, "leader-b", "Note", "a delta that came late")
    store.save_job(JobDelta(delta.header, delta.executions, tuple(sorted(delta.events + (late,), key=lambda e: e.order))))
    store.close()
    store = Store(db_path)
    (loaded,) = store.load_jobs()
    assert late in loaded.events
    store.close()


def _saved_in_steps(db_path: Path, steps: int) -> list[JobDelta]:
    """A large record saved placed, then once for each of `steps` executions
    started (each save a change row); every version saved, in order."""
    saved = [_placed("j1", BIG)]
    store = Store(db_path)
    store.save_job(saved[0])
    for index in range(steps):
        saved.append(_progress(saved[-1], index, 50.0 + index))
        store.save_job(saved[-1])
    store.close()
    return saved


def test_a_save_after_a_restart_adds_to_what_was_loaded(db_path: Path) -> None:
    _saved_in_steps(db_path, 1)
    store = Store(db_path)
    (loaded,) = store.load_jobs()
    before = store.bytes_written
    store.save_job(loaded)  # the runtime saves what it restored, unchanged: nothing to write
    assert store.bytes_written == before
    final = _progress(loaded, 1, 51.0)
    store.save_job(final)
    store.close()
    with sqlite3.connect(db_path) as raw:
        assert [row[0] for row in raw.execute("SELECT seq FROM job_changes ORDER BY seq")] == [1, 2]
    store = Store(db_path)
    (reloaded,) = store.load_jobs()
    assert reloaded.executions == final.executions and reloaded.events == final.events
    store.close()


def test_a_change_that_does_not_decode_is_quarantined_and_the_record_loads(db_path: Path) -> None:
    _, first, _ = _saved_in_steps(db_path, 2)
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE job_changes SET change = ? WHERE seq = 2", (b"\xff not cbor",))

    store = Store(db_path)
    (loaded,) = store.load_jobs()
    assert loaded.executions == first.executions  # the record and the change that decodes
    assert [job_id for job_id, _ in store.quarantined()] == ["j1"]
    assert "change 2" in store.quarantined()[0][1]
    store.close()


def test_a_database_of_the_first_schema_is_upgraded_in_place(db_path: Path) -> None:
    store = Store(db_path)
    store.save_job(_placed("old", BIG))
    store.close()
    with sqlite3.connect(db_path) as raw:  # as the first schema left it
        raw.execute("DROP TABLE job_changes")
        raw.execute("PRAGMA user_version = 1")

    store = Store(db_path)
    (loaded,) = store.load_jobs()
    store.save_job(_progress(loaded, 0, 50.0))
    store.close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("SELECT count(*) FROM job_changes").fetchone()[0] == 1
