"""Where a job's work may go: fit checks, candidate ranking, bid ranking.

Theory of operation
-------------------
Pure functions over explicit arguments: the leader (`protocols.leader`)
gathers what it knows (the job's executions, the members' infos, what
bidders said they have free, when they said it) and asks here:

- `check_fit` / `unfit`: whether a node can ever take a spec, by its own
  selection rules as its node info shows them (free resources aside);
- `rules_out`: whether one earlier execution keeps its node from being asked
  again now (it runs there, the node said no lately, it is full and backs
  off, the job type runs once per node, ...);
- `choose`: the nodes to ask, walking the job's rendezvous ranking, nodes
  that failed the job before last;
- `rank_bids`: the order bids win in — fewest earlier failures of that node
  on this job, then most of its inputs held, then most free resources, then
  a seeded random tie-break;
- `backoff`: how long a node that was full waits before it is asked again;
- `why_no_node`: one line saying why nothing fits, counted by reason.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocols import election, locality, selection
from protocols.jobspec import JobSpec, Resources
from protocols.messages import Capacity, NodeInfo
from protocols.records import ExecutionRecord, ExecutionState

BUSY_RETRY_FIRST = 10.0  # seconds before a node that was full is asked again for the same job...
BUSY_RETRY_MAX = 300.0  # ...doubling each time it is still full, up to this
BUSY_NOTICED = 6  # ...times this for daemons: a full node tells their leaders when it has room (`RoomFreed`)
RANK_AHEAD = 8  # candidates ranked per one wanted: most fit, the rest rank all nodes
NO_ANSWER = "no answer"  # how an ask left unanswered is marked: slow is not no (see `unanswered`)


@dataclass(frozen=True, slots=True)
class Recall:
    """What the leader remembers when it rules nodes out, as of `now`."""

    now: float
    decline_memory: float  # seconds a node's no is taken as still meant
    queue_retry_interval: float  # seconds before a node that did not answer is asked again
    full: Mapping[str, tuple[float, int]]  # node -> (ask again after, times it was full), see `backoff`
    room_since: Callable[[str, float], bool]  # (node, since): a bid after `since` showed room for the job
    restarted: Callable[[str, float], bool]  # (node, since): the node restarted after `since`


def fits(free: Capacity | None, resources: Resources) -> bool:
    """Whether `free` (unknown: no) holds the task's resources."""
    return free is not None and free.covers(resources.cpu, resources.memory, resources.disk, resources.gpu)


def unanswered(execution: ExecutionRecord) -> bool:
    """An ask the node never answered (or not before the round was decided): not a no."""
    return execution.message.startswith(NO_ANSWER)


def rules_out(
    execution: ExecutionRecord,
    recall: Recall,
    *,
    until_restart: bool,
    holds_node: Callable[[ExecutionRecord], bool],
) -> bool:
    """Whether this execution keeps its node from being asked for the job now.

    `until_restart`: a no stands until the node restarts (daemons: asking
    every matching node again every 30 s would be thousands of asks in a
    large network). `holds_node`: an ended execution that still counts as
    the node's (an ops job runs once per node; a daemon that completed)."""
    if not execution.state.terminal:
        return True  # it runs there, or an ask is open
    node_id = execution.node_id
    if execution.state == ExecutionState.ASK_FOR_BID_REJECTED:
        if unanswered(execution):
            return execution.modify_time > recall.now - recall.queue_retry_interval  # the others first
        held = recall.full.get(node_id)
        if held is not None:
            return held[0] > recall.now and not recall.room_since(node_id, execution.modify_time)  # still full
        if execution.modify_time >= recall.now - recall.decline_memory:
            return True
        if until_restart and not recall.restarted(node_id, execution.modify_time):
            return True
    return holds_node(execution)


def choose(
    ranked: Iterable[str],
    excluded: Container[str],
    failures: Mapping[str, int],
    want: int | None,
    room: Callable[[str], bool],
) -> tuple[list[str], list[str]]:
    """Walk the ranking: nodes not excluded (with `room`, when some number
    is wanted), as (never failed the job, failed it before); stops once
    `want` of the first kind are found."""
    first: list[str] = []
    tried: list[str] = []
    for node_id in ranked:
        if node_id in excluded:
            continue
        # Ops and daemon jobs (want None) ask every matching node, full or
        # not (it knows best); a full one tells a daemon when it has room.
        if want is not None and not room(node_id):
            continue
        (tried if failures.get(node_id, 0) else first).append(node_id)
        if want is not None and len(first) >= want:
            break
    return first, tried


