;; A tiny WASI program for the demo: prints "hello, NAME!" (NAME is its first
;; argument, "world" without one) and writes the same line to greeting.txt in
;; the first directory the engine mounts (the job's /outputs result path).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; 0: argc, 4: argv buffer size, 16: argv pointers, 1024: argv buffer,
  ;; 256: three iovecs, 300: bytes written, 304: opened fd
  (data (i32.const 4096) "hello, ")
  (data (i32.const 4112) "!\n")
  (data (i32.const 4128) "world")
  (data (i32.const 4144) "greeting.txt")
  ;; Writes the three iovecs at 256 one call each: a file's fd_write may take
  ;; only the first buffer of several.
  (func $say (param $fd i32)
    (drop (call $fd_write (local.get $fd) (i32.const 256) (i32.const 1) (i32.const 300)))
    (drop (call $fd_write (local.get $fd) (i32.const 264) (i32.const 1) (i32.const 300)))
    (drop (call $fd_write (local.get $fd) (i32.const 272) (i32.const 1) (i32.const 300))))
  (func (export "_start")
    (local $name i32) (local $len i32)
    (local.set $name (i32.const 4128))
    (local.set $len (i32.const 5))
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.le_u (i32.load (i32.const 4)) (i32.const 2048))
      (then
        (drop (call $args_get (i32.const 16) (i32.const 1024)))
        (if (i32.ge_u (i32.load (i32.const 0)) (i32.const 2))
          (then
            (local.set $name (i32.load (i32.const 20)))
            (local.set $len (i32.const 0))
            (block $done
              (loop $scan
                (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $name) (local.get $len)))))
                (local.set $len (i32.add (local.get $len) (i32.const 1)))
                (br $scan)))))))
    (i32.store (i32.const 256) (i32.const 4096))
    (i32.store (i32.const 260) (i32.const 7))
    (i32.store (i32.const 264) (local.get $name))
    (i32.store (i32.const 268) (local.get $len))
    (i32.store (i32.const 272) (i32.const 4112))
    (i32.store (i32.const 276) (i32.const 2))
    (call $say (i32.const 1))
    ;; oflags CREAT|TRUNC = 9, rights FD_WRITE = 64
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 4144) (i32.const 12)
                       (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 304)))
      (then (call $say (i32.load (i32.const 304))))
      (else (call $proc_exit (i32.const 2))))))
