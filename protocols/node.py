"""One node of the network, as a state machine: inputs in, effects out.

Theory of operation
-------------------
A node plays four parts at once, each in its own module; this one only
composes them and routes each input to its part:

- a *member* (`protocols.membership`): it publishes its `NodeInfo` on every
  heartbeat and tracks who else is alive (the handlers here);
- a *keeper* of the jobs rendezvous hashing puts in its care
  (`protocols.replication`): it merges writes, sends its own coalesced,
  repairs what was lost by anti-entropy, and asks keepers for jobs it does
  not keep;
- a *leader* of the jobs that rendezvous hashing gives it (`protocols.leader`)
  and an *executor* of the work it wins (`protocols.executor`). These two see
  the node only through a `protocols.context.NodeContext`: the clock, the
  replicas, narrow membership questions, and the effects they may emit.

Only a job's leader writes the job (see `protocols.replication`). When a
leader dies, its keepers see it in membership; the first live successor in
the job's header (the rendezvous ranking made at submission) takes over with
the next epoch. A deposed leader that returns sees the higher epoch and steps
down. Peer messages pass `protocols.authority` (who may write what) before
any handler.

`handle()` never raises on a peer's input: a message that does not fit the
node's view is ignored (it is stale, duplicated, or from a deposed leader).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from protocols import election
from protocols.authority import Authority
from protocols.context import Dropped, NodeContext
from protocols.events import (
    DataHeld,
    Effect,
    EnginesChanged,
    ExecutionEnded,
    ExecutionProgressed,
    FetchJob,
    FindProviders,
    Input,
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
from protocols.replication import FETCH_FROM, Replication  # noqa: F401 (FETCH_FROM: re-exported)
from protocols.records import (
    ExecutionRecord,
    HistoryEvent,
    JobDelta,
    JobHeader,
    JobReplica,
    JobState,
)
from protocols.nodeconfig import NodeConfig
from protocols.timers import TimerHandler, TimerKey, TimerKind

VERSION = "0.1.0"
MEMBERS_PER_MESSAGE = 1000  # node infos per welcome message (a few hundred KiB)
REFUTE_REPEATS = 3  # rounds a node says it is alive in after it was accused
WELCOMERS = 2  # members before a newcomer on the ring that send it the member list
MAX_STOP_ATTEMPTS = 30  # a stop is asked again every resend_interval, this many times at most
_PING = TimerKey(TimerKind.PING)  # (set every ping interval by every node: made once)


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
        self.replication = Replication(
            self.ctx, self.jobs, self.leader, self.executor, learned=self._on_learned, restored=restored
        )
        self.ctx.attach(self.replication, self.executor.free)
        # Who may write what: asked before any handler (see `protocols.authority`).
        self.authority = Authority(
            self.node_id, self.jobs, self.membership.is_alive, self.membership.info, self.membership.alive_ids,
            self.executor.follows, self.providers.asked,
        )
        self._stops: dict[str, tuple[str, int]] = {}  # stops asked of other leaders: (reason, attempts)
        self._refutations = 0  # ping rounds left that repeat our refutation of an accusation
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
            JobUpdated: self.replication.on_job_updated,
            SubmitToLeader: self._on_submit_to_leader,
            DigestRequest: self.replication.on_digest_request,
            DigestReply: self.replication.on_digest_reply,
            Records: self.replication.on_records,
            RecordRequest: self.replication.on_record_request,
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
        self._handlers = handlers
        # The kinds `authority` has a rule for (membership's pings and acks,
        # most messages in a large network, have none: no call to ask).
        self._ruled = frozenset(kind for kind in handlers if self.authority.rules(kind))
        # Any message from a member shows it alive (see `Membership.heard`):
        # told before every handler.
        self._heard = self.membership.heard
        self._ping_due = 0.0
        self._timers: dict[TimerKind, TimerHandler] = {
            TimerKind.HEARTBEAT: self._on_heartbeat_timer,
            TimerKind.PING: self._on_ping_timer,
            TimerKind.MEMBERSHIP: self._on_membership_timer,
            TimerKind.FLUSH: self.replication.on_flush_timer,
            TimerKind.ANTI_ENTROPY: self._on_anti_entropy_timer,
            TimerKind.CHECK_IN: self._on_check_in_timer,
            TimerKind.RESYNC: self.replication.on_resync_timer,
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
        ctx = self.ctx  # (the properties below, looked through once: this runs for every input)
        previous, ctx.now = ctx.now, now
        config = ctx.config
        if previous and now - previous > config.suspect_after * config.ping_interval:
            self.leader.woke()  # nothing handled for that long, not even our own timers: we were away
        if type(event) is Received:  # most inputs: a peer's message
            message = event.message
            kind = type(message)
            handler = self._handlers.get(kind)
            # `sender` is the authenticated peer, never a field: see `protocols.authority`.
            if handler is None:
                ctx.drop(event.sender, message, "is no message a node handles")
            elif kind not in self._ruled or self.authority.check(event.sender, message) is None:
                self._heard(event.sender)
                handler(event.sender, message)
        elif type(event) is TimerFired:  # the next most: our own timers (pings above all)
            key = event.key
            timer = self._timers.get(key.kind) if isinstance(key, TimerKey) else None
            if timer is not None:
                timer(key)
        else:
            self._handle_local(event)
        out, ctx.out = ctx.out, []  # (`ctx.drain()`, inlined: this runs for every input)
        return out

    def _handle_local(self, event: Input) -> None:
        match event:
            case TimerFired(key):
                if isinstance(key, TimerKey) and key.kind in self._timers:
                    self._timers[key.kind](key)
            case SendFailed(peer, message, reason):
                self.replication.on_send_failed(peer, message)
                self.leader.on_send_failed(peer, message, reason)
                self.executor.on_send_failed(peer, message, reason)
                self.providers.on_send_failed(peer, message)
            case SubmitJob(job_id, spec, salt):
                self._submit(job_id, spec, salt)
            case FetchJob(job_id):
                self.replication.fetch(job_id)
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

    @property
    def dropped(self) -> Dropped:
        """Peer input dropped past `authority` (stale, repeated, illegal moves), by why."""
        return self.ctx.dropped

    def members(self) -> list[tuple[NodeInfo, MemberStatus]]:
        """Every member this node knows of, with its status, ourselves included."""
        return self.membership.all_members()

    def own_member(self) -> tuple[NodeInfo, MemberStatus | None]:
        """What this node says of itself, and its status in its own eyes."""
        return self.membership.local, self.membership.status(self.node_id)

    def keeps(self, replica: JobReplica) -> bool:
        """Whether this node keeps the job's whole record up to date."""
        return replica.header.kept_by(self.node_id)

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
        replica = self.replication.submitted(JobDelta(header, (), (created,)))
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
            self.replication.fetch(job_id, attempt)  # (the leader we know may be gone: ask again on retries)
        if replica is not None:
            self.out.append(Send(replica.header.leader, StopRequest(job_id, reason)))
        self.set_timer(TimerKey(TimerKind.STOP_RETRY, job_id), self.now + self.config.resend_interval)

    def _on_stop_retry(self, key: TimerKey) -> None:
        held = self._stops.get(key.subject)
        if held is not None:
            self._stop(key.subject, held[0], held[1] + 1)

    def _on_learned(self, job_id: str) -> None:
        """A record we did not hold arrived: the answer a stop waited for names the leader."""
        if job_id in self._stops:
            self._stop(job_id, *self._stops[job_id])

    def _on_stop_request(self, sender: str, message: StopRequest) -> None:
        self._stop(message.job_id, message.reason)
        replica = self.jobs.get(message.job_id)
        if replica is not None and replica.header.state.terminal and not replica.header.kept_by(sender):
            # The asker gets no writes of the job: show it the end, or it asks again.
            self.out.append(Send(sender, Records((JobDelta(replica.header),))))

    def _on_submit_to_leader(self, sender: str, message: SubmitToLeader) -> None:
        held = self.jobs.get(message.delta.header.id)
        before = held.header if held is not None else None
        replica = self.replication.merge(message.delta)
        # A merge that changed the header had the leader adopt it (`Leader.reconcile`): adopt once.
        if replica.header is before and replica.header.leader == self.node_id:
            self.leader.adopt(replica)

    # ------------------------------------------------------------ periodic care

    def _on_anti_entropy_timer(self, key: TimerKey) -> None:
        self.replication.on_anti_entropy_timer(key)
        self.leader.check_leaders()

    def _on_check_in_timer(self, key: TimerKey) -> None:
        self.set_timer(TimerKey(TimerKind.CHECK_IN), self.now + self._jittered(self.config.check_in_interval))
        self.executor.check_in()

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
        self.membership.forget_gone(self.now)
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
            self.replication.catch_up(info.node_id)
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
            self.replication.catch_up(change.node_id)

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
        ctx = self.ctx  # (looked through once: every node runs this every ping interval)
        now = ctx.now
        late = now - self._ping_due  # behind on our work? then slow to judge others
        self._ping_due = now + ctx.jittered(ctx.config.ping_interval)
        ctx.set_timer(_PING, self._ping_due)
        if self._refutations:
            self._refutations -= 1
            self._heartbeat()
        pings, accusations, changes, requests = self.membership.ping_round(now, late)
        out = ctx.out
        for peer, nonce in pings:
            out.append(Send(peer, Ping(nonce)))
        for helper, peer, nonce in requests:
            out.append(Send(helper, PingReq(peer, nonce)))
        for accusation in accusations:
            out.append(Publish(NODES_TOPIC, accusation))
        for change in changes:
            self._on_member_change(change)
        if changes:
            self._schedule_membership_check()

    def _on_ping(self, sender: str, message: Ping) -> None:
        self.ctx.out.append(Send(sender, Ack(message.nonce)))

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
        return self.ctx.jittered(interval)

    def _drain(self) -> list[Effect]:
        return self.ctx.drain()