def picked(first: list[str], tried: list[str], failures: Mapping[str, int], want: int | None) -> list[str]:
    """The nodes to ask from `choose`'s two lists: all (sorted) when no
    number is wanted, else the first kind then the least failed."""
    if want is None:
        return sorted(first + tried)
    return (first + sorted(tried, key=lambda n: failures.get(n, 0)))[:want]


def ask_margin(need: int) -> int:
    """Nodes asked for `need` open slots: a margin for those that say no."""
    return need + max(1, need // 2)


def free_score(free: Capacity | None, capacity: Capacity | None) -> float:
    """Share of CPU plus share of memory free (0 when unknown)."""
    if free is None or capacity is None:
        return 0.0
    cpu = free.cpu / capacity.cpu if capacity.cpu else 0.0
    memory = free.memory / capacity.memory if capacity.memory else 0.0
    return cpu + memory


def rank_bids(
    bids: Iterable[ExecutionRecord],
    failures: Mapping[str, int],
    held: Callable[[str], float],
    score: Callable[[str], float],
    rng: random.Random,
) -> list[ExecutionRecord]:
    """Bids best first: fewest failures of that node on this job, most of
    the job's inputs held there (`protocols.locality`), most free, then a seeded draw."""
    return sorted(bids, key=lambda e: (failures.get(e.node_id, 0), -held(e.node_id), -score(e.node_id), rng.random()))


def backoff(held: tuple[float, int] | None, now: float, noticed: int) -> tuple[float, int]:
    """(ask again after, times full) for a node that just said it is full:
    the wait doubles while it stays full; `noticed` stretches it for jobs
    the node tells of its room (daemons, see `RoomFreed`)."""
    times = held[1] + 1 if held is not None else 1
    return now + noticed * min(BUSY_RETRY_MAX, BUSY_RETRY_FIRST * 2 ** (times - 1)), times


def why_no_node(spec: JobSpec, infos: Iterable[NodeInfo], executions: Iterable[ExecutionRecord]) -> str:
    """Why no node fits, counted by reason, for the job's history."""
    reasons: Counter[str] = Counter()
    resources = spec.task.resources
    spec_shape = selection.fit_key(spec)
    for info in infos:
        reason = unfit(spec, info, spec_shape)
        if reason is None and not fits(info.free, resources):
            reason = "too few free resources"
        if reason is not None:
            reasons[gist(reason)] += 1
    for e in executions:
        if e.state == ExecutionState.ASK_FOR_BID_REJECTED and e.message:
            reasons[f"declined: {gist(e.message)}"] += 1
    return summarise(reasons) if reasons else "no node is alive"


def gist(reason: str) -> str:
    """A reason without its node-specific details, so reasons add up."""
    for mark in (":", " (", ";"):
        reason = reason.split(mark, 1)[0]
    return reason


def summarise(reasons: Counter[str]) -> str:
    return "; ".join(f"{count} node(s): {reason}" for reason, count in reasons.most_common(5))


# ------------------------------------------------------------ fit checks

_UNFIT_LIMIT = 1 << 20  # entries, all shapes together, before the memo starts afresh


class _ShapeMemo:
    """`unfit`'s memo for one shape of job (one per shape: a shape is a
    tuple of tuples, and hashing it for every member a ranking walks cost
    more than the lookup itself).

    `by_node`: node id -> (the info checked, why it is unfit or None),
    answered only for that very info object. `by_kind`: the number of what
    `check_fit` reads of an info (`_kind_number`) -> why: members of one
    kind (class, labels, policy) fit alike, so a member's first check, or
    its first after a heartbeat, is mostly a lookup."""

    __slots__ = ("by_node", "by_kind")

    def __init__(self) -> None:
        self.by_node: dict[str, tuple[NodeInfo, str | None]] = {}
        self.by_kind: dict[int, str | None] = {}


_unfit_memo: dict[tuple[Any, ...], _ShapeMemo] = {}  # shape -> its memo
# The kind of each member's info, for every shape: node id -> (the info, the
# number of its `_fit_kind`), and each kind's number. A member's kind is
# worked out once per info object, not once for each shape it is judged for
# (a kind is a tuple of tuples and dataclasses: building and hashing it cost
# more than the judging it saves).
_kinds: dict[str, tuple[NodeInfo, int]] = {}
_kind_numbers: dict[tuple[Any, ...], int] = {}
_unfit_count = 0  # entries in all the memos


def unfit(spec: JobSpec, info: NodeInfo, spec_shape: tuple[Any, ...] | None = None) -> str | None:
    """Why this node can never take the spec (free resources aside): `check_fit`, memoised.

    The one memo in here that one process shares between its nodes, on
    purpose: it is a memo of a pure function of two immutable values (the
    spec's shape, a tuple, and a `NodeInfo`), like `functools.cache`, and
    holds no node's state. An entry keeps the very info object it was
    computed from and answers only for that object (`is`), or is keyed by
    everything of the info that the check reads, so what one node finds
    there is what it would compute itself; no `id()` is involved.
    Shared, because in the simulator every leader checks every member for
    each shape of job: kept per node, 1,000 nodes would make 1,000 times the
    checks and hold a million entries more."""
    if spec_shape is None:
        spec_shape = selection.fit_key(spec)
    memo = _shape_memo(spec_shape)
    held = memo.by_node.get(info.node_id)
    if held is not None and held[0] is info:
        return held[1]
    return _judge(memo, spec, info)


def _shape_memo(spec_shape: tuple[Any, ...]) -> _ShapeMemo:
    memo = _unfit_memo.get(spec_shape)
    if memo is None:
        memo = _unfit_memo[spec_shape] = _ShapeMemo()
    return memo


def _judge(memo: _ShapeMemo, spec: JobSpec, info: NodeInfo) -> str | None:
    """`check_fit`, through the shape's memo by kind of node (a miss of
    its memo by node), and kept in both."""
    global _unfit_count
    if _unfit_count >= _UNFIT_LIMIT:
        for held in _unfit_memo.values():  # (a caller may hold one: it empties too)
            held.by_node.clear()
            held.by_kind.clear()
        _unfit_memo.clear()
        _kinds.clear()
        _kind_numbers.clear()
        _unfit_count = 0
    kind = _kind_number(info)
    by_kind = memo.by_kind
    if kind in by_kind:
        reason = by_kind[kind]
    else:
        reason = by_kind[kind] = check_fit(spec, info)
        _unfit_count += 1
    if info.node_id not in memo.by_node:
        _unfit_count += 1
    memo.by_node[info.node_id] = (info, reason)
    return reason


def _kind_number(info: NodeInfo) -> int:
    """The number of the info's `_fit_kind`, kept for that very info object."""
    global _unfit_count
    held = _kinds.get(info.node_id)
    if held is not None and held[0] is info:
        return held[1]
    kind = _fit_kind(info)
    number = _kind_numbers.get(kind)
    if number is None:
        number = _kind_numbers[kind] = len(_kind_numbers)
        _unfit_count += 1
    if held is None:
        _unfit_count += 1
    _kinds[info.node_id] = (info, number)
    return number


def _fit_kind(info: NodeInfo) -> tuple[Any, ...]:
    """Everything of the info that `check_fit` reads: all but the node's id
    (the labels in their order: a reason quotes them)."""
    policy = info.policy
    return (
        tuple(info.labels.items()), info.capacity, info.engines, info.publishers, info.storages, info.local_data,
        policy.locality, policy.reject_stateless, policy.accept_networked,
    )


class FitCache:
    """One node's memory of the shape (`selection.fit_key`) of each job it
    leads (held by its `Bidding`): per node, so no node reads what another
    derived. Which members fit a shape is not kept here: `eligible_ranked`
    judges only the members a job's ranking walks, through `unfit`'s memo."""

    __slots__ = ("_shapes",)

    SHAPES_KEPT = 4096  # job shapes remembered before the memory starts afresh

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Any, ...]] = {}  # job id -> shape (a job's spec never changes)

    def shape(self, job_id: str, spec: JobSpec) -> tuple[Any, ...]:
        """The job's `selection.fit_key` (its spec is fixed by its id: `protocols.jobid`)."""
        found = self._shapes.get(job_id)
        if found is None:
            if len(self._shapes) >= self.SHAPES_KEPT:
                self._shapes.clear()
            found = self._shapes[job_id] = selection.fit_key(spec)
        return found


