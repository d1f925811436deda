"""Who is in the network: node info gossiped now and then, liveness watched by a few.

Theory of operation
-------------------
Every node publishes its `NodeInfo` when it starts and then every
`heartbeat_interval()` seconds, an interval that grows with the network so
each node receives at most about `max_heartbeats_per_second` in all. Those
heartbeats carry what a node *is* (labels, resources, engines) and repair a
join someone missed; they no longer tell who is alive, which would cost every
node N messages per detection period.

Liveness is watched on a ring instead (after SWIM): members sorted by id, each
node pings the `watchers` members that follow it, every `ping_interval`
seconds. When a ping goes unanswered, the next round's ping goes with
`helpers` indirect probes: other members asked to ping the member for us
(`PingReq`) and to pass its answer on (`IndirectAck`), so that one lost
message or one bad link does not make a live member suspect. A watched member
that leaves `suspect_after` rounds in a row unanswered is accused on the nodes
topic (`Suspect`); after `dead_after` it is declared `Down`, and the watcher
repeats that twice more so pubsub loss rarely hides a death. A member's status changes only on an accusation about
the (incarnation, seq) we hold of it, or newer::

    (new) --heard--> ALIVE --Suspect--> SUSPECT --Down--> DEAD --forget_after s--> (forgotten)
    SUSPECT, DEAD --heard a newer seq--> ALIVE        ALIVE, SUSPECT, DEAD --NodeLeft--> LEFT
    SUSPECT --answered our own ping--> ALIVE
    LEFT --heard a higher incarnation--> ALIVE

An accused node that hears of it refutes by publishing a fresh heartbeat (its
seq grows past the accusation). An accusation carries the newest seq its
watcher heard (a refresh is not stored, so that may be newer than the info
it holds: else those who joined later, and hold a later seq, would take
every accusation for stale). One older than the seq we hold is not believed,
but we ping the member ourselves for `dead_after` rounds, without publishing
our verdict: with one watcher, a dead member whose last heartbeat reached us
and not its watcher would otherwise stay alive here for good.

A suspicion that neither a `Down` nor a refutation settles within
`suspicion_timeout` (both lost, or sent while we were cut off) we check
ourselves: we ping the member each round like one we watch, and it is alive
again if it answers, dead after `dead_after` misses. Else a dead member
could stay "alive" here, its work never replaced.

A busy node answers late, and late must not pass for dead (after
Lifeguard, Dadgar et al. 2018):

- any message from a member we ping shows it alive (`heard`): a late
  answer, a refutation, a bid, an update; a member whose answer came `n`
  rounds late earns `n` more rounds (at most `MAX_LATE`) before it is
  declared dead, given back one per answer on time;
- a node that sees itself late (its own watch round fired late, or it was
  accused and had to refute) raises its *local health* score, and while it
  is unhealthy it waits `health` more rounds before it suspects or
  declares anyone: its own slowness looks, from inside, like everyone
  else's silence. The score falls again by one per round on time in which
  every ping was answered;
- an accused node refutes (a heartbeat with a newer seq), which also counts
  as a message heard, so the suspicion of a merely slow node ends as soon as
  it catches up.

A real crash still goes unanswered and is declared after `dead_after`
rounds by a healthy watcher, as before.

A node cut off by a partition is declared dead by the other side; each round
a watcher also pings one dead member, and one that answers is told it was
declared dead, so it refutes and comes back as soon as the partition heals.
The nodes that were cut off also missed the deaths announced meanwhile (a
member that crashed on the other side stays alive in their view, its jobs
never taken over): so when a member we held dead comes back under the same
incarnation (a healed split), we accuse once more, as `Suspect`, the members
we declared dead ourselves and still hold so. A suspicion, not a death: on
the side that missed our verdict the member may be alive (it was our side it
was cut off from), so each node there checks it with its own pings.

SUSPECT counts as alive (`alive_ids`, `is_alive`); `alive_ids` is a new list
exactly when the alive set changes, so callers may cache what they derive from it.

Size: a simulator holds thousands of these, each knowing thousands of
members, so the state per member is one dict entry (its `NodeInfo`, an
object shared between nodes in one process), plus a small entry for the few
members that are not ALIVE and the few we watch. A heartbeat that only
refreshes a live member (a later seq, new free resources) is not stored:
leaders learn free resources fresher from bids. A warm start shares the
member table and the sorted id list between nodes until one changes them:
a node then derives its own id list (an `election.NodeIds`, which carries
its members' rendezvous keys along, and gives nodes that make the same
change to the same list the same new list), and keeps its changes to the table
beside the shared one until they are many (`_set`): thousands of nodes each
copying the whole table at a death or a return cost gigabytes.

Length: ≈650 lines, one state machine (heartbeats, the watch ring, its
verdicts) whose parts share the member table; the theory above is its map.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, NamedTuple

from protocols.election import NodeIds
from protocols.messages import Capacity, Down, NodeInfo, NodeLeft, Suspect

_SET_BY_HEARTBEAT = frozenset({"node_id", "incarnation", "seq", "heartbeat_interval"})
_DOWN_REPEATS = 3  # rounds a watcher announces a death in
MAX_RELAYS = 256  # indirect probes a node runs for others at once; more are refused
MAX_HEALTH = 3  # rounds of patience a node that sees itself late may add (Lifeguard's local health multiplier)
MAX_LATE = 2  # rounds of patience a member that answered late may earn
LATE_ROUND = 0.5  # a watch round that fires this many intervals late shows us we are behind
MAX_VERDICTS = 200  # own verdicts a node remembers for its operator (`Membership.verdicts`)


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
    """Timing of heartbeats and of the watch; `suspect_after` and
    `dead_after` count unanswered pings."""

    base_interval: float = 1.0
    max_heartbeats_per_second: float = 0.5
    ping_interval: float = 2.0
    watchers: int = 1
    helpers: int = 2
    suspect_after: int = 2
    dead_after: int = 3
    forget_after: float = 600.0

    @property
    def suspicion_timeout(self) -> float:
        """Long enough for the watchers' `Down` (said three times) or the
        accused's refutation to arrive many times over."""
        return 4 * self.dead_after * self.ping_interval

    def __post_init__(self) -> None:
        if not self.base_interval > 0:
            raise ValueError(f"base_interval must be a positive number of seconds, not {self.base_interval}")
        if not self.max_heartbeats_per_second > 0:
            raise ValueError(f"max_heartbeats_per_second must be positive, not {self.max_heartbeats_per_second}")
        if not self.ping_interval > 0:
            raise ValueError(f"ping_interval must be a positive number of seconds, not {self.ping_interval}")
        if self.watchers < 1:
            raise ValueError(f"each node must watch at least 1 member, not {self.watchers}")
        if self.helpers < 0:
            raise ValueError(f"helpers (indirect probes per unanswered ping) must be >= 0, not {self.helpers}")
        if not 0 < self.suspect_after <= self.dead_after:
            raise ValueError(
                f"need 0 < suspect_after <= dead_after (in pings), got {self.suspect_after} and {self.dead_after}"
            )
        if not self.forget_after >= 0:
            raise ValueError(f"forget_after must be >= 0 seconds, not {self.forget_after}")


