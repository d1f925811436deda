"""The executor's side: bid for work, run what is won, report to the leader.

Theory of operation
-------------------
An ask for a bid goes through the node's selection policy
(`protocols.selection`); probes are effects the driver runs and answers. A
bid holds the job's resources until the leader decides, or `bid_hold` passes.
A won bid becomes a `StartExecution`; TotalTimeout is a timer here, so it
holds whatever the engine does.

The executor obeys only the newest leader it has heard of (the highest epoch)
and reports every state change to it. A report that cannot be delivered is
retried, to whoever leads the job by then, until the replicated record shows
the leader has it; running work checks in with the leader after anything
that may have cut it off from the record (a membership change, an accusation
of this node, a report that did not go through), and rarely otherwise. And
the executor converges on the record: work the record says should stop (the
job ended, or the leader gave the partition to someone else while we were cut
off) is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from protocols import selection
from protocols.context import NodeContext
from protocols.lifecycle import BidStage
from protocols.quickinit import quick_replace
from protocols.events import ProbeVerdict, RunProbe, StartExecution, StopExecution
from protocols.jobtypes import policy_for
from protocols.messages import (
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    Capacity,
    ExecutionUpdate,
    LeaderChanged,
    RoomFreed,
)
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionResult,
    ExecutionState,
    JobHeader,
    JobReplica,
)
from protocols.timers import TimerHandler, TimerKey, TimerKind

MAX_RESENDS = 100
HOLDS_REMEMBERED = 256  # held bids remembered, decided or not (the newest)
ROOM_WAITS = 256  # daemons remembered as waiting for room here, the newest
ROOM_MEMORY = 600.0  # seconds one is remembered (its leader asks again anyway, rarely)
CALM_CHECK_INS = 10  # with nothing to doubt, running work checks in once in this many rounds
DOUBTFUL_CHECK_INS = 3  # rounds that go out after a doubt (a reply to the first may be lost)


@dataclass(frozen=True, slots=True)
class HeldBid:
    """A bid a probe held ("shouldWait") for the node's operator to decide.
    `outcome` is empty while it is held, then approved, rejected, expired
    or cancelled (the job went away first)."""

    execution_id: str
    job_id: str
    job_name: str
    reason: str
    since: float
    outcome: str = ""


@dataclass(slots=True)
class _Local:
    """Work this node has bid for or runs."""

    execution_id: str
    header: JobHeader  # as the asking leader sent it
    leader: str
    epoch: int
    stage: BidStage  # see `protocols.lifecycle.BID_MOVES`
    reserved: bool = False
    probe_kind: str = ""
    probe_document: dict[str, Any] | None = None
    state: ExecutionState = ExecutionState.ASK_FOR_BID
    partition: int = -1  # what it runs as, once started

    @property
    def job_id(self) -> str:
        return self.header.id


class Executor:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.local: dict[str, _Local] = {}
        self._by_job: dict[str, dict[str, _Local]] = {}  # `local`, by job: merges look here
        # Final reports not yet seen in the record, with how often they went.
        self._unconfirmed: dict[str, tuple[ExecutionUpdate, int]] = {}
        config = ctx.config
        self._view = selection.LocalNode(
            node_id=config.node_id,
            labels=dict(config.labels),
            free=config.capacity,
            engines=frozenset(config.engines),
            publishers=frozenset(config.publishers),
            storages=frozenset(config.storages),
            local_data=frozenset(config.local_data),
        )
        self._free = config.capacity
        # Daemons declined only for want of room, by job: (when, header).
        # Their leaders hear when room frees (`_offer_room`).
        self._wanting_room: dict[str, tuple[float, JobHeader]] = {}
        self.holds: dict[str, HeldBid] = {}  # bids held for the operator, by execution
        self._doubtful = DOUBTFUL_CHECK_INS  # check-in rounds still to go out (see `doubt`)
        self._calm_rounds = 0

    def timers(self) -> dict[TimerKind, TimerHandler]:
        return {
            TimerKind.BID_HOLD: self._on_bid_hold,
            TimerKind.PROBE: self._on_probe_timeout,
            TimerKind.TOTAL_TIMEOUT: self._on_total_timeout,
            TimerKind.RESEND: self._on_resend,
        }

    def free(self) -> Capacity:
        return self._free

    # ------------------------------------------------------------ bidding

    def on_ask_bid(self, sender: str, ask: AskBid) -> None:
        header = ask.header
        if sender != header.leader or ask.execution_id in self.local:
            self.ctx.drop(sender, ask, "not from the job's leader, or asked twice")
            return
        replica = self.ctx.jobs.get(header.id)
        if replica is not None and replica.header.epoch > header.epoch:
            self.ctx.drop(sender, ask, "from a deposed leader")
            return
        local = _Local(ask.execution_id, header, sender, header.epoch, BidStage.PROBING)
        decision = selection.decide(self.ctx.config.policy, self._current_view(), header.id, header.spec)
        if replica is None and not isinstance(decision, selection.Decline):
            self.ctx.merge_header(header)  # a node that may run it keeps a copy; one that says no, none
        self._follow(local, decision)

    def on_probe_answered(self, execution_id: str, verdict: ProbeVerdict) -> None:
        local = self.local.get(execution_id)
        if local is None or local.stage != BidStage.PROBING:
            return
        if verdict.wait:
            if execution_id not in self.holds:
                header = local.header
                self._remember_hold(HeldBid(execution_id, header.id, header.name, verdict.reason, self.ctx.now))
                self.ctx.set_timer(TimerKey(TimerKind.PROBE, execution_id), self.ctx.now + self.ctx.config.probe_wait_timeout)
            return
        if self._settle_hold(execution_id, "approved" if verdict.bid else f"rejected: {verdict.reason}") and not verdict.bid:
            self._follow(local, selection.Decline(f"the node's operator rejected the bid: {verdict.reason}"))
            return
        decision = selection.after_probe(self.ctx.config.policy, local.probe_kind, verdict, local.probe_document)
        self._follow(local, decision)

    def _follow(self, local: _Local, decision: selection.Decision) -> None:
        ctx = self.ctx
        match decision:
            case selection.Probe(kind, target, document):
                local.probe_kind, local.probe_document = kind, document
                self._hold(local)
                ctx.emit(RunProbe(local.execution_id, kind, target, document))
                ctx.set_timer(TimerKey(TimerKind.PROBE, local.execution_id), ctx.now + ctx.config.probe_timeout)
            case selection.Decline(reason):
                self._drop(local)
                r = local.header.spec.task.resources
                busy = not self._free.covers(r.cpu, r.memory, r.disk, r.gpu)
                if busy and policy_for(local.header.spec).keeps_looking:  # (daemons: see `RoomFreed`)
                    self._wait_for_room(local.header)
                ctx.emit_send(
                    local.leader, BidReply(local.job_id, local.execution_id, local.epoch, False, reason, busy, self._free)
                )
            case selection.Accept():
                resources = local.header.spec.task.resources
                if not self._free.covers(resources.cpu, resources.memory, resources.disk, resources.gpu):
                    self._follow(local, selection.Decline("resources were taken by other work meanwhile"))
                    return
                local.stage = BidStage.BID
                local.state = ExecutionState.ASK_FOR_BID_ACCEPTED
                self._hold(local)
                self._reserve(local)
                ctx.cancel_timer(TimerKey(TimerKind.PROBE, local.execution_id))
                ctx.set_timer(TimerKey(TimerKind.BID_HOLD, local.execution_id), ctx.now + ctx.config.bid_hold)
                ctx.emit_send(
                    local.leader, BidReply(local.job_id, local.execution_id, local.epoch, True, "bid", free=self._free)
                )

    def _on_probe_timeout(self, key: TimerKey) -> None:
        local = self.local.get(key.subject)
        if local is not None and local.stage == BidStage.PROBING:
            if self._settle_hold(local.execution_id, "expired"):
                wait = self.ctx.config.probe_wait_timeout
                self._follow(local, selection.Decline(f"the bid was held for the operator, who did not decide within {wait:g} s"))
                return
            self._follow(local, selection.Decline("the job selection probe did not answer in time"))

    def _remember_hold(self, hold: HeldBid) -> None:
        self.holds[hold.execution_id] = hold
        if len(self.holds) > HOLDS_REMEMBERED:
            oldest = next((key for key, held in self.holds.items() if held.outcome), None)
            if oldest is not None:
                del self.holds[oldest]

    def _settle_hold(self, execution_id: str, outcome: str) -> bool:
        """Record how a held bid ended; False if it was not held."""
        held = self.holds.get(execution_id)
        if held is None or held.outcome:
            return False
        self.holds[execution_id] = replace(held, outcome=outcome)
        return True

    def _on_bid_hold(self, key: TimerKey) -> None:
        local = self.local.get(key.subject)
        if local is not None and local.stage == BidStage.BID:
            self._drop(local)  # the leader never decided: free the resources

    def on_bid_decision(self, sender: str, decision: BidDecision) -> None:
        local = self.local.get(decision.execution_id)
        if local is None and decision.accepted and decision.execution_id in self._unconfirmed:
            update, _ = self._unconfirmed[decision.execution_id]
            self.ctx.emit_send(sender, replace(update, epoch=decision.epoch))  # it ran already: here is how it ended
            return
        if local is None and decision.accepted:
            # We let the bid go (bid_hold passed): say so, or the leader waits.
            update = ExecutionUpdate(decision.job_id, decision.execution_id, decision.epoch, ExecutionState.FAILED,
                                     "the bid expired before it was accepted")
            self.ctx.emit_send(sender, update)
            return
        if local is None or local.stage == BidStage.RUNNING or decision.epoch < local.epoch:
            self.ctx.drop(sender, decision, "for no bid held here, or stale")
            return
        if decision.accepted and decision.epoch < self._newest_epoch(decision.job_id):
            # Fencing: a leader deposed since it asked would place work its
            # successor may place again. The bid stays held: the current
            # leader confirms it (`Succession._nudge_accepted`), or it expires.
            self.ctx.drop(sender, decision, "from a leader deposed since it asked")
            return
        ctx = self.ctx
        ctx.cancel_timer(TimerKey(TimerKind.BID_HOLD, local.execution_id))
        if not decision.accepted:
            self._drop(local)
            return
        local.leader, local.epoch, local.stage, local.partition = sender, decision.epoch, BidStage.RUNNING, decision.partition
        header = local.header
        record = ExecutionRecord(
            id=local.execution_id,
            job_id=header.id,
            node_id=ctx.node_id,
            partition=decision.partition,
            state=ExecutionState.RUNNING,
            desired=DesiredState.RUNNING,
            epoch=decision.epoch,
            revision=0,
            create_time=ctx.now,
            modify_time=ctx.now,
        )
        ctx.emit(StartExecution(record, header))
        ctx.note_own(record)
        timeout = header.spec.task.timeouts.total_timeout
        if timeout > 0:
            ctx.set_timer(TimerKey(TimerKind.TOTAL_TIMEOUT, local.execution_id), ctx.now + timeout)
        self._report(local, ExecutionState.RUNNING, "started")

    # ------------------------------------------------------------ running

    def on_progress(self, execution_id: str, state: ExecutionState, message: str) -> None:
        local = self.local.get(execution_id)
        if local is not None and local.stage == BidStage.RUNNING and not state.terminal:
            self._report(local, state, message)

    def on_ended(self, execution_id: str, ok: bool, result: ExecutionResult, message: str) -> None:
        local = self.local.get(execution_id)
        if local is None or local.stage != BidStage.RUNNING:
            return
        state = ExecutionState.COMPLETED if ok else ExecutionState.FAILED
        self._end(local, state, message or ("completed" if ok else result.error or "failed"), result)

    def _on_total_timeout(self, key: TimerKey) -> None:
        local = self.local.get(key.subject)
        if local is None or local.stage != BidStage.RUNNING:
            return
        timeout = local.header.spec.task.timeouts.total_timeout
        why = f"execution exceeded its TotalTimeout of {timeout} s"
        self.ctx.emit(StopExecution(local.execution_id, why))
        self._end(local, ExecutionState.FAILED, why, ExecutionResult(exit_code=-1, error=why, job_fault=True))

    def on_cancel(self, sender: str, cancel: CancelExecution) -> None:
        local = self.local.get(cancel.execution_id)
        if local is None or cancel.epoch < local.epoch:
            self.ctx.drop(sender, cancel, "for no execution here, or from a deposed leader")
            return
        self._cancel(local, cancel.reason)

    def _cancel(self, local: _Local, reason: str) -> None:
        if local.stage == BidStage.RUNNING:
            self.ctx.emit(StopExecution(local.execution_id, reason))
            self._end(local, ExecutionState.CANCELLED, reason, None)
        else:
            self._drop(local)

    def _end(self, local: _Local, state: ExecutionState, message: str, result: ExecutionResult | None) -> None:
        self.ctx.cancel_timer(TimerKey(TimerKind.TOTAL_TIMEOUT, local.execution_id))
        self._drop(local)
        self._report(local, state, message, result)
        update = ExecutionUpdate(local.job_id, local.execution_id, local.epoch, state, message, result, local.partition)
        self._unconfirmed[local.execution_id] = (update, 0)
        self._arm_resend(local.execution_id)

    # ------------------------------------------------------------ following the leader

    def on_leader_changed(self, sender: str, change: LeaderChanged) -> None:
        if sender != change.leader:
            self.ctx.drop(sender, change, "names another node as leader")
            return
        for local in self._of_job(change.job_id):
            if change.epoch > local.epoch:
                local.leader, local.epoch = change.leader, change.epoch
                if local.stage == BidStage.RUNNING:
                    self._report(local, local.state, "reporting to the new leader")

    def reconcile(self, replica: JobReplica) -> None:
        """Converge on the replicated record: follow a new leader, stop work
        the record no longer wants."""
        header = replica.header
        for local in self._of_job(header.id):
            if header.epoch > local.epoch and header.leader != local.leader:
                local.leader, local.epoch = header.leader, header.epoch
                if local.stage == BidStage.RUNNING:
                    self._report(local, local.state, "reporting to the new leader")
            # The merged record is the one truth every replica reaches (an
            # ended execution stays ended), so obey it whoever wrote it.
            record = replica.executions.get(local.execution_id)
            unwanted = header.state.terminal or (
                record is not None and (record.desired == DesiredState.STOPPED or record.state.terminal)
            )
            if unwanted:
                self._cancel(local, "the job's record no longer wants this execution")

    def resume(self) -> None:
        """After a restart, work we ran died with the process: say so, until
        the record shows it (the leader we knew may be gone: nothing else
        would tell its successor that the run ended)."""
        ctx = self.ctx
        for replica in ctx.jobs.values():
            for record in replica.executions.values():
                if record.node_id == ctx.node_id and (record.state.active or record.state == ExecutionState.ASK_FOR_BID_ACCEPTED):
                    update = ExecutionUpdate(
                        replica.id, record.id, replica.header.epoch, ExecutionState.FAILED, "the node restarted", None
                    )
                    ctx.emit_send(replica.header.leader, update)
                    self._unconfirmed[record.id] = (update, 0)
                    self._arm_resend(record.id)

    def doubt(self) -> None:
        """Something happened that can part a run from its record (a member
        came or went, this node was accused, a report was lost): the next
        `DOUBTFUL_CHECK_INS` check-in rounds go out (a reply may be lost too)."""
        self._doubtful = DOUBTFUL_CHECK_INS

    def check_in(self) -> None:
        """Tell the leader what we still run. Nodes running a job do not keep
        its record, so this is how a run the record gave up on (its node was
        cut off) hears of it: the leader cancels it, or a deposed leader sends
        the record that names its successor. A record gives up on a run only
        when the membership moves, which this node sees too (`doubt`); in a
        calm network a round goes out only once in `CALM_CHECK_INS`."""
        if self._doubtful:
            self._doubtful -= 1
        elif self._calm_rounds < CALM_CHECK_INS - 1:
            self._calm_rounds += 1
            return
        self._calm_rounds = 0
        for local in sorted(self.local.values(), key=lambda local: local.execution_id):
            if local.stage == BidStage.RUNNING:
                update = ExecutionUpdate(
                    local.job_id, local.execution_id, local.epoch, local.state, "still running", partition=local.partition
                )
                self.ctx.emit_send(local.leader, update)

    def on_send_failed(self, peer: str, message: object, reason: str) -> None:
        if not isinstance(message, ExecutionUpdate):
            return
        self.doubt()
        if message.execution_id in self._unconfirmed:
            self._arm_resend(message.execution_id)
        if message.execution_id in self._unconfirmed or message.execution_id in self.local:
            self.ctx.fetch(message.job_id)  # who leads it now?

    def _arm_resend(self, execution_id: str) -> None:
        self.ctx.set_timer(TimerKey(TimerKind.RESEND, execution_id), self.ctx.now + self.ctx.config.resend_interval)

    def _on_resend(self, key: TimerKey) -> None:
        """An ended execution's report goes again, to whoever leads the job
        now, until the record shows the leader has it."""
        held = self._unconfirmed.get(key.subject)
        if held is None:
            return
        update, attempts = held
        replica = self.ctx.jobs.get(update.job_id)
        record = replica.executions.get(update.execution_id) if replica is not None else None
        if replica is None or attempts >= MAX_RESENDS or (record is not None and record.state.terminal):
            del self._unconfirmed[update.execution_id]
            return
        self._unconfirmed[update.execution_id] = (update, attempts + 1)
        self.ctx.emit_send(replica.header.leader, replace(update, epoch=replica.header.epoch))
        self._arm_resend(update.execution_id)

    # ------------------------------------------------------------ helpers

    def _report(
        self, local: _Local, state: ExecutionState, message: str, result: ExecutionResult | None = None
    ) -> None:
        local.state = state
        self.ctx.emit_send(
            local.leader,
            ExecutionUpdate(local.job_id, local.execution_id, local.epoch, state, message, result, local.partition),
        )

    def follows(self, job_id: str, node_id: str) -> bool:
        """Whether our work on the job reports to `node_id` (so its answer,
        a record, is one we asked for)."""
        return any(local.leader == node_id for local in self._by_job.get(job_id, {}).values())

    def _newest_epoch(self, job_id: str) -> int:
        """The newest epoch of the job this node has heard of: its copy of the
        record, and any ask or leader change of it (a newer leader's ask may
        come before its write does)."""
        replica = self.ctx.jobs.get(job_id)
        epochs = [local.epoch for local in self._of_job(job_id)]
        if replica is not None:
            epochs.append(replica.header.epoch)
        return max(epochs, default=0)

    def _of_job(self, job_id: str) -> list[_Local]:
        return list(self._by_job.get(job_id, {}).values())

    def set_engines(self, engines: tuple[str, ...]) -> None:
        """Bid with these engines from now on (runs under way go on)."""
        self._view = replace(self._view, engines=frozenset(engines))

    def set_local_data(self, local_data: frozenset[str]) -> None:
        """Bid for `local` jobs reading these CIDs and paths from now on."""
        self._view = replace(self._view, local_data=local_data)

    def _current_view(self) -> selection.LocalNode:
        if self._view.free is not self._free:
            self._view = _with_free(self._view, self._free)
        return self._view

    def _reserve(self, local: _Local) -> None:
        if not local.reserved:
            r = local.header.spec.task.resources
            self._free = self._free.minus(r.cpu, r.memory, r.disk, r.gpu)
            local.reserved = True

    def _drop(self, local: _Local) -> None:
        self._settle_hold(local.execution_id, "cancelled")
        if local.reserved:
            r = local.header.spec.task.resources
            self._free = self._free.plus(r.cpu, r.memory, r.disk, r.gpu)
            local.reserved = False
            if self._wanting_room:
                self._offer_room()
        self.local.pop(local.execution_id, None)
        of_job = self._by_job.get(local.job_id)
        if of_job is not None:
            of_job.pop(local.execution_id, None)
            if not of_job:
                del self._by_job[local.job_id]

    def _wait_for_room(self, header: JobHeader) -> None:
        self._wanting_room.pop(header.id, None)
        self._wanting_room[header.id] = (self.ctx.now, header)
        if len(self._wanting_room) > ROOM_WAITS:
            del self._wanting_room[next(iter(self._wanting_room))]

    def _offer_room(self) -> None:
        """Room freed: tell the leaders of the daemons we turned away for
        want of it, the most important first, as many as it fits (each
        leader asks again, and we bid then)."""
        ctx = self.ctx
        room = self._free
        forgotten = ctx.now - ROOM_MEMORY
        waiting = sorted(self._wanting_room.items(), key=lambda item: (-item[1][1].spec.priority, item[1][0], item[0]))
        for job_id, (since, header) in waiting:
            r = header.spec.task.resources
            if since < forgotten:
                del self._wanting_room[job_id]
            elif room.covers(r.cpu, r.memory, r.disk, r.gpu):
                room = room.minus(r.cpu, r.memory, r.disk, r.gpu)
                del self._wanting_room[job_id]
                replica = ctx.jobs.get(job_id)
                current = header if replica is None else replica.header
                if not current.state.terminal:
                    ctx.emit_send(current.leader, RoomFreed(job_id, self._free))

    def _hold(self, local: _Local) -> None:
        self.local[local.execution_id] = local
        self._by_job.setdefault(local.job_id, {})[local.execution_id] = local


def _with_free(view: selection.LocalNode, free: Capacity) -> selection.LocalNode:
    return quick_replace(view, free=free)
