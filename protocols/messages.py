"""Everything nodes say to each other, and the two pubsub topics.

Pubsub is best effort: what must arrive travels on streams (`Send`), and what
gossip loses, anti-entropy (`DigestRequest`) repairs. Every message that
concerns a job carries the writer's epoch so that a deposed leader is obeyed
by nobody.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from protocols.quickinit import quick_init_module
from protocols.records import ExecutionResult, ExecutionState, JobDelta, JobHeader
from protocols.wire import message

NODES_TOPIC = "p2pnode/nodes/1"


class Locality(StrEnum):
    LOCAL = "local"
    ANYWHERE = "anywhere"


@dataclass(frozen=True, slots=True)
class Capacity:
    """Amounts of resources, in the units of `protocols.jobspec.Resources`."""

    cpu: int = 0  # millicores
    memory: int = 0  # bytes
    disk: int = 0  # bytes
    gpu: int = 0

    def covers(self, cpu: int, memory: int, disk: int, gpu: int) -> bool:
        return self.cpu >= cpu and self.memory >= memory and self.disk >= disk and self.gpu >= gpu

    def minus(self, cpu: int, memory: int, disk: int, gpu: int) -> Capacity:
        return Capacity(self.cpu - cpu, self.memory - memory, self.disk - disk, self.gpu - gpu)

    def plus(self, cpu: int, memory: int, disk: int, gpu: int) -> Capacity:
        return Capacity(self.cpu + cpu, self.memory + memory, self.disk + disk, self.gpu + gpu)


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """The parts of a node's selection policy a leader may pre-filter on."""

    locality: Locality = Locality.ANYWHERE
    reject_stateless: bool = False
    accept_networked: bool = False
    probes: bool = False
    bid_wait: float = 0.0  # seconds this node may take to answer an ask (its probes, a bid held for its operator)


