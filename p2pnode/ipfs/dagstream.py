"""A whole DAG as one stream of blocks: the order a holder sends it in, and
the check a fetcher makes of it as it comes. No I/O here.

The holder sends the root, then each block once, depth first, in link
order: every block arrives after the block that links to it. So the fetcher
can trust a block as soon as it arrives: it accepts a block only if a block
it already accepted (or the root it asked for) links to it, and only if the
bytes hash to that link's digest. Nothing unasked-for is ever stored, and the
DAG is whole exactly when no link is left waiting.

A DAG written out (`exporter.PreOrder`) goes in another order: each block
as often as it is linked, in the order the files are written
(`preorder_run`), so the writer need only check each block against the CID
it expects next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from p2pnode.ipfs.cid import CID, DAG_PB
from p2pnode.ipfs.dagpb import DagError, decode_node


class StreamRefused(ValueError):
    """A block the fetcher did not ask for, or whose bytes do not match its CID."""


def walk(root: CID, read: Callable[[CID], bytes | memoryview],
         ahead: Callable[[list[CID]], None] | None = None) -> Iterator[tuple[CID, bytes | memoryview]]:
    """Each block of `root`'s DAG once, a block before those it links to.
    `read` may hand back a view of a buffer it reuses: a block's links are
    read from it before the next block is. `ahead` hears each node's links
    before they are read (to look them all up at once)."""
    sent: set[bytes] = set()
    todo = [root]
    while todo:
        cid = todo.pop()
        if cid.digest in sent:
            continue
        sent.add(cid.digest)
        block = read(cid)
        yield cid, block
        if cid.codec == DAG_PB:
            try:
                links = decode_node(block).links
            except DagError:
                continue  # the fetcher finds it bad too and stops there
            if ahead is not None and links:
                ahead([link.cid for link in links])
            todo.extend(link.cid for link in reversed(links))


class DagCheck:
    """The fetcher's side: which blocks it still waits for."""

    def __init__(self, root: CID) -> None:
        self.waiting: dict[bytes, CID] = {root.digest: root}
        self._accepted: set[bytes] = set()
        self.blocks = 0
        self.bytes = 0

    @property
    def whole(self) -> bool:
        return not self.waiting

    def accept(self, cid: CID, block: bytes | memoryview, digest: bytes | None = None) -> CID:
        """Take the next block (`digest`: its SHA-256, if already hashed);
        returns the CID it is stored under (the linking block's, not the
        sender's), or raises StreamRefused."""
        wanted = self.waiting.pop(cid.digest, None)
        if wanted is None:
            raise StreamRefused(f"block {cid} was not linked from anything received")
        if (hashlib.sha256(block).digest() if digest is None else digest) != wanted.digest:
            raise StreamRefused(f"block {wanted} does not hash to its CID: refused")
        self._accepted.add(wanted.digest)
        self.blocks += 1
        self.bytes += len(block)
        if wanted.codec == DAG_PB:
            try:
                links = decode_node(block).links
            except DagError as error:
                raise StreamRefused(f"block {wanted} is not a dag-pb node: {error}") from None
            for link in links:
                if link.cid.digest not in self._accepted:
                    self.waiting.setdefault(link.cid.digest, link.cid)
        return wanted


def preorder_run(stack: list[CID], read: Callable[[CID], bytes],
                 limit: int) -> tuple[list[tuple[CID, bytes]], CID | None]:
    """The next blocks in the order an exporter visits them (each node
    before what it links to, links in order, a block linked twice sent
    twice), about `limit` bytes of them. `stack` holds what is still to
    come, the next CID last; it is left for the next run. A block `read`
    cannot give (missing, or found corrupt and dropped) ends the run early
    and is named, still next on the stack, to be fetched."""
    blocks: list[tuple[CID, bytes]] = []
    size = 0
    while stack and size < limit:
        cid = stack[-1]
        try:
            block = read(cid)
        except (LookupError, ValueError):
            return blocks, cid
        stack.pop()
        blocks.append((cid, block))
        size += len(block)
        if cid.codec == DAG_PB:
            try:
                links = decode_node(block).links
            except DagError:
                continue  # the exporter refuses the block itself
            stack.extend(link.cid for link in reversed(links))
    return blocks, None
