"""Who leads a job: rendezvous (highest-random-weight) hashing.

Every node scores every live member for a job with `weight(job, member)` and
the highest score leads; the next ones, in order, are its successors. Nodes
that agree on the membership agree on the leader without saying a word, and
when a member comes or goes only the jobs it leads (or would now lead) change
hands: removing the leader promotes its first successor and leaves the order
of the others untouched.

The scores must be the same in every process, on every platform and Python
version, so they come from blake2b and integer arithmetic, never from the
builtin `hash()`.
"""

from __future__ import annotations

import hashlib
import heapq
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_MASK = (1 << 64) - 1
_MAX_CACHED_KEYS = 1 << 18  # a crude bound: ids are few, but anyone can invent one
_node_keys: dict[str, int] = {}


def _digest64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def node_key(node_id: str) -> int:
    """The node's 64-bit hash; cached, because every job ranks every node.
    (A pure function of the id's text: the cache holds no node's state, so
    one per process is as right as one per node.)"""
    key = _node_keys.get(node_id)
    if key is None:
        if len(_node_keys) >= _MAX_CACHED_KEYS:
            _node_keys.clear()
        key = _node_keys[node_id] = _digest64(node_id)
    return key


def job_key(job_id: str) -> int:
    """The job's 64-bit hash (not cached: each job is ranked a handful of times)."""
    return _digest64(job_id)


