"""Membership in virtual time: joins, the watch ring, accusations and
refutations, restarts, goodbyes, warm starts, the adaptive heartbeat, and a
lossy network agreeing on a death."""

from __future__ import annotations

import heapq
import random

import pytest

from protocols.membership import MemberChange, Membership, MembershipConfig, MemberStatus
from protocols.messages import Capacity, Down, NodeInfo, NodeLeft, PolicySummary, Suspect

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
CAPACITY = Capacity(cpu=4000, memory=8 << 30, disk=100 << 30)


def info(node_id: str, seq: int = 1, incarnation: int = 1, interval: float = 1.0, **fields: object) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        labels=fields.pop("labels", {}),  # type: ignore[arg-type]
        capacity=CAPACITY,
        free=fields.pop("free", CAPACITY),  # type: ignore[arg-type]
        engines=("wasm",),
        publishers=("local",),
        storages=("inline",),
        local_data=(),
        policy=PolicySummary(),
        version="test",
        incarnation=incarnation,
        seq=seq,
        heartbeat_interval=interval,
    )


def membership(node_id: str = "me", **config: float) -> Membership:
    return Membership(info(node_id, seq=0), MembershipConfig(**config))  # type: ignore[arg-type]


def joined(*others: str, node_id: str = "me", **config: float) -> Membership:
    m = membership(node_id, **config)
    for other in others:
        m.observe(info(other), 0.0)
    return m


def test_a_new_node_joins_alive() -> None:
    m = membership()
    assert list(m.alive_ids()) == ["me"]
    change = m.observe(info("b"), now=0.0)
    assert change == MemberChange("b", None, ALIVE, info("b"))
    assert list(m.alive_ids()) == ["b", "me"]
    assert m.status("b") == ALIVE and m.is_alive("b")
    assert m.info("b") == info("b")
    assert m.status("stranger") is None and m.info("stranger") is None and not m.is_alive("stranger")


def test_silence_alone_kills_nobody() -> None:
    m = joined("b")
    m.forget_gone(10_000.0)
    assert m.status("b") == ALIVE  # liveness is the watchers' to judge, not the heartbeat's


def test_each_node_watches_the_next_members_on_the_ring() -> None:
    m = joined("a", "c", "d", "e", node_id="b", watchers=2)
    assert m.watched() == ["c", "d"]
    m = joined("a", "b", "c", node_id="d", watchers=2)
    assert m.watched() == ["a", "b"]  # wrapping round
    assert joined("a", node_id="b", watchers=3).watched() == ["a"]  # fewer members than watchers
    assert membership(watchers=3).watched() == []  # alone


def test_unanswered_pings_make_a_member_suspect_then_dead() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    pings, accusations, changes, _ = m.ping_round(0.0)
    assert [peer for peer, _ in pings] == ["b"] and accusations == [] and changes == []
    m.ping_round(1.0)  # the first went unanswered
    pings, accusations, changes, _ = m.ping_round(2.0)  # the second too
    assert accusations == [Suspect("b", 1, 1)]
    assert changes == [MemberChange("b", ALIVE, SUSPECT, info("b"))]
    assert m.is_alive("b") and "b" in m.alive_ids()  # a suspect still counts as alive
    pings, accusations, changes, _ = m.ping_round(3.0)
    assert accusations == [Down("b", 1, 1)]
    assert changes == [MemberChange("b", SUSPECT, DEAD, info("b"))]
    assert not m.is_alive("b") and list(m.alive_ids()) == ["me"]
    # the death is announced again in the next rounds, then no more
    assert m.ping_round(4.0)[1] == [Down("b", 1, 1)]
    assert m.ping_round(5.0)[1] == [Down("b", 1, 1)]
    assert m.ping_round(6.0)[1] == []


def test_an_answer_resets_the_count() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    for second in range(20):
        pings, accusations, changes, _ = m.ping_round(float(second))
        if second % 2:  # every other ping is answered
            for peer, nonce in pings:
                assert m.acked(peer, nonce) is None
        assert accusations == [] and changes == []
    assert m.status("b") == ALIVE


