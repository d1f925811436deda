"""The WebAssembly engine, on real wasmtime with hand-written WASI programs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from p2pnode.engines.wasm import (
    MIB,
    DataURLError,
    Mount,
    WasmEngine,
    WasmError,
    WasmOutcome,
    WasmRun,
    decode_data_url,
)
from tests import wasm_fixtures as wat


@pytest.fixture
def engine(tmp_path: Path):
    engine = WasmEngine(tmp_path / "cache")
    yield engine
    engine.close()


def run(engine: WasmEngine, tmp_path: Path, source: str, **fields) -> WasmOutcome:
    return engine.run(WasmRun(module=wat.build(source), output_dir=tmp_path / "out", **fields))


def test_hello_world_echoes_arguments_and_environment(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.ECHO, arguments=("one", "two words"), environment={"GREETING": "hi"})
    assert outcome.ok
    assert outcome.stdout == "hello\n_start\none\ntwo words\nGREETING=hi\n"
    assert outcome.stderr == "oops\n"
    assert not outcome.stdout_truncated and not outcome.stderr_truncated
    assert (tmp_path / "out" / "stdout").read_text() == outcome.stdout
    assert (tmp_path / "out" / "stderr").read_text() == "oops\n"


def test_reads_a_read_only_mount_and_writes_a_result_path(engine, tmp_path):
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "data.txt").write_text("some input data")
    mounts = (Mount(inputs, "/inputs"), Mount(outputs, "/outputs", read_only=False))
    outcome = run(engine, tmp_path, wat.COPY, mounts=mounts)
    assert outcome.ok, outcome
    assert (outputs / "copy.txt").read_text() == "some input data"


def test_writing_into_a_read_only_mount_is_denied(engine, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "data.txt").write_text("some input data")
    mounts = (Mount(inputs, "/inputs"), Mount(inputs, "/also-inputs"))
    outcome = run(engine, tmp_path, wat.COPY, mounts=mounts)
    assert outcome.exit_code == 2  # the destination open failed
    assert outcome.error is None
    assert not (inputs / "copy.txt").exists()


def test_missing_mount_directory_is_reported(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.COPY, mounts=(Mount(tmp_path / "absent", "/inputs"),))
    assert outcome.exit_code == -1
    assert "not a directory" in outcome.error


def test_nonzero_exit_code_is_not_an_engine_error(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.EXIT_3)
    assert (outcome.exit_code, outcome.error, outcome.ok) == (3, None, False)


def test_trap_is_reported(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.TRAP)
    assert outcome.exit_code == -1
    assert outcome.error.startswith("trap: ")
    assert "unreachable" in outcome.error


def test_runaway_loop_is_killed_by_the_timeout(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.LOOP_FOREVER, timeout=0.3)
    assert (outcome.exit_code, outcome.error) == (-1, "timed out after 0.3 s")


def test_cancel_from_another_thread_stops_a_run(engine, tmp_path):
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    outcome = engine.run(WasmRun(module=wat.build(wat.LOOP_FOREVER), output_dir=tmp_path / "out"), cancel)
    timer.join()
    assert (outcome.exit_code, outcome.error) == (-1, "cancelled")


def test_concurrent_runs_stop_independently(engine, tmp_path):
    module = wat.build(wat.LOOP_FOREVER)
    cancel = threading.Event()
    outcomes: dict[str, WasmOutcome] = {}

    def cancelled_run() -> None:
        outcomes["cancelled"] = engine.run(WasmRun(module=module, output_dir=tmp_path / "a"), cancel)

    worker = threading.Thread(target=cancelled_run)
    worker.start()
    outcomes["timed"] = engine.run(WasmRun(module=module, output_dir=tmp_path / "b", timeout=0.2))
    assert worker.is_alive()  # the other run has neither deadline nor cancel yet
    cancel.set()
    worker.join()
    assert outcomes["timed"].error == "timed out after 0.2 s"
    assert outcomes["cancelled"].error == "cancelled"


def test_memory_growing_past_the_limit_fails_with_a_message(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.GROW_UNTIL_REFUSED, memory_limit=2 * MIB)
    assert outcome.exit_code == -1
    assert outcome.error.startswith("memory limit of 2 MiB exceeded")
    assert "unreachable" in outcome.error


def test_memory_minimum_above_the_limit_fails_with_a_message(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.LARGE_MINIMUM_MEMORY, memory_limit=16 * MIB)
    assert outcome.exit_code == -1
    assert outcome.error.startswith("memory limit of 16 MiB exceeded")
    assert run(engine, tmp_path, wat.LARGE_MINIMUM_MEMORY, memory_limit=64 * MIB).ok


def test_import_modules_are_linked_by_name(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.USES_MATHLIB, import_modules=(("mathlib", wat.build(wat.MATHLIB)),))
    assert (outcome.exit_code, outcome.error) == (42, None)


def test_unsatisfied_import_is_reported(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.UNKNOWN_IMPORT)
    assert outcome.error.startswith("cannot instantiate module: unknown import")
    assert "nowhere" in outcome.error
    outcome = run(engine, tmp_path, wat.USES_MATHLIB)  # mathlib not given
    assert "mathlib" in outcome.error


def test_invalid_import_module_is_reported(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.USES_MATHLIB, import_modules=(("mathlib", b"not wasm"),))
    assert outcome.error.startswith("invalid import module 'mathlib': ")


def test_second_run_uses_the_compiled_module(engine, tmp_path):
    module = wat.build(wat.ECHO)
    for _ in range(2):
        assert engine.run(WasmRun(module=module, output_dir=tmp_path / "out")).ok
    assert engine.compilations == 1
    assert len(list((tmp_path / "cache").glob("*.cwasm"))) == 1

    restarted = WasmEngine(tmp_path / "cache")
    try:
        assert restarted.run(WasmRun(module=module, output_dir=tmp_path / "out")).ok
        assert restarted.compilations == 0
    finally:
        restarted.close()


def test_corrupt_cache_file_is_recompiled(engine, tmp_path):
    module = wat.build(wat.ECHO)
    assert engine.run(WasmRun(module=module, output_dir=tmp_path / "out")).ok
    (cached,) = (tmp_path / "cache").glob("*.cwasm")
    damaged = bytearray(cached.read_bytes())
    damaged[-10] ^= 0xFF
    cached.write_bytes(bytes(damaged))

    restarted = WasmEngine(tmp_path / "cache")
    try:
        assert restarted.run(WasmRun(module=module, output_dir=tmp_path / "out")).ok
        assert restarted.compilations == 1
        assert cached.read_bytes() != bytes(damaged)  # rewritten
    finally:
        restarted.close()


def test_engine_without_a_cache_dir_runs(tmp_path):
    engine = WasmEngine(None)
    try:
        assert run(engine, tmp_path, wat.ECHO).ok
    finally:
        engine.close()


@pytest.mark.parametrize("data", [b"", b"not wasm at all", b"\0asm\x01\0\0\0\x05\xff"])
def test_malformed_module_is_reported(engine, tmp_path, data):
    outcome = engine.run(WasmRun(module=data, output_dir=tmp_path / "out"))
    assert outcome.exit_code == -1
    assert outcome.error.startswith("invalid module: ")


def test_missing_entrypoint_is_reported(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.ECHO, entrypoint="main")
    assert outcome.error == "module has no exported function 'main'"
    outcome = run(engine, tmp_path, wat.ECHO, entrypoint="memory")
    assert outcome.error == "module has no exported function 'memory'"
    outcome = run(engine, tmp_path, wat.MATHLIB, entrypoint="double")
    assert outcome.error == "entrypoint 'double' must take no parameters"


def test_stdout_is_capped_and_the_full_file_kept(engine, tmp_path):
    outcome = run(engine, tmp_path, wat.SPAM_3000, stdout_cap=1000)
    assert outcome.ok
    assert outcome.stdout == "x" * 1000
    assert outcome.stdout_truncated and not outcome.stderr_truncated
    assert (tmp_path / "out" / "stdout").read_text() == "x" * 3000


@pytest.mark.parametrize(
    "fields",
    [
        {"entrypoint": ""},
        {"arguments": ("a\0b",)},
        {"environment": {"A=B": "c"}},
        {"memory_limit": -1},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"stdout_cap": -1},
        {"import_modules": (("", b""),)},
    ],
)
def test_invalid_arguments_raise(tmp_path, fields):
    with pytest.raises(WasmError):
        WasmRun(module=b"", output_dir=tmp_path, **fields)


def test_relative_mount_target_raises(tmp_path):
    with pytest.raises(WasmError, match="absolute"):
        Mount(tmp_path, "inputs")


def test_closed_engine_refuses_runs(tmp_path):
    engine = WasmEngine(None)
    engine.close()
    with pytest.raises(WasmError, match="closed"):
        run(engine, tmp_path, wat.ECHO)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data:application/wasm;base64,AGFzbQ==", b"\0asm"),
        ("DATA:;BASE64,AGFz bQ==", b"\0asm"),
        ("data:,hello%20world", b"hello world"),
        ("data:text/plain;charset=utf-8,caf%C3%A9", "café".encode()),
        ("data:,", b""),
    ],
)
def test_decode_data_url(url, expected):
    assert decode_data_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/x.wasm", "starting with 'data:'"),
        ("data:application/wasm;base64", "needs a ','"),
        ("data:;base64,!!!", "not valid base64"),
        ("data:;base64,AGFzbQ", "not valid base64"),
    ],
)
def test_decode_data_url_errors(url, message):
    with pytest.raises(DataURLError, match=message):
        decode_data_url(url)


def test_decode_data_url_size_limit():
    with pytest.raises(DataURLError, match="larger than 4 bytes"):
        decode_data_url("data:,hello", max_bytes=4)
