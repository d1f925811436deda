"""One node of the network, as a state machine: inputs in, effects out.

Theory of operation
-------------------
A node plays three parts at once, each in its own module:

- a *member* (`protocols.membership`): it publishes its `NodeInfo` on every
  heartbeat and tracks who else is alive;
- a *replica* of every job it hears of (`protocols.records`): it merges each
  `JobUpdated` delta, and every so often swaps digests with a random peer so
  what gossip lost is repaired (anti-entropy);
- a *leader* of the jobs that rendezvous hashing gives it (`protocols.leader`)
  and an *executor* of the work it wins (`protocols.executor`).

Only a job's leader writes the job. A write bumps the revision, is applied to
the local replica at once, and is published coalesced: writes to one job within
`flush_interval` leave as one `JobUpdated`. When a leader dies, every replica
sees it in membership; the first live successor in the job's header (the
rendezvous ranking made at submission) takes over with the next epoch. A
deposed leader that returns sees the higher epoch and steps down.

`handle()` never raises on a peer's input: a message that does not fit the
node's view is ignored (it is stale, duplicated, or from a deposed leader).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocols import election
from protocols.events import (
    CancelTimer,
    Effect,
    ExecutionEnded,
    ExecutionProgressed,
    Input,
    JobChanged,
    ProbeAnswered,
    Publish,
    Received,
    Send,
    SendFailed,
    SetTimer,
    StopJob,
    SubmitJob,
    TimerFired,
)
from protocols.executor import Executor
from protocols.jobspec import JobSpec
from protocols.leader import Leader
from protocols.membership import MemberChange, Membership, MembershipConfig, MemberStatus
from protocols.messages import (
    JOBS_TOPIC,
    NODES_TOPIC,
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    Capacity,
    DigestReply,
    DigestRequest,
    ExecutionUpdate,
    JobUpdated,
    LeaderChanged,
    NodeInfo,
    NodeLeft,
    Records,
    StopRequest,
    SubmitToLeader,
)
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionState,
    HistoryEvent,
    JobDelta,
    JobHeader,
    JobReplica,
    JobState,
)
from protocols.selection import SelectionPolicy

VERSION = "0.1.0"
SUCCESSORS = 4  # how many failover successors a job's header lists
MAX_REPAIR_RECORDS = 64  # records per anti-entropy message, to stay small
MAX_DIGEST = 1024  # jobs per anti-entropy digest


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Capacity = Capacity(cpu=4000, memory=8 << 30, disk=64 << 30, gpu=0)
    engines: tuple[str, ...] = ("docker", "wasm")
    publishers: tuple[str, ...] = ("ipfs", "local")
    storages: tuple[str, ...] = ("ipfs", "url", "inline", "localDirectory")
    local_data: tuple[str, ...] = ()
    policy: SelectionPolicy = SelectionPolicy()
    addresses: tuple[str, ...] = ()
    heartbeat_interval: float = 1.0
    max_heartbeats_per_second: float = 50.0
    suspect_after: float = 3.0  # missed heartbeats
    dead_after: float = 6.0  # missed heartbeats
    bid_window: float = 0.5  # how long a leader waits for bids
    bid_hold: float = 5.0  # how long a node holds resources for an undecided bid
    probe_timeout: float = 10.0  # a probe that does not answer declines
    probe_wait_timeout: float = 60.0  # a "shouldWait" bid declines after this
    max_retries: int = 3  # failed executions retried per job
    decline_memory: float = 30.0  # a node that declined is not asked again for this long
    queue_retry_interval: float = 2.0  # how often queued jobs look for nodes again
    flush_interval: float = 0.25  # execution-only writes to one job within this leave as one update
    anti_entropy_interval: float = 5.0
    recent_window: float = 30.0  # terminal jobs younger than this are repaired too
    resend_interval: float = 2.0  # an executor's undelivered report is retried this often


class Node:
    """A node's whole protocol state. Drive it with `start` and `handle`."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        rng: random.Random,
        restored: Iterable[JobDelta] = (),
        incarnation: int = 1,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.rng = rng
        self.now = 0.0
        self.out: list[Effect] = []
        self.jobs: dict[str, JobReplica] = {}
        self.membership = Membership(
            self._initial_info(incarnation),
            MembershipConfig(
                base_interval=config.heartbeat_interval,
                max_heartbeats_per_second=config.max_heartbeats_per_second,
                suspect_after=config.suspect_after,
                dead_after=config.dead_after,
            ),
        )
        self.executor = Executor(self)
        self.leader = Leader(self)
        self._seq = 0
        self._pending: dict[str, JobDelta] = {}  # unpublished writes, by job
        self._stops: dict[str, str] = {}  # stops asked of other leaders, until done
        self._started_at = 0.0
        for delta in restored:
            self.jobs[delta.header.id] = JobReplica.from_delta(delta)
        self._handlers: dict[type, Callable[[str, Any], None]] = {
            NodeInfo: self._on_node_info,
            NodeLeft: self._on_node_left,
            JobUpdated: self._on_job_updated,
            SubmitToLeader: self._on_submit_to_leader,
            DigestRequest: self._on_digest_request,
            DigestReply: self._on_digest_reply,
            Records: self._on_records,
            StopRequest: self._on_stop_request,
            AskBid: self.executor.on_ask_bid,
            BidDecision: self.executor.on_bid_decision,
            CancelExecution: self.executor.on_cancel,
            LeaderChanged: self.executor.on_leader_changed,
            BidReply: self.leader.on_bid_reply,
            ExecutionUpdate: self.leader.on_execution_update,
        }
        self._timers: dict[str, Callable[[Any], None]] = {
            "heartbeat": self._on_heartbeat_timer,
            "membership": self._on_membership_timer,
            "flush": self._on_flush_timer,
            "anti-entropy": self._on_anti_entropy_timer,
            "stop-retry": self._on_stop_retry,
            **self.leader.timers(),
            **self.executor.timers(),
        }

    # ------------------------------------------------------------ driving

    def start(self, now: float) -> list[Effect]:
        """Announce ourselves and resume the jobs we had (after a restart)."""
        self.now = self._started_at = now
        self._heartbeat()
        self.set_timer(("anti-entropy",), now + self._jittered(self.config.anti_entropy_interval))
        self.leader.resume()
        self.executor.resume()
        return self._drain()

    def handle(self, event: Input, now: float) -> list[Effect]:
        self.now = now
        match event:
            case Received(sender, message):
                handler = self._handlers.get(type(message))
                if handler is not None:
                    handler(sender, message)
            case TimerFired(key):
                if isinstance(key, tuple) and key and key[0] in self._timers:
                    self._timers[key[0]](key)
            case SendFailed(peer, message, reason):
                self.leader.on_send_failed(peer, message, reason)
                self.executor.on_send_failed(peer, message, reason)
            case SubmitJob(job_id, spec):
                self._submit(job_id, spec)
            case StopJob(job_id, reason):
                self._stop(job_id, reason)
            case ProbeAnswered(execution_id, verdict):
                self.executor.on_probe_answered(execution_id, verdict)
            case ExecutionProgressed(execution_id, state, message):
                self.executor.on_progress(execution_id, state, message)
            case ExecutionEnded(execution_id, ok, result, message):
                self.executor.on_ended(execution_id, ok, result, message)
        return self._drain()

    def leave(self, now: float) -> list[Effect]:
        """Say goodbye, so others do not wait for our heartbeats to stop."""
        self.now = now
        self.out.append(Publish(NODES_TOPIC, NodeLeft(self.node_id, self.membership.local.incarnation)))
        return self._drain()

    # ------------------------------------------------------------ services for the parts

    def emit(self, effect: Effect) -> None:
        self.out.append(effect)

    def emit_send(self, peer: str, message: object) -> None:
        self.out.append(Send(peer, message))

    def emit_cancel_timer(self, key: tuple[Any, ...]) -> None:
        self.out.append(CancelTimer(key))

    def merge_header(self, header: JobHeader) -> None:
        """Learn of a job from an ask before its announcement arrived."""
        self._merge(JobDelta(header))

    def set_timer(self, key: tuple[Any, ...], at: float) -> None:
        self.out.append(SetTimer(key, at))

    def event(self, kind: str, message: str, *, execution_id: str = "", previous: str = "", new: str = "") -> HistoryEvent:
        self._seq += 1
        return HistoryEvent(self.now, self._seq, self.node_id, kind, message, execution_id, previous, new)

    def write(
        self,
        replica: JobReplica,
        *,
        executions: Iterable[ExecutionRecord] = (),
        events: Iterable[HistoryEvent] = (),
        urgent: bool = False,
        **header_changes: Any,
    ) -> None:
        """Write to a job this node leads: bump its revision, apply, publish."""
        header = replace(
            replica.header,
            revision=replica.header.revision + 1,
            modify_time=self.now,
            **header_changes,
        )
        delta = JobDelta(header, tuple(executions), tuple(events))
        previous_leader = replica.header.leader
        replica.apply(delta)
        if header.leader != previous_leader:
            self.leader.leader_moved(replica, previous_leader)
        self.out.append(JobChanged(header.id))
        first = not self._pending
        held = self._pending.get(header.id)
        if held is None:
            self._pending[header.id] = delta
        else:
            merged = {e.id: e for e in held.executions}
            merged.update((e.id, e) for e in delta.executions)
            self._pending[header.id] = JobDelta(header, tuple(merged.values()), held.events + delta.events)
        if urgent:
            self.set_timer(("flush",), self.now)
        elif first:
            self.set_timer(("flush",), self.now + self.config.flush_interval)

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

    def free(self) -> Capacity:
        return self.executor.free()

    def is_alive(self, node_id: str) -> bool:
        return node_id == self.node_id or self.membership.is_alive(node_id)

    # ------------------------------------------------------------ submission and stop

    def _submit(self, job_id: str, spec: JobSpec) -> None:
        if job_id in self.jobs:
            return
        ranked = election.rank(job_id, self.membership.alive_ids(), k=1 + SUCCESSORS)
        header = JobHeader(
            id=job_id,
            spec=spec,
            name=spec.name or job_id,
            state=JobState.PENDING,
            message="submitted",
            version=1,
            revision=1,
            epoch=1,
            leader=ranked[0],
            successors=tuple(ranked[1:]),
            create_time=self.now,
            modify_time=self.now,
        )
        created = self.event(
            "JobStateChanged", f"job submitted to {self.node_id}; leader {ranked[0]}", new=JobState.PENDING
        )
        delta = JobDelta(header, (), (created,))
        replica = JobReplica.from_delta(delta)
        self.jobs[job_id] = replica
        self.out.append(JobChanged(job_id))
        self.out.append(Publish(JOBS_TOPIC, JobUpdated(delta)))
        self.leader.submitted(replica)

    def _stop(self, job_id: str, reason: str) -> None:
        replica = self.jobs.get(job_id)
        if replica is None or replica.header.state.terminal:
            self._stops.pop(job_id, None)
            return
        if replica.header.leader == self.node_id:
            self._stops.pop(job_id, None)
            self.leader.stop(replica, reason)
        else:
            # Until the record shows the job ended, keep asking whoever leads it.
            self._stops[job_id] = reason
            self.out.append(Send(replica.header.leader, StopRequest(job_id, reason)))
            self.set_timer(("stop-retry", job_id), self.now + self.config.resend_interval)

    def _on_stop_retry(self, key: tuple[Any, ...]) -> None:
        reason = self._stops.get(key[1])
        if reason is not None:
            self._stop(key[1], reason)

    def _on_stop_request(self, sender: str, message: StopRequest) -> None:
        self._stop(message.job_id, message.reason)

    def _on_submit_to_leader(self, sender: str, message: SubmitToLeader) -> None:
        self._merge(message.delta)
        replica = self.jobs[message.delta.header.id]
        if replica.header.leader == self.node_id:
            self.leader.adopt(replica, handed_by=sender)

    # ------------------------------------------------------------ replication

    def _merge(self, delta: JobDelta) -> JobReplica:
        """Merge a delta from anyone into our replica."""
        job_id = delta.header.id
        replica = self.jobs.get(job_id)
        if replica is None:
            replica = self.jobs[job_id] = JobReplica.from_delta(delta)
            previous_leader = None
            changed = True
        else:
            previous_leader = replica.header.leader
            changed = replica.apply(delta)
        if changed:
            self.out.append(JobChanged(job_id))
            if replica.header.leader != previous_leader:
                self.leader.leader_moved(replica, previous_leader)
            self.executor.reconcile(replica)
            if replica.header.leader == self.node_id:
                self.leader.reconcile(replica)
        return replica

    def _on_job_updated(self, sender: str, message: JobUpdated) -> None:
        self._merge(message.delta)

    def _on_flush_timer(self, key: tuple[Any, ...]) -> None:
        pending, self._pending = self._pending, {}
        for delta in pending.values():
            self.out.append(Publish(JOBS_TOPIC, JobUpdated(delta)))

    def _digest(self) -> tuple[tuple[str, int, int, int, int], ...]:
        """Our live and recently ended jobs, newest first, at most
        `MAX_DIGEST`: repair is for what gossip just lost."""
        horizon = self.now - self.config.recent_window
        recent = [
            r for r in self.jobs.values() if not r.header.state.terminal or r.header.modify_time >= horizon
        ]
        if len(recent) > MAX_DIGEST:
            recent = sorted(recent, key=lambda r: r.header.modify_time, reverse=True)[:MAX_DIGEST]
        return tuple((r.header.id, *r.header.version_key, r.fingerprint()) for r in recent)

    def _on_anti_entropy_timer(self, key: tuple[Any, ...]) -> None:
        self.set_timer(("anti-entropy",), self.now + self._jittered(self.config.anti_entropy_interval))
        peers = [peer for peer in self.membership.alive_ids() if peer != self.node_id]
        if peers:
            self.out.append(Send(self.rng.choice(peers), DigestRequest(self._digest())))
        self.leader.check_leaders()

    def _on_digest_request(self, sender: str, message: DigestRequest) -> None:
        """Send what the asker lacks, ask for what we lack. Replicas that
        merely differ (a healed split brain) swap both ways: merging is
        idempotent, so sending too much costs bytes, never correctness."""
        newer: list[JobDelta] = []
        wanted: list[str] = []
        theirs = set()
        for job_id, finality, epoch, revision, fingerprint in message.digest:
            theirs.add(job_id)
            replica = self.jobs.get(job_id)
            if replica is None:
                wanted.append(job_id)
                continue
            ours = (replica.header.version_key, replica.fingerprint())
            other = ((finality, epoch, revision), fingerprint)
            if ours == other:
                continue
            if not (ours[0] >= other[0] and ours[1] >= other[1]):
                wanted.append(job_id)
            if not (other[0] >= ours[0] and other[1] >= ours[1]) and len(newer) < MAX_REPAIR_RECORDS:
                newer.append(replica.snapshot())
        for job_id, *_ in self._digest():
            if job_id not in theirs and len(newer) < MAX_REPAIR_RECORDS:
                newer.append(self.jobs[job_id].snapshot())
        if newer or wanted:
            self.out.append(Send(sender, DigestReply(tuple(newer), tuple(wanted[:MAX_REPAIR_RECORDS]))))

    def _on_digest_reply(self, sender: str, message: DigestReply) -> None:
        for delta in message.deltas:
            self._merge(delta)
        records = tuple(self.jobs[job_id].snapshot() for job_id in message.wanted if job_id in self.jobs)
        if records:
            self.out.append(Send(sender, Records(records)))

    def _on_records(self, sender: str, message: Records) -> None:
        for delta in message.deltas:
            self._merge(delta)

    # ------------------------------------------------------------ membership

    def _initial_info(self, incarnation: int) -> NodeInfo:
        config = self.config
        return NodeInfo(
            node_id=config.node_id,
            labels=dict(config.labels),
            capacity=config.capacity,
            free=config.capacity,
            engines=tuple(config.engines),
            publishers=tuple(config.publishers),
            storages=tuple(config.storages),
            local_data=tuple(config.local_data),
            policy=config.policy.summary(),
            version=VERSION,
            incarnation=incarnation,
            seq=0,
            heartbeat_interval=config.heartbeat_interval,
            addresses=tuple(config.addresses),
            started_at=self.now,
        )

    def _heartbeat(self) -> None:
        info = self.membership.heartbeat(self.now, free=self.free())
        self.out.append(Publish(NODES_TOPIC, info))
        self.set_timer(("heartbeat",), self.now + self._jittered(info.heartbeat_interval))
        self._schedule_membership_check()

    def _on_heartbeat_timer(self, key: tuple[Any, ...]) -> None:
        self._heartbeat()

    def _schedule_membership_check(self) -> None:
        at = self.membership.next_check()
        if at != float("inf"):
            self.set_timer(("membership",), max(at, self.now))

    def _on_membership_timer(self, key: tuple[Any, ...]) -> None:
        for change in self.membership.tick(self.now):
            self._on_member_change(change)
        self._schedule_membership_check()

    def _on_node_info(self, sender: str, info: NodeInfo) -> None:
        if info.node_id != sender:
            return  # a node speaks only for itself
        held = self.membership.info(info.node_id)
        change = self.membership.observe(info, self.now)
        if change is not None:
            self._on_member_change(change)
            self._schedule_membership_check()
        if held is not None and info.incarnation > held.incarnation:
            # It restarted faster than we could miss it: what it ran died with it.
            self.leader.node_lost(info.node_id, why="restarted")

    def _on_node_left(self, sender: str, message: NodeLeft) -> None:
        if message.node_id != sender:
            return
        change = self.membership.left(message, self.now)
        if change is not None:
            self._on_member_change(change)

    def _on_member_change(self, change: MemberChange) -> None:
        if change.status in (MemberStatus.DEAD, MemberStatus.LEFT):
            self.leader.node_lost(change.node_id)
        elif change.status == MemberStatus.ALIVE and change.previous in (None, MemberStatus.DEAD, MemberStatus.LEFT):
            self.leader.node_joined(change.node_id)

    # ------------------------------------------------------------ helpers

    def _jittered(self, interval: float) -> float:
        return interval * (0.9 + 0.2 * self.rng.random())

    def _drain(self) -> list[Effect]:
        out, self.out = self.out, []
        return out