_PREFIX_AHEAD = 4  # `eligible_ranked`: members ranked at first per one wanted (and widening by as much)


def eligible_ranked(
    job_id: str,
    spec: JobSpec,
    spec_shape: tuple[Any, ...],
    alive: Sequence[str],
    info: Callable[[str], NodeInfo | None],
    k: int | None,
    infos: Callable[[], Iterable[NodeInfo | None]] | None = None,
) -> tuple[list[str], bool]:
    """The first `k` (None: all) of the `alive` members that could ever run
    the spec (`unfit`, free resources aside), best rendezvous rank first,
    and whether that is every such member. `infos`: the info of each of
    `alive`, in its order (else `info` is asked of each).

    The rendezvous order of the eligible members is the alive list's order
    with the unfit left out, so for a few this ranks a prefix of the alive
    list (at C speed, `election.rank`) and judges only the members in it,
    widening the prefix while too few fit: a job that wants a few nodes
    costs work in proportion to those, not to the network's size (judging
    every member for each new job was a quarter of a large simulation's
    time). A job that wants them all (ops, daemon) judges every member in
    the alive list's order, and ranks only those that fit
    (`election.rank_chosen`): ranking the rest, and walking them in rank
    order, cost twice the judging."""
    total = len(alive)
    memo = _shape_memo(spec_shape)  # (`unfit`, inlined: these loops may judge every member)
    by_node = memo.by_node
    # One past k tells whether there are more; a prefix of four times that
    # is ranked at first: k + 1 alone was wide enough only when every member
    # in it fitted, and the walk stops at k + 1 fits whatever the prefix.
    span = total if k is None else min(total, _PREFIX_AHEAD * (k + 1))
    while span < total:
        found: list[str] = []
        for node_id in election.rank(job_id, alive, k=span):
            member = info(node_id)
            if member is None:
                continue
            held = by_node.get(node_id)
            reason = held[1] if held is not None and held[0] is member else _judge(memo, spec, member)
            if not reason:
                found.append(node_id)
                if k is not None and len(found) > k:
                    return found[:k], False
        span = min(total, span * _PREFIX_AHEAD)
    chosen: list[int] = []
    for index, member in enumerate(infos() if infos is not None else map(info, alive)):
        if member is None:
            continue
        held = by_node.get(member.node_id)
        reason = held[1] if held is not None and held[0] is member else _judge(memo, spec, member)
        if not reason:
            chosen.append(index)
    ranked = election.rank_chosen(job_id, alive if isinstance(alive, list) else list(alive), chosen)
    if k is None or len(ranked) <= k:
        return ranked, True
    return ranked[:k], False


