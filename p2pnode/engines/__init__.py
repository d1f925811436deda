"""Execution engines: each runs one task's work on this machine (`wasm`: wasmtime)."""
