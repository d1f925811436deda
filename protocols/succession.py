"""Who leads a job, and what happens when a leader or a node is lost: a part of `Leader`.

Theory of operation
-------------------
A job's header names its leader and its successors (rendezvous ranking at
submission). When the leader is lost, the first live successor takes over
with the next epoch; the lost leader stays a keeper, so a leader that was
only cut off learns it was deposed and tells what it wrote meanwhile. Before
it places anything, the new leader asks its fellow keepers for their copies:
what the lost leader placed may have reached them and not it. Lost
successors are replaced by the next live nodes of the ranking (`SUCCESSORS`
live ones kept). Work on a lost node is failed and placed again by the
scheduling step (`Leader._fail_lost`). A message a peer could not be sent
(`on_send_failed`) is a lost ask, decision or hand-over: it is marked so in
the record, or sent again. A new job goes to the next node only once its
leader is presumed lost: a leader that is merely slow may hold the job
already, and a second one would place it twice.

`Succession` holds no state of its own: it is mixed into `Leader`, whose
indexes (`led`, `by_leader`) it reads and whose scheduling step it calls.
"""

from __future__ import annotations

from protocols import election
from protocols.context import NodeContext
from protocols.jobtypes import policy_for
from protocols.messages import AskBid, BidDecision, CancelExecution, LeaderChanged, Records, SubmitToLeader
from protocols.records import DesiredState, ExecutionState, JobReplica
from protocols.timers import TimerKey, TimerKind


SUCCESSORS = 2  # live failover successors a job keeps (besides its leader and submitter); lost ones are replaced
MAX_SUCCESSORS = 2 * SUCCESSORS  # listed at most, lost ones included