@message("node-info")
@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node is; published on `NODES_TOPIC` at start and on every (slow) heartbeat."""

    node_id: str
    labels: dict[str, str]
    capacity: Capacity
    free: Capacity
    engines: tuple[str, ...]
    publishers: tuple[str, ...]
    storages: tuple[str, ...]  # input source types it can fetch
    local_data: tuple[str, ...]  # CIDs and local paths it holds
    policy: PolicySummary
    version: str
    incarnation: int  # grows at every restart
    seq: int  # grows at every heartbeat of one incarnation
    heartbeat_interval: float  # the sender's, so others time it out right
    addresses: tuple[str, ...] = ()  # how to reach it (multiaddrs, API URL)
    started_at: float = 0.0

    @property
    def order(self) -> tuple[int, int]:
        return (self.incarnation, self.seq)


@message("node-left")
@dataclass(frozen=True, slots=True)
class NodeLeft:
    node_id: str
    incarnation: int


@message("members")
@dataclass(frozen=True, slots=True)
class Members:
    """The member list, sent by its watchers to a node that just joined."""

    infos: tuple[NodeInfo, ...]


@message("ping")
@dataclass(frozen=True, slots=True)
class Ping:
    """A watcher asks a member it watches whether it is there."""

    nonce: int


@message("ack")
@dataclass(frozen=True, slots=True)
class Ack:
    nonce: int


@message("ping-req")
@dataclass(frozen=True, slots=True)
class PingReq:
    """A watcher whose ping went unanswered asks another member to ping
    `node_id` for it (SWIM's indirect probe): a lost message or a bad link
    between the two alone should not make a live member suspect."""

    node_id: str
    nonce: int  # the watcher's, returned in the `IndirectAck`


@message("indirect-ack")
@dataclass(frozen=True, slots=True)
class IndirectAck:
    """`node_id` answered the ping a `PingReq` asked for."""

    node_id: str
    nonce: int


@message("suspect")
@dataclass(frozen=True, slots=True)
class Suspect:
    """A watcher's pings to `node_id`, as it held it at (incarnation, seq), went unanswered."""

    node_id: str
    incarnation: int
    seq: int


@message("down")
@dataclass(frozen=True, slots=True)
class Down:
    """A watcher declares `node_id` dead (also sent to it, if it answers later, so it refutes)."""

    node_id: str
    incarnation: int
    seq: int


@message("job-updated")
@dataclass(frozen=True, slots=True)
class JobUpdated:
    """A leader's write to a job (its first one announces the job)."""

    delta: JobDelta


@message("submit-to-leader")
@dataclass(frozen=True, slots=True)
class SubmitToLeader:
    """The submitter hands a new job to the leader it computed."""

    delta: JobDelta


@message("ask-bid")
@dataclass(frozen=True, slots=True)
class AskBid:
    header: JobHeader  # carries the spec, epoch and leader
    execution_id: str


@message("bid-reply")
@dataclass(frozen=True, slots=True)
class BidReply:
    job_id: str
    execution_id: str
    epoch: int
    bid: bool
    reason: str
    busy: bool = False  # declined only for want of free resources now
    free: Capacity | None = None  # the bidder's free resources after this reply


@message("room-freed")
@dataclass(frozen=True, slots=True)
class RoomFreed:
    """A node that declined a daemon for want of room has room for it now:
    the leader asks it again, instead of polling full nodes."""

    job_id: str
    free: Capacity


@message("bid-decision")
@dataclass(frozen=True, slots=True)
class BidDecision:
    job_id: str
    execution_id: str
    epoch: int
    accepted: bool
    reason: str
    partition: int = 0


@message("execution-update")
@dataclass(frozen=True, slots=True)
class ExecutionUpdate:
    """An executor reports its execution's state to the job's leader."""

    job_id: str
    execution_id: str
    epoch: int  # the epoch of the leader the executor believes in
    state: ExecutionState
    message: str = ""
    result: ExecutionResult | None = None
    partition: int = -1  # the partition the run works on (-1: not known)


@message("cancel-execution")
@dataclass(frozen=True, slots=True)
class CancelExecution:
    job_id: str
    execution_id: str
    epoch: int
    reason: str


@message("stop-job")
@dataclass(frozen=True, slots=True)
class StopRequest:
    """Any node forwards a user's stop to the job's leader."""

    job_id: str
    reason: str


@message("leader-changed")
@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """A new leader tells each executor whom to report to now."""

    job_id: str
    epoch: int
    leader: str


@message("digest-request")
@dataclass(frozen=True, slots=True)
class DigestRequest:
    """Anti-entropy: (job id, finality, epoch, revision, fingerprint) of the
    jobs the sender holds (see `JobHeader.version_key`, `JobReplica.fingerprint`)."""

    digest: tuple[tuple[str, int, int, int, int], ...]


@message("digest-reply")
@dataclass(frozen=True, slots=True)
class DigestReply:
    """Records newer than the requester's, the ids the replier lacks, and the
    requester's entries for long-ended jobs that the replier holds alike (the
    requester sends those only while it doubts the replier has them)."""

    deltas: tuple[JobDelta, ...] = ()
    wanted: tuple[str, ...] = ()
    matched: tuple[tuple[str, int, int, int, int], ...] = ()


@message("record-request")
@dataclass(frozen=True, slots=True)
class RecordRequest:
    """Asked of a job's keepers by a node that does not keep it: answered
    with `Records`, the whole record from a keeper, only the header (which
    names the keepers) from a node that merely holds a copy."""

    job_id: str


@message("records")
@dataclass(frozen=True, slots=True)
class Records:
    """Whole job records, pushed to a node that lacks them."""

    deltas: tuple[JobDelta, ...] = field(default=())


@message("provider-announce")
@dataclass(frozen=True, slots=True)
class ProviderAnnounce:
    """The sender holds these root CIDs, for `ttl` seconds unless it says so
    again (`protocols.providers`); a `ttl` of 0 withdraws them. It names no
    provider: the sender is the provider, so nobody announces another."""

    cids: tuple[str, ...]
    ttl: float


@message("provider-query")
@dataclass(frozen=True, slots=True)
class ProviderQuery:
    """Who holds `cid`? Asked of the nodes that keep its provider records."""

    cid: str


@message("provider-reply")
@dataclass(frozen=True, slots=True)
class ProviderReply:
    """The providers of `cid` the sender keeps records of (maybe none)."""

    cid: str
    providers: tuple[str, ...]


quick_init_module(globals())
