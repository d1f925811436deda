"""Helpers for tests with real peers: WASI programs written in WAT, and
waiting on a node's API without sleeping blindly."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, TypeVar

import wasmtime

from p2pnode.client import ApiClient

T = TypeVar("T")

# Sleeps for the number of seconds in its first argument (one digit), then
# prints "slept" — long enough to kill a peer while it runs.
SLEEPER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 4096) "slept\\n")
  (func (export "_start")
    (local $seconds i64)
    (local.set $seconds (i64.const 1))
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 16) (i32.const 1024)))
    (if (i32.ge_u (i32.load (i32.const 0)) (i32.const 2))
      (then (local.set $seconds
        (i64.extend_i32_u (i32.sub (i32.load8_u (i32.load (i32.const 20))) (i32.const 48))))))
    ;; one clock subscription at 512: userdata, tag 0 (clock), id 1 (monotonic), timeout ns
    (i64.store (i32.const 512) (i64.const 7))
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.mul (local.get $seconds) (i64.const 1000000000)))
    (i64.store (i32.const 544) (i64.const 0))
    (i32.store16 (i32.const 552) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 700)))
    (i32.store (i32.const 256) (i32.const 4096))
    (i32.store (i32.const 260) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 300)))))
"""


def data_url(wat: str) -> str:
    return "data:application/wasm;base64," + base64.b64encode(wasmtime.wat2wasm(wat)).decode()


def wasm_job(url: str, *arguments: str, job_type: str = "batch", count: int | None = 1,
             constraints: list[dict[str, Any]] | None = None, timeout: int = 120) -> dict[str, Any]:
    job: dict[str, Any] = {
        "Name": "integration",
        "Type": job_type,
        "Tasks": [
            {
                "Engine": {
                    "Type": "wasm",
                    "Params": {
                        "EntryModule": {"Target": "/app/main.wasm", "Source": {"Type": "inline", "Params": {"URL": url}}},
                        "Parameters": list(arguments),
                    },
                },
                "Publisher": {"Type": "local"},
                "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
                "Resources": {"CPU": "100m", "Memory": "64Mb"},
                "Timeouts": {"TotalTimeout": timeout},
            }
        ],
    }
    if count is not None:
        job["Count"] = count
    if constraints:
        job["Constraints"] = constraints
    return job


def eventually(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - a node may be restarting
            last = error
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {timeout} s (last error: {last})")


def alive_count(client: ApiClient) -> int:
    return sum(1 for n in client.nodes()["Nodes"] if n["Connection"] == "CONNECTED")

# Prints "tick" once a second, 60 times: output that must arrive while it runs.
TICKER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 4096) "tick\\n")
  (func (export "_start")
    (local $i i32)
    (loop $again
      (i32.store (i32.const 256) (i32.const 4096))
      (i32.store (i32.const 260) (i32.const 5))
      (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 300)))
      (i64.store (i32.const 512) (i64.const 7))
      (i32.store8 (i32.const 520) (i32.const 0))
      (i32.store (i32.const 528) (i32.const 1))
      (i64.store (i32.const 536) (i64.const 1000000000))
      (i64.store (i32.const 544) (i64.const 0))
      (i32.store16 (i32.const 552) (i32.const 0))
      (drop (call $poll_oneoff (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 700)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 60))))))
"""

# Traps at once: the job's own failure, which another node would repeat.
TRAP_WAT = '(module (func (export "_start") unreachable))'
