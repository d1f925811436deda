"""Bitswap between hosts in one process: blocks move and are verified, and a
peer that sends forged bytes for a block is refused and counted as lacking it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from p2pnode.ipfs.bitswap import BlockUnavailable
from p2pnode.ipfs.blockstore import BlockStore
from p2pnode.ipfs.cid import CID
from p2pnode.ipfs.exporter import ExportError, export
from p2pnode.ipfs.importer import add_path
from p2pnode.ipfs.service import IpfsService
from p2pnode.transport._settings import build_host
from tests.test_ipfs_importer import write_random

pytestmark = pytest.mark.timeout(120)


class ForgingStore(BlockStore):
    """A malicious peer's store: claims every block and serves other bytes."""

    def has(self, cid: CID) -> bool:
        return True

    def get(self, cid: CID) -> bytes:
        return b"forged bytes for " + str(cid).encode()


async def start(nursery: trio.Nursery, service: IpfsService) -> Any:
    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = build_host(create_new_key_pair(), listen, mdns=False)

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with host.run(listen):
            try:
                await nursery.start(service.run, host)
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await host.close()

    await nursery.start(run)
    return host


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_blocks_move_between_peers_and_are_verified(nursery: trio.Nursery, tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    write_random(source, 5 * 256 * 1024 + 3, 5)
    a, b = IpfsService(tmp_path / "a"), IpfsService(tmp_path / "b")
    added = await a.add(source)
    host_a = await start(nursery, a)
    host_b = await start(nursery, b)
    await host_b.connect(info_from_p2p_addr(Multiaddr(str(host_a.get_addrs()[0]))))
    await b.get(added.cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    assert b.bitswap.blocks_received == 7 and a.bitswap.blocks_sent == 7  # 6 leaves and the root


async def test_forged_blocks_are_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    liar = IpfsService(tmp_path / "liar")
    liar.store = ForgingStore(tmp_path / "liar-blocks")
    liar.bitswap.store = liar.store
    victim = IpfsService(tmp_path / "victim")
    host_liar = await start(nursery, liar)
    host_victim = await start(nursery, victim)
    await host_victim.connect(info_from_p2p_addr(Multiaddr(str(host_liar.get_addrs()[0]))))
    wanted = CID.of(b"the real block")
    with pytest.raises(BlockUnavailable, match="no connected peer has block"):
        await victim.bitswap.fetch([wanted], timeout=30)
    assert not victim.store.has(wanted)
    assert victim.bitswap.blocks_ignored >= 1 and victim.bitswap.blocks_received == 0


async def test_the_exporter_fetches_ahead_and_refuses_a_wrong_block(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    write_random(source, 48 << 18, 3)  # 12 MiB: 48 chunks of 256 KiB, two windows under the root
    blocks: dict[bytes, bytes] = {}
    root = add_path(source, lambda cid, block: blocks.__setitem__(cid.digest, block)).cid
    asked: list[int] = []

    async def fetch(cids):  # type: ignore[no-untyped-def]
        asked.append(len(cids))
        return [blocks[c.digest] for c in cids]

    await export(root, fetch, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    assert sorted(asked) == [1, 16, 32]  # the root, then both windows (asked together: in any order)

    async def forged(cids):  # type: ignore[no-untyped-def]
        return [b"not the block" if i == len(cids) - 1 else blocks[c.digest] for i, c in enumerate(cids)]

    with pytest.raises(ExportError, match="does not hash"):
        await export(root, forged, tmp_path / "forged.bin")

    async def failing(cids):  # type: ignore[no-untyped-def]
        if len(cids) == 16:
            raise LookupError("no peer has the second window")
        return [blocks[c.digest] for c in cids]

    with pytest.raises(LookupError, match="second window"):  # the fetch's own error, not a group
        await export(root, failing, tmp_path / "failed.bin")
