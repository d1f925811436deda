"""What a node's parts may see of their node, and the effects they may emit.

The leader (`protocols.leader`) and the executor (`protocols.executor`) are
each given a `NodeContext`, never the `Node`: the context is the whole of
what they may read (the clock, the settings, the job replicas, narrow
questions about membership) and do (emit effects, write a job they lead,
ask keepers for a job). The node composes the parts and owns the context;
replication (`Replicator`) is plugged in behind `write` and `fetch`, so no
part imports the node and `protocols/` has no import circle.

Timers are keyed by `TimerKey` (`protocols.timers`): a `TimerKind` and the
job or execution the timer is about, so the node routes a fired timer by its
kind.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from protocols.events import CancelTimer, Effect, Send, SetTimer
from protocols.membership import Membership
from protocols.messages import Capacity, NodeInfo
from protocols.nodeconfig import NodeConfig
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionState,
    HistoryEvent,
    JobHeader,
    JobReplica,
)
from protocols.timers import TimerHandler, TimerKey, TimerKind

if TYPE_CHECKING:
    from protocols.providers import Providers

CATCH_UP_GRACE = 60.0  # seconds a restarted node that was sent no member list waits before it takes strangers for gone




class Dropped:
    """Input a node dropped, counted by why ("<what>: <reason>"); the newest
    wait in `fresh` for the driver to log (see `p2pnode.runtime`). Stale and
    duplicated messages are normal in a gossiping network: they are counted
    too, so a reader can tell them from bugs."""

    FRESH_LIMIT = 64  # drops kept for the driver between two inputs

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.fresh: list[tuple[str, str]] = []  # (sender, key of `counts`), oldest first

    def drop(self, sender: str, what: str, why: str) -> None:
        key = f"{what}: {why}"
        self.counts[key] += 1
        if len(self.fresh) < self.FRESH_LIMIT:
            self.fresh.append((sender, key))

    def take(self) -> list[tuple[str, str]]:
        """The drops since the last take, for the driver to log."""
        fresh, self.fresh = self.fresh, []
        return fresh


class Replicator(Protocol):
    """What replication does for the parts (see `protocols.node`)."""

    def write(
        self,
        replica: JobReplica,
        *,
        executions: Iterable[ExecutionRecord] = (),
        events: Iterable[HistoryEvent] = (),
        urgent: bool = False,
        **header_changes: Any,
    ) -> None: ...

    def fetch(self, job_id: str, attempt: int = 0) -> None: ...

    def merge_header(self, header: JobHeader) -> None: ...

    def note_own(self, record: ExecutionRecord) -> None: ...


class NodeContext:
    """One node's clock, settings, replicas and outbox, as its parts see them."""

    def __init__(
        self,
        config: NodeConfig,
        rng: random.Random,
        jobs: dict[str, JobReplica],
        membership: Membership,
        *,
        caught_up: bool = False,
    ) -> None:
        self.config = config  # replaced when the node's engines change
        self.node_id = config.node_id
        self.rng = rng  # seeded: the simulator replays a run exactly
        self.now = 0.0  # the time of the input being handled
        self.started_at = 0.0  # when the node (re)started
        self.jobs: Mapping[str, JobReplica] = jobs  # the replicas this node holds (read only: write through `write`)
        self.out: list[Effect] = []  # effects of the input being handled
        self._membership = membership
        # Whether a member is ALIVE or SUSPECT, or ourselves: the membership's
        # own question, asked of it directly (the parts ask it of every keeper
        # and holder of a job, many times per input).
        self.is_alive: Callable[[str], bool] = membership.is_alive
        self._caught_up = caught_up
        self._seq = 0  # history events written here
        self.dropped = Dropped()  # input dropped, by why
        self._replicator: Replicator | None = None
        self.providers: Providers | None = None  # who holds which CID (`protocols.providers`), set by the node
        self._free: Callable[[], Capacity] | None = None

    def attach(self, replicator: Replicator, free: Callable[[], Capacity]) -> None:
        """Plug in what the node composes: replication, and what the executor has free."""
        self._replicator = replicator
        self._free = free

    def drain(self) -> list[Effect]:
        """The effects emitted since the last drain."""
        out, self.out = self.out, []
        return out

    # ------------------------------------------------------------ effects

    def emit(self, effect: Effect) -> None:
        self.out.append(effect)

    def emit_send(self, peer: str, message: object) -> None:
        self.out.append(Send(peer, message))

    def set_timer(self, key: TimerKey, at: float) -> None:
        self.out.append(SetTimer(key, at))

    def cancel_timer(self, key: TimerKey) -> None:
        self.out.append(CancelTimer(key))

    def drop(self, sender: str, message: object, why: str) -> None:
        """Count (and have the driver log) a peer's message dropped, and why."""
        self.dropped.drop(sender, type(message).__name__, why)

    # ------------------------------------------------------------ writing jobs

    def write(
        self,
        replica: JobReplica,
        *,
        executions: Iterable[ExecutionRecord] = (),
        events: Iterable[HistoryEvent] = (),
        urgent: bool = False,
        **header_changes: Any,
    ) -> None:
        """Write to a job this node leads (see `Replicator.write`)."""
        assert self._replicator is not None, "the node attaches replication before any input"
        self._replicator.write(replica, executions=executions, events=events, urgent=urgent, **header_changes)

    def fetch(self, job_id: str, attempt: int = 0) -> None:
        """Ask the job's keepers for its record."""
        assert self._replicator is not None
        self._replicator.fetch(job_id, attempt)

    def merge_header(self, header: JobHeader) -> None:
        """Learn of a job from an ask before its announcement arrived."""
        assert self._replicator is not None
        self._replicator.merge_header(header)

    def note_own(self, record: ExecutionRecord) -> None:
        """Put a run we start into our own copy of its job."""
        assert self._replicator is not None
        self._replicator.note_own(record)

    def event(self, kind: str, message: str, *, execution_id: str = "", previous: str = "", new: str = "") -> HistoryEvent:
        """A history event written here, now."""
        self._seq += 1
        return HistoryEvent(self.now, self._seq, self.node_id, kind, message, execution_id, previous, new)

    def new_execution(self, header: JobHeader, node_id: str) -> ExecutionRecord:
        """A fresh ask for a bid, with an id no other leader will pick."""
        execution_id = f"e-{self.rng.getrandbits(64):016x}"
        return ExecutionRecord(
            id=execution_id,
            job_id=header.id,
            node_id=node_id,
            partition=-1,
            state=ExecutionState.ASK_FOR_BID,
            desired=DesiredState.PENDING,
            epoch=header.epoch,
            revision=1,
            create_time=self.now,
            modify_time=self.now,
        )

    def jittered(self, interval: float) -> float:
        """`interval`, 10 % either way at random (so nodes do not act in step)."""
        return interval * (0.9 + 0.2 * self.rng.random())

    def free(self) -> Capacity:
        """What this node has free now (its executor's reservations)."""
        assert self._free is not None
        return self._free()

    # ------------------------------------------------------------ membership, narrowly

    def alive_ids(self) -> Sequence[str]:
        """Sorted ids of the live members and ourselves (shared: do not modify)."""
        return self._membership.alive_ids()

    def alive_infos(self) -> Iterator[NodeInfo]:
        """The newest info of each of `alive_ids`, in that order."""
        return self._membership.alive_infos()

    def info(self, node_id: str) -> NodeInfo | None:
        """What the member last said of itself."""
        return self._membership.info(node_id)

    def table_changes(self) -> int:
        """A count of the changes to the members' infos (see `Membership.table_changes`)."""
        return self._membership.table_changes()

    def mark_caught_up(self) -> None:
        """We were sent the member list."""
        self._caught_up = True

    def caught_up(self) -> bool:
        """Whether we know the network well enough to take a member we never
        heard of for gone: we started in a formed network, or were sent the
        member list, or waited `CATCH_UP_GRACE` (a restarted node knows only
        what it is told, and heartbeats come minutes apart in a large network)."""
        return self._caught_up or self.now - self.started_at >= CATCH_UP_GRACE

    def presumed_lost(self, node_id: str) -> bool:
        """Held dead or gone; or never heard of, once we have caught up. A
        node that restarted must not take over the jobs of leaders it simply
        has not heard of yet, nor fail their work: that starts it twice."""
        if self.is_alive(node_id):
            return False
        return self._membership.status(node_id) is not None or self.caught_up()