def test_a_late_or_forged_answer_does_not_count() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    (peer, nonce), = m.ping_round(0.0)[0]
    m.ping_round(1.0)
    m.acked("b", nonce)  # the answer to the previous round
    assert m.ping_round(2.0)[1] == [Suspect("b", 1, 1)]


def test_an_unanswered_ping_is_probed_through_helpers_whose_answers_count() -> None:
    m = joined("b", "c", "d", "e", node_id="a", watchers=1, helpers=2, suspect_after=2, dead_after=3)
    first = m.ping_round(0.0)
    assert [peer for peer, _ in first.pings] == ["b"] and first.requests == []  # answered so far: no helpers
    probed = 0
    for second in range(1, 20):  # the direct pings are lost every time; the helpers get through
        round_ = m.ping_round(float(second))
        assert round_.accusations == [] and round_.changes == []
        if not round_.requests:
            continue  # answered last round: only the (lost) direct ping
        (peer, nonce), = round_.pings
        helpers = [helper for helper, _, _ in round_.requests]
        assert len(helpers) == 2 and set(helpers) <= {"c", "d", "e"}
        assert all(member == "b" and asked == nonce for _, member, asked in round_.requests)
        assert m.acked("b", nonce) is None  # a helper's `IndirectAck`
        probed += 1
    assert probed == 10 and m.status("b") == ALIVE  # rounds 1, 3, ... 19


def test_helpers_differ_from_round_to_round() -> None:
    m = joined("b", "c", "d", "e", "f", "g", node_id="a", watchers=1, helpers=2, suspect_after=9, dead_after=9)
    m.ping_round(0.0)
    drawn = {tuple(helper for helper, _, _ in m.ping_round(float(s)).requests) for s in range(1, 9)}
    assert len(drawn) > 1 and all("a" not in d and "b" not in d for d in drawn)


def test_a_member_nobody_can_reach_is_still_declared_dead() -> None:
    m = joined("b", "c", "d", node_id="a", watchers=1, helpers=2, suspect_after=2, dead_after=3)
    accusations = [a for s in range(5) for a in m.ping_round(float(s)).accusations]
    assert accusations[:2] == [Suspect("b", 1, 1), Down("b", 1, 1)] and m.status("b") == DEAD


def test_a_helper_passes_on_only_the_answer_to_the_ping_it_sent() -> None:
    m = joined("a", "b", node_id="c")
    nonce = m.relay("a", "b", 7)
    assert nonce is not None
    assert m.relayed("a", nonce) is None  # not the member it pinged
    assert m.relayed("b", nonce + 1) is None  # not a ping it sent
    assert m.relayed("b", nonce) == ("a", 7)
    assert m.relayed("b", nonce) is None  # once
    assert m.relay("a", "stranger", 8) is None  # nobody it knows
    old = m.relay("a", "b", 9)
    m.ping_round(0.0)
    m.ping_round(1.0)
    assert old is not None and m.relayed("b", old) is None  # two rounds on: too late


def test_a_helper_runs_a_bounded_number_of_probes_for_others() -> None:
    from protocols.membership import MAX_RELAYS

    m = joined("a", "b", node_id="c")
    assert all(m.relay("a", "b", n) is not None for n in range(MAX_RELAYS))
    assert m.relay("a", "b", MAX_RELAYS) is None
    m.ping_round(0.0)
    assert m.relay("a", "b", 0) is not None  # a new round, room again


