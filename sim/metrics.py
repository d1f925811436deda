"""What a run measures, collected through the world's observer hooks (per
effect, never per delivery): traffic by message type, bids per job, when each
job first ran, and what the engines actually finished.

With the world attached (`watch`), it also judges as things happen:

- an *extra start*: a batch partition or service replica starts on a node
  while another run of it goes on (or ended well) on a node that is up, has
  not restarted since, and was not cut off since that run began from the
  starter or from any keeper of the job (its leaders come from them: one
  cut off from it may rightly have written the run off): its node was
  late, not dead;
- a *false Down* (or Suspect): a verdict published about a node that is up,
  in the incarnation accused, and reachable from the accuser;
- how long a real crash took to be declared (`crashed` notes when).
"""

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

from sim.world import Observer, Run, World

_PLACED_TYPES = frozenset({"batch", "service"})  # job types whose partitions must run once

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
        self.world: World | None = None
        self._runs: dict[tuple[str, int], list[tuple[Run, int]]] = defaultdict(list)  # (job, partition) -> (run, incarnation)
        self.extra_starts: Counter[str] = Counter()  # by job
        self.false_verdicts: Counter[str] = Counter()  # "Down" / "Suspect" about a live, reachable node
        self._verdicts: set[tuple[str, str, str, int, int]] = set()
        self._crashes: dict[tuple[str, int], float] = {}  # (node, incarnation) -> when it died
        self.detections: list[float] = []  # seconds from a crash to the first Down about it

    def watch(self, world: World) -> None:
        self.world = world

    def crashed(self, node_id: str, incarnation: int, now: float) -> None:
        self._crashes[(node_id, incarnation)] = now

    def on_publish(self, sender: str, message: object, receivers: int, size: int) -> None:
        kind = type(message)
        traffic = self.traffic[kind]
        traffic.sent += 1
        traffic.delivered += receivers
        traffic.bytes += size * receivers
        if (kind is Down or kind is Suspect) and self.world is not None:
            self._judge(sender, message)  # type: ignore[arg-type]

    def _judge(self, sender: str, verdict: Down | Suspect) -> None:
        key = (type(verdict).__name__, sender, verdict.node_id, verdict.incarnation, verdict.seq)
        if key in self._verdicts:
            return  # a watcher says a death three times
        self._verdicts.add(key)
        world = self.world
        assert world is not None
        accused = world.slots.get(verdict.node_id)
        accuser = world.slots.get(sender)
        if accused is None or accuser is None:
            return
        if accused.up and accused.incarnation == verdict.incarnation and accused.group == accuser.group:
            self.false_verdicts[key[0]] += 1
            return
        died = self._crashes.pop((verdict.node_id, verdict.incarnation), None) if key[0] == "Down" else None
        if died is not None:
            self.detections.append(world.now - died)

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
        world = self.world
        if world is None or str(effect.header.spec.type) not in _PLACED_TYPES:
            return
        execution = effect.execution
        starter = world.slots[node_id]
        runs = self._runs[(execution.job_id, execution.partition)]
        for run, incarnation in runs:
            other = world.slots[run.node_id]
            if run.execution_id == execution.id or not other.up or other.incarnation != incarnation:
                continue  # its node crashed since: starting again is right
            deciders = (node_id, *effect.header.keepers)  # the starter, and who led or may take over
            if any(world.separated(run.node_id, other_id, run.started) for other_id in deciders):
                continue  # cut off meanwhile from the starter, or from a leader that may have written it off
            if (not run.ended and not run.stopped) or (run.ended and run.ok):
                self.extra_starts[execution.job_id] += 1
                break
        held = starter.runs.get(execution.id)
        if held is not None:
            runs.append((held, starter.incarnation))

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
