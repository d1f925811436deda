"""Asking nodes for bids and deciding a round: a part of `Leader`.

Theory of operation
-------------------
For the work the scheduling step wants placed, `_candidates` picks nodes
(`protocols.placement`: eligible ones in the job's rendezvous order, those
the job's earlier executions rule out skipped) and `_ask` opens a round: one
execution in AskForBid per node, all in one write. Answers are held, not
written, until the round is decided, so an ops job that asks every matching
node writes once, not once per answer.

A round is decided as soon as enough acceptable bids are in (batch or
service: one per open slot; ops and daemon jobs wait for every answer), or
when its window closes (the leader's own bid counts as soon as it is in).
While bids are too few and answers are missing, the window opens again, up
to `ROUND_PATIENCE` times. An ask still unanswered then is marked rejected
with "no answer", which is not a no: that node may be asked again. `_decide`
ranks the bids (`placement.rank_bids`), accepts as many as there are open
slots and rejects the rest: the answers, the decisions and the job's new
state are three writes, which the flush sends to the holders as one message.

`Bidding` keeps the open rounds' state; it is mixed into `Leader`, whose
scheduling step it calls once a round is decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from protocols import locality, placement
from protocols.context import NodeContext
from protocols.jobspec import JobSpec
from protocols.jobtypes import policy_for
from protocols.messages import AskBid, BidDecision, BidReply, Capacity, RoomFreed
from protocols.placement import NO_ANSWER, Recall
from protocols.quickinit import quick_replace
from protocols.records import DesiredState, ExecutionRecord, ExecutionState, HistoryEvent, JobReplica, JobState
from protocols.timers import TimerKey, TimerKind


FREE_HINT_TTL = 10.0  # seconds a bidder's word on its free resources beats its heartbeat
ROUND_PATIENCE = 4  # bid windows a round waits for missing answers while it has too few bids


class Bidding:
    """Bid rounds of the jobs this node leads (part of `Leader`)."""

    ctx: NodeContext
    led: set[str]

    def __init__(self) -> None:
        # Nodes that declined a job only for want of free resources: asked
        # again after a back-off that doubles while they stay full, or as
        # soon as a fresher bid shows room. job -> node -> (ask after, times).
        self._busy: dict[str, dict[str, tuple[float, int]]] = {}
        self._windows: set[str] = set()  # jobs whose bid window timer is armed
        self._window_until: dict[str, float] = {}  # ...when it fires, for windows stretched by slow bidders
        self._patience: dict[str, int] = {}  # open rounds: windows left to wait for missing answers
        # Answers to the open bid round, by job, with the transition each
        # records: written in one go when the round is decided.
        self._answers: dict[str, dict[str, tuple[ExecutionRecord, HistoryEvent]]] = {}
        # job -> (alive list, member table's change count, its first eligible
        # nodes in rendezvous order, whether that is all of them)
        self._ranked: dict[str, tuple[Sequence[str], int, list[str], bool]] = {}
        self._fits = placement.FitCache()  # the shape of each job led
        # What bidders said they have free, and when: fresher than their
        # heartbeats, which a large network spaces out.
        self._free_hints: dict[str, tuple[Capacity, float]] = {}

    def _candidates(self, replica: JobReplica, need: int | None) -> list[str]:
        """Nodes to ask, best rendezvous rank first (`protocols.placement`):
        about `need` plus a margin with room now, or every eligible one (ops
        and daemon jobs) but those the job's earlier executions rule out."""
        header = replica.header
        spec = header.spec
        policy = policy_for(spec)
        ctx = self.ctx
        resources = spec.task.resources
        failures = replica.failures
        recall = Recall(
            now=ctx.now,
            decline_memory=ctx.config.decline_memory,
            queue_retry_interval=ctx.config.queue_retry_interval,
            full=self._busy.get(header.id, {}),
            room_since=lambda n, since: self._room_since(n, since, spec),
            restarted=self._restarted,
        )
        excluded = {
            node_id
            for node_id, executions in replica.by_node.items()
            if any(
                placement.rules_out(e, recall, until_restart=policy.until_restart, holds_node=policy.holds_node)
                for e in executions
            )
            or policy.gives_up(failures[node_id], ctx.config.max_retries)
        }
        want = None if need is None else placement.ask_margin(need)
        room = lambda n: placement.fits(self._free(n), resources)  # noqa: E731
        # Most asks are met near the top of the ranking: rank a prefix, and
        # all of it only if the prefix falls short.
        ranked, complete = self._in_rank_order(replica, None if want is None else placement.RANK_AHEAD * want)
        first, tried = placement.choose(ranked, excluded, failures, want, room)
        if not complete and want is not None and len(first) < want:
            ranked, _ = self._in_rank_order(replica, None)
            first, tried = placement.choose(ranked, excluded, failures, want, room)
        return placement.picked(first, tried, failures, want)

    def _in_rank_order(self, replica: JobReplica, k: int | None) -> tuple[list[str], bool]:
        """The job's first `k` (or all) eligible nodes, best rendezvous rank
        first, and whether that is all of them; ranked once per job while
        the membership view (the alive list and the member table) holds
        still, then only walked."""
        ctx = self.ctx
        alive, changes = ctx.alive_ids(), ctx.table_changes()
        spec = replica.header.spec
        held = self._ranked.get(replica.id)
        if held is None or held[0] is not alive or held[1] != changes or (not held[3] and (k is None or k > len(held[2]))):
            shape = self._fits.shape(replica.id, spec)
            ranked, complete = placement.eligible_ranked(replica.id, spec, shape, alive, ctx.info, k, ctx.alive_infos)
            held = self._ranked[replica.id] = (alive, changes, ranked, complete)
        cids = locality.input_cids(spec)
        if cids:
            eligible = placement.Eligible(spec, self._fits.shape(replica.id, spec), alive, ctx.info)
            return locality.holders_first(held[2], eligible, cids, ctx.providers.holders), held[3]
        return held[2], held[3]

    def _room_since(self, node_id: str, since: float, spec: JobSpec) -> bool:
        """Whether a bid after `since` showed room for the spec."""
        hint = self._free_hints.get(node_id)
        return hint is not None and hint[1] > since and placement.fits(hint[0], spec.task.resources)

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

    def _why_no_node(self, replica: JobReplica) -> str:
        return placement.why_no_node(
            replica.header.spec, self.ctx.alive_infos(), replica.executions.values()
        )

    def _free_score(self, node_id: str) -> float:
        info = self.ctx.info(node_id)
        return placement.free_score(self._free(node_id), None if info is None else info.capacity)

    def _ask(self, replica: JobReplica, candidates: list[str]) -> None:
        ctx = self.ctx
        asks = [ctx.new_execution(replica.header, candidate) for candidate in candidates]
        self._record(replica, asks)
        for ask in asks:
            ctx.emit_send(ask.node_id, AskBid(replica.header, ask.id))
        self._arm_window(replica.id, self._bid_wait(candidates))

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
            full[sender] = placement.backoff(full.get(sender), self.ctx.now, policy_for(replica.header.spec).backoff_factor)
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
        if replica is None or not policy_for(replica.header.spec).keeps_looking:
            return
        self._free_hints[sender] = (notice.free, self.ctx.now)
        newest = max(replica.on_node(sender), key=lambda e: (e.create_time, e.id), default=None)
        if newest is None or newest.state != ExecutionState.ASK_FOR_BID_REJECTED:
            return
        if replica.failures[sender] > self.ctx.config.max_retries:
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
        spec = replica.header.spec
        policy = policy_for(spec)
        if not policy.fills_slots() or not answers:
            return False
        bids = sum(1 for a, _ in answers.values() if a.state == ExecutionState.ASK_FOR_BID_ACCEPTED)
        bids += sum(1 for e in replica.executions.values() if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED)
        return bids >= len(policy.open_slots(spec, replica.executions.values())) > 0

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
        """Close the round: the answers in, asks left unanswered, the winning
        and losing bids and the job's new state go into the record."""
        ctx = self.ctx
        self._patience.pop(replica.id, None)
        answers = self._answers.pop(replica.id, None) or {}
        # (An answer to an ask the record has moved past since, e.g. to the
        # executor's own Running: a leader restarted after it decided the round.)
        records = replica.executions
        answers = {i: a for i, a in answers.items() if i in records and records[i].state == ExecutionState.ASK_FOR_BID}
        header = replica.header
        # The record as the answers leave it (in its order), not yet written.
        view = {**replica.executions, **{i: a for i, (a, _) in answers.items()}} if answers else replica.executions
        changes: list[ExecutionRecord] = []
        for execution in view.values():
            if execution.state == ExecutionState.ASK_FOR_BID:
                why = f"{NO_ANSWER} before the round was decided"
                changes.append(self._moved(execution, ExecutionState.ASK_FOR_BID_REJECTED, why, DesiredState.STOPPED))
                ctx.emit_send(
                    execution.node_id, BidDecision(header.id, execution.id, header.epoch, False, "bid window closed")
                )
        policy = policy_for(header.spec)
        slots = policy.open_slots(header.spec, view.values())
        bids = [e for e in view.values() if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED]
        held = locality.inputs_held(locality.input_cids(header.spec), ctx.providers.holders)
        bids = placement.rank_bids(bids, replica.failures, held, self._free_score, ctx.rng)
        winners, losers = bids[: len(slots)], bids[len(slots) :]
        for execution, partition in zip(winners, slots):
            accepted = self._moved(execution, ExecutionState.BID_ACCEPTED, "bid accepted", DesiredState.RUNNING)
            changes.append(quick_replace(accepted, partition=partition))
            ctx.emit_send(
                execution.node_id, BidDecision(header.id, execution.id, header.epoch, True, "bid accepted", partition)
            )
        for execution in losers:
            why = "other bids were preferred"
            changes.append(self._moved(execution, ExecutionState.BID_REJECTED, why, DesiredState.STOPPED))
            ctx.emit_send(execution.node_id, BidDecision(header.id, execution.id, header.epoch, False, why))
        if answers:
            ctx.write(replica, executions=[a for a, _ in answers.values()], events=[t for _, t in answers.values()])
        if changes:
            self._record(replica, changes)
        if winners and header.state in (JobState.PENDING, JobState.QUEUED):
            self._set_state(replica, JobState.RUNNING, f"placed on {len(winners)} node(s)")
        self._schedule(replica)
