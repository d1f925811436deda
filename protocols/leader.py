"""The leader's side of a job: place the work, keep it placed, end the job.

Theory of operation
-------------------
A leader keeps almost no state of its own: what it knows of a job is in the
replicated record, so the next leader resumes from the same record after a
failover. Scheduling is one idempotent step, `_schedule`, taken whenever
anything that matters changes (a bid, an execution update, a node lost or
joined, a timer). It reads the record and does what is next:

1. fail work on lost nodes, when the caller names them (a merge or a
   takeover may bring work on nodes gone meanwhile; a node seen lost fails
   its work at once, `node_lost`); the failures go to the job's policy;
2. a round of asks is open (executions in AskForBid): let it close
   (`protocols.bidding`);
3. cancel surplus work (two executions of one batch partition, more service
   replicas than Count: both appear when a partition heals and two leaders'
   writes merge), so the invariants hold once the network settles;
4. the job is done (every batch partition completed, every ops execution
   ended): finish it;
5. work is missing (a batch partition, a service replica, a matching daemon
   node without its execution): ask the next candidates; nobody fits: queue
   (batch with QueueTimeout), wait (service, daemon, work still running) or
   fail, saying why no node fits.

Where the four job types differ — slots, done, nothing fits, retries — the
step asks the job's policy (`protocols.jobtypes`), so each type's behaviour
reads in one place; which nodes to ask and which bid wins are pure functions
in `protocols.placement`. The leader is assembled from three parts, each in
its own module: this one (the step, execution updates, the job's end),
`protocols.bidding` (asks, answers, deciding a round) and
`protocols.succession` (failover and lost peers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from protocols import locality
from protocols.bidding import Bidding
from protocols.context import NodeContext
from protocols.jobtypes import PLACED, PROGRESS, RETRIES_META, Finish, NoFit, Step, job_retries, own_fault, policy_for
from protocols.messages import BidDecision, CancelExecution, ExecutionUpdate, Records, SubmitToLeader
from protocols.placement import unanswered
from protocols.quickinit import quick_replace
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionResult,
    ExecutionState,
    HistoryEvent,
    JobReplica,
    JobState,
)
from protocols.succession import SUCCESSORS, Succession
from protocols.timers import TimerHandler, TimerKey, TimerKind


DAEMON_LOOK_INTERVAL = 60.0  # how often a daemon looks again for nodes (joins and RoomFreed: at once)

__all__ = ["Leader", "SUCCESSORS", "RETRIES_META", "job_retries"]


class Leader(Succession, Bidding):
    """The jobs this node leads, and the index of who leads what."""

    def __init__(self, ctx: NodeContext) -> None:
        Bidding.__init__(self)
        self.ctx = ctx
        self.led: set[str] = set()  # non-terminal jobs this node leads
        self.by_leader: dict[str, set[str]] = {}  # non-terminal jobs, by their leader
        # `check_leaders` rescans `by_leader` only when the alive set changed
        # (a new list each time) or a job was indexed under a dead leader.
        self._leaders_checked: Sequence[str] | None = None
        self.waiting: set[str] = set()  # led jobs looking for nodes
        self._daemon_looked: dict[str, float] = {}  # waiting daemons: when each last looked
        self._paused_until = 0.0  # after we were away (see `woke`): lead nothing until then
        self._queue_timed: set[str] = set()  # queued jobs whose QueueTimeout timer this process set

    def timers(self) -> dict[TimerKind, TimerHandler]:
        return {
            TimerKind.BID_WINDOW: self._on_bid_window,
            TimerKind.QUEUE_TIMEOUT: self._on_queue_timeout,
            TimerKind.RETRY_WAITING: self._on_retry_waiting,
            TimerKind.RESUME: self._on_resume,
            TimerKind.HAND_OVER: self._on_hand_over,
            TimerKind.TAKE_OVER: self._on_take_over,
        }

    # ------------------------------------------------------------ becoming and ceasing to be leader

    def submitted(self, replica: JobReplica) -> None:
        """A job was just created here: lead it, or hand it to its leader."""
        self.leader_moved(replica, None)
        leader = replica.header.leader
        if leader == self.ctx.node_id:
            self.adopt(replica)
        else:
            self.ctx.emit_send(leader, SubmitToLeader(replica.snapshot()))

    def adopt(self, replica: JobReplica) -> None:
        """Lead the job from now on (once: a job led already is left as it is)."""
        if replica.header.state.terminal or replica.id in self.led:
            return
        if self.ctx.now < self._paused_until:
            # Back from away: the job may have moved on without us. Its keepers
            # say; meanwhile it waits in `by_leader`, where `_on_resume` finds it.
            self.ctx.fetch(replica.id)
            return
        self.led.add(replica.id)
        # Learn who holds the job's ipfs inputs before the first ask (`protocols.locality`).
        if not self.ctx.providers.wait_for(locality.input_cids(replica.header.spec), lambda: self._schedule(replica)):
            self._schedule(replica)

    def leader_moved(self, replica: JobReplica, previous: str | None) -> None:
        """Keep the by-leader index right; step down when deposed."""
        header = replica.header
        if previous is not None:
            self.unindex(header.id, previous)
        if not header.state.terminal:
            self.by_leader.setdefault(header.leader, set()).add(header.id)
            if not self.ctx.is_alive(header.leader):
                self._leaders_checked = None
        if header.leader != self.ctx.node_id:
            self._step_back(header.id)

    def _step_back(self, job_id: str) -> None:
        """Stop leading the job here (its index entry stays)."""
        self.led.discard(job_id)
        self.waiting.discard(job_id)
        self._queue_timed.discard(job_id)
        self._windows.discard(job_id)
        self._window_until.pop(job_id, None)
        self._ranked.pop(job_id, None)
        self._answers.pop(job_id, None)

    def unindex(self, job_id: str, leader: str) -> None:
        """The job is no longer `leader`'s, or has ended: drop it from the index."""
        held = self.by_leader.get(leader)
        if held is not None:
            held.discard(job_id)
            if not held:
                del self.by_leader[leader]

    def resume(self) -> None:
        """After a restart, lead again once the keepers of the jobs we led had
        a chance to tell us whether someone took them over meanwhile (else we
        would place work again at a deposed epoch, beside the new leader's)."""
        ctx = self.ctx
        for replica in ctx.jobs.values():
            self.leader_moved(replica, None)
        for job_id in sorted(self.by_leader.get(ctx.node_id, ())):
            ctx.fetch(job_id)
        ctx.set_timer(TimerKey(TimerKind.RESUME), ctx.now + 2 * ctx.config.heartbeat_interval + ctx.config.resend_interval)

    def woke(self) -> None:
        """We were away (the process stopped, or its loop stuck) long enough
        to be declared dead: others may have taken our jobs over, and what
        reached us meanwhile is stale. Step back from every job we lead, ask
        its keepers how it stands, and lead again as after a restart."""
        ctx = self.ctx
        for job_id in sorted(self.led | self.by_leader.get(ctx.node_id, set())):
            self._step_back(job_id)
            ctx.fetch(job_id)
        self._paused_until = ctx.now + 2 * ctx.config.heartbeat_interval + ctx.config.ping_interval
        self._leaders_checked = None
        ctx.set_timer(TimerKey(TimerKind.RESUME), self._paused_until)

    def _on_resume(self, key: TimerKey) -> None:
        me = self.ctx.node_id
        for job_id in sorted(self.by_leader.get(me, ())):
            self.adopt(self.ctx.jobs[job_id])
        self.check_leaders()

    # ------------------------------------------------------------ execution updates

    def on_execution_update(self, sender: str, update: ExecutionUpdate) -> None:
        replica = self._led_replica(update.job_id)
        if replica is None:
            held = self.ctx.jobs.get(update.job_id)
            if held is not None and held.header.leader != self.ctx.node_id:
                # We were deposed: show the executor who leads now.
                self.ctx.emit_send(sender, Records((held.snapshot(),)))
            return
        execution = replica.executions.get(update.execution_id)
        if execution is None or execution.node_id != sender:
            self.ctx.drop(sender, update, "names no execution of the sender in the job")
            return
        header = replica.header
        if execution.state.terminal or header.state.terminal:
            if not update.state.terminal:
                self.ctx.emit_send(
                    sender, CancelExecution(header.id, execution.id, header.epoch, "execution is no longer wanted")
                )
            return
        if update.partition >= 0 and execution.partition >= 0 and update.partition != execution.partition:
            # A leader that took over (its predecessor's decision lost with
            # it) placed this bid as another partition than the run works
            # on: its result is not this slot's. The slot is placed again.
            why = f"it ran as partition {update.partition}, not {execution.partition}"
            moved = self._moved(execution, ExecutionState.CANCELLED, why, DesiredState.STOPPED)
            self._record(replica, [moved])
            if not update.state.terminal:
                self.ctx.emit_send(sender, CancelExecution(header.id, execution.id, header.epoch, why))
            self._schedule(replica)
            return
        # (Revision 0 is the executor's own record of a run it started,
        # which wins a merge over the acceptance: the leader still records it.)
        if PROGRESS[update.state] <= PROGRESS[execution.state] and execution.revision:
            self.ctx.drop(sender, update, "does not move its execution forward (stale or repeated)")
            return
        if PROGRESS[execution.state] < PLACED:
            # It runs on a bid this leader never accepted (the one before us
            # did, and that write was lost): the slot may be filled already.
            moved = self._moved(execution, ExecutionState.CANCELLED, "its bid was never accepted by this leader",
                                DesiredState.STOPPED)
            self._record(replica, [moved])
            if not update.state.terminal:
                self.ctx.emit_send(sender, CancelExecution(header.id, execution.id, header.epoch, moved.message))
            self._schedule(replica)
            return
        state, message = update.state, update.message
        policy = policy_for(header.spec)
        if state == ExecutionState.COMPLETED and policy.redundant_completion(execution, replica.executions.values()):
            state, message = ExecutionState.CANCELLED, f"partition {execution.partition} had already completed"
        desired = DesiredState.STOPPED if state.terminal else execution.desired
        moved = self._moved(execution, state, message, desired, update.result)
        self._record(replica, [moved])
        if state == ExecutionState.FAILED:
            self._after_failures(replica, [moved], counted=True)
        elif state.terminal or not policy.keeps_looking:
            # (A daemon's progress frees no node and ends nothing: looking
            # for more nodes would walk them all for every report.)
            self._schedule(replica)

    def _after_failures(self, replica: JobReplica, failed: list[ExecutionRecord], *, counted: bool) -> None:
        """Retry failed work as the job's type says, or fail the job; then
        take the next step. The history says why (see `_fault_verdicts`)."""
        header = replica.header
        policy = policy_for(header.spec)
        final = policy.judges_faults() and self._fault_verdicts(replica, failed)
        plan = policy.after_failures(
            header, failed, final=final, counted=counted, max_retries=self.ctx.config.max_retries,
            retry_on=lambda e: self._retry_on(replica, e),
        )
        if plan.retries is not None:
            self.ctx.write(replica, retries=plan.retries)
        if plan.finish is not None:
            self._finish(replica, plan.finish.state, plan.finish.message)
            return
        if plan.again_on:
            self._ask(replica, list(plan.again_on))
        self._schedule(replica)

    def _fault_verdicts(self, replica: JobReplica, failed: list[ExecutionRecord]) -> bool:
        """Say in the history why failed work is or is not run again; True
        when the job failed by its own doing more often than it asks to retry
        (a batch job then fails; an ops job is not run again on that node)."""
        ctx = self.ctx
        own = [e for e in failed if own_fault(e)]
        events = [
            ctx.event("Retry", f"a failure of the node, not of the job ({e.message}): run again, within limits",
                       execution_id=e.id)
            for e in failed if not own_fault(e)
        ]
        final = False
        if own:
            asked = job_retries(replica.header.spec)
            faults = replica.faults
            final = faults > asked
            for e in own:
                if not final:
                    why = f"the job's own failure ({e.message}): retry {faults} of the {asked} it asks for"
                elif asked:
                    why = f"the job's own failure ({e.message}): not retried, its {asked} retries are used up"
                else:
                    why = f"the job's own failure ({e.message}): not retried (set Meta {RETRIES_META} to retry)"
                events.append(ctx.event("Retry", why, execution_id=e.id))
        if events:
            ctx.write(replica, events=events)
        return final

    # ------------------------------------------------------------ stop

    def _cancel_unfinished(self, replica: JobReplica, why: str, message: str) -> None:
        """Cancel every execution of the job that has not ended."""
        ctx = self.ctx
        header = replica.header
        cancelled = []
        for execution in replica.executions.values():
            if execution.state.terminal:
                continue
            cancelled.append(self._moved(execution, ExecutionState.CANCELLED, why, DesiredState.STOPPED))
            if execution.state != ExecutionState.ASK_FOR_BID_ACCEPTED and execution.state != ExecutionState.ASK_FOR_BID:
                ctx.emit_send(execution.node_id, CancelExecution(header.id, execution.id, header.epoch, message))
            else:
                ctx.emit_send(execution.node_id, BidDecision(header.id, execution.id, header.epoch, False, message))
        self._record(replica, cancelled)

    def stop(self, replica: JobReplica, reason: str) -> None:
        self._finish(replica, JobState.STOPPED, reason or "stopped by user")

    def _finish(self, replica: JobReplica, state: JobState, message: str) -> None:
        """End the job and cancel whatever of it still runs (and a healed
        split's second completions: the record ends with one a partition)."""
        ctx = self.ctx
        header = replica.header
        self._cancel_surplus(replica)
        self._cancel_unfinished(replica, f"job {state.lower()}", message)
        self._set_state(replica, state, message, urgent=True)
        ctx.cancel_timer(TimerKey(TimerKind.BID_WINDOW, header.id))
        self._windows.discard(header.id)
        self._window_until.pop(header.id, None)
        ctx.cancel_timer(TimerKey(TimerKind.QUEUE_TIMEOUT, header.id))
        self._queue_timed.discard(header.id)
        self.led.discard(header.id)
        self.waiting.discard(header.id)
        self._ranked.pop(header.id, None)
        self.unindex(header.id, header.leader)
        self._busy.pop(header.id, None)
        self._daemon_looked.pop(header.id, None)
        self._answers.pop(header.id, None)

    # ------------------------------------------------------------ the scheduling step

    def reconcile(self, replica: JobReplica) -> None:
        """Someone else's write merged into a job we lead: look again."""
        header = replica.header
        if header.state.terminal:
            self._cancel_surplus(replica)  # a healed split may bring a second completion
            # ... or work a deposed leader started after the job ended here
            self._cancel_unfinished(replica, f"job {header.state.lower()}", header.message)
            return
        if replica.id in self.led:
            # The merge may bring work on a node that died before we heard of the work.
            self._schedule(replica, self.ctx.presumed_lost, "was lost")
        else:
            self.adopt(replica)  # (also a job we took over, once a keeper told us how it stands)
            if replica.id in self.led and replica.executions:
                self._fail_lost(replica, self.ctx.presumed_lost, "was lost")

    def _schedule(self, replica: JobReplica, lost: Callable[[str], bool] | None = None, why: str = "") -> None:
        """The scheduling step, idempotent, for a job we lead: fail work on
        `lost` nodes -> (a round is open: let it close) -> cancel surplus ->
        finish -> place, each as the job's type says (`protocols.jobtypes`)."""
        header = replica.header
        if header.state.terminal or header.leader != self.ctx.node_id:
            return
        if lost is not None and self._fail_lost(replica, lost, why):
            return  # `_after_failures` took the step
        if replica.asking:
            if replica.id not in self._windows:  # a round is open, maybe a previous leader's
                asked = (e.node_id for e in replica.executions.values() if e.state == ExecutionState.ASK_FOR_BID)
                self._arm_window(replica.id, self._bid_wait(asked))
            return
        self._cancel_surplus(replica)
        spec = header.spec
        policy = policy_for(spec)
        outcome = policy.outcome(spec, replica)
        if isinstance(outcome, Finish):
            self._finish(replica, outcome.state, outcome.message)
        elif outcome is Step.PLACE:
            self._place(replica)

    def _fail_lost(
        self, replica: JobReplica, lost: Callable[[str], bool], why: str, among: Iterable[ExecutionRecord] | None = None
    ) -> bool:
        """Executions on lost nodes failed with them; replace them (`among`:
        the only executions that can be on lost nodes, when known). Returns
        whether any had."""
        executions = replica.executions.values() if among is None else among
        failed = [
            self._moved(e, ExecutionState.FAILED, f"node {e.node_id} {why}", DesiredState.STOPPED)
            for e in executions
            if not e.state.terminal and lost(e.node_id)
        ]
        if failed:
            self._record(replica, failed)
            self._after_failures(replica, failed, counted=policy_for(replica.header.spec).counts_lost)
        return bool(failed)

    def _place(self, replica: JobReplica) -> None:
        """Ask candidates for the work that is missing, or queue/fail/wait."""
        header = replica.header
        spec = header.spec
        policy = policy_for(spec)
        executions = list(replica.executions.values())
        need = None  # every eligible node
        if not policy.every_node:
            need = len(policy.open_slots(spec, executions))
            if need == 0:
                self.waiting.discard(header.id)
                return
        candidates = self._candidates(replica, need)
        if candidates:
            self.waiting.discard(header.id)
            self._ask(replica, candidates)
            return
        awaiting = lambda: any(  # noqa: E731
            unanswered(e) and self.ctx.is_alive(e.node_id) for e in executions if e.state == ExecutionState.ASK_FOR_BID_REJECTED
        )
        match policy.when_none_fit(header, executions, awaiting):
            case NoFit.WAIT | NoFit.WAIT_FOR_ANSWERS:  # (slow is not no)
                self._wait(replica)
            case NoFit.QUEUE:
                queue_timeout = spec.task.timeouts.queue_timeout
                if header.state != JobState.QUEUED:
                    why = f"no suitable node yet ({self._why_no_node(replica)}); waiting up to {queue_timeout} s"
                    self._set_state(replica, JobState.QUEUED, why)
                    self.ctx.set_timer(TimerKey(TimerKind.QUEUE_TIMEOUT, header.id), self.ctx.now + queue_timeout)
                    self._queue_timed.add(header.id)
                elif header.id not in self._queue_timed:
                    # Queued by a leader before us, or by us before a restart:
                    # its timer died with that process. It counts from then.
                    queued = max((e.time for e in replica.history if e.kind == "JobStateChanged" and e.new == JobState.QUEUED),
                                 default=header.modify_time)
                    self.ctx.set_timer(TimerKey(TimerKind.QUEUE_TIMEOUT, header.id), max(self.ctx.now, queued + queue_timeout))
                    self._queue_timed.add(header.id)
                self._wait(replica)
            case NoFit.FAIL:
                self._finish(replica, JobState.FAILED, f"no suitable node: {self._why_no_node(replica)}")

    def _retry_on(self, replica: JobReplica, failed: ExecutionRecord) -> bool:
        """An ops job's failed run goes again on its node (ops runs once on
        each), `max_retries` times at most, while the node is alive and no
        later ask to it is pending or was declined."""
        ctx = self.ctx
        if not ctx.is_alive(failed.node_id) or replica.failures[failed.node_id] > ctx.config.max_retries:
            return False
        return not any(e.create_time > failed.create_time for e in replica.on_node(failed.node_id))

    def _wait(self, replica: JobReplica) -> None:
        if not self.waiting:
            self.ctx.set_timer(TimerKey(TimerKind.RETRY_WAITING), self.ctx.now + self.ctx.config.queue_retry_interval)
        self.waiting.add(replica.id)

    def _on_retry_waiting(self, key: TimerKey) -> None:
        self._retry_waiting()
        if self.waiting:
            self.ctx.set_timer(TimerKey(TimerKind.RETRY_WAITING), self.ctx.now + self.ctx.config.queue_retry_interval)

    def _retry_waiting(self) -> None:
        """Look for nodes again, the most important waiting job first."""
        jobs = self.ctx.jobs
        order = sorted(self.waiting, key=lambda j: (-jobs[j].header.spec.priority, jobs[j].header.create_time, j))
        now = self.ctx.now
        for job_id in order:
            if job_id not in self.waiting:
                continue
            replica = jobs[job_id]
            if policy_for(replica.header.spec).keeps_looking:
                if self._daemon_looked.get(job_id, -math.inf) > now - DAEMON_LOOK_INTERVAL:
                    continue
                self._daemon_looked[job_id] = now
            self._schedule(replica)

    def _on_queue_timeout(self, key: TimerKey) -> None:
        self._queue_timed.discard(key.subject)
        replica = self._led_replica(key.subject)
        if replica is None or replica.header.state != JobState.QUEUED:
            return
        timeout = replica.header.spec.task.timeouts.queue_timeout
        self._finish(replica, JobState.FAILED, f"no suitable node within QueueTimeout of {timeout} s: {self._why_no_node(replica)}")

    def _cancel_surplus(self, replica: JobReplica) -> None:
        """Cancel what the job's type says is surplus: duplicate batch
        partitions, service replicas over Count (a healed split's doing)."""
        surplus = policy_for(replica.header.spec).surplus(replica.header.spec, replica.executions.values())
        if not surplus:
            return
        newest = max(e.epoch for e in replica.executions.values())
        if newest >= replica.header.epoch and any(e.state.terminal for e in surplus):
            # An end is final within its epoch: to overrule a completion we
            # must write from a newer epoch than any the record holds.
            note = self.ctx.event("Note", "second completions of a partition cancelled after a split healed")
            self.ctx.write(replica, epoch=newest + 1, leader=self.ctx.node_id, events=(note,))
        header = replica.header
        cancelled = []
        for execution in surplus:
            why = "surplus: its partition completed elsewhere" if execution.state.terminal else "surplus execution"
            cancelled.append(self._moved(execution, ExecutionState.CANCELLED, why, DesiredState.STOPPED))
            if not execution.state.terminal:
                self.ctx.emit_send(execution.node_id, CancelExecution(header.id, execution.id, header.epoch, "surplus"))
        self._record(replica, cancelled)

    # ------------------------------------------------------------ writing

    def _led_replica(self, job_id: str) -> JobReplica | None:
        return self.ctx.jobs.get(job_id) if job_id in self.led else None

    def _moved(
        self,
        execution: ExecutionRecord,
        state: ExecutionState,
        message: str,
        desired: DesiredState | None = None,
        result: ExecutionResult | None = None,
    ) -> ExecutionRecord:
        """The execution moved to `state` by this leader (`desired`, `result`:
        None keeps the execution's)."""
        header = self.ctx.jobs[execution.job_id].header
        return quick_replace(
            execution,
            state=state,
            message=message,
            desired=desired or execution.desired,
            epoch=header.epoch,
            revision=execution.revision + 1,
            modify_time=self.ctx.now,
            result=result or execution.result,
        )

    def _record(self, replica: JobReplica, executions: Iterable[ExecutionRecord]) -> None:
        executions = list(executions)
        if not executions:
            return
        answers = self._answers.get(replica.id)
        events = []
        for e in executions:
            if answers:
                answers.pop(e.id, None)  # overtaken (the node was lost, say) before the round was decided
            event = self._transition(replica.executions.get(e.id), e)
            if event is not None:
                events.append(event)
        self.ctx.write(replica, executions=executions, events=events)

    def _transition(self, held: ExecutionRecord | None, moved: ExecutionRecord) -> HistoryEvent | None:
        previous = held.state if held is not None else ""
        if held is not None and not held.revision:
            previous = ExecutionState.BID_ACCEPTED  # (the executor's own record: it started on the acceptance)
        if previous == moved.state:
            return None
        return self.ctx.event(
            "ExecutionStateChanged", moved.message or f"{moved.state}", execution_id=moved.id,
            previous=str(previous), new=str(moved.state),
        )

    def _set_state(self, replica: JobReplica, state: JobState, message: str, urgent: bool = False) -> None:
        previous = replica.header.state
        if previous == state and replica.header.message == message:
            return
        event = self.ctx.event("JobStateChanged", message, previous=str(previous), new=str(state))
        self.ctx.write(replica, state=state, message=message, events=(event,), urgent=urgent)
        if state.terminal:
            self.unindex(replica.id, replica.header.leader)
