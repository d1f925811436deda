"""Whole DAGs between our own peers: the block order and the fetcher's check
(no I/O), then real libp2p hosts in one process handing out tickets and real
TCP streams carrying the blocks, encrypted. A forged block, a made-up ticket
and a key other than the one given over libp2p all get nothing in."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from p2pnode.ipfs import bulk
from p2pnode.ipfs.blockstore import BlockStore
from p2pnode.ipfs.cid import CID, DAG_PB
from p2pnode.ipfs.dagpb import decode_node
from p2pnode.ipfs.dagstream import DagCheck, StreamRefused, preorder_run, walk
from p2pnode.ipfs.exporter import ExportError, PreOrder, export
from p2pnode.ipfs.frames import upload_frame
from p2pnode.ipfs.importer import Options, add_path
from p2pnode.ipfs.service import IpfsService
from tests.test_ipfs_bitswap import ForgingStore, nursery, start  # noqa: F401 - the fixture
from tests.test_ipfs_importer import write_random

pytestmark = pytest.mark.timeout(120)


def tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    write_random(root / "big.bin", 3_000_000, 11)
    (root / "zeros.bin").write_bytes(bytes(1 << 20))  # four equal chunks: one block, linked four times
    (root / "sub" / "note.txt").write_bytes(b"a note\n")
    return root


def added(tmp_path: Path, version: int = 0) -> tuple[CID, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}
    root = add_path(tree(tmp_path / f"tree{version}"), lambda cid, block: blocks.__setitem__(cid.digest, block),
                    Options(cid_version=version, raw_leaves=version == 1)).cid
    return root, blocks


@pytest.mark.parametrize("version", [0, 1])
def test_each_block_comes_once_after_the_block_linking_it_and_the_check_ends_whole(tmp_path: Path,
                                                                                   version: int) -> None:
    root, blocks = added(tmp_path, version)
    order = list(walk(root, lambda cid: blocks[cid.digest]))
    assert [cid for cid, _ in order][0] == root
    assert len(order) == len(blocks)  # the zero chunk once, though linked four times
    position = {cid.digest: index for index, (cid, _) in enumerate(order)}
    for cid, block in order:  # each block after some block linking to it
        if cid.codec == DAG_PB:
            for link in decode_node(block).links:
                first_parent = min(position[c.digest] for c, b in order if c.codec == DAG_PB and any(
                    other.cid.digest == link.cid.digest for other in decode_node(b).links))
                assert first_parent < position[link.cid.digest]
    check = DagCheck(root)
    for cid, block in order:
        assert not check.whole
        check.accept(cid, block)
    assert check.whole and check.blocks == len(blocks)


def test_the_check_refuses_a_block_nothing_linked_and_bytes_that_do_not_hash(tmp_path: Path) -> None:
    root, blocks = added(tmp_path)
    order = list(walk(root, lambda cid: blocks[cid.digest]))
    check = DagCheck(root)
    with pytest.raises(StreamRefused, match="not linked"):
        check.accept(order[1][0], order[1][1])  # before the root that links it
    check.accept(*order[0])
    with pytest.raises(StreamRefused, match="does not hash"):
        check.accept(order[1][0], order[1][1] + b"!")
    unasked = CID.of(b"a block nobody linked")
    with pytest.raises(StreamRefused, match="not linked"):
        check.accept(unasked, b"a block nobody linked")


async def connected(nursery: trio.Nursery, tmp_path: Path, holder: IpfsService) -> tuple[IpfsService, object, object]:
    fetcher = IpfsService(tmp_path / "fetcher")
    host_holder = await start(nursery, holder)
    host_fetcher = await start(nursery, fetcher)
    await host_fetcher.connect(info_from_p2p_addr(Multiaddr(str(host_holder.get_addrs()[0]))))
    return fetcher, host_holder, host_fetcher


async def holding(nursery: trio.Nursery, tmp_path: Path, size: int,
                  **options: object) -> tuple[CID, IpfsService, IpfsService, object, object]:
    """A holder that added `size` random bytes (tmp_path / "file.bin"), and a
    fetcher connected to it: (root, holder, fetcher, their hosts)."""
    holder = IpfsService(tmp_path / "holder", **options)  # type: ignore[arg-type]
    source = tmp_path / "file.bin"
    write_random(source, size, size % 97)
    root = (await holder.add(source)).cid
    fetcher, host_holder, host_fetcher = await connected(nursery, tmp_path, holder)
    return root, holder, fetcher, host_holder, host_fetcher


async def test_a_whole_dag_comes_as_one_stream_and_is_written_out(nursery: trio.Nursery, tmp_path: Path) -> None:
    holder = IpfsService(tmp_path / "holder")
    source = tree(tmp_path / "src")
    root = (await holder.add(source)).cid
    fetcher, host_holder, _ = await connected(nursery, tmp_path, holder)
    check = await fetcher.pull(root, [host_holder.get_id()])
    assert check is not None and check.whole
    assert holder.dags is not None and holder.dags.dags_sent == 1
    await fetcher.get(root, tmp_path / "out")  # every block local now: written with no bitswap at all
    for name in ("big.bin", "zeros.bin", "sub/note.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (source / name).read_bytes()
    assert fetcher.bitswap.blocks_received == 0 and holder.bitswap.blocks_sent == 0


async def test_a_forged_block_ends_the_stream_and_bitswap_refuses_it_too(nursery: trio.Nursery,
                                                                         tmp_path: Path) -> None:
    liar = IpfsService(tmp_path / "liar")
    liar.store = ForgingStore(tmp_path / "liar-blocks")
    liar.store.get_unchecked = lambda cid, into=None, where=None: liar.store.get(cid)  # type: ignore[method-assign]
    liar.bitswap.store = liar.store
    assert liar.dags is not None
    liar.dags.store = liar.store
    fetcher, host_liar, _ = await connected(nursery, tmp_path, liar)
    wanted = CID.of(b"the real block")
    with pytest.raises(bulk.BulkUnavailable, match="refused: block .* does not hash"):
        await bulk.pull(fetcher._host, host_liar.get_id(), wanted, fetcher.store)  # type: ignore[arg-type]
    assert await fetcher.pull(wanted, [host_liar.get_id()]) is None  # the service falls back to bitswap
    assert not fetcher.store.has(wanted)


async def test_a_peer_that_lacks_the_root_says_so(nursery: trio.Nursery, tmp_path: Path) -> None:
    holder = IpfsService(tmp_path / "holder")
    fetcher, host_holder, host_fetcher = await connected(nursery, tmp_path, holder)
    with pytest.raises(bulk.BulkUnavailable, match="is not held here"):
        await bulk.request_ticket(host_fetcher, host_holder.get_id(), CID.of(b"nobody has this"))


async def test_only_a_fresh_ticket_from_libp2p_and_its_key_open_the_stream(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    root, holder, fetcher, host_holder, host_fetcher = await holding(nursery, tmp_path, 700_000)
    address, ticket = await bulk.request_ticket(host_fetcher, host_holder.get_id(), root)
    assert address == "127.0.0.1"

    forged = dataclasses.replace(ticket, secret=os.urandom(32))
    with pytest.raises(bulk.BulkUnavailable, match="1 block"):  # the holder hangs up: nothing comes
        await trio.to_thread.run_sync(bulk.receive_dag, address, forged, root, fetcher.store)

    eavesdropper, eavesdropped = dataclasses.replace(ticket, key=os.urandom(16)), BlockStore(tmp_path / "spy")
    with pytest.raises(bulk.BulkUnavailable, match="refused"):  # the right secret, another key: noise
        await trio.to_thread.run_sync(bulk.receive_dag, address, eavesdropper, root, eavesdropped)
    assert not eavesdropped.has(root)

    _, ticket = await bulk.request_ticket(host_fetcher, host_holder.get_id(), root)
    check = await trio.to_thread.run_sync(bulk.receive_dag, address, ticket, root, fetcher.store)
    assert check.whole and check.blocks == 4  # three chunks and the root
    with pytest.raises(bulk.BulkUnavailable):  # a ticket is good once
        await trio.to_thread.run_sync(bulk.receive_dag, address, ticket, root, BlockStore(tmp_path / "again"))


async def test_the_stream_on_the_wire_is_not_the_blocks(nursery: trio.Nursery, tmp_path: Path) -> None:
    """What a listener on the path sees: not one block's bytes in the clear."""
    root, holder, fetcher, host_holder, host_fetcher = await holding(nursery, tmp_path, 300_000)
    address, ticket = await bulk.request_ticket(host_fetcher, host_holder.get_id(), root)

    def tap() -> bytes:
        with socket.create_connection((address, ticket.port), timeout=5) as plain:
            plain.sendall(ticket.secret)
            wire = b""
            while more := plain.recv(1 << 16):
                wire += more
        return wire

    wire = await trio.to_thread.run_sync(tap)
    source = (tmp_path / "file.bin").read_bytes()
    assert len(wire) > len(source)
    assert source[:64] not in wire and source[-64:] not in wire and root.to_bytes() not in wire


