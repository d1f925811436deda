"""Replication: a node's copies of the jobs it keeps, and keeping them in step.

Theory of operation
-------------------
A node *keeps* the jobs rendezvous hashing puts in its care (the leader, the
successors and the submitter named in each job's header, see
`protocols.records`): it merges each `JobUpdated` delta, and every so often
swaps digests with a fellow keeper so what was lost is repaired
(anti-entropy); a node asked about a job it does not keep asks the keepers
(`fetch`).

Only a job's leader writes the job (`write`, called by `protocols.leader`
through its context). A write bumps the revision, is applied to the local
replica at once, and is sent coalesced to the job's holders (keepers and the
nodes running it): writes to one job within `flush_interval` leave as one
`JobUpdated`, and a holder new to the job gets the whole record. A write
that could not be delivered goes again, whole, after `resend_interval`
(`on_resync_timer`), and at the next anti-entropy round.

Digests cover live jobs and those ended within `recent_window`; an older one
only with a keeper that may have missed its end (it was down then, or a write
to it was given up), until that keeper shows it holds the same record: a
keeper's return is otherwise mended by one catch-up message (`catch_up`),
which can be lost, or not sent when the node meant to send it did not see
the return. So a job costs a bounded number of messages however large the
network.

Every merge tells the node's leader and executor what changed (a new leader,
an ended job, work the record no longer wants), so they converge on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols import election, lifecycle
from protocols.context import NodeContext
from protocols.events import JobChanged, Received
from protocols.executor import Executor
from protocols.leader import Leader
from protocols.messages import DigestReply, DigestRequest, JobUpdated, RecordRequest, Records, SubmitToLeader
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
from protocols.timers import TimerKey, TimerKind

_REPORTED_ENDS = frozenset({ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED})
REPAIR_BUDGET = 2048  # per repair message, in units of about 256 bytes (see `_units`): well under the wire's limit
MAX_DIGEST = 1024  # jobs per anti-entropy digest
FETCH_FROM = 3  # keepers asked at once about a job this node does not keep


@dataclass(slots=True)
class _PendingWrite:
    """The writes to one job since the last flush, coalesced: one delta goes."""

    sent: JobHeader  # the header as last sent
    header: JobHeader  # the newest
    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    events: list[HistoryEvent] = field(default_factory=list)


class Replication:
    """One node's job replicas: written, merged, sent, repaired."""

    def __init__(
        self,
        ctx: NodeContext,
        jobs: dict[str, JobReplica],
        leader: Leader,
        executor: Executor,
        *,
        learned: Callable[[str], None],
        restored: Iterable[JobDelta] = (),
    ) -> None:
        """`jobs`: the node's replicas, which this object alone changes.
        `learned(job_id)`: a record this node did not hold arrived (the
        answer to a `fetch`)."""
        self.ctx = ctx
        self.node_id = ctx.node_id
        self.jobs = jobs
        self.leader = leader
        self.executor = executor
        self._learned = learned
        self._pending: dict[str, _PendingWrite] = {}  # unsent writes, by job
        self._fresh: dict[str, set[str]] = {}  # holders new to a job: they get it whole
        self._unsynced: dict[str, set[str]] = {}  # holders a write to a job did not reach
        self._kept_live: set[str] = set()  # jobs we keep that are live, ended lately, or in doubt (see `_recent`)
        self._doubted: dict[str, set[str]] = {}  # keepers that may lack an ended job's record (see `_doubt`)
        for delta in restored:
            self.jobs[delta.header.id] = JobReplica.from_delta(delta)
            self._kept_live.add(delta.header.id)

    # ------------------------------------------------------------ writing

    def submitted(self, delta: JobDelta) -> JobReplica:
        """A job created here: hold it, and send it to its successors (the
        leader gets it from `Leader.submitted`)."""
        header = delta.header
        replica = JobReplica.from_delta(delta)
        self.jobs[header.id] = replica
        self._kept_live.add(header.id)
        self.ctx.emit(JobChanged(header.id))
        for keeper in header.successors:
            if keeper != self.node_id:
                self.ctx.emit_send(keeper, JobUpdated(delta))
        return replica

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
        it (coalesced) to the job's holders. A move its lifecycle forbids
        (`protocols.lifecycle`) raises in strict mode, else is left out."""
        executions, events = tuple(executions), tuple(events)
        illegal = _illegal_moves(replica, executions, header_changes.get("state"))
        if illegal:
            executions, events, header_changes = self._without(illegal, executions, events, header_changes)
            if not (executions or events or header_changes):
                return
        header = quick_replace(
            replica.header,
            revision=replica.header.revision + 1,
            modify_time=self.ctx.now,
            **header_changes,
        )
        delta = JobDelta(header, executions, events)
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
        self.ctx.emit(JobChanged(header.id))
        first = not self._pending
        held = self._pending.get(header.id)
        if held is None:
            held = self._pending[header.id] = _PendingWrite(previous, header)
        held.header = header
        for execution in executions:
            held.executions[execution.id] = execution
        held.events.extend(events)
        if urgent:
            self.ctx.set_timer(TimerKey(TimerKind.FLUSH), self.ctx.now)
        elif first:
            self.ctx.set_timer(TimerKey(TimerKind.FLUSH), self.ctx.now + self.ctx.config.flush_interval)

    def _without(
        self,
        illegal: list[tuple[str, str]],
        executions: tuple[ExecutionRecord, ...],
        events: tuple[HistoryEvent, ...],
        header_changes: dict[str, Any],
    ) -> tuple[tuple[ExecutionRecord, ...], tuple[HistoryEvent, ...], dict[str, Any]]:
        """The write less its illegal moves (each execution id, or "" for the
        job's state), each counted with its reason; strict mode raises."""
        if lifecycle.strict():
            raise lifecycle.IllegalMove("; ".join(why for _, why in illegal))
        for _, why in illegal:
            self.ctx.dropped.drop(self.node_id, "write", why)
        dropped = {execution_id for execution_id, _ in illegal}
        executions = tuple(e for e in executions if e.id not in dropped)
        if "" in dropped:  # the job's state: its message and history event go with it
            header_changes = {k: v for k, v in header_changes.items() if k not in ("state", "message")}
            events = tuple(e for e in events if e.kind != "JobStateChanged")
        events = tuple(e for e in events if not e.execution_id or e.execution_id not in dropped)
        return executions, events, header_changes

    def note_own(self, record: ExecutionRecord) -> None:
        """Put a run we start into our own copy of its job (a runner's copy
        is not sent its progress; the leader's records of the run win any
        merge, and this one beats the ask of a leader that restarted having
        forgotten it decided the round), so after a restart we know what
        died with us (`Executor.resume`)."""
        replica = self.jobs.get(record.job_id)
        if replica is not None and replica.apply(JobDelta(replica.header, (record,))):
            self.ctx.emit(JobChanged(record.job_id))

    def merge_header(self, header: JobHeader) -> None:
        """Learn of a job from an ask before its announcement arrived."""
        self.merge(JobDelta(header))

    def merge(self, delta: JobDelta) -> JobReplica:
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
            self.ctx.emit(JobChanged(job_id))
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

    def on_job_updated(self, sender: str, message: JobUpdated) -> None:
        held = self.jobs.get(message.delta.header.id)
        if held is not None and message.delta.header.epoch < held.header.epoch:
            # A deposed leader's write (a healed split): what it teaches us,
            # the leader and the other keepers may lack too.
            self._merge_repair(sender, message.delta)
            return
        replica = self.merge(message.delta)
        if replica.header.state.terminal and self.keeps(replica):
            self._doubt_absent(replica)  # so the leader's doubts do not die with it

    def on_flush_timer(self, key: TimerKey) -> None:
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
                    self.ctx.emit_send(peer, Records((snapshot,)))
                elif header.kept_by(peer):
                    if ending:
                        snapshot = snapshot or replica.snapshot()
                    self.ctx.emit_send(peer, JobUpdated(snapshot if ending else delta))
                else:
                    # A node that only runs the job needs who leads, and its
                    # executions' ends (they stop its resends) and stops; the
                    # whole write would make an ops job on N nodes cost N²
                    # records, and echoing its own progress tells it nothing.
                    if peer in own or news_for_runners:
                        self.ctx.emit_send(peer, JobUpdated(JobDelta(header, tuple(own.get(peer, ())))))

    def _targets(self, replica: JobReplica, delta: JobDelta) -> list[str]:
        """Who a write goes to: the holders, and the nodes whose executions
        it ends (they stop resending their final report when they see it)."""
        targets = replica.holders()
        targets.update(e.node_id for e in delta.executions if e.state in _REPORTED_ENDS)
        targets.discard(self.node_id)
        return sorted(t for t in targets if self.ctx.is_alive(t))  # the lost catch up when they return

    # ------------------------------------------------------------ writes that did not go through

    def on_send_failed(self, peer: str, message: object) -> None:
        """A write, or a repair answering a peer's older copy, that did not
        get through is sent again, whole, to a peer still alive: a repair lost
        on its way to a node across a healed split would otherwise wait for
        anti-entropy to pick that node, while its orphaned run goes on."""
        if isinstance(message, (JobUpdated, Records, DigestReply)):
            deltas = (message.delta,) if isinstance(message, JobUpdated) else message.deltas
            if deltas and not self._unsynced:
                self.ctx.set_timer(TimerKey(TimerKind.RESYNC), self.ctx.now + self.ctx.config.resend_interval)
            for delta in deltas:
                self._unsynced.setdefault(delta.header.id, set()).add(peer)

    def on_resync_timer(self, key: TimerKey) -> None:
        """Send whole records to the live peers a write or repair did not reach."""
        unsynced, self._unsynced = self._unsynced, {}
        for job_id, peers in sorted(unsynced.items()):
            replica = self.jobs.get(job_id)
            if replica is None:
                continue
            for peer in sorted(peers):
                if self.ctx.is_alive(peer):
                    self.ctx.emit_send(peer, Records((replica.snapshot(),)))
                elif replica.header.kept_by(peer):
                    self._doubt(job_id, (peer,))

    # ------------------------------------------------------------ anti-entropy

    def keeps(self, replica: JobReplica) -> bool:
        """Whether this node keeps the job's whole record up to date."""
        return replica.header.kept_by(self.node_id)

    def _recent(self) -> list[JobReplica]:
        """The jobs we keep that anti-entropy covers with someone (`_owes`),
        newest first, at most `MAX_DIGEST`: repair is for what was just lost."""
        me = self.node_id
        alive = self.ctx.is_alive
        jobs, doubted = self.jobs, self._doubted
        settled_before = self._settled_before()  # (`_settled`, its bound asked once)
        recent = []
        for job_id in sorted(self._kept_live):
            r = jobs.get(job_id)
            if r is None or not r.header.kept_by(me):
                self._kept_live.discard(job_id)  # until a merge brings it back
                doubted.pop(job_id, None)
            elif not (r.header.state.terminal and r.header.modify_time < settled_before) or any(
                alive(k) and r.header.kept_by(k) for k in doubted.get(job_id, ())
            ):
                recent.append(r)
            elif job_id not in doubted:
                self._kept_live.discard(job_id)
        if len(recent) > MAX_DIGEST:
            recent = sorted(recent, key=lambda r: r.header.modify_time, reverse=True)[:MAX_DIGEST]
        return recent

    def _settled(self, replica: JobReplica, slack: float = 0.0) -> bool:
        """Ended more than `recent_window` (and `slack`) ago."""
        header = replica.header
        return header.state.terminal and header.modify_time < self._settled_before(slack)

    def _settled_before(self, slack: float = 0.0) -> float:
        """An ended job last written before this time is settled (`_settled`)."""
        return self.ctx.now - self.ctx.config.recent_window - slack

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
        absent = [k for k in replica.header.keepers if not self.ctx.is_alive(k)]
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

    def on_anti_entropy_timer(self, key: TimerKey) -> None:
        self.ctx.set_timer(TimerKey(TimerKind.ANTI_ENTROPY), self.ctx.now + self.ctx.jittered(self.ctx.config.anti_entropy_interval))
        recent = self._recent()
        alive = self.ctx.is_alive
        settled_before = self._settled_before()  # (`_settled`, its bound asked once)
        keepers: set[str] = set()
        doubted: set[str] = set()
        for replica in recent:
            header = replica.header
            in_doubt = self._doubted.get(header.id)
            if in_doubt:
                doubted.update(k for k in in_doubt if header.kept_by(k))
            if not (header.state.terminal and header.modify_time < settled_before):
                keepers.add(header.leader)
                keepers.add(header.submitter)
                keepers.update(header.successors)
        # One fellow keeper at random; and one in doubt, if any, so that it
        # does not wait for chance to pick it among all the others.
        chosen = []
        for group in (keepers | doubted, doubted):
            peers = sorted(k for k in group if k and k != self.node_id and alive(k))
            if peers:
                chosen.append(self.ctx.rng.choice(peers))
        for peer in dict.fromkeys(chosen):
            self.ctx.emit_send(peer, DigestRequest(self._digest(peer, recent)))

    def on_digest_request(self, sender: str, message: DigestRequest) -> None:
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
                if self._settled(replica, slack=self.ctx.config.anti_entropy_interval):
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
            self.ctx.emit_send(sender, DigestReply(first, tuple(wanted[:MAX_DIGEST]), tuple(matched)))

    def on_digest_reply(self, sender: str, message: DigestReply) -> None:
        for delta in message.deltas:
            self._merge_repair(sender, delta)
        records = [self.jobs[job_id].snapshot() for job_id in message.wanted if job_id in self.jobs]
        for batch in _batches(records):
            self.ctx.emit_send(sender, Records(batch))
        for entry in message.matched:
            replica = self.jobs.get(entry[0])
            if replica is not None and _entry(replica) == entry:
                self._confirm(replica.id, sender)

    def on_records(self, sender: str, message: Records) -> None:
        for delta in message.deltas:
            job_id = delta.header.id
            first = job_id not in self.jobs
            self._merge_repair(sender, delta)
            if first:
                self._learned(job_id)  # (a stop may have waited for it: see `Node._on_learned`)

    def _merge_repair(self, sender: str, delta: JobDelta) -> None:
        """Merge a record repaired by another node. If it taught us something,
        others may lack it too (a healed split brain's other half, say): a
        keeper passes it to the leader, and the leader to every keeper. If
        we knew more than the sender, it gets the merged record back."""
        held = self.jobs.get(delta.header.id)
        before = None if held is None else (held.header, held.fingerprint())
        replica = self.merge(delta)
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
                self.ctx.emit_send(peer, Records((snapshot,)))

    def catch_up(self, peer: str) -> None:
        """A keeper came back (or restarted): whatever it missed meanwhile,
        live or long ended, goes to it whole, from the first live keeper of
        each job in the record's order, so one node sends each record."""
        records = []
        for replica in self.jobs.values():
            header = replica.header
            if not header.kept_by(peer) or not header.kept_by(self.node_id):
                continue
            order = (header.leader, *header.successors, header.submitter)
            sender = next((n for n in order if n != peer and self.ctx.is_alive(n)), None)
            if sender == self.node_id:
                records.append(replica.snapshot())
        for batch in _batches(records):
            self.ctx.emit_send(peer, Records(batch))

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
            ranked = election.rank(job_id, self.ctx.alive_ids(), k=FETCH_FROM * (attempt + 1) + 1)
            asked += [n for n in ranked if n != self.node_id][FETCH_FROM * attempt : FETCH_FROM * (attempt + 1)]
        for peer in dict.fromkeys(asked):
            self.ctx.emit_send(peer, RecordRequest(job_id))

    def on_record_request(self, sender: str, message: RecordRequest) -> None:
        """A keeper answers with the record; a node that only holds a copy
        (it ran the job, say) with its header, which names the keepers."""
        replica = self.jobs.get(message.job_id)
        if replica is not None:
            answer = replica.snapshot() if self.keeps(replica) else JobDelta(replica.header)
            self.ctx.emit_send(sender, Records((answer,)))


def handed_over(message: object) -> str | None:
    """The job whose record a message, once delivered, puts in the peer's
    hands (so a submit may be answered: a node that dies right after its
    client was answered cannot lose the job); None for other messages."""
    if type(message) in HANDING_OVER:
        return message.delta.header.id  # type: ignore[attr-defined]
    return None


HANDING_OVER: frozenset[type] = frozenset({JobUpdated, SubmitToLeader})
"""The kinds of message that may hand a job over (`handed_over`): a driver
asks `awaited_hand_over` of these alone, as it is asked of every input."""


def awaited_hand_over(node_id: str, jobs: Mapping[str, JobReplica], event: object) -> tuple[str, str] | None:
    """(sender, job) when `event` hands this node a job whose submitter waits
    to hear it is saved: a `SubmitToLeader` (sent once, or again when it did
    not go through), or a write of a job the node holds no copy of yet (a new
    job's successors). Asked before the node handles the event; a driver
    saves such a job at once, and the real node answers it only then
    (`p2pnode.handover`)."""
    if type(event) is not Received or event.sender == node_id:
        return None
    job_id = handed_over(event.message)
    if job_id is None or (not isinstance(event.message, SubmitToLeader) and job_id in jobs):
        return None
    return event.sender, job_id


def _illegal_moves(
    replica: JobReplica, executions: tuple[ExecutionRecord, ...], state: JobState | None
) -> list[tuple[str, str]]:
    """The moves of a write its lifecycles forbid: (execution id, or "" for
    the job, and why)."""
    illegal = []
    if state is not None:
        why = lifecycle.job_move(replica.header.state, state)
        if why is not None:
            illegal.append(("", f"job {replica.id}: {why}"))
    held = replica.executions
    for execution in executions:
        old = held.get(execution.id)
        if old is None:
            if execution.state != ExecutionState.ASK_FOR_BID:
                illegal.append((execution.id, f"execution {execution.id} may not start in {execution.state}"))
            continue
        why = lifecycle.execution_move(old.state, execution.state)
        if why is not None:
            illegal.append((execution.id, f"execution {execution.id}: {why}"))
    return illegal


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
