"""What a run measures, collected through the world's observer hooks (per
effect, never per delivery): traffic by message type, bids per job, when each
job first ran, and what the engines actually finished."""

from __future__ import annotations

from collections import Counter, defaultdict

from protocols.events import StartExecution
from protocols.messages import (
    Ack,
    AskBid,
    DigestReply,
    DigestRequest,
    Down,
    IndirectAck,
    LeaderChanged,
    Members,
    NodeInfo,
    NodeLeft,
    Ping,
    PingReq,
    Records,
    Suspect,
)

from sim.world import Observer, Run

HEARTBEAT_TYPES = frozenset({NodeInfo, NodeLeft, Members, Ping, Ack, PingReq, IndirectAck, Suspect, Down})  # membership
REPAIR_TYPES = frozenset({DigestRequest, DigestReply, Records})


class Traffic:
    """Messages and bytes of one message type."""

    __slots__ = ("sent", "delivered", "bytes")

    def __init__(self) -> None:
        self.sent = 0  # publishes and sends
        self.delivered = 0  # receivers reached (a publish counts each receiver)
        self.bytes = 0  # bytes put on the wire, receivers included

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "delivered": self.delivered, "bytes": self.bytes}


class Metrics(Observer):
    def __init__(self) -> None:
        self.traffic: dict[type, Traffic] = defaultdict(Traffic)
        self.asks: Counter[str] = Counter()  # AskBid sent, by job
        self.first_running: dict[str, float] = {}  # job -> first StartExecution
        self.engine_completions: dict[tuple[str, int], list[str]] = defaultdict(list)  # (job, partition) -> executions
        self.engine_failures = 0
        self.leader_changes = 0  # LeaderChanged sent (one per executor told)
        self.oversize: Counter[str] = Counter()  # measured messages over the wire's size limit, by type

    def on_publish(self, sender: str, message: object, receivers: int, size: int) -> None:
        traffic = self.traffic[type(message)]
        traffic.sent += 1
        traffic.delivered += receivers
        traffic.bytes += size * receivers

    def on_send(self, sender: str, peer: str, message: object, size: int) -> None:
        kind = type(message)
        traffic = self.traffic[kind]
        traffic.sent += 1
        traffic.delivered += 1
        traffic.bytes += size
        if kind is AskBid:
            self.asks[message.header.id] += 1  # type: ignore[attr-defined]
        elif kind is LeaderChanged:
            self.leader_changes += 1

    def on_start(self, node_id: str, effect: StartExecution, now: float) -> None:
        self.first_running.setdefault(effect.header.id, now)

    def on_engine_end(self, node_id: str, run: Run, now: float) -> None:
        if run.ok:
            self.engine_completions[(run.job_id, run.partition)].append(run.execution_id)
        else:
            self.engine_failures += 1

    def split(self) -> dict[str, Traffic]:
        """Traffic summed into heartbeat, repair (anti-entropy) and job messages."""
        out = {"heartbeat": Traffic(), "repair": Traffic(), "job": Traffic()}
        for kind, traffic in self.traffic.items():
            group = "heartbeat" if kind in HEARTBEAT_TYPES else "repair" if kind in REPAIR_TYPES else "job"
            total = out[group]
            total.sent += traffic.sent
            total.delivered += traffic.delivered
            total.bytes += traffic.bytes
        return out