class Succession:
    """Failover and lost peers, for the jobs this node leads or may take over (part of `Leader`)."""

    ctx: NodeContext
    led: set[str]
    by_leader: dict[str, set[str]]
    _paused_until: float

    def node_lost(self, node_id: str, why: str = "was lost") -> None:
        """A node is dead, left or restarted: take over its jobs if we are
        next, and replace the executions it ran for jobs we lead."""
        for job_id in sorted(self.by_leader.get(node_id, ())):
            self._maybe_take_over(self.ctx.jobs[job_id])
        for job_id in sorted(self.led):
            replica = self.ctx.jobs[job_id]
            if node_id in replica.header.successors:
                self._top_up_keepers(replica, f"keeper {node_id} {why}")
            self._fail_lost(replica, lambda n: n == node_id, why, replica.on_node(node_id))

    def _top_up_keepers(self, replica: JobReplica, why: str, successors: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """Keep `SUCCESSORS` live successors: the next live nodes of the
        job's rendezvous ranking join. Lost ones stay listed (up to a bound),
        so when a partition heals both halves still share keepers and
        exchange what each wrote. Writes the change unless `successors` was
        given (the caller writes); returns the new list."""
        ctx = self.ctx
        header = replica.header
        given = successors is not None
        successors = header.successors if successors is None else successors
        live = sum(1 for s in successors if ctx.is_alive(s))
        if live < SUCCESSORS:
            taken = header.keepers | set(successors) | {ctx.node_id}
            alive = ctx.alive_ids()
            ranked = election.rank(header.id, alive, k=min(len(alive), len(taken) + SUCCESSORS - live))
            successors += tuple(n for n in ranked if n not in taken)[: SUCCESSORS - live]
        while len(successors) > MAX_SUCCESSORS:
            dead = next((s for s in successors if not ctx.is_alive(s)), successors[-1])
            successors = tuple(s for s in successors if s != dead)
        if not given and successors != header.successors:
            note = ctx.event("Note", f"{why}; successors now {', '.join(successors) or 'none'}")
            ctx.write(replica, successors=successors, events=(note,))
        return successors

    def node_joined(self, node_id: str) -> None:
        """A node appeared: queued jobs and daemons may want it, and jobs
        short of keepers (it may be one that returned) take it on."""
        self._retry_waiting()
        for job_id in sorted(self.led):
            replica = self.ctx.jobs[job_id]
            header = replica.header
            if node_id not in header.keepers:
                self._top_up_keepers(replica, f"{node_id} joined")
            if policy_for(header.spec).keeps_looking:
                self._schedule(replica)

    def check_leaders(self) -> None:
        """Periodic care: take over jobs whose leader we never heard of or
        know dead, replace work on such nodes, and nudge accepted bids that
        never started."""
        self._nudge_accepted()
        if self.ctx.now - self.ctx.started_at < (self.ctx.config.dead_after + 1) * self.ctx.config.ping_interval:
            return
        alive = self.ctx.alive_ids()
        caught_up = self.ctx.caught_up()
        if alive is self._leaders_checked and caught_up:
            return
        self._leaders_checked = alive if caught_up else None
        for leader, job_ids in list(self.by_leader.items()):
            if leader != self.ctx.node_id and self.ctx.presumed_lost(leader):
                for job_id in sorted(job_ids):
                    self._maybe_take_over(self.ctx.jobs[job_id])
        # Work on nodes we never heard of: after a restart they were not yet
        # presumed lost when we resumed our jobs, and no change of them comes.
        for job_id in sorted(self.led):
            self._fail_lost(self.ctx.jobs[job_id], self.ctx.presumed_lost, "was lost")

    def _nudge_accepted(self) -> None:
        """A bid accepted long ago that never reported Running: the decision
        may have been lost (or sent by a leader since deposed). Say it again,
        with the record: an executor that knows only the deposed leader's
        epoch refuses our orders until it learns who leads now (seed 11).
        It starts, or answers that the bid expired."""
        ctx = self.ctx
        stale = ctx.now - ctx.config.bid_hold
        for job_id in sorted(self.led):
            replica = ctx.jobs[job_id]
            if not replica.accepted:
                continue
            header = replica.header
            for e in replica.executions.values():
                if e.state == ExecutionState.BID_ACCEPTED and e.modify_time < stale:
                    ctx.emit_send(e.node_id, Records((replica.snapshot(),)))
                    ctx.emit_send(e.node_id, BidDecision(job_id, e.id, header.epoch, True, "bid accepted", e.partition))

    def _maybe_take_over(self, replica: JobReplica) -> None:
        header = replica.header
        ctx = self.ctx
        if header.state.terminal or not ctx.presumed_lost(header.leader) or ctx.now < self._paused_until:
            return
        chain = [name for name in header.successors if not ctx.presumed_lost(name)]
        if chain:
            successor = chain[0]
        else:  # no successor left: the live keepers (the submitter) hold the record, so one of them leads
            keepers = [k for k in header.keepers if k == ctx.node_id or not ctx.presumed_lost(k)]
            successor = election.rank(header.id, keepers or ctx.alive_ids(), k=1)[0]
        if successor != ctx.node_id:
            return
        self._take_over(replica, f"leader {header.leader} was lost")

    def _take_over(self, replica: JobReplica, why: str) -> None:
        ctx = self.ctx
        header = replica.header
        epoch = header.epoch + 1
        note = ctx.event("LeaderChanged", f"{why}; {ctx.node_id} leads from epoch {epoch}")
        # The lost leader stays a keeper: if it was only cut off, it learns
        # from us that it was deposed, and tells us what it wrote meanwhile.
        successors = tuple(s for s in header.successors if s != ctx.node_id) + (header.leader,)
        successors = self._top_up_keepers(replica, why, successors)
        ctx.write(replica, epoch=epoch, leader=ctx.node_id, successors=successors, events=(note,), urgent=True)
        for execution in replica.executions.values():
            if not execution.state.terminal and not ctx.presumed_lost(execution.node_id):
                ctx.emit_send(execution.node_id, LeaderChanged(replica.id, epoch, ctx.node_id))
        if any(k != ctx.node_id and not ctx.presumed_lost(k) for k in header.keepers):
            # First learn what the lost leader placed: a write of it that
            # reached a fellow keeper and not us would otherwise be placed
            # again. The first answer that teaches us something has us lead
            # (`Leader.reconcile`); none, and we lead after `resend_interval`.
            ctx.fetch(replica.id)
            ctx.set_timer(TimerKey(TimerKind.TAKE_OVER, replica.id), ctx.now + ctx.config.resend_interval)
            return
        self._lead_taken(replica)

    def _on_take_over(self, key: TimerKey) -> None:
        replica = self.ctx.jobs.get(key.subject)
        if replica is not None and replica.header.leader == self.ctx.node_id and replica.id not in self.led:
            self._lead_taken(replica)

    def _lead_taken(self, replica: JobReplica) -> None:
        if replica.header.state.terminal:
            return
        self.led.add(replica.id)
        # Work on a node we only have not heard of yet (we restarted) is not lost: it reports to us.
        self._schedule(replica, self.ctx.presumed_lost, "was lost before this leader took over")

    def on_send_failed(self, peer: str, message: object, reason: str) -> None:
        match message:
            case SubmitToLeader(delta):
                replica = self.ctx.jobs.get(delta.header.id)
                if replica is not None and replica.header.leader == peer and not replica.header.state.terminal:
                    if self.ctx.presumed_lost(peer):
                        self._hand_to_next(replica, peer)
                    else:
                        # Alive, only slow or hard to reach: it may hold the
                        # job already, and a second leader now would place it
                        # twice. Say it again; if it is found dead meanwhile,
                        # the next one leads.
                        self.ctx.set_timer(TimerKey(TimerKind.HAND_OVER, replica.id),
                                           self.ctx.now + self.ctx.config.resend_interval)
            case AskBid(header, execution_id):
                self._unreachable(header.id, execution_id, peer, ExecutionState.ASK_FOR_BID_REJECTED, reason)
            case BidDecision(job_id, execution_id, _epoch, True):
                self._accept_unsent(job_id, execution_id, peer, reason)
            case CancelExecution() if self.ctx.is_alive(peer):
                # A run the record gave up on hears of it only from us (its
                # node gets no more writes of the job): say it again.
                self.ctx.emit_send(peer, message)

    def _on_hand_over(self, key: TimerKey) -> None:
        """Hand a job submitted here to its leader again (its last hand-over
        did not go through), or to the next one once that leader is lost."""
        replica = self.ctx.jobs.get(key.subject)
        if replica is None or replica.header.state.terminal:
            return
        leader = replica.header.leader
        if leader == self.ctx.node_id or replica.header.submitter != self.ctx.node_id:
            return
        if self.ctx.presumed_lost(leader):
            self._hand_to_next(replica, leader)
        else:
            self.ctx.emit_send(leader, SubmitToLeader(replica.snapshot()))

    def _hand_to_next(self, replica: JobReplica, failed: str) -> None:
        """The leader we handed a new job to did not answer: try the next."""
        ctx = self.ctx
        chain = [n for n in replica.header.successors if n != failed and ctx.is_alive(n)]
        following = chain[0] if chain else ctx.node_id
        note = ctx.event("LeaderChanged", f"leader {failed} did not answer ({following} next)")
        successors = tuple(n for n in replica.header.successors if n != failed and n != following)
        successors = self._top_up_keepers(replica, "", successors)  # never a job nobody would take over
        ctx.write(
            replica,
            epoch=replica.header.epoch + 1,
            leader=following,
            successors=successors,
            events=(note,),
            urgent=True,
        )
        if following == ctx.node_id:
            self.adopt(replica)
        else:
            ctx.emit_send(following, SubmitToLeader(replica.snapshot()))

    def _accept_unsent(self, job_id: str, execution_id: str, peer: str, reason: str) -> None:
        """An acceptance whose sending failed. A send that timed out may
        still have arrived, and a node that has reported the run started had
        it: placing the work again while that node lives would run it twice.
        So the bid is given up only when its node is lost; a live node's is
        said again (`_nudge_accepted`) until the node starts it or answers
        that the bid expired."""
        replica = self._led_replica(job_id)
        execution = replica and replica.executions.get(execution_id)
        if execution is None or execution.state != ExecutionState.BID_ACCEPTED:
            return
        if not self.ctx.presumed_lost(peer):
            return
        self._unreachable(job_id, execution_id, peer, ExecutionState.FAILED, reason)

    def _unreachable(self, job_id: str, execution_id: str, peer: str, state: ExecutionState, reason: str) -> None:
        replica = self._led_replica(job_id)
        execution = replica and replica.executions.get(execution_id)
        if replica is None or execution is None or execution.state.terminal or execution.node_id != peer:
            return
        moved = self._moved(execution, state, f"node {peer} unreachable: {reason}", DesiredState.STOPPED)
        self._record(replica, [moved])
        if state == ExecutionState.FAILED:
            self._after_failures(replica, [moved], counted=True)
        else:
            self._maybe_decide(replica)
