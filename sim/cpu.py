"""What handling an input costs a node's one thread, so a busy node answers late.

A real peer runs one trio loop: a message waits until the loop is free, and
every stream it opens, every record it encodes and saves, costs it time. A
node that gets more work than it can do falls behind, and to its peers a node
behind by seconds looks like a dead one. The simulator keeps a clock per node
(`busy_until`): an input that arrives while the node is busy waits its turn,
and what the node does with it (the effects it emits) keeps it busy longer.

The figures are CPU seconds on the 2-core machine, measured on the current
transport (long-lived channels, frames and acks batched) with
`.venv/bin/python scripts/bench_frames.py --count 2000` (and `--count 3000`),
two peers in two processes on loopback, at a load average of 7-11 from other
work (two runs: serial 2.50/2.56 ms send, 2.56/2.63 ms receive; burst
0.51/0.66 ms send, 0.41/0.51 ms receive; publish 1.43/1.70 ms):

- a message sent alone (`Runtime._send`: encode, request on the open channel,
  take its ack): 2.5 ms; each further message the same handling sends (they
  leave batched, as a burst does): 0.5 ms;
- a frame received when the thread was idle (decode, hand to `Node.handle`,
  answer the ack): 2.5 ms; one that waited in the backlog (read with the
  others): 0.5 ms;
- a gossipsub publish: 1.5 ms; a gossipsub message received: 0.5 ms (0.33-0.71).

Not measured again here (from `notes/costs.md`): a 4 KB record's
encode+decode ≈0.5 ms per record or delta in a message, a SQLite save ≈0.7 ms;
larger messages (Members, records, digests) cost more to decode (the old
model's estimates, kept as extras over the frame). `scale` multiplies them
all (2.0: hardware twice as slow; 0: no cost, the old simulator).
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

# Decoding a message of this type, beyond the frame's cost (estimates, not measured again).
DECODE_BY_TYPE: dict[type, float] = {
    Members: 3.0 * _MS,
    JobUpdated: 1.0 * _MS,
    Records: 1.0 * _MS,
    SubmitToLeader: 1.0 * _MS,
    DigestRequest: 1.0 * _MS,
    DigestReply: 1.0 * _MS,
}
RECEIVE = 2.5 * _MS  # a frame on the open channel, the thread idle: Noise + yamux + decode + handle + ack
RECEIVE_QUEUED = 0.5 * _MS  # a frame that waited in the backlog: read and acked with the others
PUBSUB_RECEIVE = 0.5 * _MS  # a gossipsub message (NodeInfo): validate + merge
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
    Send: 2.5 * _MS,  # the first message a handling sends: encode, a frame on the open channel, its ack
    Publish: 1.5 * _MS,  # gossipsub: encode, sign, fan out
    JobChanged: 0.7 * _MS,  # a SQLite save of the record
    StartExecution: 15.0 * _MS,  # wasm instantiate + WASI, or a container create
    RunProbe: 2.0 * _MS,
    SetTimer: 0.0,
}
SEND_BATCHED = 0.5 * _MS  # each further Send of the same handling: they leave batched

# The messages that carry whole records (`deltas`): each costs `PER_RECORD`.
_CARRY_RECORDS = frozenset({Records, DigestReply})


@dataclass(frozen=True)
class CpuModel:
    """Processing time per input and per effect, times `scale`."""

    scale: float = 1.0
    decode_by_type: dict[type, float] = field(default_factory=lambda: dict(DECODE_BY_TYPE))
    local_by_type: dict[type, float] = field(default_factory=lambda: dict(LOCAL_BY_TYPE))
    effect_by_type: dict[type, float] = field(default_factory=lambda: dict(EFFECT_BY_TYPE))

    def __post_init__(self) -> None:
        if not self.scale >= 0:
            raise ValueError(f"the CPU cost scale must be >= 0 (0: no cost), not {self.scale}")

    def input_cost(self, event: Any, queued: bool = False) -> float:
        """Seconds the node's thread spends taking `event` in (`queued`: it
        waited in the backlog, so its frame was read with others)."""
        if type(event) is Received:
            message = event.message
            kind = type(message)
            if kind is NodeInfo:
                return PUBSUB_RECEIVE * self.scale
            cost = (RECEIVE_QUEUED if queued else RECEIVE) + self.decode_by_type.get(kind, 0.0)
            if kind in _CARRY_RECORDS:
                cost += PER_RECORD * len(message.deltas)
            elif kind is JobUpdated or kind is SubmitToLeader:
                cost += PER_RECORD
            return cost * self.scale
        return self.local_by_type.get(type(event), 1.0 * _MS) * self.scale

    def effects_cost(self, effects: list[Any]) -> float:
        """Seconds the node's thread spends doing what it decided."""
        costs = self.effect_by_type
        total = 0.0
        sent = False
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                total += SEND_BATCHED if sent else costs.get(Send, 0.0)
                sent = True
            else:
                total += costs.get(kind, 0.0)
        return total * self.scale