class WatchRound(NamedTuple):
    """What one watch round wants done."""

    pings: list[tuple[str, int]]  # (member, nonce)
    accusations: list[Suspect | Down]  # to publish
    changes: list[MemberChange]  # our own verdicts
    requests: list[tuple[str, str, int]]  # (helper, member, nonce): indirect probes to ask for


@dataclass(slots=True)
class _Down:
    """A member that is not ALIVE: its status, the key it was accused or
    left at, and since when."""

    status: MemberStatus
    key: tuple[int, int]
    since: float


class Membership:
    """The members as seen from `local`, in virtual time."""

    def __init__(
        self,
        local: NodeInfo,
        config: MembershipConfig = MembershipConfig(),
        members: tuple[dict[str, NodeInfo], NodeIds] | None = None,
    ) -> None:
        """`members`: a formed network to start in, as made by `warm_start`
        (shared with other nodes until either changes)."""
        self.local = local
        self.config = config
        if members is None:
            self._infos: dict[str, NodeInfo] = {}
            self._ids: NodeIds = NodeIds([local.node_id])
        else:
            self._infos, ids = members
            self._ids = ids if type(ids) is NodeIds else NodeIds(ids)
        self._own_infos = members is None  # ours to change? else changes go to `_mine` (`_ids` is never changed in place)
        self._mine: dict[str, NodeInfo | None] = {}  # over a shared table: our changes to it (None: forgotten)
        self._table_changes = 0
        self._watching: tuple[Sequence[str] | None, int, list[str]] = (None, 0, [])  # (alive list, watchers, `watched()`)
        self._down: dict[str, _Down] = {}
        self._gone_since: float | None = None  # earliest `since` of the DEAD and LEFT in `_down` (None: to count again)
        self._nonce = 0
        self._awaiting: dict[str, int] = {}  # watched member -> nonce of its unanswered ping
        self._misses: dict[str, int] = {}
        self._relays: dict[int, tuple[str, str, int]] = {}  # our ping's nonce -> (asker, member, its nonce)
        self._old_relays: dict[int, tuple[str, str, int]] = {}  # the previous round's: still answerable
        self._announce: dict[str, list[Any]] = {}  # member -> [accusation to publish, rounds left]
        self._declared: dict[str, Down] = {}  # members we announced dead, while they stay so
        # The newest (incarnation, seq) heard of the members we ping, where it
        # is newer than the info we keep: our accusations carry it.
        self._heard: dict[str, tuple[int, int]] = {}
        self._doubts: set[str] = set()  # accused under an older seq than ours: we check them, quietly
        self.health = 0  # our local health score: 0 healthy, up to MAX_HEALTH (see the module notes)
        self._late: dict[str, int] = {}  # member -> extra rounds it earned by answering late
        # Our own latest verdicts, (time, "Suspect"|"Down", member, incarnation), for an
        # operator or a chaos run to judge against who really was down (`MAX_VERDICTS` kept).
        self.verdicts: list[tuple[float, str, str, int]] = []

    @staticmethod
    def warm_start(infos: Iterable[NodeInfo]) -> tuple[dict[str, NodeInfo], NodeIds]:
        """A formed network's member table, to give every node at once."""
        table = {info.node_id: info for info in infos}
        return table, NodeIds(sorted(table))

    # ------------------------------------------------------------ our own heartbeat

    def heartbeat_interval(self) -> float:
        """Ours: `base_interval`, or longer so that each node receives at most
        about `max_heartbeats_per_second` from all of us together."""
        return max(self.config.base_interval, len(self._ids) / self.config.max_heartbeats_per_second)

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
        node_id = info.node_id
        if node_id == self.local.node_id:
            return None
        held = self._info(node_id)
        if held is not None and (info.incarnation, info.seq) <= (held.incarnation, held.seq):
            return None
        down = self._down.get(node_id)
        if down is not None:
            if down.status is _LEFT and info.incarnation <= down.key[0]:
                return None  # a late heartbeat from before the goodbye
            if (info.incarnation, info.seq) <= down.key:
                return None  # from before the accusation
        if held is not None and down is None and _same_but_fresher(held, info):
            # A refresh of a live member: nothing to keep (and no copy to
            # make), except its seq if we ping it, for our accusations.
            if node_id in self._doubts or node_id in self.watched():
                self._heard[node_id] = (info.incarnation, info.seq)
            return None
        self._store(info)
        if held is None:
            self._insert(node_id)
            return MemberChange(node_id, None, _ALIVE, info)
        if down is not None:
            del self._down[node_id]
            self._gone_since = None
            self._declared.pop(node_id, None)
            if down.status is not _SUSPECT:
                self._insert(node_id)
                if down.status is _DEAD and info.incarnation == down.key[0]:
                    self._announce_again()  # a split healed: its other side missed our verdicts
            return MemberChange(node_id, down.status, _ALIVE, info)
        return None

    def _announce_again(self) -> None:
        """Accuse once more the members we declared dead and still hold so."""
        for node_id, down in self._declared.items():
            self._announce.setdefault(node_id, [Suspect(node_id, down.incarnation, down.seq), 1])

    def accused(self, message: Suspect | Down, now: float) -> MemberChange | None:
        """An accusation from a watcher. Returns the change it causes; one
        about ourselves returns nothing: the caller refutes it (`refute`)."""
        node_id = message.node_id
        held = self._info(node_id)
        if held is None or node_id == self.local.node_id:
            return None
        key = (message.incarnation, message.seq)
        if key < (held.incarnation, held.seq):
            # We heard from it since: maybe a refutation, maybe only a last
            # heartbeat its watcher missed. Our own pings will tell.
            if message.incarnation == held.incarnation and self.is_alive(node_id) and node_id not in self.watched():
                self._doubts.add(node_id)
            return None
        down = self._down.get(node_id)
        previous = _ALIVE if down is None else down.status
        status = _DEAD if isinstance(message, Down) else _SUSPECT
        if previous is _LEFT or previous is _DEAD or previous is status:
            if down is not None and key > down.key and previous is not _LEFT:
                down.key = key
            return None
        self._down[node_id] = _Down(status, key, now)
        if status is _DEAD:
            self._gone(now)
            self._remove(node_id)
        return MemberChange(node_id, previous, status, held)

    def about_us(self, message: Suspect | Down) -> bool:
        """Whether an accusation is about us, as we are now (then refute it
        with a heartbeat)."""
        local = self.local
        return message.node_id == local.node_id and message.incarnation == local.incarnation

    def left(self, msg: NodeLeft, now: float) -> MemberChange | None:
        """A member said goodbye (ignored if about an older incarnation than
        we hold, or a member we never heard of)."""
        held = self._info(msg.node_id)
        if held is None or msg.incarnation < held.incarnation or msg.node_id == self.local.node_id:
            return None
        down = self._down.get(msg.node_id)
        previous = _ALIVE if down is None else down.status
        if previous is _LEFT:
            down.key = max(down.key, (msg.incarnation, 1 << 62))  # type: ignore[union-attr]
            return None
        if down is not None:
            self._gone_since = None  # a death, now a goodbye: counted from now
        self._down[msg.node_id] = _Down(_LEFT, (msg.incarnation, 1 << 62), now)
        self._gone(now)
        self._declared.pop(msg.node_id, None)
        if previous is not _DEAD:
            self._remove(msg.node_id)
        return MemberChange(msg.node_id, previous, _LEFT, held)

    def ping_round(self, now: float, late: float = 0.0) -> WatchRound:
        """One watch round: count the pings left unanswered since the last
        round, accuse, and ping again, asking helpers to probe the members
        that did not answer. `late`: how long after its due time the round
        fired (a node behind on its work sees it here)."""
        # Every node runs a round every `ping_interval` (thousands a second in a
        # large simulation) and almost every round finds its member answered,
        # nobody suspect and nothing to announce: the rare parts are skipped
        # on a glance at their (empty) tables.
        config = self.config
        accusations: list[Suspect | Down] = []
        changes: list[MemberChange] = []
        awaiting = self._awaiting
        if late > LATE_ROUND * config.ping_interval:
            self.health = min(MAX_HEALTH, self.health + 1)
        elif self.health and not awaiting:
            self.health -= 1  # on time, and everyone answered
        if awaiting:
            self._count_misses(now, accusations, changes)
            awaiting.clear()
        if self._announce:
            for node_id, held in list(self._announce.items()):
                accusations.append(held[0])
                held[1] -= 1
                if held[1] <= 0:
                    del self._announce[node_id]
        pings = []
        requests = []
        down = self._down
        if down or self._doubts:
            stale = [n for n, d in down.items() if d.status is _SUSPECT and d.since + config.suspicion_timeout <= now]
            if self._doubts:
                self._doubts = {n for n in self._doubts if self.is_alive(n)}
            targets: Iterable[str] = dict.fromkeys([*self.watched(), *stale, *sorted(self._doubts)])
        else:
            targets = self.watched()  # (distinct members)
        misses = self._misses
        for node_id in targets:
            self._nonce += 1
            awaiting[node_id] = self._nonce
            pings.append((node_id, self._nonce))
            if node_id in misses:
                requests += [(helper, node_id, self._nonce) for helper in self._helpers(node_id)]
        if misses:
            self._misses = {n: m for n, m in misses.items() if n in awaiting}
        if self._heard:
            self._heard = {n: k for n, k in self._heard.items() if n in awaiting}
        if self._late:
            self._late = {n: k for n, k in self._late.items() if n in awaiting}
        if self._relays or self._old_relays:
            self._old_relays, self._relays = self._relays, {}
        if down:
            dead = [n for n, d in down.items() if d.status is _DEAD]
            if dead:  # is one of the dead back? (a healed partition)
                self._nonce += 1
                pings.append((dead[self._nonce % len(dead)], self._nonce))
        return WatchRound(pings, accusations, changes, requests)

    def _count_misses(self, now: float, accusations: list[Suspect | Down], changes: list[MemberChange]) -> None:
        """The pings of the last round left unanswered: count them, and
        suspect or declare dead those that missed too many."""
        config = self.config
        patience = self.health
        for node_id in list(self._awaiting):
            misses = self._misses.get(node_id, 0) + 1
            self._misses[node_id] = misses
            info = self._info(node_id)
            down = self._down.get(node_id)
            if info is None or (down is not None and down.status is not _SUSPECT):
                continue
            key = max((info.incarnation, info.seq), self._heard.get(node_id, (0, 0)))
            quiet = node_id in self._doubts  # a watcher said it already: our verdict is for us only
            suspect_after = config.suspect_after + patience
            dead_after = config.dead_after + patience + self._late.get(node_id, 0)
            if misses == suspect_after and misses < dead_after:
                suspect = Suspect(node_id, *key)
                self._remember(now, "Suspect", suspect)
                if not quiet:
                    accusations.append(suspect)
                change = self.accused(suspect, now)
                if change is not None:
                    changes.append(change)
            elif misses >= dead_after:
                down = Down(node_id, *key)
                self._remember(now, "Down", down)
                if not quiet:
                    self._announce[node_id] = [down, _DOWN_REPEATS]
                    self._declared[node_id] = down
                self._doubts.discard(node_id)
                change = self.accused(down, now)
                if change is not None:
                    changes.append(change)

    def _remember(self, now: float, kind: str, verdict: Suspect | Down) -> None:
        self.verdicts.append((now, kind, verdict.node_id, verdict.incarnation))
        if len(self.verdicts) > MAX_VERDICTS:
            del self.verdicts[: -MAX_VERDICTS // 2]

    def acked(self, node_id: str, nonce: int) -> Down | None:
        """An answer to a ping. From a member we hold dead, it returns the
        `Down` to send it, so it learns it must refute."""
        if self._awaiting.get(node_id) == nonce:
            self._answered(node_id)
        down = self._down.get(node_id)
        if down is not None and down.status is _DEAD:
            return Down(node_id, down.key[0], down.key[1])
        return None

    def heard(self, node_id: str) -> None:
        """Any message from `node_id`: if we wait for its answer, this is
        one (late, maybe: a busy node is not a dead one). From a member we
        hold dead it proves nothing here: the dead are pinged for that."""
        if node_id in self._awaiting or node_id in self._misses:
            down = self._down.get(node_id)
            if down is None or down.status is _SUSPECT:
                self._answered(node_id)

    def refuted(self) -> None:
        """We were accused and refute it: likely we were too slow to
        answer, so we too are slow to judge for a while."""
        self.health = min(MAX_HEALTH, self.health + 1)

    def _answered(self, node_id: str) -> None:
        self._awaiting.pop(node_id, None)
        misses = self._misses.pop(node_id, 0)
        if misses:  # it answered, `misses` rounds late: be that patient with it next time
            self._late[node_id] = min(MAX_LATE, max(misses, self._late.get(node_id, 0)))
        elif node_id in self._late:
            self._late[node_id] -= 1
            if not self._late[node_id]:
                del self._late[node_id]
        self._doubts.discard(node_id)  # it answered: our check is over
        if node_id in self._down and self._down[node_id].status is _SUSPECT:
            del self._down[node_id]  # it answered us: alive (as it counted all along)

    def relay(self, asker: str, node_id: str, nonce: int) -> int | None:
        """A `PingReq` from `asker`: the nonce of the ping to send `node_id`
        for it, or None (a member we do not know, or too many asks at once)."""
        if self._info(node_id) is None or len(self._relays) >= MAX_RELAYS:
            return None
        self._nonce += 1
        self._relays[self._nonce] = (asker, node_id, nonce)
        return self._nonce

    def relayed(self, node_id: str, nonce: int) -> tuple[str, int] | None:
        """An answer to a ping we sent for someone: (who asked, its nonce),
        to send it the `IndirectAck`; None if it was no such ping."""
        if not self._relays and not self._old_relays:
            return None  # (almost every ack: indirect probes are rare)
        for relays in (self._relays, self._old_relays):
            held = relays.get(nonce)
            if held is not None and held[1] == node_id:
                del relays[nonce]
                return held[0], held[2]
        return None

    def forget_gone(self, now: float) -> None:
        """Forget members long dead or gone (silently: nobody is told)."""
        config = self.config  # times as `next_check` computes them, so a due one is never missed
        for node_id in [n for n, d in self._down.items() if d.status in (_DEAD, _LEFT) and d.since + config.forget_after <= now]:
            del self._down[node_id]
            self._gone_since = None
            self._declared.pop(node_id, None)
            self._set(node_id, None)
            self._announce.pop(node_id, None)

    def next_check(self) -> float:
        """When `forget_gone` next has something to do (`inf` if never).
        Asked after every change of status: the earliest death is kept as
        deaths come, and counted again only after one is forgotten or back."""
        since = self._gone_since
        if since is None:
            times = [d.since for d in self._down.values() if d.status in (_DEAD, _LEFT)]
            since = self._gone_since = min(times) if times else float("inf")
        return since + self.config.forget_after

    def _gone(self, since: float) -> None:
        """A member was declared dead or left at `since`."""
        if self._gone_since is not None and since < self._gone_since:
            self._gone_since = since

    # ------------------------------------------------------------ queries

    def watched(self, count: int | None = None) -> list[str]:
        """The `count` (default `watchers`) alive members after us on the
        ring (fewer if the network is smaller); do not modify."""
        ids = self._ids
        watchers = self.config.watchers
        if count is None:
            held = self._watching
            if held[0] is ids and held[1] == watchers:  # asked on every heartbeat heard: kept while the alive list holds
                return held[2]
        wanted = min(watchers if count is None else count, len(ids) - 1)
        start = bisect_right(ids, self.local.node_id)
        watched = [ids[(start + i) % len(ids)] for i in range(wanted)]
        if count is None:
            self._watching = (ids, watchers, watched)
        return watched

    def _helpers(self, node_id: str) -> list[str]:
        """`helpers` alive members other than us and `node_id`, a different
        draw each round (from our nonce: no randomness in here)."""
        ids = self._ids
        at = bisect_left(ids, node_id)
        listed = at < len(ids) and ids[at] == node_id
        count = min(self.config.helpers, len(ids) - 1 - listed)
        helpers: list[str] = []
        index = self._nonce * 2654435761  # Knuth's multiplicative hash: spread over the ring
        me = self.local.node_id
        while len(helpers) < count:
            candidate = ids[index % len(ids)]
            if candidate != me and candidate != node_id and candidate not in helpers:
                helpers.append(candidate)
            index += 1
        return helpers

    def status(self, node_id: str) -> MemberStatus | None:
        if node_id == self.local.node_id:
            return _ALIVE
        if self._info(node_id) is None:
            return None
        down = self._down.get(node_id)
        return _ALIVE if down is None else down.status

    def info(self, node_id: str) -> NodeInfo | None:
        if node_id == self.local.node_id:
            return self.local
        return self._info(node_id)

    def is_alive(self, node_id: str) -> bool:
        """ALIVE or SUSPECT (see the module notes), or ourselves."""
        if node_id == self.local.node_id:
            return True
        if self._info(node_id) is None:
            return False
        down = self._down.get(node_id)
        return down is None or down.status is _SUSPECT

    def alive_ids(self) -> Sequence[str]:
        """Sorted ids of the ALIVE and SUSPECT members and ourselves (shared:
        do not modify)."""
        return self._ids

    def table_changes(self) -> int:
        """A count of the changes to the member table (every member's info):
        while it and `alive_ids` hold, so does everything derived from the
        infos, so callers may keep what they derive by them."""
        return self._table_changes

    def alive_infos(self) -> Iterator[NodeInfo]:
        """The newest info of each of `alive_ids`, in that order (not kept:
        a list of every member per node is too much in a simulator, and the
        callers keep what they derive)."""
        local = self.local
        me = local.node_id
        info = self._info if self._mine else self._infos.__getitem__
        return (local if i == me else info(i) for i in self._ids)  # type: ignore[misc]

    def all_members(self) -> list[tuple[NodeInfo, MemberStatus]]:
        """Everyone we know of, ourselves included, by node id."""
        local_id = self.local.node_id
        table = {**self._infos, **self._mine}
        everyone = [(info, self.status(node_id) or _ALIVE) for node_id, info in table.items() if info is not None and node_id != local_id]
        everyone.append((self.local, _ALIVE))
        everyone.sort(key=lambda pair: pair[0].node_id)
        return everyone

    # ------------------------------------------------------------ internals

    def _info(self, node_id: str) -> NodeInfo | None:
        """The info we hold of a member (None: none)."""
        mine = self._mine
        if mine and node_id in mine:
            return mine[node_id]
        return self._infos.get(node_id)

    def _set(self, node_id: str, info: NodeInfo | None) -> None:
        """Change the member table (None: forget the member). A table shared
        since a warm start is not copied (thousands of nodes each copying
        thousands of entries at the first change: gigabytes in a simulator);
        our changes go beside it until they are many, then we take a copy."""
        self._table_changes += 1
        if self._own_infos:
            if info is None:
                del self._infos[node_id]
            else:
                self._infos[node_id] = info
            return
        self._mine[node_id] = info
        if len(self._mine) > 64 + len(self._infos) // 16:
            table = {**self._infos, **self._mine}
            self._infos = {n: i for n, i in table.items() if i is not None}
            self._mine = {}
            self._own_infos = True

    def _store(self, info: NodeInfo) -> None:
        self._set(info.node_id, info)

    def _insert(self, node_id: str) -> None:
        ids = self._ids
        i = bisect_left(ids, node_id)
        if i == len(ids) or ids[i] != node_id:
            self._ids = ids.with_id(i, node_id)  # a new list: others may hold (or cache by) the old one

    def _remove(self, node_id: str) -> None:
        ids = self._ids
        i = bisect_left(ids, node_id)
        if i < len(ids) and ids[i] == node_id:
            self._ids = ids.without(i)

def _same_but_fresher(held: NodeInfo, info: NodeInfo) -> bool:
    """Whether `info` only repeats `held` with a later seq: same incarnation,
    and nothing a leader places work by has changed (free resources come
    fresher from bids; the heartbeat interval and start time do not matter).
    A heartbeat is its sender's previous info with a new seq and free
    resources, its other fields the very objects the held info has: `is`
    settles each before `==` would compare (a dataclass's `==` is a Python
    call), and every node runs this for every heartbeat it receives."""
    return (
        info.incarnation == held.incarnation
        and (info.capacity is held.capacity or info.capacity == held.capacity)
        and (info.labels is held.labels or info.labels == held.labels)
        and (info.engines is held.engines or info.engines == held.engines)
        and (info.publishers is held.publishers or info.publishers == held.publishers)
        and (info.storages is held.storages or info.storages == held.storages)
        and (info.local_data is held.local_data or info.local_data == held.local_data)
        and (info.policy is held.policy or info.policy == held.policy)
        and (info.addresses is held.addresses or info.addresses == held.addresses)
        and info.version == held.version
    )