def test_accusations_from_others_change_status_unless_stale() -> None:
    m = joined("b")
    assert m.accused(Suspect("b", 1, 1), 1.0) == MemberChange("b", ALIVE, SUSPECT, info("b"))
    assert m.accused(Suspect("b", 1, 1), 1.5) is None  # already suspect
    assert m.accused(Down("b", 1, 1), 2.0) == MemberChange("b", SUSPECT, DEAD, info("b"))
    assert m.accused(Down("b", 1, 1), 2.5) is None
    m2 = joined("c")
    m2.observe(info("c", seq=5), 0.0)
    m2.observe(info("c", seq=6, labels={"zone": "a"}), 0.0)  # stored: a leader places work by labels
    assert m2.accused(Down("c", 1, 5), 1.0) is None  # we heard from it since
    assert m2.accused(Down("stranger", 1, 1), 1.0) is None
    assert m2.accused(Down("me", 1, 0), 1.0) is None


def test_a_refutation_brings_an_accused_member_back() -> None:
    m = joined("b")
    m.accused(Down("b", 1, 1), 1.0)
    assert m.observe(info("b", seq=1), 2.0) is None  # not newer than the accusation
    change = m.observe(info("b", seq=2), 2.0)
    assert change == MemberChange("b", DEAD, ALIVE, info("b", seq=2))
    assert m.is_alive("b") and "b" in m.alive_ids()
    m.accused(Suspect("b", 1, 2), 3.0)
    assert m.observe(info("b", seq=3), 3.5) == MemberChange("b", SUSPECT, ALIVE, info("b", seq=3))


def test_an_accusation_carries_the_newest_seq_its_watcher_heard() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    m.observe(info("b", seq=4), 0.5)  # a refresh: not stored, but b is ours to watch
    assert m.info("b").seq == 1  # type: ignore[union-attr]
    accusations = [a for s in range(4) for a in m.ping_round(float(s)).accusations]
    # else a member that joined later, and holds seq 4, would not believe it
    assert accusations[:2] == [Suspect("b", 1, 4), Down("b", 1, 4)]
    assert m.observe(info("b", seq=4), 5.0) is None and m.status("b") == DEAD  # a late copy changes nothing


def test_an_accusation_older_than_what_we_heard_is_checked_by_our_own_pings() -> None:
    # b's last heartbeat reached us and not its watcher, which accuses it at seq 1
    m = membership("c", watchers=1, suspect_after=2, dead_after=3)
    m.observe(info("a"), 0.0)
    m.observe(info("b", seq=4), 0.0)
    assert m.watched() == ["a"]  # b is not ours to watch
    assert m.accused(Down("b", 1, 1), 1.0) is None and m.status("b") == ALIVE  # not believed...
    pings = m.ping_round(2.0).pings
    assert [peer for peer, _ in pings] == ["a", "b"]  # ...but checked
    changes: list[MemberChange] = []
    for second in (4.0, 6.0, 8.0):
        m.acked("a", dict(pings)["a"])  # a answers; b never does
        round_ = m.ping_round(second)
        pings = round_.pings
        assert round_.accusations == []  # its watcher spoke already: our verdict is ours only
        changes += round_.changes
    assert changes == [
        MemberChange("b", ALIVE, SUSPECT, info("b", seq=4)),
        MemberChange("b", SUSPECT, DEAD, info("b", seq=4)),
    ]
    assert not m.is_alive("b") and m.ping_round(10.0).accusations == []
    # a member that answers stays alive, and the check ends
    m = membership("c", watchers=1)
    m.observe(info("a"), 0.0)
    m.observe(info("b", seq=4), 0.0)
    m.accused(Suspect("b", 1, 1), 1.0)  # say a refutation overtook it
    nonce = dict(m.ping_round(2.0).pings)["b"]
    assert m.acked("b", nonce) is None and m.status("b") == ALIVE
    assert [peer for peer, _ in m.ping_round(4.0).pings] == ["a"]


