"""The block store on disk: blocks in pack files and an index, kept across a
restart, never served when a crash or the disk spoiled them, compacted when
mostly dead, shared by threads, and read from the old one-file-a-block layout."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from p2pnode.ipfs.blockstore import Batch, BlockMissing, BlockStore, CorruptBlock
from p2pnode.ipfs.cid import CID, RAW
from p2pnode.ipfs.importer import add_path

KIB = 1024


def blocks(count: int, size: int = 256 * KIB, seed: int = 0) -> list[tuple[CID, bytes]]:
    """`count` distinct blocks of `size` bytes under CIDv1 raw."""
    made = []
    for i in range(count):
        data = hashlib.sha256(f"{seed}/{i}".encode()).digest() * (size // 32)
        made.append((CID.of(data, version=1, codec=RAW), data))
    return made


def test_blocks_outlive_a_restart(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(10)
    store.put_many(held[:5])
    for cid, data in held[5:]:
        store.put_made(cid, data)
    store.close()

    reopened = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    assert all(reopened.get(cid) == data for cid, data in held)
    assert len(list((tmp_path / "packs").glob("*.pack"))) == 3  # 10 blocks of 256 KiB in packs of 1 MiB
    reopened.put_made(*blocks(1, seed=1)[0])  # appended to a pack of its own, not to one a crash may have cut
    assert len(list((tmp_path / "packs").glob("*.pack"))) == 4


def test_a_block_torn_by_a_crash_is_refused_not_served(tmp_path: Path) -> None:
    """The index committed, the bytes never all reached the disk: cut short,
    zeros, or the whole pack lost. Each such block is dropped, the rest served."""
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(6)
    store.put_many(held)
    store.close()
    (cut, cut_bytes), (zeroed, _), (lost, _) = held[3], held[2], held[4]
    pack, offset, length = BlockStore(tmp_path).location(cut)
    assert BlockStore(tmp_path).location(zeroed)[0] == pack  # the first pack holds blocks 0-3
    with pack.open("r+b") as file:
        file.truncate(offset + length // 2)
        _, offset, length = BlockStore(tmp_path).location(zeroed)
        file.seek(offset)
        file.write(bytes(length))
    BlockStore(tmp_path).location(lost)[0].unlink()  # the second pack: blocks 4 and 5

    store = BlockStore(tmp_path)
    for cid in (cut, zeroed, lost):
        with pytest.raises(CorruptBlock):
            store.get(cid)
        assert not store.has(cid)
        with pytest.raises(BlockMissing):
            store.get(cid)
    assert [store.get(cid) == data for cid, data in held[:2]] == [True, True]
    store.put_made(cut, cut_bytes)  # fetched again: held again
    assert store.get(cut) == cut_bytes


def test_compaction_keeps_live_blocks_and_frees_the_dead_space(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(12)  # three packs of four
    store.put_many(held)
    store.put_made(*blocks(1, seed=1)[0])  # a fourth pack, the one being appended to
    for cid, _ in held[:3] + held[4:6]:  # the first pack 3/4 dead, the second half dead
        store.delete(cid)
    before = store.size()

    freed = store.compact()

    assert freed == 1024 * KIB  # only the mostly dead pack was rewritten
    assert store.size() == before - freed + 256 * KIB  # its live block moved forward
    assert all(store.get(cid) == data for cid, data in held[3:4] + held[6:])
    assert not any(store.has(cid) for cid, _ in held[:3] + held[4:6])
    assert store.compact(dead_share=0.4) == 1024 * KIB  # the half dead one, when asked to
    reopened = BlockStore(tmp_path)
    assert all(reopened.get(cid) == data for cid, data in held[3:4] + held[6:])


def test_a_store_in_the_old_layout_moves_into_packs(tmp_path: Path) -> None:
    """One file a block (`xx/<digest>`): each block moves with its mtime as
    last use; a rotten file and a crash's temporary file go."""
    old = blocks(5, size=100 * KIB)
    for cid, data in old:
        name = cid.digest.hex()
        (tmp_path / name[-3:-1]).mkdir(exist_ok=True)
        (tmp_path / name[-3:-1] / name).write_bytes(data)
        os.utime(tmp_path / name[-3:-1] / name, (5000.0, 5000.0))
    rotten, _ = old[0]
    name = rotten.digest.hex()
    (tmp_path / name[-3:-1] / name).write_bytes(b"rotten")
    (tmp_path / name[-3:-1] / f".{name}.123.456.tmp").write_bytes(b"half a block")

    store = BlockStore(tmp_path)

    assert all(store.get(cid) == data for cid, data in old[1:])
    assert not store.has(rotten)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.sqlite", "index.sqlite-shm", "index.sqlite-wal",
                                                          "packs"]
    assert {used for _, _, used in BlockStore(tmp_path).usage()} == {5000.0}


