"""A submit is answered once the job is on a keeper's disk, not merely in its inbox.

The submitter hands a new job to its keepers (`SubmitToLeader` to the
leader, the first `JobUpdated` to the successors). A transport's delivery
only says the message reached the peer's queue: a peer killed before it
saved the job would lose it, and the client was told it was safe. So a
keeper that takes a handed-over job in
(`protocols.replication.awaited_hand_over`) answers `JobSaved` once its store
holds it (`Runtime._drive` saves at once while such an answer waits, and
sends the answers only when nothing it changed is unsaved), and the
submitter's `Runtime.submit` returns on the first `JobSaved` from a keeper
of the job. The protocol (`protocols/`) sees none of this: it is about
disks, which only the runtime has.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols import wire
from protocols.node import Node


@wire.message("job-saved")
@dataclass(frozen=True, slots=True)
class JobSaved:
    """The job you handed me is saved here (the answer to a hand-over)."""

    job_id: str


def taken(node: Node, job_id: str) -> bool:
    """Whether the node took the handed-over job in (it holds and keeps it,
    so it saves it); asked after it handled the hand-over."""
    replica = node.jobs.get(job_id)
    return replica is not None and node.keeps(replica)


def saved_by_keeper(node: Node | None, sender: str, job_id: str) -> bool:
    """Whether a `JobSaved` comes from a keeper of the job, as this node's
    copy names them (another member's word would not make it durable)."""
    replica = None if node is None else node.jobs.get(job_id)
    return replica is not None and replica.header.kept_by(sender)