def test_a_suspicion_nobody_settles_is_checked_by_our_own_pings() -> None:
    m = joined("a", "b", "c", node_id="z")  # z watches a and b; c is not ours to watch
    m.accused(Suspect("b", 1, 1), 10.0)
    m.accused(Suspect("c", 1, 1), 10.0)  # neither Down nor refutation ever reaches us
    timeout = MembershipConfig().suspicion_timeout
    pinged = [peer for peer, _ in m.ping_round(10.0 + timeout - 0.1)[0]]
    assert "c" not in pinged and m.status("c") == SUSPECT
    pings, _, _, _ = m.ping_round(10.0 + timeout)
    nonces = dict(pings)
    assert set(nonces) == {"a", "b", "c"}
    assert m.acked("b", nonces["b"]) is None and m.status("b") == ALIVE  # it answered: alive
    changes: list[MemberChange] = []
    for round_ in range(1, 4):
        changes += m.ping_round(10.0 + timeout + 2.0 * round_)[2]
    assert MemberChange("c", SUSPECT, DEAD, info("c")) in changes and not m.is_alive("c")


def test_we_know_an_accusation_about_us() -> None:
    m = membership()
    m.heartbeat(0.0)
    assert m.about_us(Suspect("me", 1, 1)) and m.about_us(Down("me", 1, 7))
    assert not m.about_us(Down("me", 0, 1))  # about an incarnation before ours
    assert not m.about_us(Down("b", 1, 1))


def test_a_dead_member_that_answers_is_told_to_refute() -> None:
    m = joined("b", "c", watchers=1)
    m.accused(Down("c", 1, 1), 1.0)
    pings, _, _, _ = m.ping_round(2.0)
    assert [peer for peer, _ in pings] == ["b", "c"]  # the watched one, and one of the dead
    nonce = dict(pings)["c"]
    assert m.acked("c", nonce) == Down("c", 1, 1)


def test_a_healed_split_hears_again_of_the_deaths_we_declared() -> None:
    # Seed 37: a leader crashed while its successor was cut off; the successor
    # missed the Down and held the leader alive for good, its job never taken over.
    m = joined("b", "c", watchers=1, suspect_after=1, dead_after=2)
    m.ping_round(0.0)
    m.ping_round(1.0)
    assert m.ping_round(2.0)[1] == [Down("b", 1, 1)]  # we watch b, and declare it
    m.accused(Down("c", 1, 1), 2.0)  # c, cut off, is declared by its own watcher
    for second in (3.0, 4.0, 5.0):
        m.ping_round(second)
    assert m.ping_round(6.0)[1] == []  # the announcements are over
    m.observe(info("c", seq=2), 7.0)  # c refutes: the split healed
    pings, accusations, _, _ = m.ping_round(8.0)
    assert accusations == [Suspect("b", 1, 1)]  # a suspicion: each node checks b itself
    for peer, nonce in pings:
        m.acked(peer, nonce)
    assert m.ping_round(9.0)[1] == []  # once
    m.accused(Down("c", 1, 2), 10.0)
    m.observe(info("c", seq=1, incarnation=2), 11.0)  # a restart is no healed split
    assert Suspect("b", 1, 1) not in m.ping_round(12.0)[1]


def test_a_restarted_member_has_a_higher_incarnation_and_is_alive() -> None:
    m = joined("b")
    m.accused(Down("b", 1, 1), 1.0)
    change = m.observe(info("b", seq=1, incarnation=2), 2.0)
    assert change is not None and change.status == ALIVE and change.previous == DEAD
    assert m.info("b").incarnation == 2  # type: ignore[union-attr]


def test_stale_duplicate_and_refreshing_heartbeats_change_nothing() -> None:
    m = joined("b")
    m.observe(info("b", seq=3), 0.0)
    assert m.observe(info("b", seq=3), 1.0) is None
    assert m.observe(info("b", seq=2), 1.0) is None
    fresher = info("b", seq=9, free=Capacity(cpu=1))
    assert m.observe(fresher, 1.0) is None
    assert m.info("b").seq == 1  # type: ignore[union-attr]  # a refresh is not kept: bids tell free resources
    relabelled = info("b", seq=10, labels={"zone": "b"})
    assert m.observe(relabelled, 1.0) is None
    assert m.info("b") == relabelled