def test_threads_storing_at_once_lose_nothing_and_store_each_block_once(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, pack_bytes=2048 * KIB)
    shared = blocks(8, size=64 * KIB, seed=99)  # every thread stores these too
    batches = [blocks(16, size=64 * KIB, seed=seed) + shared for seed in range(4)]
    errors: list[BaseException] = []

    def store_all(batch: list[tuple[CID, bytes]]) -> None:
        try:
            for start in range(0, len(batch), 5):
                store.put_many(batch[start:start + 5])
                store.get(batch[start][0])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=store_all, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every = {cid.digest: data for batch in batches for cid, data in batch}
    assert len(every) == 4 * 16 + 8
    assert all(store.get(CID.of(data, version=1, codec=RAW)) == data for data in every.values())
    assert store.size() == sum(map(len, every.values()))  # no block appended twice


def test_a_second_store_on_the_same_directory_reads_and_writes_beside_the_first(tmp_path: Path) -> None:
    """A command may open a node's store while the node runs: each appends to its own pack."""
    node, command = BlockStore(tmp_path), BlockStore(tmp_path)
    (a, a_bytes), (b, b_bytes) = blocks(2, size=10 * KIB)
    node.put_made(a, a_bytes)
    command.put_made(b, b_bytes)
    assert node.get(b) == b_bytes and command.get(a) == a_bytes
    assert node.location(a)[0] != node.location(b)[0]


def test_compaction_beside_writers_and_readers_keeps_every_live_block(tmp_path: Path) -> None:
    """`pins.collect` compacts in a worker thread while bitswap stores and serves blocks."""
    store = BlockStore(tmp_path, pack_bytes=512 * KIB)
    dying, living = blocks(32, size=64 * KIB, seed=1), blocks(16, size=64 * KIB, seed=2)
    store.put_many([block for i, kept in enumerate(living) for block in (dying[2 * i], dying[2 * i + 1], kept)])
    for cid, _ in dying:
        store.delete(cid)
    later = blocks(40, size=64 * KIB, seed=3)
    errors: list[BaseException] = []

    def write_and_read() -> None:
        try:
            for i, (cid, data) in enumerate(later):
                store.put_made(cid, data)
                assert store.get(living[i % len(living)][0]) == living[i % len(living)][1]
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    writer = threading.Thread(target=write_and_read)
    writer.start()
    freed = store.compact()
    writer.join()

    assert errors == [] and freed > 0
    assert all(store.get(cid) == data for cid, data in living + later)


