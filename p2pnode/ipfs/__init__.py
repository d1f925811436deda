"""IPFS as the node's data layer: Kubo's CIDs, a verified block store, bitswap.

`cid` and `dagpb` are codecs, `importer` builds the UnixFS DAG that Kubo's
`ipfs add` builds, `exporter` walks one back to files, `blockstore` keeps
blocks on disk, and `bitswap` trades them with any IPFS peer over the node's
own libp2p host.
"""
