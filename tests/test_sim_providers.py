"""Finding data at scale (issue 16, items 4 and 5), in the simulator: provider
records kept by the nodes a rendezvous ranking of the CID picks, so a lookup
costs a few messages however many nodes there are; and the leader placing
jobs on the nodes that hold their inputs, so little data moves."""

from __future__ import annotations

from collections import Counter

import pytest

from protocols.events import DataHeld, FindProviders, ProvidersFound
from protocols import locality
from protocols.locality import holders_first
from protocols.messages import ProviderAnnounce, ProviderQuery, ProviderReply
from protocols.providers import KEEPERS, RECORD_TTL
from sim import SimConfig, simulate
from sim.data import DataConfig
from sim.runner import Simulation
from sim.workload import JobMix, WorkloadConfig
from sim.world import Observer

PROVIDER_MESSAGES = (ProviderAnnounce, ProviderQuery, ProviderReply)
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


class _Watch(Observer):
    """Counts provider messages sent, keeps every answer to FindProviders."""

    def __init__(self) -> None:
        self.sent: Counter[type] = Counter()
        self.found: list[tuple[str, ProvidersFound]] = []

    def on_send(self, sender: str, peer: str, message: object, size: int) -> None:
        if isinstance(message, PROVIDER_MESSAGES):
            self.sent[type(message)] += 1

    def on_providers_found(self, node_id: str, effect: ProvidersFound, now: float) -> None:
        self.found.append((node_id, effect))


def _booted(nodes: int) -> tuple[Simulation, _Watch]:
    """A formed network of `nodes` simulated nodes, every one started."""
    sim = Simulation(SimConfig(nodes=nodes, seed=3, workload=WorkloadConfig(jobs=0)))
    watch = _Watch()
    sim.world.observer = watch
    for index, config in enumerate(sim.configs):
        sim.world.add_node(config.node_id, sim._factory(index, config))
    for config in sim.configs:
        sim.world.start(config.node_id)
    sim.world.run(0.2)
    return sim, watch


@pytest.fixture(scope="module")
def ten_thousand() -> tuple[Simulation, _Watch]:
    return _booted(10_000)


def test_at_ten_thousand_nodes_a_node_finds_the_holder_of_a_cid_in_at_most_twice_k_messages(ten_thousand) -> None:
    sim, watch = ten_thousand
    world = sim.world
    holder, seeker = sim.configs[17].node_id, sim.configs[9_000].node_id
    watch.sent.clear()
    world.inject(holder, DataHeld((CID,)))
    world.run(world.now + 0.5)
    announced = watch.sent[ProviderAnnounce]
    assert 1 <= announced <= KEEPERS  # one message per record keeper, not per node

    watch.sent.clear()
    world.inject(seeker, FindProviders(CID))
    world.run(world.now + 0.5)
    assert [(node, found.cid) for node, found in watch.found] == [(seeker, CID)]
    assert watch.found[0][1].providers == (holder,)
    assert watch.sent[ProviderQuery] <= KEEPERS and watch.sent[ProviderReply] <= KEEPERS
    assert sum(watch.sent.values()) <= 2 * KEEPERS  # bounded by k, while N is 10,000


def test_a_lookup_of_a_cid_nobody_holds_ends_with_no_providers_in_as_few_messages(ten_thousand) -> None:
    sim, watch = ten_thousand
    world = sim.world
    watch.sent.clear()
    watch.found.clear()
    seeker = sim.configs[42].node_id
    world.inject(seeker, FindProviders("bafkreinobodyholdsthis"))
    world.run(world.now + 0.5)
    assert watch.found == [(seeker, ProvidersFound("bafkreinobodyholdsthis", ()))]
    assert sum(watch.sent.values()) <= 2 * KEEPERS


def test_a_keeper_that_crashes_is_replaced_by_the_next_in_rank_at_the_next_announcement() -> None:
    sim, watch = _booted(40)
    world = sim.world
    holder, seeker = sim.configs[0].node_id, sim.configs[1].node_id
    world.inject(holder, DataHeld((CID,)))
    world.run(world.now + 1.0)
    keepers = world.slots[holder].node.providers.keepers_of(CID)
    for keeper in keepers:
        if keeper not in (holder, seeker):
            world.crash(keeper)
    world.run(world.now + RECORD_TTL / 3 + 30.0)  # the deaths are noticed; the holder announces again
    world.inject(seeker, FindProviders(CID))
    world.run(world.now + 2.0)
    assert watch.found[-1] == (seeker, ProvidersFound(CID, (holder,)))


def test_a_record_withdrawn_or_expired_is_no_longer_found() -> None:
    sim, watch = _booted(20)
    world = sim.world
    holder, seeker = sim.configs[3].node_id, sim.configs[4].node_id
    world.inject(holder, DataHeld((CID,)))
    world.run(world.now + 1.0)
    world.inject(holder, DataHeld((CID,), held=False))
    world.run(world.now + 40.0)  # past the seeker's cache of any earlier answer
    world.inject(seeker, FindProviders(CID))
    world.run(world.now + 2.0)
    assert watch.found[-1] == (seeker, ProvidersFound(CID, ()))


def test_holders_go_first_most_inputs_first_in_rendezvous_order() -> None:
    ranked = ["a", "b", "c", "d"]
    eligible = ["a", "b", "c", "d", "e", "f"]
    held = {"x": {"d", "e", "z"}, "y": {"d", "b"}}
    order = holders_first(ranked, eligible, ["x", "y"], lambda cid: held[cid])
    # d holds both; b (in the prefix) before e (past it); z is not eligible
    assert order == ["d", "b", "e", "a", "c"]
    assert holders_first(ranked, eligible, [], lambda cid: held[cid]) is ranked
    assert holders_first(ranked, eligible, ["q"], lambda cid: set()) is ranked


def _data_run() -> dict[str, float]:
    workload = WorkloadConfig(jobs=60, arrival_rate=5.0, mix=JobMix({"batch": 1.0}), durations=(2.0,))
    report = simulate(SimConfig(nodes=60, seed=5, workload=workload, data=DataConfig(datasets=12, replicas=2)))
    assert set(report.jobs_by_state) == {"Completed"}
    assert "MiB moved per job" in report.text()
    return report.data


def test_the_leader_places_jobs_where_their_data_is_and_far_less_data_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    placed = _data_run()
    # The same run with the leader blind to where data is: rendezvous rank alone.
    monkeypatch.setattr(locality, "holders_first", lambda ranked, eligible, cids, holders: ranked)
    monkeypatch.setattr(locality, "inputs_held", lambda cids, holders: lambda node_id: 0)
    blind = _data_run()
    assert placed["jobs_with_data"] == blind["jobs_with_data"] == 60
    # Each dataset sits on 2 of 60 nodes (and on those that fetched it
    # since); a batch job runs up to 3 partitions, so some runs must fetch.
    assert placed["runs_local"] >= 0.6 * placed["runs_with_data"]
    assert placed["runs_local"] >= 4 * blind["runs_local"]
    assert placed["bytes_moved_per_job"] <= 0.5 * blind["bytes_moved_per_job"]


def test_a_run_without_datasets_reports_no_data_and_reads_none() -> None:
    workload = WorkloadConfig(jobs=10, arrival_rate=5.0, mix=JobMix({"batch": 1.0}), durations=(2.0,))
    report = simulate(SimConfig(nodes=10, seed=5, workload=workload))
    assert report.data == {}
    assert "data:" not in report.text()
