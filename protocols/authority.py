"""Who may write what: the check every node makes of every peer's message.

Theory of operation
-------------------
A message's *sender* is never a field of the message: it is the peer that
authenticated the connection it came on (the Noise handshake of the stream,
`p2pnode.transport`), or, for pubsub, the origin whose key signed it (strict
signing; `p2pnode.runtime` also drops an envelope naming another sender). So
a check below can trust `sender` and nothing else in the message.

Each node decides for itself, from the record it holds, whether the sender
may say what it says; `Node.handle` asks `Authority.check` before any
handler runs, and a refusal drops the message, counted by its reason (the
node's `refused` counter), without raising. One rule per message type, in
`_RULES`:

- a job's record (`JobUpdated`) is written only by its leader at that epoch
  (`Authority.may_lead`): the leader our copy names; a keeper it names (a
  successor taking over, a deposed leader, which stays a keeper); the
  submitter handing a job whose leader did not answer to a keeper; at an
  older epoch, a node the job's history shows wrote it; and, only once the
  chain our copy names is broken in our view, a newcomer the job's
  rendezvous ranking makes plausible (a takeover we did not hear of);
- a submit (`SubmitToLeader`) creates a job: for a job we hold, only its own
  submitter may hand it on (to a keeper, with the same spec), nobody may
  change it;
- repairs (`Records`, `DigestReply`) relay records: one we hold only a
  keeper or runner our copy names, the job's entitled leader, the leader our
  work reports to, or a leader or keeper it names that the ranking makes
  plausible (whole or not, the chain we know: a split's other half must
  converge);
  one we lack only a node it names, or one high in the job's ranking (those
  are the nodes `Node.fetch` asks); a relay that teaches us nothing passes;
- an execution's progress (`ExecutionUpdate`, `BidReply`) comes only from
  the node the execution is on;
- orders to an executor (`AskBid`, `BidDecision`, `CancelExecution`,
  `LeaderChanged`) come only from the job's leader by the same rule;
- a node speaks only for itself (`NodeInfo`, `NodeLeft`); a relayed member
  list (`Members`) may introduce nodes, never change what we hold of a live
  member;
- a provider announces only itself (`ProviderAnnounce` names nobody: the
  sender is the provider) and only while it is a live member; an answer
  about providers (`ProviderReply`) comes only from a keeper we asked
  (`protocols.providers`).

Fields no write changes (the job's spec, submitter, salt, creation time) must
match our copy whoever sends them; for a job we hold no copy of, its ID must
certify its spec and submitter (`protocols.jobid`), so a forged version of a
job -- a submit racing the real one to its leader, a record invented for a
node without a copy -- is refused everywhere.

What this does not stop (there is no Byzantine fault tolerance):

- a malicious *leader* writes its jobs as it likes (fail them, invent
  results), and a malicious *keeper* of a job can take it over (a higher
  epoch naming itself leader, as a successor does when the leader dies) or
  relay an altered copy of it to its fellow keepers;
- a member that runs work of a job relays its record as it likes (executors
  pass on what their leader told them: a deposed leader's answer, a record a
  keeper missed), and a member can add, to a record it relays under the
  header the job's leader wrote, executions that name itself (a runner shows
  the keepers its work so);
- a member that stands high in a job's rendezvous ranking (`plausible`) can
  relay a record naming itself its leader or keeper, and give orders as a
  leader that took over while the chain we know is broken, or as one
  deposed at an older epoch;
- any member may submit and stop jobs (as any peer's API user can), accuse a
  member of being down (it refutes, as in SWIM), answer pings, and relay
  node infos of nodes we do not know or hold dead (pings sort those out);
- reads are not guarded here: a member may ask for any record.
A network key (`Node.Network.KeyFile`) keeps non-members out altogether.

Honest nodes whose views differ a lot (a healed partition, a copy that
missed two failovers) can be refused too: the simulator counts refusals in
its report, and keepers' repairs, which a keeper always may relay, converge
the record all the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from protocols import election
from protocols.jobid import certifies
from protocols.messages import (
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    DigestReply,
    ExecutionUpdate,
    JobUpdated,
    LeaderChanged,
    Members,
    NodeInfo,
    NodeLeft,
    ProviderAnnounce,
    ProviderReply,
    Records,
    SubmitToLeader,
)
from protocols.records import HISTORY_LIMIT, JobDelta, JobHeader, JobReplica

# Reasons, the keys of `Authority.refused` (after the message type).
NOT_ITSELF = "speaks for another node"
LIVE_MEMBER = "relays another version of a live member"
NOT_LEADER = "not written by the job's leader"
NOT_ENTITLED = "claims a job it may not lead"
CHANGED_SPEC = "changes a job's spec, submitter or creation"
RESUBMITTED = "submits a job that exists"
NOT_SUBMITTER = "hands on a job it did not submit"
NOT_RELAYER = "relays a record it does not keep"
NOT_NAMED = "brings a record that does not name it"
OTHERS_EXECUTION = "reports another node's execution"
NOT_ITS_LEADER = "orders an execution it does not lead"
NOT_MEMBER = "is not a live member"
NOT_ASKED = "answers a question nobody asked it"
UNCERTIFIED = "brings a job whose id does not certify its spec and submitter"


SEQ_AHEAD = 64  # heartbeats a relayed info of a live member may be ahead of ours
PLAUSIBLE_RANK = 16  # how far down a job's rendezvous ranking (of the members we hold alive) a leader or keeper we never heard of may be


def plausible(job_id: str, node_id: str, alive: Sequence[str]) -> bool:
    """Whether `node_id` could have been chosen for the job by someone whose
    view of the members differs from ours: every leader and successor comes
    from the top of the job's rendezvous ranking of the live members
    (`protocols.election`), so it stands among our first `PLAUSIBLE_RANK`
    (the margin covers members the chooser held dead and we hold alive).
    A random member stands there for few jobs: this is what keeps one from
    posing as a new leader of a job whose keepers it is not."""
    top = election.rank(job_id, alive if isinstance(alive, list) else list(alive), k=PLAUSIBLE_RANK)
    if node_id in top:
        return True
    if len(top) < PLAUSIBLE_RANK:
        return True  # a network this small: anyone can be chosen
    job = election.job_key(job_id)
    return election.weight(job, election.node_key(node_id)) > election.weight(job, election.node_key(top[-1]))


def same_job(held: JobHeader, header: JobHeader) -> bool:
    """The fields no write changes agree with our copy."""
    return header is held or (
        header.submitter == held.submitter
        and header.salt == held.salt
        and header.create_time == held.create_time
        and (header.spec is held.spec or header.spec == held.spec)
    )


class Authority:
    """One node's checks, on a narrow view of it: its (live) map of records
    and its membership's answers."""

    def __init__(
        self,
        me: str,
        jobs: Mapping[str, JobReplica],
        alive: Callable[[str], bool],
        info: Callable[[str], NodeInfo | None],
        alive_ids: Callable[[], Sequence[str]],
        follows: Callable[[str, str], bool] = lambda job_id, node_id: False,
        asked: Callable[[str, str], bool] = lambda sender, cid: False,
    ) -> None:
        self.me = me
        self.jobs = jobs
        self.alive = alive
        self.info = info
        self.alive_ids = alive_ids
        self.follows = follows
        self.asked = asked
        self.refused: Counter[str] = Counter()  # "<message type>: <reason>" -> count
        self.last: tuple[str, str] | None = None  # the latest refusal: (sender, key of `refused`)

    def check(self, sender: str, message: object) -> str | None:
        """None if the message may be handled; else why not (and counted)."""
        if sender == self.me:
            return None  # what we tell ourselves
        rule = _RULES.get(type(message))
        if rule is None:
            return None
        reason = rule(self, sender, message)
        if reason is not None:
            key = f"{type(message).__name__}: {reason}"
            self.refused[key] += 1
            self.last = (sender, key)
        return reason

    @staticmethod
    def rules(kind: type) -> bool:
        """Whether `check` has a rule for messages of this kind (else it lets them all pass)."""
        return kind in _RULES

    def may_lead(self, replica: JobReplica, sender: str, epoch: int) -> bool:
        """Whether `sender` may act as the job's leader at `epoch`, by our
        copy: the leader it names; a keeper it names (a successor taking
        over, the submitter handing on, a deposed leader, which stays a
        keeper: the handlers weigh its words by epoch); at an older epoch, a
        node that wrote the job before, as its history shows, or one the
        ranking makes plausible (a leader deposed while cut off, which a
        hand-over drops from the keepers);
        from our epoch on, a newcomer to the chain (`_newcomer`: takeovers
        and new keepers we did not hear of)."""
        header = replica.header
        if sender == header.leader or header.kept_by(sender):
            return True
        if epoch < header.epoch:
            return _wrote(replica, sender) or plausible(header.id, sender, self.alive_ids())
        return self._newcomer(header, sender)

    def _newcomer(self, held: JobHeader, sender: str) -> bool:
        """Whether `sender` may have joined the job's keepers, or led it,
        since our copy: only once a leader or successor it names is lost to
        us (a keeper is replaced, or a node outside the chain takes over,
        only then), and only a node the job's ranking makes plausible. While
        the whole chain lives in our view, none outside it may lead."""
        if self.alive(held.leader) and all(self.alive(s) for s in held.successors):
            return False
        return plausible(held.id, sender, self.alive_ids())

    def _held(self, job_id: str) -> JobReplica | None:
        return self.jobs.get(job_id)

    # ------------------------------------------------------------ members

    def _for_itself(self, sender: str, message: NodeInfo | NodeLeft) -> str | None:
        return None if message.node_id == sender else NOT_ITSELF

    def _provider_announce(self, sender: str, message: ProviderAnnounce) -> str | None:
        return None if self.alive(sender) else NOT_MEMBER

    def _provider_reply(self, sender: str, message: ProviderReply) -> str | None:
        return None if self.asked(sender, message.cid) else NOT_ASKED

    def _members(self, sender: str, message: Members) -> str | None:
        for info in message.infos:
            if info.node_id == self.me:
                continue  # membership ignores news of ourselves
            held = self.info(info.node_id)
            if held is None or not self.alive(info.node_id):
                continue  # introduced or back: its watchers ping it
            if info.incarnation != held.incarnation and info.order > held.order or info.seq > held.seq + SEQ_AHEAD:
                # Only a live member says it restarted; a relay running its
                # heartbeats far ahead would make us ignore its own.
                return LIVE_MEMBER
        return None

    # ------------------------------------------------------------ records

    def _job_updated(self, sender: str, message: JobUpdated) -> str | None:
        header = message.delta.header
        replica = self._held(header.id)
        if replica is None:
            if not certified(header):
                return UNCERTIFIED
            return None if sender in (header.leader, header.submitter) else NOT_LEADER
        held = replica.header
        if not same_job(held, header):
            return CHANGED_SPEC
        if not teaches(replica, message.delta):
            return None  # late or repeated: it changes nothing
        if sender == header.leader:
            return None if self.may_lead(replica, sender, header.epoch) else NOT_ENTITLED
        if sender == held.submitter and (header.leader == sender or held.kept_by(header.leader)):
            return None  # the submitter hands the job on: its leader did not answer
        return NOT_LEADER

    def _submit(self, sender: str, message: SubmitToLeader) -> str | None:
        header = message.delta.header
        if sender != header.submitter:
            return NOT_SUBMITTER
        replica = self._held(header.id)
        if replica is None:
            return None if certified(header) else UNCERTIFIED
        held = replica.header
        if not same_job(held, header):
            return RESUBMITTED
        # Handed on again (its leader did not answer): to a keeper of it.
        return None if header.leader == sender or held.kept_by(header.leader) else RESUBMITTED

    def _relayed(self, sender: str, deltas: Iterable[JobDelta]) -> str | None:
        for delta in deltas:
            header = delta.header
            replica = self._held(header.id)
            if replica is None:
                if not certified(header):
                    return UNCERTIFIED
                if sender != header.leader and not header.kept_by(sender) and not plausible(header.id, sender, self.alive_ids()):
                    return NOT_NAMED  # (a node we asked about the job stands high in its ranking: `Node.fetch`)
                continue
            held = replica.header
            if not same_job(held, header):
                return CHANGED_SPEC
            if held.kept_by(sender) or _runs(replica, sender) or not teaches(replica, delta):
                continue  # a keeper repairs, a runner passes on what it was told (trusted: see the module's doc)
            if _runs(delta, sender) and (header.leader == held.leader or held.kept_by(header.leader)):
                continue  # a runner shows a keeper the work it does, under the header its leader wrote
            if self.follows(header.id, sender):
                continue  # the leader our work reports to answers (deposed: it shows who leads now)
            if sender == header.leader and self.may_lead(replica, sender, header.epoch):
                continue  # a leader's own record (maybe from before it was deposed)
            if (sender == header.leader or header.kept_by(sender)) and plausible(header.id, sender, self.alive_ids()):
                # A leader or keeper since failovers we did not hear of: even
                # while the chain we know looks whole to us (a healed split),
                # or the record would never converge.
                continue
            return NOT_RELAYER
        return None

    def _records(self, sender: str, message: Records | DigestReply) -> str | None:
        return self._relayed(sender, message.deltas)

    # ------------------------------------------------------------ executions

    def _from_runner(self, sender: str, message: ExecutionUpdate | BidReply) -> str | None:
        replica = self.jobs.get(message.job_id)
        execution = None if replica is None else replica.executions.get(message.execution_id)
        if execution is None or execution.node_id == sender:
            return None  # one we do not know: the leader ignores it anyway
        return OTHERS_EXECUTION

    def _ask_bid(self, sender: str, message: AskBid) -> str | None:
        header = message.header
        if sender != header.leader:
            return NOT_ITS_LEADER
        replica = self._held(header.id)
        if replica is None:
            return None if certified(header) else UNCERTIFIED
        if not same_job(replica.header, header):
            return CHANGED_SPEC
        return None if self.may_lead(replica, sender, header.epoch) else NOT_ITS_LEADER

    def _from_leader(self, sender: str, message: BidDecision | CancelExecution | LeaderChanged) -> str | None:
        if isinstance(message, LeaderChanged) and message.leader != sender:
            return NOT_ITS_LEADER
        replica = self._held(message.job_id)
        if replica is None or self.may_lead(replica, sender, message.epoch):
            return None  # (one we do not know: the executor ignores it)
        return NOT_ITS_LEADER


