"""An external IPFS daemon instead of the embedded store (`--ipfs-connect MULTIADDR`).

The daemon's HTTP RPC API (`/api/v0`, via ipfshttpclient) serves as the block
store: the importer puts each block it makes with `block/put` (codec and CID
version given, so the daemon's CIDs are ours), and reads go through
`block/get`, which the daemon fetches from its own network when it lacks a
block. Every block read is still checked against its CID here. The node runs
no bitswap of its own then: the daemon is its IPFS.

ipfshttpclient 0.7.0's `connect()` refuses daemons outside 0.4.23–0.8.0, so
`Client` is built directly; calls are blocking and run in threads.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import trio
from libp2p.abc import IHost

from p2pnode.ipfs.bitswap import BlockUnavailable
from p2pnode.ipfs.blockstore import MAX_BLOCK_BYTES, CorruptBlock
from p2pnode.ipfs.cid import CID, RAW
from p2pnode.ipfs.exporter import export
from p2pnode.ipfs.importer import Added, Options, add_path


class ExternalBlockStore:
    def __init__(self, api: str, *, timeout: float = 60.0) -> None:
        import ipfshttpclient  # only nodes configured for a daemon pay for the import

        self.api = api
        self._client = ipfshttpclient.Client(api, timeout=timeout)
        self._errors = (ipfshttpclient.exceptions.Error,)

    def get(self, cid: CID) -> bytes:
        try:
            block = self._client.block.get(str(cid))
        except self._errors as error:
            raise BlockUnavailable(f"the IPFS daemon at {self.api} could not give {cid}: {error}") from None
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptBlock(f"the IPFS daemon at {self.api} gave bytes for {cid} that do not hash to it")
        return block

    def has(self, cid: CID) -> bool:
        try:
            self._client.block.stat(str(cid))
            return True
        except self._errors:
            return False

    def put(self, cid: CID, block: bytes) -> None:
        if len(block) > MAX_BLOCK_BYTES or not cid.verifies(block):
            raise CorruptBlock(f"the bytes given for {cid} do not hash to it")
        self.put_made(cid, block)

    def put_made(self, cid: CID, block: bytes) -> None:
        codec = "raw" if cid.codec == RAW else "dag-pb"
        opts = {"format": codec, "mhtype": "sha2-256", "version": str(cid.version)}
        try:
            answer = self._client.block.put(io.BytesIO(block), opts=opts)
        except self._errors as error:
            raise OSError(f"the IPFS daemon at {self.api} refused block {cid}: {error}") from None
        if CID.parse(answer["Key"]).digest != cid.digest:
            raise OSError(f"the IPFS daemon at {self.api} stored block {cid} as {answer['Key']}")

    def put_many(self, blocks: Sequence[tuple[CID, bytes]]) -> None:
        for cid, block in blocks:
            self.put_made(cid, block)

    def batch(self) -> AbstractContextManager[Callable[[CID, bytes], None]]:
        """Blocks go to the daemon one request each: nothing to batch."""
        return nullcontext(self.put_made)

    def close(self) -> None:
        self._client.close()


class ExternalIpfsService:
    """`IpfsService`'s face over a daemon: add, fetch, get; nothing to run."""

    def __init__(self, api: str, *, fetch_timeout: float = 60.0) -> None:
        self.store = ExternalBlockStore(api, timeout=fetch_timeout)
        self.fetch_timeout = fetch_timeout

    async def run(self, host: IHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def add(self, path: Path, options: Options = Options()) -> Added:
        return await trio.to_thread.run_sync(add_path, path, self.store.put_made, options)

    async def fetch(self, cids: Sequence[CID], *, timeout: float | None = None, providers: Sequence[object] = ()) -> list[bytes]:
        return [await trio.to_thread.run_sync(self.store.get, cid) for cid in cids]

    async def get(self, cid: CID, dest: Path) -> None:
        await export(cid, self.fetch, dest)

    # The daemon keeps, pins and announces its own blocks: nothing for the node to do.
    announce = staticmethod(lambda cids, held: None)
    locate = None
    results_pin = 0.0

    def held(self) -> list[str]:
        return []

    async def fetched(self, cid: CID) -> None:
        pass

    async def pin(self, cid: CID, seconds: float | None) -> None:
        pass

    async def maintain(self) -> None:
        pass
