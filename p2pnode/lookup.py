"""Finding a job this node does not hold, without waiting in anyone's queue.

Asked for a job it holds no copy of, a node used to ask the protocol
(`FetchJob`): the ask waited its turn in this node's inbox, the peers'
`RecordRequest` in theirs, their `Records` in ours again. In a burst each
inbox held seconds of work, so the answer often came after the API had
given up (`FETCH_WAIT`) and a job just acknowledged to its client answered
404 on another peer.

So the runtime first asks the peers directly, on the request/response
transport, as it reads logs (`RecordAsk`): each answers at once from what it
holds (`answer`), ahead of its queue. The submitter holds the job before its
client is answered, and it is among the peers asked in a small network; in a
large one the keepers are, and one of them holds the job too. Only a whole
record from a keeper the record names counts. The protocol's fetch runs as
before, alongside: a job found neither way within `FETCH_WAIT` (every peer
asked said it does not keep it) answers 404 as soon as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols import wire
from protocols.authority import certified
from protocols.messages import Records
from protocols.node import Node
from protocols.records import JobDelta

DIRECT_FROM = 6  # peers asked at once (the rendezvous top: every peer of a network of up to 7)
DIRECT_WAIT = 10.0  # seconds a busy peer may take to answer (as long as a submit waits for its hand-over)


@wire.message("record-ask")
@dataclass(frozen=True, slots=True)
class RecordAsk:
    """Send me what you hold now of this job (answered with `Records`)."""

    job_id: str


def answer(node: Node | None, job_id: str) -> Records:
    """What this node holds of the job now: the whole record if it keeps it,
    the header (which names the keepers) if it holds a copy, else nothing."""
    replica = None if node is None else node.jobs.get(job_id)
    if replica is None:
        return Records(())
    return Records((replica.snapshot() if node.keeps(replica) else JobDelta(replica.header),))  # type: ignore[union-attr]


def kept_record(peer: str, job_id: str, message: object) -> JobDelta | None:
    """The whole record of the job in `peer`'s answer, if the peer keeps it
    and the record is the one its ID certifies; else None."""
    if not isinstance(message, Records):
        return None
    for delta in message.deltas:
        header = delta.header
        if header.id == job_id and header.kept_by(peer) and certified(header):
            return delta
    return None