def test_a_batched_import_stores_every_block_the_importer_made(tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(b"".join(data for _, data in blocks(13, size=100 * KIB)))
    made: dict[CID, bytes] = {}
    expected = add_path(source, lambda cid, block: made.__setitem__(cid, block))
    store = BlockStore(tmp_path / "store")
    with Batch(store, limit=600 * KIB) as put:  # several batches, the last one short
        assert add_path(source, put).cid == expected.cid
    assert all(store.get(cid) == block for cid, block in made.items())


def test_blocks_in_pieces_are_written_whole_across_packs(tmp_path: Path) -> None:
    """The importer's leaves come as pieces (header, chunk views, trailer),
    written by one pwritev a pack; a block never straddles two packs."""
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    made = blocks(7, size=300 * KIB, seed=3)
    pieces = []
    for cid, data in made:
        view = memoryview(data)
        pieces.append((cid, [view[:10], view[10:200 * KIB], view[200 * KIB:]]))
    store.put_pieces(pieces)
    store.put_pieces(pieces[:2])  # held already: nothing written again
    assert all(store.get(cid) == data for cid, data in made)
    packs = sorted((tmp_path / "packs").glob("*.pack"))
    assert len(packs) == 3 and sum(p.stat().st_size for p in packs) == 7 * 300 * KIB
    assert {store.location(cid)[0] for cid, _ in made[:3]} == {packs[0]}


def test_a_write_cut_short_by_the_kernel_is_finished_piece_by_piece(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """pwritev may write less than asked (a signal, a nearly full disk): the
    rest goes piece by piece, each block still whole where the index says."""
    real = os.pwritev

    def short(fd: int, pieces: list[bytes | memoryview], offset: int) -> int:
        return real(fd, [b"".join(pieces)[:7]], offset)  # 7 bytes, whatever was asked: into the second piece

    monkeypatch.setattr(os, "pwritev", short)
    store = BlockStore(tmp_path)
    made = blocks(3, size=64 * KIB, seed=4)
    store.put_pieces([(cid, [memoryview(data)[:5], memoryview(data)[5:]]) for cid, data in made])
    monkeypatch.undo()
    assert all(store.get(cid) == data for cid, data in made)


def _lose_index(root: Path) -> None:
    for path in root.glob("index.sqlite*"):
        path.unlink()


def test_a_lost_index_is_rebuilt_from_the_packs_key_files(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(10)
    store.put_many(held[:5])
    store.put_pieces([(cid, [memoryview(data)[:100], memoryview(data)[100:]]) for cid, data in held[5:]])
    store.close()
    _lose_index(tmp_path)

    reopened = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    assert all(reopened.get(cid) == data for cid, data in held)  # every block, checked against its digest
    assert reopened.compact() == 0  # none of it is taken for dead space


def test_a_damaged_index_is_kept_aside_and_rebuilt(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    held = blocks(3, size=64 * KIB, seed=5)
    store.put_many(held)
    store.close()
    _lose_index(tmp_path)
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 1000)

    reopened = BlockStore(tmp_path)
    assert all(reopened.get(cid) == data for cid, data in held)
    assert [p.read_bytes() for p in tmp_path.glob("index.sqlite.damaged-*")] == [b"garbage" * 1000]


def test_blocks_moved_by_compaction_are_found_where_they_went(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(8)
    store.put_many(held)
    for cid, _ in held[:3]:  # the first pack mostly dead: its last block moves forward
        store.delete(cid)
    store.compact()
    store.close()
    _lose_index(tmp_path)

    reopened = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    assert all(reopened.get(cid) == data for cid, data in held[3:])
    assert not any(reopened.has(cid) for cid, _ in held[:3])  # their pack went with its key file


def test_a_rebuild_skips_what_a_crash_cut_short(tmp_path: Path) -> None:
    """A key record cut in two, and a record naming bytes past the end of a
    pack cut short: neither is indexed, the rest is."""
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(8)
    store.put_many(held)
    store.close()
    _lose_index(tmp_path)
    packs = sorted((tmp_path / "packs").glob("*.pack"))
    keys = packs[0].with_suffix(".keys")
    keys.write_bytes(keys.read_bytes()[:-10])  # the first pack's last record, cut
    with packs[1].open("r+b") as pack:
        pack.truncate(pack.seek(0, 2) - 1)  # the second pack's last block, one byte short

    reopened = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    present = [reopened.has(cid) for cid, _ in held]
    assert present == [True, True, True, False, True, True, True, False]
    assert all(reopened.get(cid) == data for cid, data in held if reopened.has(cid))


def test_packs_made_before_key_files_get_theirs_from_the_index(tmp_path: Path) -> None:
    """A store from before key files: its index names them at the next open,
    so a later loss of the index loses none of its blocks either."""
    store = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    held = blocks(6)
    store.put_many(held)
    store.close()
    for keys in (tmp_path / "packs").glob("*.keys"):
        keys.unlink()  # as an older p2pnode left them

    BlockStore(tmp_path, pack_bytes=1024 * KIB).close()
    assert len(list((tmp_path / "packs").glob("*.keys"))) == 2
    _lose_index(tmp_path)
    reopened = BlockStore(tmp_path, pack_bytes=1024 * KIB)
    assert all(reopened.get(cid) == data for cid, data in held)