class Eligible:
    """Membership in the alive members that could ever run a spec, judged
    one member at a time (`unfit`'s memo): for the few a caller asks about."""

    __slots__ = ("_spec", "_shape", "_alive", "_info")

    def __init__(self, spec: JobSpec, spec_shape: tuple[Any, ...], alive: Sequence[str],
                 info: Callable[[str], NodeInfo | None]) -> None:
        self._spec, self._shape, self._alive, self._info = spec, spec_shape, alive, info

    def __contains__(self, node_id: object) -> bool:
        alive = self._alive
        if not isinstance(node_id, str):
            return False
        index = bisect_left(alive, node_id)  # the alive list is sorted
        if index == len(alive) or alive[index] != node_id:
            return False
        member = self._info(node_id)
        return member is not None and not unfit(self._spec, member, self._shape)


def check_fit(spec: JobSpec, info: NodeInfo) -> str | None:
    """Why the node's own selection rules, as its info shows them, refuse the
    spec (None: they accept). Reads only what `_fit_kind` lists (`unfit`
    shares an answer between nodes of one kind)."""
    policy = selection.SelectionPolicy(
        locality=info.policy.locality,
        reject_stateless=info.policy.reject_stateless,
        accept_networked=info.policy.accept_networked,
    )
    view = selection.LocalNode(
        node_id=info.node_id,
        labels=info.labels,
        free=info.capacity,
        engines=frozenset(info.engines),
        publishers=frozenset(info.publishers),
        storages=frozenset(info.storages),
        local_data=locality.may_hold(spec, info.local_data),
    )
    return selection.refusal(policy, view, spec)