def weight(job_key: int, node_key: int) -> int:
    """The node's score for the job: splitmix64's mixer applied to the two
    keys xored, so that every job orders the nodes independently."""
    z = ((job_key ^ node_key) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def rank(job_id: str, node_ids: Iterable[str], k: int | None = None) -> list[str]:
    """The distinct `node_ids` by descending weight for `job_id`: the leader
    first, then its successors in order; only the first `k` when `k` is
    given. (Equal weights need a 64-bit key collision; the greater id wins.)"""
    if k is not None and k < 0:
        raise ValueError(f"rank wants k >= 0 nodes (or None for all), not {k}")
    ids = node_ids if isinstance(node_ids, list) else list(node_ids)
    if len(ids) >= _VECTOR_FROM:
        ranked = _rank_vectorised(job_key(job_id), ids, k)
        if ranked is not None:
            return ranked
    weights = _weights(job_key(job_id), ids)
    if k is not None and k < len(ids):
        top = heapq.nlargest(k, zip(weights, ids))
        if len({node_id for _, node_id in top}) == len(top):
            return [node_id for _, node_id in top]
    # All of them, or duplicates in the input: rank the distinct ones.
    return [node_id for _, node_id in sorted(set(zip(weights, ids)), reverse=True)[:k]]


_VECTOR_FROM = 64  # below this many nodes, plain Python is as fast


class NodeIds(list):  # type: ignore[type-arg]
    """A sorted list of distinct node ids (an alive list, an eligible list)
    that keeps its nodes' 64-bit keys, as a numpy array, once it is ranked
    over: every job of a large network ranks the same list, and hashing its
    members again for each would cost more than the ranking.

    The keys are derived from the list and live with it, so they are
    exactly as private as the list: a node's own alive list (which nodes
    that start warm share, see `protocols.membership`, as they share what
    the same change derives from a shared list), or a list one node
    derived. No cache outside the list, no `id()`. Never change one in
    place once ranked over: derive a new one (`without`, `with_id`), which
    carries the keys along."""

    __slots__ = ("keys", "_derived", "__weakref__")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        super().__init__(ids)
        self.keys: np.ndarray | None = None
        # What `without` and `with_id` derived from this list, by change, while
        # anyone holds it: nodes that share a list (a warm start) and hear of
        # the same death derive the same list once, not once each (ten
        # thousand nodes each copying a ten-thousand-member list at every
        # death or return cost gigabytes in a simulator). A derived list is
        # as immutable as this one, so sharing it changes no answer.
        self._derived: dict[tuple[bool, str], weakref.ref[NodeIds]] | None = None

    def without(self, index: int) -> NodeIds:
        """A copy without the id at `index` (shared with whoever derived the same from this list)."""
        change = (False, self[index])
        held = self._held(change)
        if held is not None:
            return held
        new = NodeIds()
        new += self[:index]  # (slices are plain lists, copied at C speed; a list subclass is not)
        new += self[index + 1 :]
        keys = self.keys
        if keys is not None:
            import numpy as np
            new.keys = np.concatenate((keys[:index], keys[index + 1 :]))
        return self._keep(change, new)

    def with_id(self, index: int, node_id: str) -> NodeIds:
        """A copy with `node_id` inserted at `index` (where it sorts; shared as `without`'s)."""
        change = (True, node_id)
        held = self._held(change)
        if held is not None and len(held) == len(self) + 1 and held[index] == node_id:
            return held
        new = NodeIds()
        new += self[:index]
        new.append(node_id)
        new += self[index:]
        keys = self.keys
        if keys is not None:
            import numpy as np
            new.keys = np.concatenate((keys[:index], np.array([node_key(node_id)], dtype=np.uint64), keys[index:]))
        return self._keep(change, new)

    def _held(self, change: tuple[bool, str]) -> NodeIds | None:
        derived = self._derived
        if derived is None:
            return None
        ref = derived.get(change)
        return None if ref is None else ref()

    def _keep(self, change: tuple[bool, str], new: NodeIds) -> NodeIds:
        derived = self._derived
        if derived is None:
            derived = self._derived = {}
        elif len(derived) >= 64:  # drop what nobody holds any more
            for key in [k for k, ref in derived.items() if ref() is None]:
                del derived[key]
        derived[change] = weakref.ref(new)
        return new


def rank_chosen(job_id: str, ids: list[str], chosen: list[int]) -> list[str]:
    """`rank(job_id, [ids[i] for i in chosen])` for a sorted list of
    distinct ids (an alive list) and ascending indices into it: the members
    of a large list that some test keeps (those that fit a job), ranked
    with the keys the list holds rather than hashed again, and without
    ranking the others."""
    if len(chosen) >= _VECTOR_FROM and len(ids) >= _VECTOR_FROM:
        keys = _keys(ids)
        if keys is not None:
            import numpy as np
            at = np.array(chosen, dtype=np.intp)
            order = _order(job_key(job_id), keys[at], None)
            return [ids[i] for i in at[order].tolist()]
    return rank(job_id, [ids[i] for i in chosen])


def _keys(ids: list[str]) -> np.ndarray | None:
    """The 64-bit keys of a sorted list of distinct ids, kept on a `NodeIds`
    for the next job; None if `ids` is not such a list."""
    import numpy as np
    keys = ids.keys if type(ids) is NodeIds else None
    if keys is None or len(keys) != len(ids):
        if any(a >= b for a, b in zip(ids, ids[1:])):
            return None  # not sorted, or duplicates: the general path handles it
        keys = np.fromiter((node_key(n) for n in ids), dtype=np.uint64, count=len(ids))
        if type(ids) is NodeIds:
            ids.keys = keys
    return keys


def _rank_vectorised(job: int, ids: list[str], k: int | None) -> list[str] | None:
    """`rank` for a large sorted list of distinct ids (an alive list, an
    eligible list), with numpy: the same weights, the same order. None if
    `ids` is not such a list (the caller ranks it the slow way). A
    `NodeIds` keeps its keys for the next job. numpy is imported here, on
    first use: a peer in a small network never loads it (15 MiB of memory
    and a second of start-up)."""
    keys = _keys(ids)
    if keys is None:
        return None
    if k == 0:
        return []
    return [ids[i] for i in _order(job, keys, k).tolist()]


def _order(job: int, keys: np.ndarray, k: int | None) -> np.ndarray:
    """Positions of the first `k` (None: all) of `keys` by descending weight
    for the job key `job`; equal weights, the later position first."""
    import numpy as np
    z = keys ^ np.uint64(job)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    weights = z ^ (z >> np.uint64(31))
    # Ties (a 64-bit collision) go to the greater id: ids are sorted, so
    # sorting (weight, index) descending does it.
    if k is not None and k < len(keys):
        top = np.argpartition(weights, len(keys) - k)[len(keys) - k :]
        return top[np.lexsort((top, weights[top]))][::-1]
    return np.lexsort((np.arange(len(keys)), weights))[::-1]


def _weights(job_key: int, node_ids: list[str]) -> list[int]:
    """`weight(job_key, node_key(n))` for each of `node_ids`, inlined: this
    loop runs once per member for every job ranked."""
    keys = _node_keys
    weights = []
    for node_id in node_ids:
        nk = keys.get(node_id)
        if nk is None:
            nk = node_key(node_id)
        z = ((job_key ^ nk) + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        weights.append(z ^ (z >> 31))
    return weights

