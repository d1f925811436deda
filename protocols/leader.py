"""The leader's side of a job: collect bids, place the work, keep it placed.

Theory of operation
-------------------
A leader keeps almost no state of its own: what it knows of a job is in the
replicated record, so the next leader resumes from the same record after a
failover. Scheduling is one idempotent function, `_schedule`, called whenever
anything that matters changes (a bid, an execution update, a node lost or
joined, a timer). It reads the record and does the next step:

1. a round of asks is open (executions in AskForBid): wait for the replies or
   the bid window, then `_decide`;
2. the job is done (every batch partition completed, every ops execution
   ended): finish it;
3. work is missing (a batch partition, a service replica, a matching daemon
   node without its execution): ask the next candidates — eligible nodes in
   rendezvous order for this job, about as many as needed plus a margin, so a
   job draws a bounded number of bids however large the network. Nobody left:
   queue (batch with QueueTimeout), wait (service, daemon) or fail, saying why
   no node fits.

A round is decided as soon as enough acceptable bids are in (for a batch
or service job: one per open slot),
or when its window closes (the leader's own bid counts as soon as it is in). While bids are too few and answers are missing,
the window opens again, up to `ROUND_PATIENCE` times. An ask still
unanswered then is marked rejected with "no answer", which is not a no:
that node may be asked again, and a job that found no node while some
answers were missing waits and asks again rather than fails (a busy node is
slow, not unwilling); it fails for want of nodes only when the nodes said
no, or its QueueTimeout passed.

`_decide` ranks the bids — fewest earlier failures of that node on this job
first, then most free resources, then a seeded random tie-break — accepts as
many as are needed and rejects the rest.

Surplus work (two executions of one batch partition, more service replicas
than Count — both can appear when a partition heals and two leaders' writes
merge) is cancelled, so the invariants hold once the network settles.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from protocols import election, locality, selection
from protocols.context import NodeContext, TimerHandler, TimerKey, TimerKind
from protocols.lifecycle import EXECUTION_PROGRESS
from protocols.jobspec import JobSpec, JobType, Resources
from protocols.messages import (
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    Capacity,
    ExecutionUpdate,
    LeaderChanged,
    NodeInfo,
    Records,
    RoomFreed,
    SubmitToLeader,
)
from protocols.quickinit import quick_replace
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionState,
    HistoryEvent,
    JobReplica,
    JobState,
)

SUCCESSORS = 2  # live failover successors a job keeps (besides its leader and submitter); lost ones are replaced
MAX_SUCCESSORS = 2 * SUCCESSORS  # listed at most, lost ones included
FREE_HINT_TTL = 10.0  # seconds a bidder's word on its free resources beats its heartbeat
BUSY_RETRY_FIRST = 10.0  # seconds before a node that was full is asked again for the same job...
BUSY_RETRY_MAX = 300.0  # ...doubling each time it is still full, up to this
BUSY_NOTICED = 6  # ...times this for daemons: a full node tells their leaders when it has room (`RoomFreed`)
RANK_AHEAD = 8  # candidates ranked per one wanted: most fit, the rest rank all nodes
DAEMON_LOOK_INTERVAL = 60.0  # how often a daemon looks again for nodes (joins and RoomFreed: at once)
NO_ANSWER = "no answer"  # how an ask left unanswered is marked: slow is not no (see `_unanswered`)
ROUND_PATIENCE = 4  # bid windows a round waits for missing answers while it has too few bids

_PROGRESS = EXECUTION_PROGRESS  # an update never moves an execution backwards (`protocols.lifecycle`)
_CONTINUOUS = (JobType.DAEMON, JobType.SERVICE)
RETRIES_META = "p2pnode.retries"  # job Meta: times a batch or ops job is run again after failing by its own doing


def job_retries(spec: JobSpec) -> int:
    """How often the job asks to be run again after its own failure (0 unless its Meta says)."""
    try:
        return max(0, min(int(spec.meta.get(RETRIES_META, "0")), 100))
    except ValueError:
        return 0


class Leader:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.led: set[str] = set()  # non-terminal jobs this node leads
        self.by_leader: dict[str, set[str]] = {}  # non-terminal jobs, by their leader
        # `check_leaders` rescans `by_leader` only when the alive set changed
        # (a new list each time) or a job was indexed under a dead leader.
        self._leaders_checked: Sequence[str] | None = None
        self.waiting: set[str] = set()  # led jobs looking for nodes
        # Nodes that declined a job only for want of free resources: asked
        # again after a back-off that doubles while they stay full, or as
        # soon as a fresher bid shows room. job -> node -> (ask after, times).
        self._busy: dict[str, dict[str, tuple[float, int]]] = {}
        self._daemon_looked: dict[str, float] = {}  # waiting daemons: when each last looked
        self._windows: set[str] = set()  # jobs whose bid window timer is armed
        self._window_until: dict[str, float] = {}  # ...when it fires, for windows stretched by slow bidders
        self._patience: dict[str, int] = {}  # open rounds: windows left to wait for missing answers
        # Answers to the open bid round, by job, with the transition each
        # records: written in one go when the round is decided (an ops job
        # asks every matching node: one write, not one per answer).
        self._answers: dict[str, dict[str, tuple[ExecutionRecord, HistoryEvent]]] = {}
        self._ranked: dict[str, tuple[list[str], list[str]]] = {}  # job -> (eligible, in rendezvous order)
        # What bidders said they have free, and when: fresher than their
        # heartbeats, which a large network spaces out.
        self._free_hints: dict[str, tuple[Capacity, float]] = {}
        self._paused_until = 0.0  # after we were away (see `woke`): lead nothing until then

    def timers(self) -> dict[TimerKind, TimerHandler]:
        return {
            TimerKind.BID_WINDOW: self._on_bid_window,
            TimerKind.QUEUE_TIMEOUT: self._on_queue_timeout,
            TimerKind.RETRY_WAITING: self._on_retry_waiting,
            TimerKind.RESUME: self._on_resume,
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
        """After a restart, lead again once gossip had a chance to tell us
        whether someone took our jobs over meanwhile."""
        for replica in self.ctx.jobs.values():
            self.leader_moved(replica, None)
        self.ctx.set_timer(TimerKey(TimerKind.RESUME), self.ctx.now + 2 * self.ctx.config.heartbeat_interval)

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

    # ------------------------------------------------------------ failover

    def node_lost(self, node_id: str, why: str = "was lost") -> None:
        """A node is dead, left or restarted: take over its jobs if we are
        next, and replace the executions it ran for jobs we lead."""
        for job_id in sorted(self.by_leader.get(node_id, ())):
            self._maybe_take_over(self.ctx.jobs[job_id])
        for job_id in sorted(self.led):
            replica = self.ctx.jobs[job_id]
            if node_id in replica.header.successors:
                self._top_up_keepers(replica, f"keeper {node_id} {why}")
            self._fail_lost(replica, lambda n: n == node_id, why)

    def _fail_lost(self, replica: JobReplica, lost: Callable[[str], bool], why: str) -> None:
        """Executions on lost nodes failed with them; replace them."""
        failed = [
            self._moved(e, ExecutionState.FAILED, f"node {e.node_id} {why}", DesiredState.STOPPED)
            for e in replica.executions.values()
            if not e.state.terminal and lost(e.node_id)
        ]
        if failed:
            self._record(replica, failed)
            self._after_failures(replica, failed, counted=replica.header.spec.type not in _CONTINUOUS)

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
            if header.spec.type == JobType.DAEMON:
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
        may have been lost (or sent by a leader since deposed). Say it again;
        the executor starts, or answers that the bid expired."""
        ctx = self.ctx
        stale = ctx.now - ctx.config.bid_hold
        for job_id in sorted(self.led):
            replica = ctx.jobs[job_id]
            if not replica.accepted:
                continue
            header = replica.header
            for e in replica.executions.values():
                if e.state == ExecutionState.BID_ACCEPTED and e.modify_time < stale:
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
        self.led.add(replica.id)
        # Work on a node we only have not heard of yet (we restarted) is not lost: it reports to us.
        self._fail_lost(replica, ctx.presumed_lost, "was lost before this leader took over")
        self._schedule(replica)

    def on_send_failed(self, peer: str, message: object, reason: str) -> None:
        match message:
            case SubmitToLeader(delta):
                replica = self.ctx.jobs.get(delta.header.id)
                if replica is not None and replica.header.leader == peer and not replica.header.state.terminal:
                    self._hand_to_next(replica, peer)
            case AskBid(header, execution_id):
                self._unreachable(header.id, execution_id, peer, ExecutionState.ASK_FOR_BID_REJECTED, reason)
            case BidDecision(job_id, execution_id, _epoch, True):
                self._unreachable(job_id, execution_id, peer, ExecutionState.FAILED, reason)
            case CancelExecution() if self.ctx.is_alive(peer):
                # A run the record gave up on hears of it only from us (its
                # node gets no more writes of the job): say it again.
                self.ctx.emit_send(peer, message)

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

    # ------------------------------------------------------------ bids

    def on_bid_reply(self, sender: str, reply: BidReply) -> None:
        replica = self._led_replica(reply.job_id)
        if replica is None:
            return
        execution = replica.executions.get(reply.execution_id)
        if execution is None or execution.node_id != sender or execution.state != ExecutionState.ASK_FOR_BID:
            return
        answers = self._answers.setdefault(replica.id, {})
        if execution.id in answers:
            return
        state = ExecutionState.ASK_FOR_BID_ACCEPTED if reply.bid else ExecutionState.ASK_FOR_BID_REJECTED
        if reply.busy:
            full = self._busy.setdefault(reply.job_id, {})
            times = full[sender][1] + 1 if sender in full else 1
            noticed = BUSY_NOTICED if replica.header.spec.type == JobType.DAEMON else 1
            full[sender] = (self.ctx.now + noticed * min(BUSY_RETRY_MAX, BUSY_RETRY_FIRST * 2 ** (times - 1)), times)
        elif reply.job_id in self._busy:
            self._busy[reply.job_id].pop(sender, None)
        if reply.free is not None:
            self._free_hints[sender] = (reply.free, self.ctx.now)
        answered = self._moved(execution, state, reply.reason)
        answers[execution.id] = (answered, self._transition(execution, answered))
        self._maybe_decide(replica)

    def on_room_freed(self, sender: str, notice: RoomFreed) -> None:
        """A node that was full for a daemon we lead has room now: ask it
        again, unless it has an ask pending, runs the daemon, or failed it
        too often."""
        replica = self._led_replica(notice.job_id)
        if replica is None or replica.header.spec.type != JobType.DAEMON:
            return
        self._free_hints[sender] = (notice.free, self.ctx.now)
        newest = max(
            (e for e in replica.executions.values() if e.node_id == sender),
            key=lambda e: (e.create_time, e.id),
            default=None,
        )
        if newest is None or newest.state != ExecutionState.ASK_FOR_BID_REJECTED:
            return
        if self._failures(replica)[sender] > self.ctx.config.max_retries:
            return
        self._ask(replica, [sender])

    def _maybe_decide(self, replica: JobReplica) -> None:
        answers = self._answers.get(replica.id, {})
        if replica.asking <= len(answers) or self._enough_bids(replica, answers):
            self.ctx.cancel_timer(TimerKey(TimerKind.BID_WINDOW, replica.id))
            self._windows.discard(replica.id)
            self._window_until.pop(replica.id, None)
            self._decide(replica)

    def _enough_bids(self, replica: JobReplica, answers: Mapping[str, tuple[ExecutionRecord, HistoryEvent]]) -> bool:
        """Whether the bids in fill every open slot of a batch or service job
        (ops and daemon jobs want every matching node's answer)."""
        if replica.header.spec.type not in (JobType.BATCH, JobType.SERVICE) or not answers:
            return False
        bids = sum(1 for a, _ in answers.values() if a.state == ExecutionState.ASK_FOR_BID_ACCEPTED)
        bids += sum(1 for e in replica.executions.values() if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED)
        return bids >= len(self._open_slots(replica)) > 0

    def _arm_window(self, job_id: str, wait: float = 0.0) -> None:
        """Close the open round after `bid_window`, whoever opened it, or
        later if an asked node said it may take `wait` seconds to answer (its
        probes, a bid held for its operator: slow is not no)."""
        until = self.ctx.now + max(self.ctx.config.bid_window, wait)
        if job_id not in self._windows or (wait and until > self._window_until.get(job_id, 0.0)):
            self._windows.add(job_id)
            self._patience.setdefault(job_id, ROUND_PATIENCE)
            if wait:
                self._window_until[job_id] = until
            self.ctx.set_timer(TimerKey(TimerKind.BID_WINDOW, job_id), until)

    def _bid_wait(self, candidates: Iterable[str]) -> float:
        """The longest any of them said it may take to answer an ask."""
        infos = (self.ctx.info(candidate) for candidate in candidates)
        return max((info.policy.bid_wait for info in infos if info is not None), default=0.0)

    def _on_bid_window(self, key: TimerKey) -> None:
        job_id = key.subject
        self._windows.discard(job_id)
        self._window_until.pop(job_id, None)
        replica = self._led_replica(job_id)
        if replica is None:
            self._patience.pop(job_id, None)
            return
        patience = self._patience.get(job_id, 0)
        if patience > 1 and replica.asking > len(self._answers.get(job_id, ())) and not self._enough_bids(
            replica, self._answers.get(job_id, {})
        ):
            # Answers are missing and the bids in are too few: a busy node
            # answers late, so wait for it rather than take its silence for no.
            self._patience[job_id] = patience - 1
            self._windows.add(job_id)
            self.ctx.set_timer(TimerKey(TimerKind.BID_WINDOW, job_id), self.ctx.now + self.ctx.config.bid_window)
            return
        self._decide(replica)

    def _decide(self, replica: JobReplica) -> None:
        ctx = self.ctx
        self._patience.pop(replica.id, None)
        answers = self._answers.pop(replica.id, None)
        if answers:
            ctx.write(replica, executions=[a for a, _ in answers.values()], events=[t for _, t in answers.values()])
        header = replica.header
        changes: list[ExecutionRecord] = []
        for execution in replica.executions.values():
            if execution.state == ExecutionState.ASK_FOR_BID:
                changes.append(
                    self._moved(
                        execution,
                        ExecutionState.ASK_FOR_BID_REJECTED,
                        f"{NO_ANSWER} before the round was decided",
                        DesiredState.STOPPED,
                    )
                )
                ctx.emit_send(
                    execution.node_id, BidDecision(header.id, execution.id, header.epoch, False, "bid window closed")
                )
        bids = [e for e in replica.executions.values() if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED]
        slots = self._open_slots(replica)
        failures = self._failures(replica)
        held = locality.inputs_held(locality.input_cids(header.spec), ctx.providers.holders)
        bids.sort(key=lambda e: (failures[e.node_id], -held(e.node_id), -self._free_score(e.node_id), ctx.rng.random()))
        winners, losers = bids[: len(slots)], bids[len(slots) :]
        for execution, partition in zip(winners, slots):
            accepted = quick_replace(
                self._moved(execution, ExecutionState.BID_ACCEPTED, "bid accepted", DesiredState.RUNNING),
                partition=partition,
            )
            changes.append(accepted)
            ctx.emit_send(
                execution.node_id, BidDecision(header.id, execution.id, header.epoch, True, "bid accepted", partition)
            )
        for execution in losers:
            changes.append(
                self._moved(execution, ExecutionState.BID_REJECTED, "other bids were preferred", DesiredState.STOPPED)
            )
            ctx.emit_send(
                execution.node_id, BidDecision(header.id, execution.id, header.epoch, False, "other bids were preferred")
            )
        if changes:
            self._record(replica, changes)
        if winners and header.state in (JobState.PENDING, JobState.QUEUED):
            self._set_state(replica, JobState.RUNNING, f"placed on {len(winners)} node(s)")
        self._schedule(replica)

    def _open_slots(self, replica: JobReplica) -> list[int]:
        """Partitions (batch, service) or slots (ops, daemon: all 0) that
        want an execution now."""
        spec = replica.header.spec
        executions = replica.executions.values()
        if spec.type in (JobType.OPS, JobType.DAEMON):
            bids = sum(1 for e in executions if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED)
            return [0] * bids
        taken = {e.partition for e in executions if e.state.active or e.state == ExecutionState.COMPLETED}
        if spec.type == JobType.SERVICE:
            taken = {e.partition for e in executions if e.state.active}
        return [p for p in range(max(spec.count, 1)) if p not in taken]

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
        if _PROGRESS[update.state] <= _PROGRESS[execution.state]:
            self.ctx.drop(sender, update, "does not move its execution forward (stale or repeated)")
            return
        if _PROGRESS[execution.state] < _PROGRESS[ExecutionState.BID_ACCEPTED]:
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
        if (
            state == ExecutionState.COMPLETED
            and header.spec.type == JobType.BATCH
            and any(
                e.state == ExecutionState.COMPLETED and e.partition == execution.partition and e.id != execution.id
                for e in replica.executions.values()
            )
        ):
            state, message = ExecutionState.CANCELLED, f"partition {execution.partition} had already completed"
        desired = DesiredState.STOPPED if state.terminal else execution.desired
        moved = quick_replace(self._moved(execution, state, message, desired), result=update.result or execution.result)
        self._record(replica, [moved])
        if state == ExecutionState.FAILED:
            self._after_failures(replica, [moved], counted=True)
        elif state.terminal or header.spec.type != JobType.DAEMON:
            # (A daemon's progress frees no node and ends nothing: looking
            # for more nodes would walk them all for every report.)
            self._schedule(replica)

    def _after_failures(self, replica: JobReplica, failed: list[ExecutionRecord], *, counted: bool) -> None:
        """Retry failed work within the job's limit, or fail the job. A
        failure of the job's own (`ExecutionResult.job_fault`) ends a batch
        or ops job unless it asks for retries; the history says which."""
        header = replica.header
        spec = header.spec
        final = spec.type in (JobType.BATCH, JobType.OPS) and self._verdict_is_final(replica, failed)
        if final and spec.type == JobType.BATCH:
            last = next(e for e in reversed(failed) if e.result is not None and e.result.job_fault)
            self._finish(replica, JobState.FAILED, f"execution on {last.node_id} failed: {last.message}")
            return
        if spec.type in (JobType.OPS, JobType.DAEMON):
            # One per node: a node that failed it more than `max_retries`
            # times is given up (see `_candidates`), the others carry on.
            if spec.type == JobType.OPS:
                again = [e.node_id for e in failed
                         if self._retry_on(replica, e) and not (final and e.result is not None and e.result.job_fault)]
                if again:
                    self._ask(replica, sorted(set(again)))
            self._schedule(replica)
            return
        if counted:
            retries = header.retries + len(failed)
            self.ctx.write(replica, retries=retries)
            if retries > self.ctx.config.max_retries:
                last = failed[-1]
                self._finish(
                    replica,
                    JobState.FAILED,
                    f"execution on {last.node_id} failed ({last.message}); "
                    f"{self.ctx.config.max_retries} retries used up",
                )
                return
        self._schedule(replica)

    def _verdict_is_final(self, replica: JobReplica, failed: list[ExecutionRecord]) -> bool:
        """Say in the history why failed work is or is not run again; True
        when the job failed by its own doing more often than it asks to retry
        (a batch job then fails; an ops job is not run again on that node)."""
        ctx = self.ctx
        own = [e for e in failed if e.result is not None and e.result.job_fault]
        events = [
            ctx.event("Retry", f"a failure of the node, not of the job ({e.message}): run again, within limits",
                       execution_id=e.id)
            for e in failed if not (e.result is not None and e.result.job_fault)
        ]
        if own:
            asked = job_retries(replica.header.spec)
            faults = sum(1 for e in replica.executions.values()
                         if e.state == ExecutionState.FAILED and e.result is not None and e.result.job_fault)
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
        if events:
            ctx.write(replica, events=events)
        return False

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
        """End the job and cancel whatever of it still runs."""
        ctx = self.ctx
        header = replica.header
        self._cancel_unfinished(replica, f"job {state.lower()}", message)
        self._set_state(replica, state, message, urgent=True)
        ctx.cancel_timer(TimerKey(TimerKind.BID_WINDOW, header.id))
        self._windows.discard(header.id)
        self._window_until.pop(header.id, None)
        ctx.cancel_timer(TimerKey(TimerKind.QUEUE_TIMEOUT, header.id))
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
            self._fail_lost(replica, self.ctx.presumed_lost, "was lost")
            self._schedule(replica)
        elif not replica.header.state.terminal:
            self.adopt(replica)

    def _schedule(self, replica: JobReplica) -> None:
        header = replica.header
        if header.state.terminal or header.leader != self.ctx.node_id:
            return
        executions = replica.executions.values()
        if replica.asking:
            if replica.id not in self._windows:  # a round is open, maybe a previous leader's
                asked = (e.node_id for e in executions if e.state == ExecutionState.ASK_FOR_BID)
                self._arm_window(replica.id, self._bid_wait(asked))
            return
        if self._cancel_surplus(replica):
            executions = replica.executions.values()
        spec = header.spec
        kind = spec.type
        if kind == JobType.BATCH:
            done = {e.partition for e in executions if e.state == ExecutionState.COMPLETED}
            if len(done) >= spec.count:
                self._finish(replica, JobState.COMPLETED, f"all {spec.count} partition(s) completed")
                return
        elif kind == JobType.OPS and executions:
            self._settle_ops(replica)
            return
        self._place(replica)

    def _settle_ops(self, replica: JobReplica) -> None:
        """Done when no node runs it: completed if each node's last run
        completed (a failed run is retried on its node, see `_retry_on`)."""
        if replica.active:
            return  # still running somewhere (and counted as records merge: no scan per update)
        last: dict[str, ExecutionRecord] = {}
        for e in sorted(replica.executions.values(), key=lambda e: (e.create_time, e.id)):
            if _PROGRESS[e.state] >= _PROGRESS[ExecutionState.BID_ACCEPTED] and e.state != ExecutionState.BID_REJECTED:
                last[e.node_id] = e
        placed = list(last.values())
        if not placed:
            reasons = Counter(e.message for e in replica.executions.values())
            self._finish(replica, JobState.FAILED, "no node took the job: " + _summarise(reasons))
            return
        if not all(e.state.terminal for e in placed):
            return
        failed = [e for e in placed if e.state != ExecutionState.COMPLETED]
        if failed:
            self._finish(replica, JobState.FAILED, f"{len(failed)} of {len(placed)} execution(s) failed: {failed[0].message}")
        else:
            self._finish(replica, JobState.COMPLETED, f"completed on all {len(placed)} matching node(s)")

    def _place(self, replica: JobReplica) -> None:
        """Ask candidates for the work that is missing, or queue/fail/wait."""
        header = replica.header
        spec = header.spec
        executions = list(replica.executions.values())
        if spec.type in (JobType.OPS, JobType.DAEMON):
            need = None  # every eligible node
        else:
            need = len(self._open_slots(replica))
            if need == 0:
                self.waiting.discard(header.id)
                return
        candidates = self._candidates(replica, need)
        if not candidates:
            self._no_candidates(replica, executions)
            return
        self.waiting.discard(header.id)
        self._ask(replica, candidates)

    def _ask(self, replica: JobReplica, candidates: list[str]) -> None:
        ctx = self.ctx
        asks = [ctx.new_execution(replica.header, candidate) for candidate in candidates]
        self._record(replica, asks)
        for ask in asks:
            ctx.emit_send(ask.node_id, AskBid(replica.header, ask.id))
        self._arm_window(replica.id, self._bid_wait(candidates))

    def _retry_on(self, replica: JobReplica, failed: ExecutionRecord) -> bool:
        """An ops job's failed run goes again on its node (ops runs once on
        each), `max_retries` times at most, while the node is alive and no
        later ask to it is pending or was declined."""
        ctx = self.ctx
        if not ctx.is_alive(failed.node_id) or self._failures(replica)[failed.node_id] > ctx.config.max_retries:
            return False
        return not any(
            e.node_id == failed.node_id and e.create_time > failed.create_time for e in replica.executions.values()
        )

    def _no_candidates(self, replica: JobReplica, executions: list[ExecutionRecord]) -> None:
        header = replica.header
        spec = header.spec
        running = any(e.state.active for e in executions)
        if spec.type == JobType.DAEMON or (spec.type == JobType.SERVICE and (running or header.retries or executions)):
            self._wait(replica)  # for suitable nodes
            return
        if spec.type == JobType.BATCH and running:
            self._wait(replica)  # for a suitable node for the remaining partitions
            return
        why = self._why_no_node(replica)
        queue_timeout = spec.task.timeouts.queue_timeout
        if spec.type == JobType.BATCH and queue_timeout > 0:
            if header.state != JobState.QUEUED:
                self._set_state(replica, JobState.QUEUED, f"no suitable node yet ({why}); waiting up to {queue_timeout} s")
                self.ctx.set_timer(TimerKey(TimerKind.QUEUE_TIMEOUT, header.id), self.ctx.now + queue_timeout)
            self._wait(replica)
            return
        if spec.type != JobType.OPS and any(
            _unanswered(e) and self.ctx.is_alive(e.node_id) for e in executions if e.state == ExecutionState.ASK_FOR_BID_REJECTED
        ):
            self._wait(replica)  # for nodes that have not answered yet: slow is not no
            return
        self._finish(replica, JobState.FAILED, f"no suitable node: {why}")

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
            if replica.header.spec.type == JobType.DAEMON:
                if self._daemon_looked.get(job_id, -math.inf) > now - DAEMON_LOOK_INTERVAL:
                    continue
                self._daemon_looked[job_id] = now
            self._schedule(replica)

    def _on_queue_timeout(self, key: TimerKey) -> None:
        replica = self._led_replica(key.subject)
        if replica is None or replica.header.state != JobState.QUEUED:
            return
        timeout = replica.header.spec.task.timeouts.queue_timeout
        self._finish(replica, JobState.FAILED, f"no suitable node within QueueTimeout of {timeout} s: {self._why_no_node(replica)}")

    def _cancel_surplus(self, replica: JobReplica) -> bool:
        """Cancel duplicate batch partitions and service replicas over Count."""
        spec = replica.header.spec
        if spec.type not in (JobType.BATCH, JobType.SERVICE):
            return False
        active = sorted((e for e in replica.executions.values() if e.state.active), key=lambda e: (e.create_time, e.id))
        keep: set[int] = set()
        surplus = []
        if spec.type == JobType.BATCH:
            # Both sides of a healed split may have completed a partition:
            # the record keeps one completion (the newest leader's).
            completed = sorted(
                (e for e in replica.executions.values() if e.state == ExecutionState.COMPLETED),
                key=lambda e: (-e.epoch, e.id),
            )
            for execution in completed:
                if execution.partition in keep:
                    surplus.append(execution)
                keep.add(execution.partition)
        for execution in active:
            if execution.partition in keep or not 0 <= execution.partition < max(spec.count, 1):
                surplus.append(execution)
            else:
                keep.add(execution.partition)
        if not surplus:
            return False
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
        return True

    # ------------------------------------------------------------ candidates

    def _candidates(self, replica: JobReplica, need: int | None) -> list[str]:
        """Eligible nodes to ask, best rendezvous rank first; all for ops and
        daemon jobs (minus the nodes that already have one)."""
        header = replica.header
        spec = header.spec
        ctx = self.ctx
        resources = spec.task.resources
        busy: set[str] = set()
        declined: set[str] = set()
        failures = self._failures(replica)
        horizon = ctx.now - ctx.config.decline_memory
        full = self._busy.get(header.id, {})
        for e in replica.executions.values():
            if e.node_id in busy or e.node_id in declined:
                continue  # ruled out already: a daemon's record asks some nodes many times
            if not e.state.terminal:
                busy.add(e.node_id)
            elif e.state == ExecutionState.ASK_FOR_BID_REJECTED and _unanswered(e):
                if e.modify_time > ctx.now - ctx.config.queue_retry_interval:
                    declined.add(e.node_id)  # asked again once the others had their chance
            elif e.state == ExecutionState.ASK_FOR_BID_REJECTED and e.node_id in full:
                if full[e.node_id][0] > ctx.now and not self._room_since(e.node_id, e.modify_time, resources):
                    declined.add(e.node_id)  # still full, as far as we know
            elif (
                e.state == ExecutionState.ASK_FOR_BID_REJECTED
                and (e.modify_time >= horizon or (spec.type == JobType.DAEMON and not self._restarted(e.node_id, e.modify_time)))
            ):
                # A daemon asks a node that said no again only once it restarted
                # (maybe reconfigured): every matching node, every 30 s, would
                # be thousands of asks in a large network.
                declined.add(e.node_id)
            elif spec.type in (JobType.OPS,) or (spec.type == JobType.DAEMON and e.state == ExecutionState.COMPLETED):
                busy.add(e.node_id)
        if spec.type == JobType.DAEMON:
            busy.update(n for n, count in failures.items() if count > ctx.config.max_retries)
        want = None if need is None else need + max(1, need // 2)
        # Most asks are met near the top of the ranking: rank a prefix, and
        # all of it only if the prefix falls short.
        ranked, complete = self._in_rank_order(replica, None if want is None else RANK_AHEAD * want)
        while True:
            first: list[str] = []
            tried: list[str] = []  # nodes that failed this job before: asked last
            for node_id in ranked:
                if node_id in busy or node_id in declined:
                    continue
                # Ops and daemon jobs ask every matching node, full or not (it
                # knows best); a full one tells a daemon when it has room.
                if want is not None:
                    free = self._free(node_id)
                    if free is None or not free.covers(resources.cpu, resources.memory, resources.disk, resources.gpu):
                        continue
                (tried if failures[node_id] else first).append(node_id)
                if want is not None and len(first) >= want:
                    break
            if complete or want is None or len(first) >= want:
                break
            ranked, complete = self._in_rank_order(replica, None)
        if want is None:
            return sorted(first + tried)
        return (first + sorted(tried, key=lambda n: failures[n]))[:want]

    def _in_rank_order(self, replica: JobReplica, k: int | None) -> tuple[list[str], bool]:
        """The job's first `k` (or all) eligible nodes, best rendezvous rank
        first, and whether that is all of them; ranked once per job while
        the alive set holds still, then only walked."""
        eligible = self._eligible(replica.header.spec)
        held = self._ranked.get(replica.id)
        if held is None or held[0] is not eligible or (len(held[1]) < len(eligible) and (k is None or k > len(held[1]))):
            held = self._ranked[replica.id] = (eligible, election.rank(replica.id, eligible, k=k))
        ranked = locality.holders_first(held[1], eligible, locality.input_cids(replica.header.spec), self.ctx.providers.holders)
        return ranked, len(held[1]) == len(eligible)

    def _room_since(self, node_id: str, since: float, resources: Resources) -> bool:
        """Whether a bid after `since` showed room for `resources`."""
        hint = self._free_hints.get(node_id)
        return hint is not None and hint[1] > since and hint[0].covers(
            resources.cpu, resources.memory, resources.disk, resources.gpu
        )

    def _restarted(self, node_id: str, since: float) -> bool:
        info = self.ctx.info(node_id)
        return info is not None and info.started_at > since

    def _free(self, node_id: str) -> Capacity | None:
        """What the node has free, as far as we know: its bid if recent, else its heartbeat."""
        ctx = self.ctx
        if node_id == ctx.node_id:
            return ctx.free()
        hint = self._free_hints.get(node_id)
        if hint is not None and hint[1] >= ctx.now - FREE_HINT_TTL:
            return hint[0]
        info = ctx.info(node_id)
        return None if info is None else info.free

    def _eligible(self, spec: JobSpec) -> list[str]:
        """Alive nodes that could ever run the spec (not counting what they
        have free now). Cached per shape of spec and membership table (which
        nodes of one process share until their views differ)."""
        ctx = self.ctx
        ids = ctx.alive_ids()
        table, changes = ctx.member_table()
        shape = _shape(spec)
        key = (shape, id(ids), id(table), changes)
        held = _eligible_cache.get(key)
        if held is not None and held[0] is ids and held[1] is table:
            return held[2]
        if len(_eligible_cache) >= _ELIGIBLE_LIMIT:
            _eligible_cache.clear()
        eligible = [info.node_id for info in ctx.alive_infos() if not _unfit(spec, info, shape)]
        _eligible_cache[key] = (ids, table, eligible)  # held, so their ids stay theirs
        return eligible

    def _why_no_node(self, replica: JobReplica) -> str:
        spec = replica.header.spec
        reasons: Counter[str] = Counter()
        resources = spec.task.resources
        for info in self.ctx.alive_infos():
            reason = _unfit(spec, info)
            if reason is None and not info.free.covers(resources.cpu, resources.memory, resources.disk, resources.gpu):
                reason = "too few free resources"
            if reason is not None:
                reasons[_gist(reason)] += 1
        for e in replica.executions.values():
            if e.state == ExecutionState.ASK_FOR_BID_REJECTED and e.message:
                reasons[f"declined: {_gist(e.message)}"] += 1
        return _summarise(reasons) if reasons else "no node is alive"

    def _failures(self, replica: JobReplica) -> Counter[str]:
        return Counter(e.node_id for e in replica.executions.values() if e.state == ExecutionState.FAILED)

    def _free_score(self, node_id: str) -> float:
        info = self.ctx.info(node_id)
        free = self._free(node_id)
        if info is None or free is None:
            return 0.0
        cpu = free.cpu / info.capacity.cpu if info.capacity.cpu else 0.0
        memory = free.memory / info.capacity.memory if info.capacity.memory else 0.0
        return cpu + memory

    # ------------------------------------------------------------ writing

    def _led_replica(self, job_id: str) -> JobReplica | None:
        return self.ctx.jobs.get(job_id) if job_id in self.led else None

    def _moved(
        self, execution: ExecutionRecord, state: ExecutionState, message: str, desired: DesiredState | None = None
    ) -> ExecutionRecord:
        header = self.ctx.jobs[execution.job_id].header
        return quick_replace(
            execution,
            state=state,
            message=message,
            desired=desired or execution.desired,
            epoch=header.epoch,
            revision=execution.revision + 1,
            modify_time=self.ctx.now,
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


_ELIGIBLE_LIMIT = 4096
_eligible_cache: dict[tuple[Any, ...], tuple[Sequence[str], Mapping[str, NodeInfo], list[str]]] = {}
_UNFIT_LIMIT = 1 << 20
_shapes: dict[int, tuple[JobSpec, tuple[Any, ...]]] = {}


def _shape(spec: JobSpec) -> tuple[Any, ...]:
    """`selection.fit_key(spec)`, kept per spec object (held, so its id
    stays its own): a spec is asked for its shape at every placement."""
    held = _shapes.get(id(spec))
    if held is not None and held[0] is spec:
        return held[1]
    if len(_shapes) >= _ELIGIBLE_LIMIT:
        _shapes.clear()
    shape = _shapes[id(spec)] = (spec, selection.fit_key(spec))
    return shape[1]
_unfit_cache: dict[tuple[Any, ...], tuple[NodeInfo, str | None]] = {}


def _unfit(spec: JobSpec, info: NodeInfo, shape: tuple[Any, ...] | None = None) -> str | None:
    """Why this node can never take the spec (free resources aside), by the
    node's own selection rules as far as its node info shows them.

    Cached by the spec's shape and the info object (held by the cache, so
    its id stays its own): every leader of a large network checks every
    member for each new shape of job, and in one process (the simulator)
    they share the infos, so they share the answers."""
    key = (shape or _shape(spec), id(info))
    held = _unfit_cache.get(key)
    if held is not None and held[0] is info:
        return held[1]
    if len(_unfit_cache) >= _UNFIT_LIMIT:
        _unfit_cache.clear()
    reason = _check_fit(spec, info)
    _unfit_cache[key] = (info, reason)
    return reason


def _check_fit(spec: JobSpec, info: NodeInfo) -> str | None:
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


def _unanswered(execution: ExecutionRecord) -> bool:
    """An ask the node never answered (or not before the round was decided): not a no."""
    return execution.message.startswith(NO_ANSWER)


def _gist(reason: str) -> str:
    """A reason without its node-specific details, so reasons add up."""
    for mark in (":", " (", ";"):
        reason = reason.split(mark, 1)[0]
    return reason


def _summarise(reasons: Counter[str]) -> str:
    return "; ".join(f"{count} node(s): {reason}" for reason, count in reasons.most_common(5))