def certified(header: JobHeader) -> bool:
    """Whether the header is the submission its job ID certifies (`protocols.jobid`)."""
    return certifies(header.id, header.submitter, header.salt, header.spec)


def teaches(replica: JobReplica, delta: JobDelta) -> bool:
    """Whether merging `delta` would change `replica` (as `JobReplica.apply`
    decides): a write that teaches nothing needs no authority."""
    if delta.header is not replica.header and delta.header.order > replica.header.order:
        return True
    held = replica.executions
    for execution in delta.executions:
        mine = held.get(execution.id)
        if mine is None or (mine is not execution and execution.order > mine.order):
            return True
    if delta.events:
        oldest = replica.history[0].order if len(replica.history) >= HISTORY_LIMIT else None
        return any(not replica.has_event(e.order) and (oldest is None or e.order > oldest) for e in delta.events)
    return False


def _wrote(replica: JobReplica, node_id: str) -> bool:
    """Whether the job's history shows `node_id` wrote it (led it once)."""
    return any(event.node_id == node_id for event in replica.history)


def _runs(record: JobReplica | JobDelta, node_id: str) -> bool:
    if isinstance(record, JobReplica):
        return bool(record.on_node(node_id))
    return any(e.node_id == node_id for e in record.executions)


_RULES: dict[type, Callable[[Authority, str, Any], str | None]] = {
    NodeInfo: Authority._for_itself,
    NodeLeft: Authority._for_itself,
    ProviderAnnounce: Authority._provider_announce,
    ProviderReply: Authority._provider_reply,
    Members: Authority._members,
    JobUpdated: Authority._job_updated,
    SubmitToLeader: Authority._submit,
    Records: Authority._records,
    DigestReply: Authority._records,
    ExecutionUpdate: Authority._from_runner,
    BidReply: Authority._from_runner,
    AskBid: Authority._ask_bid,
    BidDecision: Authority._from_leader,
    CancelExecution: Authority._from_leader,
    LeaderChanged: Authority._from_leader,
}