def test_a_graceful_leave_takes_the_member_out_at_once() -> None:
    m = joined("b")
    assert m.left(NodeLeft("b", 1), 1.0) == MemberChange("b", ALIVE, LEFT, info("b"))
    assert not m.is_alive("b") and "b" not in m.alive_ids()
    assert m.left(NodeLeft("b", 1), 1.5) is None
    assert m.observe(info("b", seq=5), 2.0) is None  # a late heartbeat from before the goodbye
    assert m.accused(Down("b", 1, 5), 2.0) is None
    assert m.observe(info("b", seq=1, incarnation=2), 3.0) == MemberChange("b", LEFT, ALIVE, info("b", seq=1, incarnation=2))


def test_a_leave_of_an_older_incarnation_or_a_stranger_is_ignored() -> None:
    m = joined("b")
    m.observe(info("b", incarnation=2), 0.0)
    assert m.left(NodeLeft("b", 1), 1.0) is None
    assert m.left(NodeLeft("stranger", 1), 1.0) is None
    assert m.status("b") == ALIVE


def test_our_own_id_is_ignored() -> None:
    m = membership()
    assert m.observe(info("me", seq=5), 0.0) is None
    assert m.left(NodeLeft("me", 1), 0.0) is None
    assert list(m.alive_ids()) == ["me"]


def test_heartbeat_publishes_the_next_seq_and_the_adaptive_interval() -> None:
    m = membership(max_heartbeats_per_second=2.0)
    first = m.heartbeat(5.0, free=Capacity(cpu=1))
    assert (first.seq, first.started_at, first.free, first.heartbeat_interval) == (1, 5.0, Capacity(cpu=1), 1.0)
    for i in range(9):
        m.observe(info(f"n{i}"), 6.0)
    second = m.heartbeat(7.0)
    assert second.seq == 2 and second.started_at == 5.0
    assert second.heartbeat_interval == 5.0  # 10 members at 2 a second each receives


def test_heartbeat_refuses_to_be_told_what_it_sets_itself() -> None:
    with pytest.raises(ValueError):
        membership().heartbeat(0.0, seq=9)


def test_dead_and_gone_members_are_forgotten_quietly() -> None:
    m = joined("b", "c", forget_after=100.0)
    m.accused(Down("b", 1, 1), 10.0)
    m.left(NodeLeft("c", 1), 20.0)
    assert m.next_check() == 110.0
    m.forget_gone(109.0)
    assert m.status("b") == DEAD
    m.forget_gone(121.0)
    assert m.status("b") is None and m.status("c") is None and m.next_check() == float("inf")
    assert m.observe(info("b", seq=1), 130.0) == MemberChange("b", None, ALIVE, info("b", seq=1))


def test_a_warm_start_shares_the_table_until_it_changes() -> None:
    table = Membership.warm_start(info(n, seq=0) for n in ("a", "b", "c", "me"))
    m1 = Membership(info("me", seq=0), MembershipConfig(), table)
    m2 = Membership(info("a", seq=0), MembershipConfig(), table)
    assert list(m1.alive_ids()) == ["a", "b", "c", "me"] and m1.alive_ids() is m2.alive_ids()
    assert m1.is_alive("b") and m1.heartbeat_interval() == 4 / MembershipConfig().max_heartbeats_per_second
    assert m1.observe(info("b", seq=1), 1.0) is None  # a refresh: shared still
    m1.accused(Down("b", 1, 0), 1.0)
    assert m1.status("b") == DEAD and m2.status("b") == ALIVE
    assert list(m2.alive_ids()) == ["a", "b", "c", "me"]
    m1.observe(info("d"), 2.0)
    assert m2.info("d") is None
    assert [i.node_id for i, _ in m1.all_members()] == ["a", "b", "c", "d", "me"]


