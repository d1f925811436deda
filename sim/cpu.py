"""What handling an input costs a node's one thread, so a busy node answers late.

A real peer runs one trio loop: a message waits until the loop is free, and
every stream it opens, every record it encodes and saves, costs it time. A
node that gets more work than it can do falls behind, and to its peers a node
behind by seconds looks like a dead one. The simulator keeps a clock per node
(`busy_until`): an input that arrives while the node is busy waits its turn,
and what the node does with it (the effects it emits) keeps it busy longer.

The figures are CPU seconds on the 2-core machine of `notes/costs.md`: a
stream request on a fresh libp2p stream ≈5 ms, a frame received ≈1-3 ms, a
4 KB record's encode+decode ≈0.5 ms, a SQLite save ≈0.7 ms; a job made ≈13
stream requests and ≈100 ms of CPU across three peers. `scale` multiplies
them all (2.0: hardware twice as slow; 0: no cost, the old simulator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocols.events import (
    ExecutionEnded,
    ExecutionProgressed,
    JobChanged,
    ProbeAnswered,
    Publish,
    Received,
    RunProbe,
    Send,
    SendFailed,
    SetTimer,
    StartExecution,
    SubmitJob,
    TimerFired,
)
from protocols.messages import DigestReply, DigestRequest, JobUpdated, Members, NodeInfo, Records, SubmitToLeader

_MS = 0.001

# Receiving a message of this type (decode and handle); the rest cost `RECEIVE`.
RECEIVE_BY_TYPE: dict[type, float] = {
    NodeInfo: 1.0 * _MS,  # pubsub: validate + merge
    Members: 5.0 * _MS,
    JobUpdated: 3.0 * _MS,
    Records: 3.0 * _MS,
    SubmitToLeader: 3.0 * _MS,
    DigestRequest: 3.0 * _MS,
    DigestReply: 3.0 * _MS,
}
RECEIVE = 2.0 * _MS  # a frame on a stream: Noise + yamux + decode + handle
PER_RECORD = 0.5 * _MS  # each whole record or delta in a message: decode (+ encode when passed on)

# Inputs from the node's own side.
LOCAL_BY_TYPE: dict[type, float] = {
    SubmitJob: 20.0 * _MS,  # the HTTP API: parse, validate, store, encode
    TimerFired: 0.2 * _MS,
    SendFailed: 1.0 * _MS,
    ProbeAnswered: 1.0 * _MS,
    ExecutionProgressed: 3.0 * _MS,
    ExecutionEnded: 5.0 * _MS,  # collect the result, save it
}

# Effects: what doing what the node decided costs it.
EFFECT_BY_TYPE: dict[type, float] = {
    Send: 5.0 * _MS,  # a request on a fresh libp2p stream (yamux open, two multistream round trips)
    Publish: 2.0 * _MS,  # gossipsub: encode, sign, fan out
    JobChanged: 0.7 * _MS,  # a SQLite save of the record
    StartExecution: 15.0 * _MS,  # wasm instantiate + WASI, or a container create
    RunProbe: 2.0 * _MS,
    SetTimer: 0.0,
}


@dataclass(frozen=True)
class CpuModel:
    """Processing time per input and per effect, times `scale`."""

    scale: float = 1.0
    receive_by_type: dict[type, float] = field(default_factory=lambda: dict(RECEIVE_BY_TYPE))
    local_by_type: dict[type, float] = field(default_factory=lambda: dict(LOCAL_BY_TYPE))
    effect_by_type: dict[type, float] = field(default_factory=lambda: dict(EFFECT_BY_TYPE))

    def __post_init__(self) -> None:
        if not self.scale >= 0:
            raise ValueError(f"the CPU cost scale must be >= 0 (0: no cost), not {self.scale}")

    def input_cost(self, event: Any) -> float:
        """Seconds the node's thread spends taking `event` in."""
        if type(event) is Received:
            message = event.message
            cost = self.receive_by_type.get(type(message), RECEIVE)
            records = getattr(message, "deltas", None)
            if records is not None:
                cost += PER_RECORD * len(records)
            elif type(message) in (JobUpdated, SubmitToLeader):
                cost += PER_RECORD
            return cost * self.scale
        return self.local_by_type.get(type(event), 1.0 * _MS) * self.scale

    def effects_cost(self, effects: list[Any]) -> float:
        """Seconds the node's thread spends doing what it decided."""
        costs = self.effect_by_type
        return sum(costs.get(type(e), 0.0) for e in effects) * self.scale
