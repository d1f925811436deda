"""One node's IPFS: its block store, bitswap on its host, add and get."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.ipfs.bitswap import Bitswap
from p2pnode.ipfs.blockstore import BlockStore
from p2pnode.ipfs.cid import CID
from p2pnode.ipfs.exporter import export
from p2pnode.ipfs.importer import Added, Options, add_path


class IpfsService:
    def __init__(self, root: Path, *, fetch_timeout: float = 60.0) -> None:
        self.store = BlockStore(root / "blocks")
        self.bitswap = Bitswap(self.store)
        self.fetch_timeout = fetch_timeout

    async def run(self, host: IHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.bitswap.run(host, task_status=task_status)

    async def add(self, path: Path, options: Options = Options()) -> Added:
        """Import a file or directory into the store (in a thread: it reads and hashes)."""
        return await trio.to_thread.run_sync(add_path, path, self.store.put_made, options)

    async def fetch(self, cids: Sequence[CID], *, timeout: float | None = None,
                    providers: Sequence[ID] = ()) -> list[bytes]:
        """Verified blocks, from the store or the network (asking `providers` first)."""
        return await self.bitswap.fetch(cids, timeout=timeout or self.fetch_timeout, providers=providers)

    async def get(self, cid: CID, dest: Path) -> None:
        await export(cid, self.fetch, dest)
