"""Who is in the network, from the heartbeats each node publishes.

Theory of operation
-------------------

Every node publishes its `NodeInfo` every `heartbeat_interval` seconds, with
`(incarnation, seq)` growing: `seq` at each heartbeat, `incarnation` at each
restart (when `seq` starts again). A receiver keeps, per member, the newest
info it has seen and when it heard it; anything not newer is stale (duplicated
or reordered by gossip) and dropped.

A member's liveness is a small state machine::

    (new) --heard--> ALIVE --silent suspect_after x interval--> SUSPECT
    SUSPECT --silent dead_after x interval--> DEAD --forget_after s--> (forgotten)
    SUSPECT, DEAD --heard newer--> ALIVE
    ALIVE, SUSPECT, DEAD --NodeLeft--> LEFT --forget_after s--> (forgotten)
    LEFT --heard a higher incarnation--> ALIVE

Silences are counted in the *member's own* advertised interval, since each
node picks its interval from its own view of the network size
(`base_interval`, stretched so that nobody receives more than about
`max_heartbeats_per_second` in total).

SUSPECT counts as alive (`alive_ids`, `is_alive`): a suspect member still runs
its work and may merely be slow or behind a lossy link, and moving its jobs
away on a suspicion would cost more than waiting for the verdict. Only DEAD and
LEFT take a member out of the alive set, and `version` bumps exactly when that
set changes, so callers may cache what they derive from it.

A LEFT member said goodbye for its incarnation: late heartbeats of that
incarnation (gossip reorders) do not bring it back; only a restart does. A DEAD
member heard again with a newer `seq` was only cut off, and is alive again.

Speed: the simulator feeds `observe` millions of heartbeats, so a heartbeat
from a live member costs a dict lookup, a comparison and a few assignments.
Deadlines live in a heap with one entry per member, invalidated lazily: an
entry holds a time at or before the member's real deadline, and when it comes
up (`tick`, `next_check`) it is either acted on or moved to the real deadline.
So `observe` pushes nothing in the common case, the heap stays at one entry
per member, and each entry moves about once per silence period.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from protocols.messages import Capacity, NodeInfo, NodeLeft

_LONGEST_INTERVAL = 3600.0  # a longer advertised interval is nonsense; cap it
_SET_BY_HEARTBEAT = frozenset({"node_id", "incarnation", "seq", "heartbeat_interval"})


class MemberStatus(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT


@dataclass(frozen=True, slots=True)
class MemberChange:
    """A member's status changed (`previous` is None for a newcomer)."""

    node_id: str
    previous: MemberStatus | None
    status: MemberStatus
    info: NodeInfo


@dataclass(frozen=True)
class MembershipConfig:
    """Timing of heartbeats and verdicts; `suspect_after` and `dead_after`
    count the member's own advertised intervals."""

    base_interval: float = 1.0
    max_heartbeats_per_second: float = 50.0
    suspect_after: float = 3
    dead_after: float = 6
    forget_after: float = 600.0

    def __post_init__(self) -> None:
        if not self.base_interval > 0:
            raise ValueError(f"base_interval must be a positive number of seconds, not {self.base_interval}")
        if not self.max_heartbeats_per_second > 0:
            raise ValueError(f"max_heartbeats_per_second must be positive, not {self.max_heartbeats_per_second}")
        if not 0 < self.suspect_after <= self.dead_after:
            raise ValueError(
                f"need 0 < suspect_after <= dead_after (in intervals), got {self.suspect_after} and {self.dead_after}"
            )
        if not self.forget_after >= 0:
            raise ValueError(f"forget_after must be >= 0 seconds, not {self.forget_after}")


class _Member:
    __slots__ = ("info", "status", "heard", "since", "due", "left_incarnation")

    def __init__(self, info: NodeInfo, now: float) -> None:
        self.info = info
        self.status = _ALIVE
        self.heard = now  # when its newest info arrived
        self.since = now  # when it became DEAD or LEFT
        self.due = 0.0  # the time of its one heap entry
        self.left_incarnation = -1


