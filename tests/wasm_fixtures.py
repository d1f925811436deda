"""Small WASI test programs, written by hand in WAT and built at test time."""

from __future__ import annotations

import wasmtime

_WASI = '"wasi_snapshot_preview1"'

# Prints "hello" on stdout, then each argument and each environment entry on a
# line of its own, and "oops" on stderr. Memory: 0 count, 4 buffer size,
# 16 iovec, 32 bytes written, 1024 pointers, 8192 strings.
ECHO = f"""
(module
  (import {_WASI} "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import {_WASI} "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import {_WASI} "args_get" (func $args_get (param i32 i32) (result i32)))
  (import {_WASI} "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import {_WASI} "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "hello\\n")
  (data (i32.const 80) "oops\\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 32))))
  (func $write_lines (param $len i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (i32.const 8192) (local.get $i))))
          (then (i32.store8 (i32.add (i32.const 8192) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write (i32.const 1) (i32.const 8192) (local.get $len)))
  (func (export "_start")
    (call $write (i32.const 1) (i32.const 64) (i32.const 6))
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $write_lines (i32.load (i32.const 4)))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
    (call $write_lines (i32.load (i32.const 4)))
    (call $write (i32.const 2) (i32.const 80) (i32.const 5))))
"""

# Copies data.txt from the first mount (fd 3) to copy.txt in the second (fd 4).
# Exit codes: 1 source open failed, 2 destination open failed, 3 read, 4 write.
COPY = f"""
(module
  (import {_WASI} "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import {_WASI} "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import {_WASI} "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import {_WASI} "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "data.txt")
  (data (i32.const 220) "copy.txt")
  ;; rights: FD_READ (2) for the source; FD_WRITE (64), oflags CREAT|TRUNC (9) for the destination
  ;; 100 source fd, 104 bytes read, 108 destination fd, 112 bytes written, 16 iovec, 4096 buffer
  (func (export "_start")
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 8)
              (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100))
      (then (call $proc_exit (i32.const 1))))
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 220) (i32.const 8)
              (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 108))
      (then (call $proc_exit (i32.const 2))))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 4096))
    (if (call $fd_read (i32.load (i32.const 100)) (i32.const 16) (i32.const 1) (i32.const 104))
      (then (call $proc_exit (i32.const 3))))
    (i32.store (i32.const 20) (i32.load (i32.const 104)))
    (if (call $fd_write (i32.load (i32.const 108)) (i32.const 16) (i32.const 1) (i32.const 112))
      (then (call $proc_exit (i32.const 4))))))
"""

EXIT_3 = f"""
(module
  (import {_WASI} "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const 3))))
"""

TRAP = """
(module
  (memory (export "memory") 1)
  (func $crash unreachable)
  (func (export "_start") (call $crash)))
"""

LOOP_FOREVER = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $spin (br $spin))))
"""

# Grows its memory a page at a time, as an allocator would, and traps when refused.
GROW_UNTIL_REFUSED = """
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
"""

# Asks for 32 MiB (512 pages) up front.
LARGE_MINIMUM_MEMORY = """
(module
  (memory (export "memory") 512)
  (func (export "_start")))
"""

MATHLIB = """
(module
  (func (export "double") (param i32) (result i32)
    (i32.mul (local.get 0) (i32.const 2))))
"""

# Exits with mathlib.double(21).
USES_MATHLIB = f"""
(module
  (import "mathlib" "double" (func $double (param i32) (result i32)))
  (import {_WASI} "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (call $double (i32.const 21)))))
"""

UNKNOWN_IMPORT = """
(module
  (import "nowhere" "helper" (func $helper))
  (func (export "_start") (call $helper)))
"""

# Writes 3000 bytes of "x" to stdout: 30 writes of 100 bytes.
SPAM_3000 = f"""
(module
  (import {_WASI} "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "{"x" * 100}")
  (func (export "_start")
    (local $i i32)
    (i32.store (i32.const 16) (i32.const 1000))
    (i32.store (i32.const 20) (i32.const 100))
    (loop $again
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 30))))))
"""


def build(wat: str) -> bytes:
    """The binary module for a WAT source."""
    return bytes(wasmtime.wat2wasm(wat))

# Writes big.bin into the first mount (fd 3): its argument's number of MiB,
# each MiB the bytes i % 251 for i in 0..2**20. Exit 2: open failed; 4: write.
WRITE_MIB = f"""
(module
  (import {_WASI} "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import {_WASI} "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import {_WASI} "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import {_WASI} "args_get" (func $args_get (param i32 i32) (result i32)))
  (import {_WASI} "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 18)
  (data (i32.const 200) "big.bin")
  ;; 0 argc, 4 argv size, 8 iovec, 16 argv, 100 fd, 104 written, 1024 strings, 65536 the MiB
  (func (export "_start")
    (local $i i32) (local $n i32) (local $p i32) (local $c i32)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 16) (i32.const 1024)))
    (local.set $p (i32.load (i32.const 20)))
    (block $done (loop $digit
      (local.set $c (i32.load8_u (local.get $p)))
      (br_if $done (i32.lt_u (local.get $c) (i32.const 48)))
      (br_if $done (i32.gt_u (local.get $c) (i32.const 57)))
      (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (i32.sub (local.get $c) (i32.const 48))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $digit)))
    (block $filled (loop $fill
      (br_if $filled (i32.ge_u (local.get $i) (i32.const 1048576)))
      (i32.store8 (i32.add (i32.const 65536) (local.get $i)) (i32.rem_u (local.get $i) (i32.const 251)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $fill)))
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 7)
              (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 100))
      (then (call $proc_exit (i32.const 2))))
    (local.set $i (i32.const 0))
    (block $written (loop $write
      (br_if $written (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store (i32.const 8) (i32.const 65536))
      (i32.store (i32.const 12) (i32.const 1048576))
      (if (call $fd_write (i32.load (i32.const 100)) (i32.const 8) (i32.const 1) (i32.const 104))
        (then (call $proc_exit (i32.const 4))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $write)))))
"""


def mib_pattern() -> bytes:
    """One MiB as WRITE_MIB writes it."""
    return bytes(i % 251 for i in range(1 << 20))
