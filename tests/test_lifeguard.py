"""Failure detection that tolerates a busy node (after Lifeguard): any message
from a member counts as its answer, a member that answered late earns
patience, and a watcher that sees itself late judges more slowly. A member
that stays silent is still declared dead, after `dead_after` rounds when the
watcher is healthy."""

from __future__ import annotations

from protocols.membership import MAX_HEALTH, MAX_LATE, MemberStatus
from protocols.messages import Down, Suspect
from tests.test_membership import joined

ALIVE, SUSPECT, DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD


def rounds(m, start: float, count: int, late: float = 0.0) -> list[object]:
    """`count` watch rounds one second apart; the accusations they make."""
    said = []
    for i in range(count):
        said += m.ping_round(start + i, late)[1]
    return said


def test_any_message_from_a_member_counts_as_its_answer() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    for second in range(20):
        accusations = m.ping_round(float(second))[1]
        m.heard("b")  # a bid, an update, a late Ack: anything it sends
        assert accusations == []
    assert m.status("b") == ALIVE


def test_a_member_that_answered_late_earns_more_rounds_before_it_is_declared_dead() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    m.ping_round(0.0)
    assert rounds(m, 1.0, 2) == [Suspect("b", 1, 1)]  # two rounds unanswered
    m.heard("b")  # then its answer comes, two rounds late
    assert m.status("b") == ALIVE
    m.ping_round(3.0)  # pinged again; then it falls silent
    silent = 0
    while m.status("b") != DEAD:
        silent += 1
        m.ping_round(3.0 + silent)
    assert silent == 3 + MAX_LATE  # the usual three misses, plus the patience it earned


def test_a_watcher_that_sees_itself_late_waits_longer_and_recovers() -> None:
    m = joined("b", watchers=1, ping_interval=1.0, suspect_after=2, dead_after=3)
    for i in range(MAX_HEALTH + 2):  # every round fires late: we are behind on our work
        m.ping_round(float(i), late=0.9)
        m.heard("b")
    assert m.health == MAX_HEALTH
    m.ping_round(10.0)  # on time, everyone answered: one step healthier
    assert m.health == MAX_HEALTH - 1
    silent = 0
    while m.status("b") != DEAD:  # then it falls silent
        m.ping_round(11.0 + silent)
        silent += 1
    assert silent == 3 + MAX_HEALTH - 1  # our patience: the usual three rounds, plus our health
    healthy = joined("c", watchers=1, ping_interval=1.0)
    healthy.health = 2
    for i in range(4):  # rounds on time in which everyone answered
        pings = healthy.ping_round(float(i))[0]
        for peer, nonce in pings:
            healthy.acked(peer, nonce)
    assert healthy.health == 0


def test_being_accused_makes_us_slower_to_accuse() -> None:
    m = joined("b")
    m.refuted()
    assert m.health == 1


def test_a_silent_member_is_still_declared_dead_by_a_healthy_watcher() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    m.ping_round(0.0)
    said = rounds(m, 1.0, 3)
    assert said == [Suspect("b", 1, 1), Down("b", 1, 1)]
    assert m.status("b") == DEAD


def test_a_message_from_a_member_held_dead_does_not_revive_it() -> None:
    m = joined("b", watchers=1, suspect_after=2, dead_after=3)
    m.ping_round(0.0)
    rounds(m, 1.0, 3)
    m.heard("b")  # only a newer heartbeat (its refutation) or its ping answer brings it back
    assert m.status("b") == DEAD