class Membership:
    """The live members as seen from `local`, fed heartbeats in virtual time."""

    def __init__(self, local: NodeInfo, config: MembershipConfig = MembershipConfig()) -> None:
        self.local = local
        self.config = config
        self.version = 0
        self._members: dict[str, _Member] = {}
        self._heap: list[tuple[float, str]] = []
        self._alive_count = 1  # ourselves
        self._alive_ids: list[str] | None = None
        self._alive_infos: list[NodeInfo] | None = None

    # ------------------------------------------------------------ our own heartbeat

    def heartbeat_interval(self) -> float:
        """Ours: `base_interval`, or longer so that each node receives at most
        about `max_heartbeats_per_second` from all of us together."""
        config = self.config
        return max(config.base_interval, self._alive_count / config.max_heartbeats_per_second)

    def heartbeat(self, now: float, free: Capacity | None = None, **changes: Any) -> NodeInfo:
        """The next `NodeInfo` to publish (also our new `local`): the next
        seq, our current interval, `free` and any other field `changes`. The
        first heartbeat stamps `started_at` with `now` unless it was set."""
        reserved = _SET_BY_HEARTBEAT.intersection(changes)
        if reserved:
            raise ValueError(f"heartbeat() sets {', '.join(sorted(reserved))} itself; do not pass it")
        local = self.local
        if free is not None:
            changes["free"] = free
        if local.seq == 0 and not local.started_at and "started_at" not in changes:
            changes["started_at"] = now
        self.local = replace(local, seq=local.seq + 1, heartbeat_interval=self.heartbeat_interval(), **changes)
        return self.local

    # ------------------------------------------------------------ inputs

    def observe(self, info: NodeInfo, now: float) -> MemberChange | None:
        """A received `NodeInfo`. Returns the status change it causes, if any
        (newer info is stored either way; stale info and our own are ignored)."""
        member = self._members.get(info.node_id)
        if member is None:
            return None if info.node_id == self.local.node_id else self._join(info, now)
        held = member.info
        if info.incarnation < held.incarnation or (info.incarnation == held.incarnation and info.seq <= held.seq):
            return None
        if member.status is not _ALIVE:
            return self._heard_again(member, info, now)
        member.info = info
        member.heard = now
        self._alive_infos = None
        if info.heartbeat_interval < held.heartbeat_interval:  # its deadline may come sooner
            due = self._deadline(member)
            if due < member.due:
                self._push(member, due)
        return None

    def left(self, msg: NodeLeft, now: float) -> MemberChange | None:
        """A member said goodbye (ignored if about an older incarnation than
        we hold, or a member we never heard of)."""
        member = self._members.get(msg.node_id)
        if member is None or msg.incarnation < member.info.incarnation:
            return None
        previous = member.status
        member.left_incarnation = max(member.left_incarnation, msg.incarnation)
        if previous is _LEFT:
            return None
        member.status = _LEFT
        member.since = now
        if previous is not _DEAD:
            self._alive_set_changed(-1)
        self._push(member, self._deadline(member))
        return MemberChange(msg.node_id, previous, _LEFT, member.info)

    def tick(self, now: float) -> list[MemberChange]:
        """Pass the verdicts due by `now`; forget members long dead or gone
        (silently)."""
        changes: list[MemberChange] = []
        heap = self._heap
        members = self._members
        while heap and heap[0][0] <= now:
            due, node_id = heapq.heappop(heap)
            member = members.get(node_id)
            if member is not None and member.due == due:  # else a superseded entry
                self._advance(member, now, changes)
        return changes

    def next_check(self) -> float:
        """When `tick` next has something to do (`inf` if never)."""
        heap = self._heap
        members = self._members
        while heap:
            due, node_id = heap[0]
            member = members.get(node_id)
            if member is None or member.due != due:
                heapq.heappop(heap)
                continue
            real = self._deadline(member)
            if real == due:
                return due
            member.due = real
            heapq.heapreplace(heap, (real, node_id))
        return float("inf")

    # ------------------------------------------------------------ queries

    def status(self, node_id: str) -> MemberStatus | None:
        if node_id == self.local.node_id:
            return _ALIVE
        member = self._members.get(node_id)
        return None if member is None else member.status

    def info(self, node_id: str) -> NodeInfo | None:
        if node_id == self.local.node_id:
            return self.local
        member = self._members.get(node_id)
        return None if member is None else member.info

    def is_alive(self, node_id: str) -> bool:
        """ALIVE or SUSPECT (see the module notes), or ourselves."""
        if node_id == self.local.node_id:
            return True
        member = self._members.get(node_id)
        return member is not None and (member.status is _ALIVE or member.status is _SUSPECT)

    def alive_ids(self) -> list[str]:
        """Sorted ids of the ALIVE and SUSPECT members and ourselves. The list
        is cached and shared: do not modify it."""
        if self._alive_ids is None:
            ids = [node_id for node_id, m in self._members.items() if m.status is _ALIVE or m.status is _SUSPECT]
            ids.append(self.local.node_id)
            ids.sort()
            self._alive_ids = ids
        return self._alive_ids

    def alive_infos(self) -> list[NodeInfo]:
        """The newest info of each of `alive_ids`, in that order (shared: do
        not modify)."""
        if self._alive_infos is None:
            local_id = self.local.node_id
            members = self._members
            self._alive_infos = [self.local if i == local_id else members[i].info for i in self.alive_ids()]
        return self._alive_infos

    def all_members(self) -> list[tuple[NodeInfo, MemberStatus]]:
        """Everyone we know of, ourselves included, by node id."""
        everyone = [(m.info, m.status) for m in self._members.values()]
        everyone.append((self.local, _ALIVE))
        everyone.sort(key=lambda pair: pair[0].node_id)
        return everyone

    # ------------------------------------------------------------ internals

    def _join(self, info: NodeInfo, now: float) -> MemberChange:
        member = self._members[info.node_id] = _Member(info, now)
        self._alive_set_changed(+1)
        self._push(member, self._deadline(member))
        return MemberChange(info.node_id, None, _ALIVE, info)

    def _heard_again(self, member: _Member, info: NodeInfo, now: float) -> MemberChange | None:
        previous = member.status
        if previous is _LEFT and info.incarnation <= member.left_incarnation:
            return None  # a late heartbeat from before the goodbye
        member.info = info
        member.heard = now
        member.status = _ALIVE
        if previous is _SUSPECT:
            self._alive_infos = None
        else:
            self._alive_set_changed(+1)
        self._push(member, self._deadline(member))
        return MemberChange(info.node_id, previous, _ALIVE, info)

    def _advance(self, member: _Member, now: float, changes: list[MemberChange]) -> None:
        """Act on every verdict of `member` due by `now`, then re-arm it."""
        while True:
            due = self._deadline(member)
            if due > now:
                self._push(member, due)
                return
            previous = member.status
            node_id = member.info.node_id
            if previous is _ALIVE:
                member.status = _SUSPECT
            elif previous is _SUSPECT:
                member.status = _DEAD
                member.since = now
                self._alive_set_changed(-1)
            else:
                del self._members[node_id]  # long dead or gone: forget it
                return
            changes.append(MemberChange(node_id, previous, member.status, member.info))

    def _deadline(self, member: _Member) -> float:
        """When the member's next verdict is due if nothing is heard."""
        status = member.status
        config = self.config
        if status is _ALIVE or status is _SUSPECT:
            interval = member.info.heartbeat_interval
            if not interval > 0.0:  # also NaN: a broken peer gets our default
                interval = config.base_interval
            elif interval > _LONGEST_INTERVAL:
                interval = _LONGEST_INTERVAL
            silences = config.suspect_after if status is _ALIVE else config.dead_after
            return member.heard + silences * interval
        return member.since + config.forget_after

    def _push(self, member: _Member, due: float) -> None:
        member.due = due
        heapq.heappush(self._heap, (due, member.info.node_id))

    def _alive_set_changed(self, delta: int) -> None:
        self._alive_count += delta
        self.version += 1
        self._alive_ids = None
        self._alive_infos = None
