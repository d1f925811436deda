"""One node of the network, as a state machine: inputs in, effects out.

Theory of operation
-------------------
A node plays three parts at once, each in its own module:

- a *member* (`protocols.membership`): it publishes its `NodeInfo` on every
  heartbeat and tracks who else is alive;
- a *keeper* of the jobs rendezvous hashing puts in its care
  (`protocols.records`): it merges each `JobUpdated` delta, and every so often
  swaps digests with a fellow keeper so what was lost is repaired
  (anti-entropy); a node asked about a job it does not keep asks the keepers;
- a *leader* of the jobs that rendezvous hashing gives it (`protocols.leader`)
  and an *executor* of the work it wins (`protocols.executor`).

Only a job's leader writes the job. A write bumps the revision, is applied to
the local replica at once, and is sent coalesced to the job's holders (keepers
and the nodes running it): writes to one job within `flush_interval` leave as
one `JobUpdated`, and a holder new to the job gets the whole record. A write
that could not be delivered goes again, whole, at the next anti-entropy round.
Digests cover live jobs and those ended within `recent_window`; an older one
only with a keeper that may have missed its end (it was down then, or a write
to it was given up), until that keeper shows it holds the same record: a
keeper's return is otherwise mended by one catch-up message, which can be
lost, or not sent when the node meant to send it did not see the return.
So a job costs a bounded number of messages however large the network. When a
leader dies, its keepers see it in membership; the first live successor in the
job's header (the rendezvous ranking made at submission) takes over with the
next epoch. A deposed leader that returns sees the higher epoch and steps down.

`handle()` never raises on a peer's input: a message that does not fit the
node's view is ignored (it is stale, duplicated, or from a deposed leader).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from protocols import election
from protocols.authority import Authority
from protocols.context import NodeContext, TimerHandler, TimerKey, TimerKind
from protocols.events import (
    DataHeld,
    Effect,
    EnginesChanged,
    ExecutionEnded,
    ExecutionProgressed,
    FetchJob,
    FindProviders,
    Input,
    JobChanged,
    ProbeAnswered,
    ProvidersFound,
    Publish,
    Received,
    Send,
    SendFailed,
    StopJob,
    SubmitJob,
    TimerFired,
)
from protocols.executor import Executor
from protocols.jobspec import JobSpec
from protocols.leader import SUCCESSORS, Leader
from protocols.membership import MemberChange, Membership, MembershipConfig, MemberStatus
from protocols.messages import (
    NODES_TOPIC,
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    Capacity,
    DigestReply,
    DigestRequest,
    ExecutionUpdate,
    IndirectAck,
    JobUpdated,
    LeaderChanged,
    NodeInfo,
    Ack,
    Down,
    Members,
    NodeLeft,
    Ping,
    PingReq,
    ProviderAnnounce,
    ProviderQuery,
    ProviderReply,
    RecordRequest,
    Records,
    RoomFreed,
    StopRequest,
    SubmitToLeader,
    Suspect,
)
from protocols.providers import Providers
from protocols.quickinit import quick_replace
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
from protocols.nodeconfig import NodeConfig

VERSION = "0.1.0"
_REPORTED_ENDS = frozenset({ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED})
MEMBERS_PER_MESSAGE = 1000  # node infos per welcome message (a few hundred KiB)
REPAIR_BUDGET = 2048  # per repair message, in units of about 256 bytes (see `_units`): well under the wire's limit
MAX_DIGEST = 1024  # jobs per anti-entropy digest
REFUTE_REPEATS = 3  # rounds a node says it is alive in after it was accused
WELCOMERS = 2  # members before a newcomer on the ring that send it the member list
FETCH_FROM = 3  # keepers asked at once about a job this node does not keep
MAX_STOP_ATTEMPTS = 30  # a stop is asked again every resend_interval, this many times at most


@dataclass(slots=True)
class _PendingWrite:
    """The writes to one job since the last flush, coalesced: one delta goes."""

    sent: JobHeader  # the header as last sent
    header: JobHeader  # the newest
    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    events: list[HistoryEvent] = field(default_factory=list)


def initial_info(config: NodeConfig, incarnation: int = 1, now: float = 0.0) -> NodeInfo:
    """What a node says of itself before its first heartbeat."""
    return NodeInfo(
        node_id=config.node_id,
        labels=dict(config.labels),
        capacity=config.capacity,
        free=config.capacity,
        engines=tuple(config.engines),
        publishers=tuple(config.publishers),
        storages=tuple(config.storages),
        local_data=tuple(config.local_data),
        policy=config.policy.summary(config.probe_timeout, config.probe_wait_timeout),
        version=VERSION,
        incarnation=incarnation,
        seq=0,
        heartbeat_interval=config.heartbeat_interval,
        addresses=tuple(config.addresses),
        started_at=now,
    )


class Node:
    """A node's whole protocol state. Drive it with `start` and `handle`."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        rng: random.Random,
        restored: Iterable[JobDelta] = (),
        incarnation: int = 1,
        members: tuple[dict[str, NodeInfo], list[str]] | None = None,
    ) -> None:
        """`members`: start in a formed network (`Membership.warm_start`)
        instead of learning it from heartbeats."""
        self.node_id = config.node_id
        self.rng = rng
        self.jobs: dict[str, JobReplica] = {}
        self.membership = Membership(
            initial_info(config, incarnation),
            MembershipConfig(
                base_interval=config.heartbeat_interval,
                max_heartbeats_per_second=config.max_heartbeats_per_second,
                ping_interval=config.ping_interval,
                watchers=config.watchers,
                helpers=config.helpers,
                suspect_after=config.suspect_after,
                dead_after=config.dead_after,
            ),
            members,
        )
        self._warm = members is not None
        self.ctx = NodeContext(config, rng, self.jobs, self.membership, caught_up=self._warm)
        self.executor = Executor(self.ctx)
        self.providers = Providers(self.ctx)  # who holds which CID (`protocols.providers`)
        self.ctx.providers = self.providers
        self.leader = Leader(self.ctx)
        self.ctx.attach(self, self.executor.free)
        # Who may write what: asked before any handler (see `protocols.authority`).
        self.authority = Authority(
            self.node_id, self.jobs, self.membership.is_alive, self.membership.info, self.membership.alive_ids,
            self.executor.follows, self.providers.asked,
        )
        self._pending: dict[str, _PendingWrite] = {}  # unsent writes, by job
        self._fresh: dict[str, set[str]] = {}  # holders new to a job: they get it whole
        self._unsynced: dict[str, set[str]] = {}  # holders a write to a job did not reach
        self._kept_live: set[str] = set()  # jobs we keep that are live, ended lately, or in doubt (see `_recent`)
        self._doubted: dict[str, set[str]] = {}  # keepers that may lack an ended job's record (see `_doubt`)
        self._stops: dict[str, tuple[str, int]] = {}  # stops asked of other leaders: (reason, attempts)
        self._refutations = 0  # ping rounds left that repeat our refutation of an accusation
        for delta in restored:
            self.jobs[delta.header.id] = JobReplica.from_delta(delta)
            self._kept_live.add(delta.header.id)
        handlers: dict[type, Callable[[str, Any], None]] = {
            NodeInfo: self._on_node_info,
            NodeLeft: self._on_node_left,
            Members: self._on_members,
            Ping: self._on_ping,
            Ack: self._on_ack,
            PingReq: self._on_ping_req,
            IndirectAck: self._on_indirect_ack,
            Suspect: self._on_accusation,
            Down: self._on_accusation,
            JobUpdated: self._on_job_updated,
            SubmitToLeader: self._on_submit_to_leader,
            DigestRequest: self._on_digest_request,
            DigestReply: self._on_digest_reply,
            Records: self._on_records,
            RecordRequest: self._on_record_request,
            StopRequest: self._on_stop_request,
            AskBid: self.executor.on_ask_bid,
            BidDecision: self.executor.on_bid_decision,
            CancelExecution: self.executor.on_cancel,
            LeaderChanged: self.executor.on_leader_changed,
            BidReply: self.leader.on_bid_reply,
            ExecutionUpdate: self.leader.on_execution_update,
            RoomFreed: self.leader.on_room_freed,
            ProviderAnnounce: self.providers.on_announce,
            ProviderQuery: self.providers.on_query,
            ProviderReply: self.providers.on_reply,
        }
        self._handlers = {kind: _hearing(self.membership, h) for kind, h in handlers.items()}
        self._ping_due = 0.0
        self._timers: dict[TimerKind, TimerHandler] = {
            TimerKind.HEARTBEAT: self._on_heartbeat_timer,
            TimerKind.PING: self._on_ping_timer,
            TimerKind.MEMBERSHIP: self._on_membership_timer,
            TimerKind.FLUSH: self._on_flush_timer,
            TimerKind.ANTI_ENTROPY: self._on_anti_entropy_timer,
            TimerKind.CHECK_IN: self._on_check_in_timer,
            TimerKind.RESYNC: self._resync,
            TimerKind.STOP_RETRY: self._on_stop_retry,
            **self.leader.timers(),
            **self.providers.timers(),
            **self.executor.timers(),
        }

    # ------------------------------------------------------------ driving

    def start(self, now: float) -> list[Effect]:
        """Announce ourselves and resume the jobs we had (after a restart)."""
        self.now = self.ctx.started_at = now
        if self._warm:  # everyone knows us already: heartbeat at a random phase
            self.set_timer(TimerKey(TimerKind.HEARTBEAT), now + self.rng.random() * self.membership.heartbeat_interval())
        else:
            self._heartbeat()
        self._ping_due = now + self._jittered(self.config.ping_interval)
        self.set_timer(TimerKey(TimerKind.PING), self._ping_due)
        self.set_timer(TimerKey(TimerKind.ANTI_ENTROPY), now + self._jittered(self.config.anti_entropy_interval))
        self.set_timer(TimerKey(TimerKind.CHECK_IN), now + self._jittered(self.config.check_in_interval))
        self.leader.resume()
        self.executor.resume()
        return self._drain()

    def handle(self, event: Input, now: float) -> list[Effect]:
        self.now = now
        if type(event) is Received:  # most inputs: a peer's message
            handler = self._handlers.get(type(event.message))
            # `sender` is the authenticated peer, never a field: see `protocols.authority`.
            if handler is not None and self.authority.check(event.sender, event.message) is None:
                handler(event.sender, event.message)
        else:
            self._handle_local(event)
        return self.ctx.drain()

    def _handle_local(self, event: Input) -> None:
        match event:
            case TimerFired(key):
                if isinstance(key, TimerKey) and key.kind in self._timers:
                    self._timers[key.kind](key)
            case SendFailed(peer, message, reason):
                self._on_write_failed(peer, message)
                self.leader.on_send_failed(peer, message, reason)
                self.executor.on_send_failed(peer, message, reason)
                self.providers.on_send_failed(peer, message)
            case SubmitJob(job_id, spec, salt):
                self._submit(job_id, spec, salt)
            case FetchJob(job_id):
                self.fetch(job_id)
            case StopJob(job_id, reason):
                self._stop(job_id, reason)
            case ProbeAnswered(execution_id, verdict):
                self.executor.on_probe_answered(execution_id, verdict)
            case ExecutionProgressed(execution_id, state, message):
                self.executor.on_progress(execution_id, state, message)
            case ExecutionEnded(execution_id, ok, result, message):
                self.executor.on_ended(execution_id, ok, result, message)
            case EnginesChanged(engines):
                self._set_engines(engines)
            case DataHeld(cids, held):
                self._set_held(cids, held)
            case FindProviders(cid):
                self.providers.find(cid, lambda found: self.out.append(ProvidersFound(cid, tuple(sorted(found)))))

    def leave(self, now: float) -> list[Effect]:
        """Say goodbye, so others do not wait for our heartbeats to stop."""
        self.now = now
        self.out.append(Publish(NODES_TOPIC, NodeLeft(self.node_id, self.membership.local.incarnation)))
        return self._drain()

    # ------------------------------------------------------------ what the parts share (see `protocols.context`)

    @property
    def now(self) -> float:
        return self.ctx.now

    @now.setter
    def now(self, now: float) -> None:
        self.ctx.now = now

    @property
    def config(self) -> NodeConfig:
        return self.ctx.config

    @property
    def out(self) -> list[Effect]:
        return self.ctx.out

    def set_timer(self, key: TimerKey, at: float) -> None:
        self.ctx.set_timer(key, at)

    def event(self, kind: str, message: str, *, execution_id: str = "", previous: str = "", new: str = "") -> HistoryEvent:
        return self.ctx.event(kind, message, execution_id=execution_id, previous=previous, new=new)

    def new_execution(self, header: JobHeader, node_id: str) -> ExecutionRecord:
        """A fresh ask for a bid (see `NodeContext.new_execution`)."""
        return self.ctx.new_execution(header, node_id)

    def is_alive(self, node_id: str) -> bool:
        return self.ctx.is_alive(node_id)

    # ------------------------------------------------------------ replication's services for the parts

    def merge_header(self, header: JobHeader) -> None:
        """Learn of a job from an ask before its announcement arrived."""
        self._merge(JobDelta(header))

    def write(
        self,
        replica: JobReplica,
        *,
        executions: Iterable[ExecutionRecord] = (),
        events: Iterable[HistoryEvent] = (),
        urgent: bool = False,
        **header_changes: Any,
    ) -> None:
        """Write to a job this node leads: bump its revision, apply, and send
        it (coalesced) to the job's holders."""
        header = quick_replace(
            replica.header,
            revision=replica.header.revision + 1,
            modify_time=self.now,
            **header_changes,
        )
        delta = JobDelta(header, tuple(executions), tuple(events))
        previous = replica.header
        replica.apply(delta)
        if header.state.terminal:
            self._doubt_absent(replica)
        # A new keeper, or every keeper after a failover, gets the whole record.
        if header.leader != previous.leader or header.successors != previous.successors:
            fresh = header.keepers if header.leader != previous.leader else header.keepers - previous.keepers
            if fresh - {self.node_id}:
                self._fresh.setdefault(header.id, set()).update(fresh - {self.node_id})
        if header.leader != previous.leader:
            self.leader.leader_moved(replica, previous.leader)
        self.executor.reconcile(replica)  # work of ours the write touches (we took over; it gave up a run here)
        self.out.append(JobChanged(header.id))
        first = not self._pending
        held = self._pending.get(header.id)
        if held is None:
            held = self._pending[header.id] = _PendingWrite(previous, header)
        held.header = header
        held.executions.update((e.id, e) for e in delta.executions)
        held.events.extend(delta.events)
        if urgent:
            self.set_timer(TimerKey(TimerKind.FLUSH), self.now)
        elif first:
            self.set_timer(TimerKey(TimerKind.FLUSH), self.now + self.config.flush_interval)

    def note_own(self, record: ExecutionRecord) -> None:
        """Put a run we start into our own copy of its job (a runner's copy
        is not sent its progress; the leader's records, all newer, win any
        merge), so after a restart we know what died with us (`Executor.resume`)."""
        replica = self.jobs.get(record.job_id)
        if replica is not None and replica.apply(JobDelta(replica.header, (record,))):
            self.out.append(JobChanged(record.job_id))

    def free(self) -> Capacity:
        return self.executor.free()

    # ------------------------------------------------------------ submission and stop

    def _submit(self, job_id: str, spec: JobSpec, salt: str = "") -> None:
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
            submitter=self.node_id,
            salt=salt,
        )
        created = self.event(
            "JobStateChanged", f"job submitted to {self.node_id}; leader {ranked[0]}", new=JobState.PENDING
        )
        delta = JobDelta(header, (), (created,))
        replica = JobReplica.from_delta(delta)
        self.jobs[job_id] = replica
        self._kept_live.add(job_id)
        self.out.append(JobChanged(job_id))
        for keeper in header.successors:  # the leader gets it in `SubmitToLeader`
            if keeper != self.node_id:
                self.out.append(Send(keeper, JobUpdated(delta)))
        self.leader.submitted(replica)

    def _stop(self, job_id: str, reason: str, attempt: int = 0) -> None:
        replica = self.jobs.get(job_id)
        if (replica is not None and replica.header.state.terminal) or attempt > MAX_STOP_ATTEMPTS:
            self._stops.pop(job_id, None)
            return
        if replica is not None and replica.header.leader == self.node_id:
            self._stops.pop(job_id, None)
            self.leader.stop(replica, reason)
            return
        # Until the record shows the job ended, keep asking whoever leads it;
        # a node that does not keep the job asks its keepers how it stands.
        self._stops[job_id] = (reason, attempt)
        if replica is None or (attempt > 0 and not self.keeps(replica)):
            self.fetch(job_id, attempt)  # (the leader we know may be gone: ask again on retries)
        if replica is not None:
            self.out.append(Send(replica.header.leader, StopRequest(job_id, reason)))
        self.set_timer(TimerKey(TimerKind.STOP_RETRY, job_id), self.now + self.config.resend_interval)

    def _on_stop_retry(self, key: TimerKey) -> None:
        held = self._stops.get(key.subject)
        if held is not None:
            self._stop(key.subject, held[0], held[1] + 1)

    def _on_stop_request(self, sender: str, message: StopRequest) -> None:
        self._stop(message.job_id, message.reason)
        replica = self.jobs.get(message.job_id)
        if replica is not None and replica.header.state.terminal and not replica.header.kept_by(sender):
            # The asker gets no writes of the job: show it the end, or it asks again.
            self.out.append(Send(sender, Records((JobDelta(replica.header),))))

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
            if replica.header.state.terminal:
                self.leader.unindex(job_id, replica.header.leader)
            if replica.header.kept_by(self.node_id):
                self._kept_live.add(job_id)
            self.executor.reconcile(replica)
            if replica.header.leader == self.node_id:
                self.leader.reconcile(replica)
        return replica

    def _on_job_updated(self, sender: str, message: JobUpdated) -> None:
        held = self.jobs.get(message.delta.header.id)
        if held is not None and message.delta.header.epoch < held.header.epoch:
            # A deposed leader's write (a healed split): what it teaches us,
            # the leader and the other keepers may lack too.
            self._merge_repair(sender, message.delta)
            return
        replica = self._merge(message.delta)
        if replica.header.state.terminal and self.keeps(replica):
            self._doubt_absent(replica)  # so the leader's doubts do not die with it

    def _on_flush_timer(self, key: TimerKey) -> None:
        pending, self._pending = self._pending, {}
        for job_id, write in pending.items():
            replica = self.jobs[job_id]
            fresh = self._fresh.pop(job_id, ())
            before, header = write.sent, write.header
            delta = JobDelta(header, tuple(write.executions.values()), tuple(write.events))
            news_for_runners = (header.epoch, header.leader, header.state.terminal) != (
                before.epoch, before.leader, before.state.terminal
            )
            own: dict[str, list[ExecutionRecord]] = {}  # what each runner must hear of its own work
            for execution in delta.executions:
                if execution.state.terminal or execution.desired == DesiredState.STOPPED:
                    own.setdefault(execution.node_id, []).append(execution)
            snapshot: JobDelta | None = None
            # The write that ends a job carries the whole record to its
            # keepers: an earlier write one of them lost is mended now, not
            # left for anti-entropy (which stops digesting a job soon after
            # it ends).
            ending = header.state.terminal and not before.state.terminal
            for peer in self._targets(replica, delta):
                if peer in fresh:
                    snapshot = snapshot or replica.snapshot()
                    self.out.append(Send(peer, Records((snapshot,))))
                elif header.kept_by(peer):
                    if ending:
                        snapshot = snapshot or replica.snapshot()
                    self.out.append(Send(peer, JobUpdated(snapshot if ending else delta)))
                else:
                    # A node that only runs the job needs who leads, and its
                    # executions' ends (they stop its resends) and stops; the
                    # whole write would make an ops job on N nodes cost N²
                    # records, and echoing its own progress tells it nothing.
                    if peer in own or news_for_runners:
                        self.out.append(Send(peer, JobUpdated(JobDelta(header, tuple(own.get(peer, ()))))))

    def _targets(self, replica: JobReplica, delta: JobDelta) -> list[str]:
        """Who a write goes to: the holders, and the nodes whose executions
        it ends (they stop resending their final report when they see it)."""
        targets = replica.holders()
        targets.update(e.node_id for e in delta.executions if e.state in _REPORTED_ENDS)
        targets.discard(self.node_id)
        return sorted(t for t in targets if self.is_alive(t))  # the lost catch up when they return

    def _on_write_failed(self, peer: str, message: object) -> None:
        if isinstance(message, (JobUpdated, Records)):
            if not self._unsynced:
                self.set_timer(TimerKey(TimerKind.RESYNC), self.now + self.config.resend_interval)
            for delta in getattr(message, "deltas", None) or (message.delta,):  # type: ignore[union-attr]
                self._unsynced.setdefault(delta.header.id, set()).add(peer)

    def _resync(self, key: TimerKey | None = None) -> None:
        """Send whole records to the live holders a write did not reach."""
        unsynced, self._unsynced = self._unsynced, {}
        for job_id, peers in sorted(unsynced.items()):
            replica = self.jobs.get(job_id)
            if replica is None:
                continue
            holders = replica.holders()
            for peer in sorted(peers):
                if peer in holders and self.membership.is_alive(peer):
                    self.out.append(Send(peer, Records((replica.snapshot(),))))
                elif replica.header.kept_by(peer):
                    self._doubt(job_id, (peer,))

    def keeps(self, replica: JobReplica) -> bool:
        """Whether this node keeps the job's whole record up to date."""
        return replica.header.kept_by(self.node_id)

    def _recent(self) -> list[JobReplica]:
        """The jobs we keep that anti-entropy covers with someone (`_owes`),
        newest first, at most `MAX_DIGEST`: repair is for what was just lost."""
        me = self.node_id
        alive = self.membership.is_alive
        recent = []
        for job_id in sorted(self._kept_live):
            r = self.jobs.get(job_id)
            if r is None or not r.header.kept_by(me):
                self._kept_live.discard(job_id)  # until a merge brings it back
                self._doubted.pop(job_id, None)
            elif not self._settled(r) or any(alive(k) and r.header.kept_by(k) for k in self._doubted.get(job_id, ())):
                recent.append(r)
            elif job_id not in self._doubted:
                self._kept_live.discard(job_id)
        if len(recent) > MAX_DIGEST:
            recent = sorted(recent, key=lambda r: r.header.modify_time, reverse=True)[:MAX_DIGEST]
        return recent

    def _settled(self, replica: JobReplica, slack: float = 0.0) -> bool:
        """Ended more than `recent_window` (and `slack`) ago."""
        header = replica.header
        return header.state.terminal and header.modify_time < self.now - self.config.recent_window - slack

    def _owes(self, replica: JobReplica, peer: str) -> bool:
        """Whether anti-entropy with `peer` covers the job: a live or lately
        ended one with any fellow keeper, an older one with those in doubt."""
        return replica.header.kept_by(peer) and (not self._settled(replica) or peer in self._doubted.get(replica.id, ()))

    def _doubt(self, job_id: str, keepers: Iterable[str]) -> None:
        """Keep the job in our digests with these keepers, ended or not, until
        each shows it holds our record (`_confirm`); while they are down they
        hold nothing up. Bounded: the oldest doubts go first."""
        self._doubted.setdefault(job_id, set()).update(keepers)
        self._kept_live.add(job_id)
        if len(self._doubted) > MAX_DIGEST:
            del self._doubted[next(iter(self._doubted))]

    def _doubt_absent(self, replica: JobReplica) -> None:
        """A write to an ended job cannot reach the keepers that are down."""
        absent = [k for k in replica.header.keepers if not self.is_alive(k)]
        if absent:
            self._doubt(replica.id, absent)

    def _confirm(self, job_id: str, peer: str) -> None:
        doubted = self._doubted.get(job_id)
        if doubted is not None and peer in doubted:
            doubted.discard(peer)
            if not doubted:
                del self._doubted[job_id]

    def _digest(self, peer: str, recent: list[JobReplica]) -> tuple[tuple[str, int, int, int, int], ...]:
        """What we hold of the recent jobs `peer` keeps with us."""
        return tuple(_entry(r) for r in recent if self._owes(r, peer))

    def _on_anti_entropy_timer(self, key: TimerKey) -> None:
        self.set_timer(TimerKey(TimerKind.ANTI_ENTROPY), self.now + self._jittered(self.config.anti_entropy_interval))
        recent = self._recent()
        alive = self.membership.is_alive
        keepers: set[str] = set()
        doubted: set[str] = set()
        for replica in recent:
            header = replica.header
            doubted.update(k for k in self._doubted.get(replica.id, ()) if header.kept_by(k))
            if not self._settled(replica):
                keepers.add(header.leader)
                keepers.add(header.submitter)
                keepers.update(header.successors)
        # One fellow keeper at random; and one in doubt, if any, so that it
        # does not wait for chance to pick it among all the others.
        chosen = []
        for group in (keepers | doubted, doubted):
            peers = sorted(k for k in group if k and k != self.node_id and alive(k))
            if peers:
                chosen.append(self.rng.choice(peers))
        for peer in dict.fromkeys(chosen):
            self.out.append(Send(peer, DigestRequest(self._digest(peer, recent))))
        self.leader.check_leaders()

    def _on_check_in_timer(self, key: TimerKey) -> None:
        self.set_timer(TimerKey(TimerKind.CHECK_IN), self.now + self._jittered(self.config.check_in_interval))
        self.executor.check_in()

    def _on_digest_request(self, sender: str, message: DigestRequest) -> None:
        """Send what the asker lacks, ask for what we lack. Replicas that
        merely differ (a healed split brain) swap both ways: merging is
        idempotent, so sending too much costs bytes, never correctness.
        A long-ended job comes only from a keeper that doubts we hold it:
        if we do, we say so (`matched`)."""
        newer: list[JobDelta] = []
        wanted: list[str] = []
        matched: list[tuple[str, int, int, int, int]] = []
        theirs = set()
        for entry in message.digest[:MAX_DIGEST]:
            job_id, finality, epoch, revision, fingerprint = entry
            theirs.add(job_id)
            replica = self.jobs.get(job_id)
            if replica is None:
                wanted.append(job_id)
                continue
            ours = (replica.header.version_key, replica.fingerprint())
            other = ((finality, epoch, revision), fingerprint)
            if ours == other:
                self._confirm(job_id, sender)
                if self._settled(replica, slack=self.config.anti_entropy_interval):
                    matched.append(entry)  # so old that it was sent only out of doubt
                continue
            if not (ours[0] >= other[0] and ours[1] >= other[1]):
                wanted.append(job_id)
            if not (other[0] >= ours[0] and other[1] >= ours[1]):
                newer.append(replica.snapshot())
        for replica in self._recent():
            if replica.id not in theirs and self._owes(replica, sender):
                newer.append(replica.snapshot())
        first = _batches(newer)[0] if newer else ()  # the rest goes in later rounds
        if first or wanted or matched:
            self.out.append(Send(sender, DigestReply(first, tuple(wanted[:MAX_DIGEST]), tuple(matched))))

    def _on_digest_reply(self, sender: str, message: DigestReply) -> None:
        for delta in message.deltas:
            self._merge_repair(sender, delta)
        records = [self.jobs[job_id].snapshot() for job_id in message.wanted if job_id in self.jobs]
        for batch in _batches(records):
            self.out.append(Send(sender, Records(batch)))
        for entry in message.matched:
            replica = self.jobs.get(entry[0])
            if replica is not None and _entry(replica) == entry:
                self._confirm(replica.id, sender)

    def _on_records(self, sender: str, message: Records) -> None:
        for delta in message.deltas:
            job_id = delta.header.id
            first = job_id not in self.jobs
            self._merge_repair(sender, delta)
            if first and job_id in self._stops:  # the answer a stop waited for: it names the leader
                self._stop(job_id, *self._stops[job_id])

    def _merge_repair(self, sender: str, delta: JobDelta) -> None:
        """Merge a record repaired by another node. If it taught us something,
        others may lack it too (a healed split brain's other half, say): a
        keeper passes it to the leader, and the leader to every keeper. If
        we knew more than the sender, it gets the merged record back."""
        held = self.jobs.get(delta.header.id)
        before = None if held is None else (held.header, held.fingerprint())
        replica = self._merge(delta)
        if before is None:
            return
        if not self.keeps(replica) and not any(e.node_id == self.node_id for e in replica.executions.values()):
            return  # we merely looked it up: nobody takes a record from us (`protocols.authority`)
        after = (replica.header, replica.fingerprint())
        targets: set[str] = set()
        if after != before:
            leader = replica.header.leader
            targets.update(replica.header.keepers if leader == self.node_id else {leader})
            targets.discard(sender)
        if (delta.executions or delta.events) and after != (delta.header, JobReplica.from_delta(delta).fingerprint()):
            targets.add(sender)  # we knew more than the sender (a header alone says it only holds a copy)
        targets.discard(self.node_id)
        if targets:
            snapshot = replica.snapshot()
            for peer in sorted(targets):
                self.out.append(Send(peer, Records((snapshot,))))

    def _catch_up(self, peer: str) -> None:
        """A keeper came back (or restarted): whatever it missed meanwhile,
        live or long ended, goes to it whole, from the first live keeper of
        each job in the record's order, so one node sends each record."""
        records = []
        for replica in self.jobs.values():
            header = replica.header
            if not header.kept_by(peer) or not header.kept_by(self.node_id):
                continue
            order = (header.leader, *header.successors, header.submitter)
            sender = next((n for n in order if n != peer and self.is_alive(n)), None)
            if sender == self.node_id:
                records.append(replica.snapshot())
        for batch in _batches(records):
            self.out.append(Send(peer, Records(batch)))

    # ------------------------------------------------------------ answering for jobs we do not keep

    def fetch(self, job_id: str, attempt: int = 0) -> None:
        """Ask the job's likely keepers: those it names if we hold a copy,
        and (without one, or when asking again) the top of the rendezvous
        ranking: its keepers, unless the membership changed a lot since it
        was submitted, so each further attempt asks the next few down the
        ranking. A node there that holds a copy answers with its header."""
        replica = self.jobs.get(job_id)
        asked: list[str] = []
        if replica is not None:
            named = [replica.header.leader, *replica.header.successors, replica.header.submitter]
            asked = [n for n in dict.fromkeys(named) if n and n != self.node_id][:FETCH_FROM]
        if replica is None or attempt > 0:  # (the keepers it names may be gone, or their answers lost)
            ranked = election.rank(job_id, self.membership.alive_ids(), k=FETCH_FROM * (attempt + 1) + 1)
            asked += [n for n in ranked if n != self.node_id][FETCH_FROM * attempt : FETCH_FROM * (attempt + 1)]
        for peer in dict.fromkeys(asked):
            self.out.append(Send(peer, RecordRequest(job_id)))

    def _on_record_request(self, sender: str, message: RecordRequest) -> None:
        """A keeper answers with the record; a node that only holds a copy
        (it ran the job, say) with its header, which names the keepers."""
        replica = self.jobs.get(message.job_id)
        if replica is not None:
            answer = replica.snapshot() if self.keeps(replica) else JobDelta(replica.header)
            self.out.append(Send(sender, Records((answer,))))

    # ------------------------------------------------------------ membership

    def _heartbeat(self) -> None:
        info = self.membership.heartbeat(self.now, free=self.free())
        self.out.append(Publish(NODES_TOPIC, info))
        self.set_timer(TimerKey(TimerKind.HEARTBEAT), self.now + self._jittered(info.heartbeat_interval))
        self._schedule_membership_check()

    def _set_engines(self, engines: tuple[str, ...]) -> None:
        """Offer these engines from now on, and tell the network at once."""
        engines = tuple(engines)
        if engines == tuple(self.config.engines):
            return
        self.ctx.config = replace(self.config, engines=engines)
        self.executor.set_engines(engines)
        info = self.membership.heartbeat(self.now, free=self.free(), engines=engines)
        self.out.append(Publish(NODES_TOPIC, info))

    def _set_held(self, cids: tuple[str, ...], held: bool) -> None:
        """Hold (or drop) these root CIDs: announce them to their record
        keepers, and bid for `local` jobs reading them. (Node infos do not
        list them: heartbeats are minutes apart in a large network.)"""
        if held:
            self.providers.provide(cids)
        else:
            self.providers.unprovide(cids)
        self.executor.set_local_data(frozenset(self.config.local_data) | self.providers.provided)

    def _on_heartbeat_timer(self, key: TimerKey) -> None:
        self._heartbeat()

    def _schedule_membership_check(self) -> None:
        at = self.membership.next_check()
        if at != float("inf"):
            self.set_timer(TimerKey(TimerKind.MEMBERSHIP), max(at, self.now))

    def _on_membership_timer(self, key: TimerKey) -> None:
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
            self._catch_up(info.node_id)
            self._welcome(info.node_id)

    def _on_node_left(self, sender: str, message: NodeLeft) -> None:
        if message.node_id != sender:
            return
        change = self.membership.left(message, self.now)
        if change is not None:
            self._on_member_change(change)

    def _on_member_change(self, change: MemberChange) -> None:
        self.executor.doubt()
        if change.status in (MemberStatus.DEAD, MemberStatus.LEFT):
            self.leader.node_lost(change.node_id)
        elif change.status == MemberStatus.ALIVE and change.previous in (None, MemberStatus.DEAD, MemberStatus.LEFT):
            if change.previous is None:
                self._welcome(change.node_id)
            self.leader.node_joined(change.node_id)
            self._catch_up(change.node_id)

    def _welcome(self, node_id: str) -> None:
        """A newcomer (or a node that restarted) knows nobody yet, and
        heartbeats come slowly in a large network: its watchers (the
        members before it on the ring) send it the member list."""
        if node_id not in self.membership.watched(WELCOMERS):
            return
        infos = [info for info in self.membership.alive_infos() if info.node_id != node_id]
        for start in range(0, len(infos), MEMBERS_PER_MESSAGE):
            self.out.append(Send(node_id, Members(tuple(infos[start : start + MEMBERS_PER_MESSAGE]))))

    def _on_members(self, sender: str, message: Members) -> None:
        self.ctx.mark_caught_up()
        for info in message.infos:
            change = self.membership.observe(info, self.now)
            if change is not None and change.previous is None:
                self.leader.node_joined(change.node_id)  # new to us, not to the network: no welcome
            elif change is not None:
                self._on_member_change(change)  # one we held dead is back: it may need records
        self._schedule_membership_check()

    def _on_ping_timer(self, key: TimerKey) -> None:
        late = self.now - self._ping_due  # behind on our work? then slow to judge others
        self._ping_due = self.now + self._jittered(self.config.ping_interval)
        self.set_timer(TimerKey(TimerKind.PING), self._ping_due)
        if self._refutations:
            self._refutations -= 1
            self._heartbeat()
        pings, accusations, changes, requests = self.membership.ping_round(self.now, late)
        for peer, nonce in pings:
            self.out.append(Send(peer, Ping(nonce)))
        for helper, peer, nonce in requests:
            self.out.append(Send(helper, PingReq(peer, nonce)))
        for accusation in accusations:
            self.out.append(Publish(NODES_TOPIC, accusation))
        for change in changes:
            self._on_member_change(change)
        if changes:
            self._schedule_membership_check()

    def _on_ping(self, sender: str, message: Ping) -> None:
        self.out.append(Send(sender, Ack(message.nonce)))

    def _on_ping_req(self, sender: str, message: PingReq) -> None:
        if message.node_id == self.node_id:  # asked to ping ourselves: we are here
            self.out.append(Send(sender, IndirectAck(self.node_id, message.nonce)))
            return
        nonce = self.membership.relay(sender, message.node_id, message.nonce)
        if nonce is not None:
            self.out.append(Send(message.node_id, Ping(nonce)))

    def _on_ack(self, sender: str, message: Ack) -> None:
        relayed = self.membership.relayed(sender, message.nonce)
        if relayed is not None:  # a ping we sent for another watcher
            asker, nonce = relayed
            self.out.append(Send(asker, IndirectAck(sender, nonce)))
            return
        self._acked(sender, message.nonce)

    def _on_indirect_ack(self, sender: str, message: IndirectAck) -> None:
        self._acked(message.node_id, message.nonce)

    def _acked(self, node_id: str, nonce: int) -> None:
        verdict = self.membership.acked(node_id, nonce)
        if verdict is not None:  # it was declared dead while cut off: let it refute
            self.out.append(Send(node_id, verdict))

    def _on_accusation(self, sender: str, message: Suspect | Down) -> None:
        if self.membership.about_us(message):
            # We are here: a newer seq clears the accusation everywhere; said
            # again in the next rounds, as a death is, so loss rarely hides it.
            self._heartbeat()
            self._refutations = REFUTE_REPEATS - 1
            self.membership.refuted()
            self.executor.doubt()  # a leader may have given up on our runs
            return
        if message.node_id == self.node_id:
            # About our life before a restart: the sender missed our return
            # and would hold us dead until our next heartbeat, minutes away
            # in a large network. Tell it who we are now.
            self.out.append(Send(sender, self.membership.local))
            return
        change = self.membership.accused(message, self.now)
        if change is not None:
            self._on_member_change(change)
            self._schedule_membership_check()

    # ------------------------------------------------------------ helpers

    def _jittered(self, interval: float) -> float:
        return interval * (0.9 + 0.2 * self.rng.random())

    def _drain(self) -> list[Effect]:
        return self.ctx.drain()


def _hearing(membership: Membership, handler: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    """`handler`, after telling membership the sender spoke: any message
    from a member shows it alive (see `Membership.heard`)."""
    heard = membership.heard

    def hear_then_handle(sender: str, message: Any) -> None:
        heard(sender)
        handler(sender, message)

    return hear_then_handle


def _entry(replica: JobReplica) -> tuple[str, int, int, int, int]:
    """A job's line in a digest (see `DigestRequest`)."""
    return (replica.header.id, *replica.header.version_key, replica.fingerprint())


def _units(delta: JobDelta) -> int:
    """A record's rough size on the wire, in units of about 256 bytes."""
    return 8 + len(delta.executions) + len(delta.events)


def _batches(deltas: list[JobDelta]) -> list[tuple[JobDelta, ...]]:
    """Whole records in messages of at most `REPAIR_BUDGET` units (a record
    larger than that goes alone)."""
    batches: list[tuple[JobDelta, ...]] = []
    batch: list[JobDelta] = []
    used = 0
    for delta in deltas:
        units = _units(delta)
        if batch and used + units > REPAIR_BUDGET:
            batches.append(tuple(batch))
            batch, used = [], 0
        batch.append(delta)
        used += units
    if batch:
        batches.append(tuple(batch))
    return batches
