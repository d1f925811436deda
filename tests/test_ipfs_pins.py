"""What a node's block store keeps (issue 16, item 6): pinned DAGs until their
time, other blocks (fetched inputs) under a disk quota, least recently used
dropped first; and the settings that say how long and how much."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pnode.config import ConfigError, load_settings
from p2pnode.ipfs.blockstore import BlockStore
from p2pnode.ipfs.dagpb import decode_node
from p2pnode.ipfs.importer import Added, add_bytes
from p2pnode.ipfs.pins import FRESH_SECONDS, Pins

KIB = 1024


def added(store: BlockStore, size: int, seed: int) -> Added:
    """A file of `size` distinct bytes (several 256 KiB chunks when large)."""
    data = (seed.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return add_bytes(bytes((b + i) % 251 for i, b in enumerate(data)), store.put_made)


class Clock:
    """The store's clock, set by the test: when each block was last used."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unpinned_blocks_over_the_quota_go_least_recently_used_first_and_pins_stay(tmp_path: Path) -> None:
    clock = Clock()
    store = BlockStore(tmp_path / "blocks", clock=clock)
    pins = Pins(store, tmp_path / "pins.json", quota=700 * KIB)
    result = added(store, 600 * KIB, 1)
    pins.pin(result.cid, 3600, now=0.0)
    clock.now += 100
    old_input = added(store, 600 * KIB, 2)
    pins.cache(old_input.cid, now=0.0)
    clock.now += 100
    new_input = added(store, 600 * KIB, 3)
    pins.cache(new_input.cid, now=0.0)
    clock.now += 100 + FRESH_SECONDS  # none of them fresh any more

    gone = pins.collect()

    assert gone == [str(old_input.cid)]  # the older input went, whole
    assert not store.has(old_input.cid)
    assert store.has(new_input.cid) and store.has(result.cid)
    assert sorted(pins.held()) == sorted([str(result.cid), str(new_input.cid)])
    unpinned = sum(length for _, length, _ in store.usage()) - result.tsize
    assert unpinned <= 700 * KIB


def test_a_read_makes_a_block_recently_used(tmp_path: Path) -> None:
    clock = Clock()
    store = BlockStore(tmp_path / "blocks", clock=clock)
    pins = Pins(store, tmp_path / "pins.json", quota=300 * KIB)
    first = added(store, 200 * KIB, 4)
    clock.now += 100
    second = added(store, 200 * KIB, 5)
    for item in (first, second):
        pins.cache(item.cid, now=0.0)
    clock.now += 100 + FRESH_SECONDS
    store.get(first.cid)  # used again just now
    clock.now += 1
    assert pins.collect() == [str(second.cid)]
    assert store.has(first.cid)


def test_collecting_frees_the_disk_space_of_dropped_blocks(tmp_path: Path) -> None:
    """Dropped blocks leave dead bytes in their packs; collect compacts them away."""
    clock = Clock()
    store = BlockStore(tmp_path / "blocks", clock=clock, pack_bytes=512 * KIB)
    pins = Pins(store, tmp_path / "pins.json", quota=600 * KIB)
    old_input = added(store, 1200 * KIB, 8)  # several packs of its own
    pins.cache(old_input.cid, now=0.0)
    clock.now += 100
    new_input = added(store, 500 * KIB, 9)
    pins.cache(new_input.cid, now=0.0)
    clock.now += FRESH_SECONDS + 1
    before = store.size()

    assert pins.collect() == [str(old_input.cid)]
    assert store.size() < before - 1000 * KIB  # the old input's packs went, not just its index rows
    leaves = [link.cid for link in decode_node(store.get(new_input.cid)).links]
    assert len(leaves) == 2 and all(store.get(cid) for cid in leaves)  # what stays reads back whole


def test_a_pin_that_expires_turns_its_blocks_into_cache_and_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    store = BlockStore(tmp_path / "blocks", clock=clock)
    pins = Pins(store, tmp_path / "pins.json", quota=0)
    result = added(store, 10 * KIB, 6)
    forever = added(store, 10 * KIB, 7)
    pins.pin(result.cid, 60, now=100.0)
    pins.pin(forever.cid, None, now=100.0)
    assert pins.expire(now=159.0) == [] and pins.collect() == []  # pinned: kept despite a quota of 0

    reopened = Pins(store, tmp_path / "pins.json", quota=0)  # a restarted node
    assert reopened.held() == sorted([str(result.cid), str(forever.cid)])
    assert reopened.expire(now=160.0) == [str(result.cid)]
    clock.now += FRESH_SECONDS + 1
    assert reopened.collect() == [str(result.cid)]
    assert not store.has(result.cid) and store.has(forever.cid)


def test_an_add_larger_than_the_quota_keeps_every_block_until_its_pin(tmp_path: Path) -> None:
    """The client pins a root once the whole tree is in: a collection
    meanwhile must not take the first blocks of the add (they are fresh)."""
    clock = Clock()
    store = BlockStore(tmp_path / "blocks", clock=clock)
    pins = Pins(store, tmp_path / "pins.json", quota=300 * KIB)
    old_input = added(store, 400 * KIB, 10)
    pins.cache(old_input.cid, now=0.0)
    clock.now += FRESH_SECONDS + 1
    first_half = added(store, 600 * KIB, 11)  # an add in progress: not pinned yet, alone over the quota
    clock.now += 60

    assert pins.collect() == [str(old_input.cid)]  # the stale cache goes, the add in progress stays
    assert store.has(first_half.cid) and all(store.has(link.cid) for link in decode_node(store.get(first_half.cid)).links)

    pins.pin(first_half.cid, None, now=clock.now)  # the add ended: its client pins the root
    clock.now += 2 * FRESH_SECONDS
    assert pins.collect() == [] and store.has(first_half.cid)


def test_added_blocks_never_pinned_go_once_they_are_no_longer_fresh(tmp_path: Path) -> None:
    """A client that died before its pin leaves cache, not a leak."""
    clock = Clock()
    store = BlockStore(tmp_path / "blocks", clock=clock)
    pins = Pins(store, tmp_path / "pins.json", quota=0)
    orphan = added(store, 300 * KIB, 12)
    clock.now += FRESH_SECONDS - 1
    pins.collect()
    assert store.has(orphan.cid)
    clock.now += 2
    pins.collect()
    assert not store.has(orphan.cid) and store.usage() == []


def test_results_pin_and_cache_quota_come_from_the_file_the_environment_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("Node:\n  IPFS:\n    ResultsPin: 3600\n    CacheQuota: 2Gb\n")
    settings = load_settings(config_file=config, env={}, flags={"--data-dir": str(tmp_path)})
    assert settings.ipfs_results_pin == 3600 and settings.ipfs_cache_quota == 2 << 30
    settings = load_settings(
        config_file=config, env={"P2PNODE_NODE_IPFS_RESULTSPIN": "60"},
        flags={"--data-dir": str(tmp_path), "--ipfs-cache-quota": "512Mb"},
    )
    assert settings.ipfs_results_pin == 60 and settings.ipfs_cache_quota == 512 << 20
    with pytest.raises(ConfigError, match="seconds"):
        load_settings(config_file=None, env={}, flags={"--data-dir": str(tmp_path), "--ipfs-results-pin": "soon"})
