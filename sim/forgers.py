"""A fault: members that forge every kind of message a node could be fooled by.

Chosen members (`--forgers`) run the honest protocol and, every
`FORGE_INTERVAL` while faults last, each also forges, about a job it neither
leads nor keeps nor runs, one message of each kind it can: a `JobUpdated`
failing the job with its revision +1000, `Records` and `DigestReply` carrying
that altered record, a `SubmitToLeader` re-submitting the job's id with
another spec, an `ExecutionUpdate` failing another node's execution, a
`BidDecision` and a `CancelExecution` as if it led the job, an `AskBid`
under the leader's name, a `NodeInfo` and a `NodeLeft` for another node and
a `Members` running a live member's heartbeats far ahead. Each goes straight
to the nodes it would hurt (the job's keepers, the execution's node, the
leader), with the forger as its authenticated sender.

A forger stands far down the jobs' rendezvous rankings it forges about (a
node near the top may be a successor a failover made, which this network
cannot tell from a forger: see `protocols.authority`). Forged words say
"forged": `check_unforged` fails the run if any live honest node's record of a
job holds one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from protocols import election
from protocols.authority import PLAUSIBLE_RANK
from protocols.events import Received
from protocols.messages import (
    AskBid,
    BidDecision,
    CancelExecution,
    DigestReply,
    ExecutionUpdate,
    JobUpdated,
    Members,
    NodeInfo,
    NodeLeft,
    Records,
    SubmitToLeader,
)
from protocols.records import ExecutionState, JobDelta, JobReplica, JobState

from sim.invariants import InvariantViolation
from sim.world import World

FORGE_INTERVAL = 2.0  # simulated seconds between a forger's rounds
FAR_DOWN = 2 * PLAUSIBLE_RANK  # a forger forges only about jobs whose rendezvous ranking puts it below this
MARK = "forged"
UNFORGED = "no honest node holds a forged write"


def forger_count(value: float, nodes: int) -> int:
    """`--forgers`: a fraction of the nodes below 1, else a count."""
    if value < 0:
        raise ValueError(f"--forgers must be a fraction in [0, 1) or a count >= 1, not {value}")
    count = round(value * nodes) if value < 1 else int(value)
    if count >= nodes:
        raise ValueError(f"--forgers {value} leaves no honest node among {nodes}")
    return count


class Forgers:
    def __init__(self, world: World, node_ids: Sequence[str], count: int, seed: int) -> None:
        self.world = world
        self.rng = random.Random(f"{seed}/forgers")  # its own stream: the honest run's draws stay as they were
        self.ids = sorted(self.rng.sample(list(node_ids), count))
        self.honest = sorted(set(node_ids) - set(self.ids))
        self.sent: Counter[str] = Counter()

    def schedule(self, start: float, end: float) -> None:
        at = start
        while at < end:
            self.world.call_at(at, self._round)
            at += FORGE_INTERVAL

    # ------------------------------------------------------------ one round

    def _round(self) -> None:
        world = self.world
        up = {slot.node_id: slot for slot in world.up_slots()}
        for forger in self.ids:
            if forger not in up:
                continue
            replica = self._victim(forger, up)
            if replica is not None:
                self._forge_about(forger, replica, up)
            self._forge_members(forger, up)

    def _victim(self, forger: str, up: dict[str, object]) -> JobReplica | None:
        """A live job, as an honest holder has it, that the forger has no
        part in by any honest node's copy (not keeper, not runner: those the
        network trusts with the record, see `protocols.authority`)."""
        holders = [up[n] for n in self.honest if n in up]
        for _ in range(8):
            slot = self.rng.choice(holders)
            jobs = slot.node.jobs  # type: ignore[attr-defined]
            if not jobs:
                continue
            replica = jobs[self.rng.choice(list(jobs))]
            header = replica.header
            if header.state.terminal or forger in election.rank(header.id, list(up), k=FAR_DOWN):
                continue
            copies = (h.node.jobs.get(header.id) for h in holders)  # type: ignore[attr-defined]
            if any(c is not None and _has_part(c, forger) for c in copies):
                continue
            return replica
        return None

    def _forge_about(self, forger: str, replica: JobReplica, up: dict[str, object]) -> None:
        header = replica.header
        failed = replace(header, state=JobState.FAILED, revision=header.revision + 1000, message=f"{MARK} by {forger}")
        executions = tuple(
            replace(e, state=ExecutionState.FAILED, revision=e.revision + 1000, message=MARK)
            for e in replica.executions.values()
        )
        altered = JobDelta(failed, executions)
        keepers = sorted(header.keepers)
        for keeper in keepers:
            self._send(forger, keeper, JobUpdated(JobDelta(failed)))
            self._send(forger, keeper, Records((altered,)))
            self._send(forger, keeper, DigestReply(deltas=(altered,)))
        other_spec = replace(header, spec=header.spec.model_copy(update={"priority": header.spec.priority + 1}),
                             message=MARK, revision=1)
        self._send(forger, header.leader, SubmitToLeader(JobDelta(other_spec)))
        self._send(forger, header.leader, SubmitToLeader(JobDelta(replace(other_spec, submitter=forger))))
        running = [e for e in replica.executions.values() if not e.state.terminal and e.node_id != forger]
        if running:
            e = self.rng.choice(running)
            self._send(forger, header.leader, ExecutionUpdate(header.id, e.id, header.epoch, ExecutionState.FAILED, MARK))
            self._send(forger, e.node_id, CancelExecution(header.id, e.id, header.epoch, MARK))
            self._send(forger, e.node_id, BidDecision(header.id, e.id, header.epoch, False, MARK))
            self._send(forger, e.node_id, AskBid(header, f"e-{MARK}-{self.rng.getrandbits(32):08x}"))

    def _forge_members(self, forger: str, up: dict[str, object]) -> None:
        """Speak for another live node, and relay a faked version of one."""
        others = [n for n in self.honest if n in up]
        if len(others) < 2:
            return
        victim, target = self.rng.sample(others, 2)
        info = self.world.slots[victim].node.membership.local  # type: ignore[union-attr]
        ahead: NodeInfo = replace(info, seq=info.seq + 1000, labels={**info.labels, MARK: forger})
        self._send(forger, target, ahead)
        self._send(forger, target, NodeLeft(victim, info.incarnation))
        self._send(forger, target, Members((ahead,)))

    def _send(self, forger: str, peer: str, message: object) -> None:
        if peer == forger or peer not in self.world.slots:
            return
        self.sent[type(message).__name__] += 1
        self.world.inject(peer, Received(forger, message))


def _has_part(replica: JobReplica, node_id: str) -> bool:
    return replica.header.kept_by(node_id) or any(e.node_id == node_id for e in replica.executions.values())


def check_unforged(seed: int, slots: Sequence[object], forgers: Sequence[str]) -> None:
    """No live honest node holds a forged job write, or believes a forged
    word about a member."""
    bad = set(forgers)
    offenders = []
    for slot in slots:
        if slot.node_id in bad:  # type: ignore[attr-defined]
            continue
        node = slot.node  # type: ignore[attr-defined]
        for replica in node.jobs.values():
            if MARK in replica.header.message or any(e.message == MARK for e in replica.executions.values()):
                offenders.append(f"{replica.id} on {slot.node_id}")  # type: ignore[attr-defined]
        for info in node.membership.alive_infos():
            if MARK in info.labels:
                offenders.append(f"member {info.node_id} as told by {info.labels[MARK]}, on {slot.node_id}")  # type: ignore[attr-defined]
        if len(offenders) > 20:
            break
    if offenders:
        shown = ", ".join(offenders[:5])
        raise InvariantViolation(seed, UNFORGED, shown + (f" and {len(offenders) - 5} more" if len(offenders) > 5 else ""))