async def test_garbage_on_the_stream_port_never_harms_the_holder(nursery: trio.Nursery, tmp_path: Path) -> None:
    root, holder, fetcher, host_holder, host_fetcher = await holding(nursery, tmp_path, 300_000)
    assert holder.dags is not None

    def garbage() -> None:
        with socket.create_connection(("127.0.0.1", holder.dags.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10)
            try:
                plain.recv(100)
            except OSError:
                pass
        with socket.create_connection(("127.0.0.1", holder.dags.port), timeout=5) as plain:
            plain.sendall(b"short")  # then hangs up inside the ticket

    await trio.to_thread.run_sync(garbage)
    check = await fetcher.pull(root, [host_holder.get_id()])  # the holder still serves
    assert check is not None and check.whole


async def test_with_the_stream_port_off_a_dag_comes_over_bitswap(nursery: trio.Nursery, tmp_path: Path) -> None:
    root, holder, fetcher, host_holder, _ = await holding(nursery, tmp_path, 600_000, bulk_listen=None)
    assert await fetcher.pull(root, [host_holder.get_id()]) is None
    fetcher.locate = None
    providers = [host_holder.get_id()]

    async def locate(cid: str) -> list:  # type: ignore[type-arg]
        return providers

    fetcher.locate = locate
    await fetcher.get(root, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == (tmp_path / "file.bin").read_bytes()
    assert fetcher.bitswap.blocks_received == 4


async def test_connections_that_never_greet_are_capped_then_hung_up_on(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    root, holder, fetcher, host_holder, _ = await holding(nursery, tmp_path, 300_000)
    assert holder.dags is not None
    idle = []
    try:
        for _ in range(bulk.MAX_OPEN + 8):
            sock = trio.socket.socket()
            idle.append(sock)
            await sock.connect(("127.0.0.1", holder.dags.port))
        await trio.sleep(0.2)
        assert holder.dags._open <= bulk.MAX_OPEN  # the ones over the cap were closed at once
        await trio.sleep(bulk.GREET_SECONDS + 1)  # their time to greet is up: each was hung up on
        for sock in idle:
            with trio.fail_after(5):
                assert await sock.recv(100) == b""
        check = await fetcher.pull(root, [host_holder.get_id()])
        assert check is not None and check.whole
    finally:
        for sock in idle:
            sock.close()


async def test_a_dag_over_many_slabs_comes_whole_with_frames_cut_across_them(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    size = 3 * bulk.SLAB_BYTES + 12345  # frames straddle the fetcher's slab edges
    root, holder, fetcher, host_holder, _ = await holding(nursery, tmp_path, size)
    check = await fetcher.pull(root, [host_holder.get_id()])
    assert check is not None and check.whole and check.bytes > size
    await fetcher.get(root, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == (tmp_path / "file.bin").read_bytes()
    assert fetcher.bitswap.blocks_received == 0


def test_a_stream_cut_inside_a_frame_keeps_the_blocks_before_it(tmp_path: Path) -> None:
    """A holder that hangs up mid-block: what came whole is checked and kept, the rest is bitswap's."""
    root, blocks = added(tmp_path)
    order = list(walk(root, lambda cid: blocks[cid.digest]))
    key, secret = os.urandom(16), os.urandom(32)
    wire = b"".join(part for cid, block in order[:2] for part in upload_frame(cid, block))
    wire += b"".join(upload_frame(*order[2]))[:1000]
    listener = socket.create_server(("127.0.0.1", 0))

    def holder() -> None:
        connection, _ = listener.accept()
        with connection:
            assert connection.recv(32) == secret
            connection.sendall(bulk._cipher(key).encryptor().update(wire))

    thread = threading.Thread(target=holder)
    thread.start()
    store = BlockStore(tmp_path / "fetcher")
    try:
        ticket = bulk.Ticket(listener.getsockname()[1], secret, key)
        with pytest.raises(bulk.BulkUnavailable, match="broke: the stream ended inside a frame"):
            bulk.receive_dag("127.0.0.1", ticket, root, store)
    finally:
        thread.join()
        listener.close()
    assert store.has(order[0][0]) and store.has(order[1][0]) and not store.has(order[2][0])


def test_a_preorder_run_comes_in_the_order_an_export_writes_repeats_and_all(tmp_path: Path) -> None:
    root, blocks = added(tmp_path)
    expected: list[CID] = []

    def visit(cid: CID) -> None:  # what an exporter visits: a node, then each link in order
        expected.append(cid)
        if cid.codec == DAG_PB:
            for link in decode_node(blocks[cid.digest]).links:
                visit(link.cid)

    visit(root)
    assert len(expected) > len(blocks)  # the zero chunk, linked four times, comes four times
    stack, got = [root], []
    while stack:  # small runs: the stack carries the walk from one run to the next
        run, lacking = preorder_run(stack, lambda cid: blocks[cid.digest], 300_000)
        assert lacking is None and run
        got += [block for _, block in run]
    assert got == [blocks[cid.digest] for cid in expected]
    assert [cid for cid, _ in preorder_run([root], lambda cid: blocks[cid.digest], 1 << 30)[0]] == expected

    lost = expected[3]
    stack = [root]
    run, lacking = preorder_run(stack, lambda cid: blocks[cid.digest] if cid != lost else {}[cid], 1 << 30)
    assert lacking == lost and stack[-1] == lost and len(run) == 3  # stopped before it, still next


async def test_an_export_from_a_preorder_stream_refuses_a_block_out_of_place(tmp_path: Path) -> None:
    source = tree(tmp_path / "src")
    root, blocks = added(tmp_path)
    stack, order = [root], []
    while stack:
        order += [block for _, block in preorder_run(stack, lambda cid: blocks[cid.digest], 1 << 30)[0]]
    items = iter([(hashlib.sha256(block).digest(), block) for block in order])

    async def receive() -> tuple[bytes, bytes]:
        return next(items)

    await export(root, PreOrder(receive), tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert (tmp_path / "out" / "sub" / "note.txt").read_bytes() == b"a note\n"

    swapped = iter([(hashlib.sha256(block).digest(), block) for block in [order[0], order[2], order[1], *order[3:]]])

    async def receive_swapped() -> tuple[bytes, bytes]:
        return next(swapped)

    with pytest.raises(ExportError, match="does not hash to its CID"):
        await export(root, PreOrder(receive_swapped), tmp_path / "out2")
