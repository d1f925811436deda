"""The p2pnode node: the I/O shell around the protocols (libp2p, engines, storage, API, CLI)."""

from p2pnode import libp2p_lean

libp2p_lean.install()  # before anything imports libp2p: see its docstring
