"""The p2pnode node: the I/O shell around the protocols (libp2p, engines, storage, API, CLI)."""