def test_alive_infos_follow_the_alive_set() -> None:
    m = joined("b", "c")
    assert [i.node_id for i in m.alive_infos()] == ["b", "c", "me"]
    m.accused(Down("c", 1, 1), 1.0)
    assert [i.node_id for i in m.alive_infos()] == ["b", "me"]


@pytest.mark.parametrize(
    "fields",
    [
        {"base_interval": 0},
        {"max_heartbeats_per_second": -1},
        {"suspect_after": 7, "dead_after": 6},
        {"forget_after": -1},
        {"ping_interval": 0},
        {"watchers": 0},
    ],
)
def test_a_nonsense_config_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MembershipConfig(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------ a lossy network


class LossyNetwork:
    """Members pinging and accusing through a seeded, lossy, jittery
    in-memory link (accusations are broadcast, as on pubsub)."""

    def __init__(self, size: int, seed: int, loss: float) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        table = Membership.warm_start(info(f"n{i:02d}", seq=0) for i in range(size))
        self.members = {n: Membership(table[0][n], MembershipConfig(), table) for n in table[0]}
        self.stopped: set[str] = set()
        self.changes: list[tuple[float, str, MemberChange]] = []
        self._queue: list[tuple[float, int, str, str, object]] = []
        self._counter = 0
        for node_id in self.members:
            self._at(self.rng.uniform(0, 1), "round", node_id, None)

    def run(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            now, _, kind, node_id, payload = heapq.heappop(self._queue)
            if node_id in self.stopped:
                continue
            member = self.members[node_id]
            if kind == "round":
                pings, accusations, changes, _ = member.ping_round(now)
                self._note(now, node_id, changes)
                for peer, nonce in pings:
                    self._send(now, peer, ("ping", node_id, nonce))
                for accusation in accusations:
                    for other in self.members:
                        if other != node_id:
                            self._send(now, other, ("accused", accusation))
                self._at(now + member.config.ping_interval, "round", node_id, None)
            elif payload[0] == "ping":  # type: ignore[index]
                _, sender, nonce = payload  # type: ignore[misc]
                self._send(now, sender, ("ack", node_id, nonce))
            elif payload[0] == "ack":  # type: ignore[index]
                _, sender, nonce = payload  # type: ignore[misc]
                verdict = member.acked(sender, nonce)
                if verdict is not None:
                    self._send(now, sender, ("accused", verdict))
            elif payload[0] == "accused":  # type: ignore[index]
                accusation = payload[1]  # type: ignore[index]
                if member.about_us(accusation):
                    refutation = member.heartbeat(now)
                    for other in self.members:
                        if other != node_id:
                            self._send(now, other, ("info", refutation))
                else:
                    self._note(now, node_id, [member.accused(accusation, now)])
            else:  # a refutation
                self._note(now, node_id, [member.observe(payload[1], now)])  # type: ignore[index]

    def _note(self, now: float, node_id: str, changes: list[MemberChange | None]) -> None:
        self.changes.extend((now, node_id, c) for c in changes if c is not None)

    def _send(self, now: float, peer: str, payload: object) -> None:
        if self.rng.random() >= self.loss:
            self._at(now + self.rng.uniform(0.001, 0.05), "deliver", peer, payload)

    def _at(self, when: float, kind: str, node_id: str, payload: object) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (when, self._counter, kind, node_id, payload))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_lossy_network_keeps_its_members_and_agrees_on_a_death(seed: int) -> None:
    network = LossyNetwork(size=20, seed=seed, loss=0.05)
    network.run(60.0)
    everyone = sorted(network.members)
    for member in network.members.values():  # false suspicions were refuted
        assert list(member.alive_ids()) == everyone
    network.stopped.add("n07")
    network.run(90.0)
    deaths = {observer for _, observer, c in network.changes if c.node_id == "n07" and c.status == DEAD}
    survivors = [n for n in everyone if n != "n07"]
    assert sorted(deaths) == survivors
    for node_id in survivors:
        assert list(network.members[node_id].alive_ids()) == survivors
