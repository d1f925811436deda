"""What the block store keeps: pinned DAGs for their time, other blocks under a quota.

A root is pinned until a moment (a published result: for the node's
`ipfs_results_pin` seconds) or for good (what a user adds with `ipfs add`).
No block of a pinned DAG is ever dropped. Every other block is cache (the
inputs this node fetched for jobs): when the unpinned blocks pass the quota,
the least recently used go first (the store stamps each read), and
a cached root whose blocks went is no longer held, so the node withdraws it
as a provider.

A block stored or read within `FRESH_SECONDS` is never dropped, whatever the
quota. It is not cache yet: it may be part of an add in progress, whose root
the client pins only once the whole tree is in (as Kubo holds off its
garbage collector during an add), or an input a job is about to read. Without
this, an add larger than the quota lost its first blocks to a collection
before its pin, and the pin then named a DAG no longer whole. The quota may
be passed meanwhile, by what came in within the hour.

Pins and cached roots are kept in a small JSON file beside the blocks, so a
restarted node holds and announces what it held.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from p2pnode.ipfs.blockstore import BlockMissing, BlockStore, CorruptBlock
from p2pnode.ipfs.cid import CID, DAG_PB, CIDError
from p2pnode.ipfs.dagpb import DagError, decode_node

FOREVER = math.inf
FRESH_SECONDS = 3600.0


class Pins:
    def __init__(self, store: BlockStore, path: Path, quota: int, fresh: float = FRESH_SECONDS) -> None:
        self.store = store
        self.path = path
        self.quota = quota
        self.fresh = fresh  # seconds a block stored or read stays out of the collector's reach
        self.pinned: dict[str, float] = {}  # root CID -> pinned until (FOREVER: for good)
        self.cached: dict[str, float] = {}  # root CID fetched here, unpinned -> when last used
        self._dags: dict[str, frozenset[bytes]] = {}  # root -> digests of its blocks (DAGs never change)
        try:
            saved = json.loads(path.read_text())
            self.pinned = {k: float(v) if v is not None else FOREVER for k, v in saved.get("pinned", {}).items()}
            self.cached = {k: float(v) for k, v in saved.get("cached", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # none yet (or unreadable): the blocks stay, as cache

    def held(self) -> list[str]:
        """Every root this node holds: pinned or cached."""
        return sorted(set(self.pinned) | set(self.cached))

    def pin(self, cid: CID, seconds: float | None, now: float) -> None:
        """Keep `cid`'s DAG for `seconds` from `now` (None: for good); a longer pin wins."""
        until = FOREVER if seconds is None else now + seconds
        key = str(cid)
        self.pinned[key] = max(until, self.pinned.get(key, 0.0))
        self.cached.pop(key, None)
        self._save()

    def cache(self, cid: CID, now: float) -> None:
        """A root fetched here (a job's input): kept while the quota allows."""
        key = str(cid)
        if key not in self.pinned:
            self.cached[key] = now
            self._save()

    def expire(self, now: float) -> list[str]:
        """Unpin what is due; its blocks become cache. Returns those roots."""
        due = [cid for cid, until in self.pinned.items() if until <= now]
        for cid in due:
            del self.pinned[cid]
            self.cached[cid] = now
        if due:
            self._save()
        return due

    def collect(self) -> list[str]:
        """Drop least recently used unpinned blocks, none of them fresh, until
        they fit the quota, then reclaim the space of dropped blocks
        (`BlockStore.compact`). Returns the cached roots no longer held whole."""
        stale = self.store.clock() - self.fresh
        kept: set[bytes] = set()
        for root in self.pinned:
            kept |= self._dag(root)
        unpinned = [(used, length, digest) for digest, length, used in self.store.usage() if digest not in kept]
        total = sum(length for _, length, _ in unpinned)
        dropped: set[bytes] = set()
        if total > self.quota:
            unpinned.sort()
            for used, length, digest in unpinned:
                if total <= self.quota or used > stale:  # (in order of use: the rest are fresh too)
                    break
                dropped.add(digest)
                total -= length
            self.store.delete_digests(dropped)
        self.store.compact()  # also after a corrupt block was dropped, so not only when over the quota
        if not dropped:
            return []
        gone = [root for root in self.cached if self._dag(root) & dropped or not self._has_root(root)]
        for root in gone:
            del self.cached[root]
            self._dags.pop(root, None)
        if gone:
            self._save()
        return gone

    def _has_root(self, root: str) -> bool:
        try:
            return self.store.has(CID.parse(root))
        except CIDError:
            return False

    def _dag(self, root: str) -> frozenset[bytes]:
        """Digests of the blocks under `root` that are here (walked once)."""
        held = self._dags.get(root)
        if held is not None:
            return held
        digests: set[bytes] = set()
        try:
            todo = [CID.parse(root)]
        except CIDError:
            return frozenset()
        complete = True
        while todo:
            cid = todo.pop()
            if cid.digest in digests:
                continue
            digests.add(cid.digest)
            if cid.codec != DAG_PB:
                if not self.store.has(cid):
                    complete = False
                continue
            try:
                todo.extend(link.cid for link in decode_node(self.store.get(cid)).links)
            except (BlockMissing, CorruptBlock, DagError):
                complete = False
        result = frozenset(digests)
        if complete:
            self._dags[root] = result  # a partial DAG may grow: walk it again next time
        return result

    def _save(self) -> None:
        data = {"pinned": {k: (None if v == FOREVER else v) for k, v in self.pinned.items()}, "cached": self.cached}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, sort_keys=True))
        os.replace(temporary, self.path)
