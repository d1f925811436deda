"""One node's IPFS: its block store, bitswap on its host, add and get, pins.

The node is told what this store holds (`announce`: the runtime turns it
into `DataHeld`, so the node announces itself as a provider and bids for
`local` jobs reading it), and asks the network who holds a root before
fetching it (`locate`: a provider lookup, then a dial of each holder).
A whole DAG comes from one of our own peers as one encrypted stream (`bulk`), from
anyone else (Kubo) block by block over bitswap. A DAG held whole is written
out read ahead in the order it is written (`PreOrder`), not window by window.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.ipfs import bulk
from p2pnode.ipfs.bitswap import Bitswap
from p2pnode.ipfs.blockstore import BlockStore
from p2pnode.ipfs.cid import CID
from p2pnode.ipfs.dagstream import preorder_run
from p2pnode.ipfs.exporter import ExportError, PreOrder, export
from p2pnode.ipfs.importer import Added, Options, add_path
from p2pnode.ipfs.pins import Pins

Announce = Callable[[Sequence[str], bool], None]
Locate = Callable[[str], Awaitable[list[ID]]]
log = logging.getLogger("p2pnode.ipfs")
PULL_FROM = 3  # holders asked in turn for a DAG stream before bitswap takes over
UNREACHABLE_SECONDS = 600.0  # a holder whose stream port did not answer is fetched from over bitswap meanwhile
READ_AHEAD = 4 << 20  # bytes of a DAG held whole read in one worker-thread call when writing it out


class IpfsService:
    def __init__(self, root: Path, *, fetch_timeout: float = 60.0, results_pin: float = 7 * 86400.0,
                 cache_quota: int = 10 << 30, bulk_listen: tuple[str, int] | None = ("127.0.0.1", 0)) -> None:
        self.store = BlockStore(root / "blocks")
        self.bitswap = Bitswap(self.store)
        self.dags = None if bulk_listen is None else bulk.DagServer(self.store, *bulk_listen)
        self._host: IHost | None = None
        self._unreachable: dict[ID, float] = {}  # holder -> until when its stream port is not tried
        self.pins = Pins(self.store, root / "pins.json", cache_quota)
        self.fetch_timeout = fetch_timeout
        self.results_pin = results_pin
        self.announce: Announce = lambda cids, held: None
        self.locate: Locate | None = None

    async def run(self, host: IHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.bitswap.run, host)
            if self.dags is not None:
                await nursery.start(self.dags.run, host)
            self._host = host
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._host = None

    def held(self) -> list[str]:
        return self.pins.held()

    async def add(self, path: Path, options: Options = Options()) -> Added:
        """Import a file or directory into the store (in a thread: it reads and hashes)."""
        def add_here() -> Added:
            with self.store.batch() as put:
                return add_path(path, put, options)

        return await trio.to_thread.run_sync(add_here)

    async def fetch(self, cids: Sequence[CID], *, timeout: float | None = None,
                    providers: Sequence[ID] = ()) -> list[bytes]:
        """Verified blocks, from the store or the network (asking `providers` first)."""
        return await self.bitswap.fetch(cids, timeout=timeout or self.fetch_timeout, providers=providers)

    async def get(self, cid: CID, dest: Path) -> None:
        """Write `cid` at `dest`, fetching from the nodes that hold it."""
        providers: list[ID] = []
        if self.locate is not None and not self.store.has(cid):
            providers = await self.locate(str(cid))

        whole = await self.pull(cid, providers) is not None or str(cid) in self.pins.held()

        async def fetch(cids: Sequence[CID]) -> list[bytes]:
            return await self.fetch(cids, providers=providers)

        await export(cid, self._pre_order(cid, providers) if whole else fetch, dest)

    async def read_ahead(self, root: CID, providers: Sequence[ID] = ()) -> AsyncIterator[list[tuple[CID, bytes]]]:
        """A DAG held whole, a few MiB at a time (read in a worker thread, each
        block checked), in the order `export` writes it: for this node's own
        exports and for `POST /dag`. A block lost since (found corrupt on
        disk, say) is fetched from peers; if none has it, that error is raised."""
        stack = [root]
        while stack:
            run, lacking = await trio.to_thread.run_sync(preorder_run, stack, self.store.get, READ_AHEAD)
            if run:
                yield run
            if lacking is not None:
                await self.fetch([lacking], providers=providers)

    def _pre_order(self, root: CID, providers: Sequence[ID]) -> PreOrder:
        runs = self.read_ahead(root, providers)
        ready = deque[tuple[bytes, bytes]]()

        async def receive() -> tuple[bytes, bytes]:
            while not ready:
                run = await anext(runs, None)
                if run is None:
                    raise ExportError(f"{root}: the DAG ended before its files did")
                ready.extend((cid.digest, block) for cid, block in run)
            return ready.popleft()

        return PreOrder(receive)

    async def pull(self, root: CID, providers: Sequence[ID]) -> bulk.DagCheck | None:
        """Bring `root`'s whole DAG into the store as one stream from the first
        of `providers` that sends it; None when none did (bitswap then fetches
        what is still missing, block by block)."""
        if self._host is None or str(root) in self.pins.held():  # held whole already
            return None
        now = time.monotonic()
        for peer in [p for p in providers if self._unreachable.get(p, 0.0) <= now][:PULL_FROM]:
            try:  # no deadline on the whole: a stream quiet for bulk.IDLE_SECONDS ends
                return await bulk.pull(self._host, peer, root, self.store)
            except bulk.StreamPortUnreachable as error:
                self._unreachable[peer] = time.monotonic() + UNREACHABLE_SECONDS
                log.info("fetching %s block by block: %s (not tried again for %g s)", root, error,
                         UNREACHABLE_SECONDS)
            except bulk.BulkUnavailable as error:
                log.info("fetching %s block by block: %s", root, error)
        return None

    async def fetched(self, cid: CID) -> None:
        """A job's input arrived whole: held as cache (and announced) while the quota allows."""
        self.pins.cache(cid, time.time())
        self.announce([str(cid)], True)
        await self.maintain()

    async def pin(self, cid: CID, seconds: float | None) -> None:
        """Keep `cid` for `seconds` (None: for good), and say we hold it."""
        self.pins.pin(cid, seconds, time.time())
        self.announce([str(cid)], True)

    async def maintain(self) -> None:
        """Unpin what is due, keep the cache under its quota, withdraw what went."""
        self.pins.expire(time.time())
        gone = await trio.to_thread.run_sync(self.pins.collect)
        if gone:
            self.announce(gone, False)
