"""Rendezvous election: the same answer in any order, minimal disruption when
members come and go, an even spread of leadership, and pinned values."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable

import pytest

from protocols import election

NODES = [f"node-{i:02d}" for i in range(30)]
JOBS = [f"job-{i}" for i in range(200)]


def leader_of(job_id: str, node_ids: Iterable[str]) -> str | None:
    """The head of the job's ranking, or None if there is nobody."""
    ranked = election.rank(job_id, node_ids, k=1)
    return ranked[0] if ranked else None


def test_every_order_of_the_members_gives_the_same_ranking() -> None:
    few = NODES[:5]
    for job_id in JOBS[:20]:
        rankings = {tuple(election.rank(job_id, order)) for order in itertools.permutations(few)}
        assert len(rankings) == 1
    rng = random.Random(7)
    for job_id in JOBS:
        expected = election.rank(job_id, NODES)
        shuffled = NODES[:]
        rng.shuffle(shuffled)
        assert election.rank(job_id, shuffled) == expected
        assert leader_of(job_id, iter(shuffled)) == expected[0]


def test_ranking_is_by_descending_weight() -> None:
    for job_id in JOBS[:20]:
        key = election.job_key(job_id)
        by_weight = sorted(NODES, key=lambda n: -election.weight(key, election.node_key(n)))
        assert election.rank(job_id, NODES) == by_weight


def test_removing_the_leader_promotes_the_first_successor_and_keeps_the_rest_in_order() -> None:
    for job_id in JOBS:
        ranked = election.rank(job_id, NODES)
        assert election.rank(job_id, ranked[1:]) == ranked[1:]
        survivors = [n for n in NODES if n != ranked[0]]
        assert election.rank(job_id, survivors) == ranked[1:]
        assert leader_of(job_id, survivors) == ranked[1]


def test_removing_any_member_leaves_the_others_in_the_same_order() -> None:
    rng = random.Random(3)
    for job_id in JOBS:
        ranked = election.rank(job_id, NODES)
        gone = rng.choice(NODES)
        assert election.rank(job_id, [n for n in NODES if n != gone]) == [n for n in ranked if n != gone]


def test_adding_a_member_moves_leadership_only_to_it() -> None:
    moved = 0
    for job_id in JOBS:
        before = election.rank(job_id, NODES)
        after = election.rank(job_id, [*NODES, "newcomer"])
        assert after[0] in (before[0], "newcomer")
        assert [n for n in after if n != "newcomer"] == before
        moved += after[0] == "newcomer"
    assert 0 < moved < len(JOBS) // 10  # about 1/31 of the jobs


def test_leadership_is_spread_evenly() -> None:
    nodes = [f"peer-{i}" for i in range(50)]
    jobs = [f"job-{i:05d}" for i in range(10_000)]
    leaders = Counter(leader_of(job_id, nodes) for job_id in jobs)
    fair = len(jobs) / len(nodes)
    assert set(leaders) == set(nodes)
    assert max(leaders.values()) <= 2 * fair
    assert min(leaders.values()) >= fair / 2
    seconds = Counter(election.rank(job_id, nodes, k=2)[1] for job_id in jobs[:5000])
    assert max(seconds.values()) <= 2 * 5000 / len(nodes)


def test_k_limits_the_ranking_to_its_head() -> None:
    many = [f"n{i}" for i in range(1000)]
    for job_id in JOBS[:20]:
        full = election.rank(job_id, many)
        for k in (0, 1, 3, 10, 999, 1000, 5000):
            assert election.rank(job_id, many, k=k) == full[:k]


def test_duplicates_count_once_and_nobody_leads_an_empty_network() -> None:
    distinct = election.rank("job", ["c", "b", "a"])
    assert election.rank("job", ["a", "b", "a", "b", "c"]) == distinct
    for k in (1, 2, 3, 4):
        assert election.rank("job", ["a", "b", "a", "b", "c", "c"], k=k) == distinct[:k]
    assert leader_of("job", [distinct[0]] * 3 + distinct) == distinct[0]
    assert election.rank("job", []) == []
    assert leader_of("job", []) is None


def test_negative_k_is_refused() -> None:
    with pytest.raises(ValueError, match="k >= 0"):
        election.rank("job", NODES, k=-1)


def test_keys_and_weights_are_pinned() -> None:
    # Computed once; if these change, every node of an older version would
    # disagree with this one about who leads what.
    assert election.node_key("node-1") == 0x8F57B755BCA4EB29
    assert election.job_key("job-1") == 0x01E636A65307B56B
    assert election.node_key("") == 0xE4A6A0577479B2B4
    assert election.weight(0, 0) == 0xE220A8397B1DCDAF  # splitmix64's first output from seed 0
    assert election.weight(election.job_key("job-1"), election.node_key("node-1")) == 0xC4AC7B36586D0E23
    assert election.rank("job-1", ["a", "b", "c", "d", "e"]) == ["d", "c", "e", "b", "a"]
    assert leader_of("ünïcødé-job", ["α", "β", "γ"]) == "β"


def test_large_rankings_take_the_fast_path_and_agree_with_the_plain_one() -> None:
    rng = random.Random(3)
    for trial in range(100):
        n = rng.choice([64, 65, 300, 2000])
        ids = sorted({f"node-{rng.getrandbits(40):x}" for _ in range(n)})
        job = f"j{rng.getrandbits(30)}"
        k = rng.choice([None, 0, 1, 5, len(ids), len(ids) + 3])
        weights = election._weights(election.job_key(job), ids)
        plain = [n for _, n in sorted(zip(weights, ids), reverse=True)][:k]
        assert election.rank(job, ids, k) == plain, (trial, n, k)
        assert election.rank(job, list(reversed(ids)), k) == plain  # unsorted input: the plain path
