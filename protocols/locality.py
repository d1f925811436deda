"""Placement follows data: the leader asks nodes that hold a job's inputs first.

A node that holds every `ipfs` input of a job runs it without moving a byte;
one that holds some moves less than one that holds none. So the leader's
candidate ranking (rendezvous order, which spreads jobs evenly) is reordered
here: holders of every input first, then holders of some (more inputs
first), then everyone else, each group in its rendezvous order
(`holders_first`); and among the bids, those of holders win (`inputs_held`). Who holds
what comes from the provider records (`protocols.providers`) and is only
as fresh as they are: a holder we do not know of is asked in its rendezvous
turn, and a node whose policy is `local` declines what it does not hold
(`protocols.selection`), so a stale view costs an ask, never a wrong run.
For the same reason the leader's pre-filter takes a `local` node to hold
every ipfs input (`may_hold`): only the node knows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Container, Sequence

from protocols.jobspec import JobSpec


def input_cids(spec: JobSpec) -> tuple[str, ...]:
    """The CIDs of the job's `ipfs` input sources, in order, each once."""
    cids = (source.source.params.get("CID", "") for source in spec.task.input_sources if source.source.type == "ipfs")
    return tuple(dict.fromkeys(str(cid) for cid in cids if cid))


def may_hold(spec: JobSpec, local_data: Collection[str]) -> frozenset[str]:
    """What a leader may take a node to hold when it pre-filters nodes by
    their `local` policy: the paths its node info lists, and every `ipfs`
    input of the job. What a node holds changes faster than its (rare, in a
    large network) heartbeats say, so only the node itself declines an
    input it lacks; holders are asked first (`holders_first`)."""
    return frozenset(local_data) | frozenset(input_cids(spec))


def inputs_held(cids: Sequence[str], holders: Callable[[str], Collection[str]]) -> Callable[[str], int]:
    """How many of the inputs `cids` a node holds, as far as we know: the
    leader prefers such bids to those of nodes that would fetch."""
    if not cids:
        return lambda node_id: 0
    sets = [holders(cid) for cid in cids]
    return lambda node_id: sum(node_id in held for held in sets)


def holders_first(
    ranked: list[str],
    eligible: Container[str],
    cids: Sequence[str],
    holders: Callable[[str], Collection[str]],
) -> list[str]:
    """`ranked` (a prefix of `eligible` in rendezvous order) with the
    eligible holders of the inputs `cids` moved to the front: more inputs
    held first, ties in rendezvous order (holders past the prefix after
    those in it, by id). `ranked` itself when nobody is known to hold any."""
    if not cids:
        return ranked
    held: Counter[str] = Counter()
    for cid in cids:
        held.update(set(holders(cid)))
    if not held:
        return ranked
    position = {node_id: index for index, node_id in enumerate(ranked) if node_id in held}
    outside = [n for n in held if n not in position]
    if outside:
        position.update((n, len(ranked)) for n in outside if n in eligible)
    if not position:
        return ranked
    front = sorted(position, key=lambda n: (-held[n], position[n], n))
    chosen = set(front)
    return front + [n for n in ranked if n not in chosen]
