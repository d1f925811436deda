"""A few protocol nodes joined by a fake network in memory (h11's way of
testing a protocol object), for exact, small, deterministic scenarios. The
simulator in `sim/` is the same idea at scale."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocols.effects import dispatcher
from protocols.events import (
    CancelTimer,
    ExecutionEnded,
    JobChanged,
    ProbeAnswered,
    ProbeVerdict,
    ProvidersFound,
    Publish,
    Received,
    RunProbe,
    Send,
    SendFailed,
    SetTimer,
    StartExecution,
    StopExecution,
    StopJob,
    SubmitJob,
    TimerFired,
)
from protocols.jobspec import JobSpec
from protocols.node import Node, NodeConfig
from protocols.records import ExecutionResult, JobReplica


@dataclass
class Run:
    """An execution the fake engine is running."""

    node: str
    execution_id: str
    job_id: str
    partition: int
    started: float
    stopped: bool = False


@dataclass(frozen=True)
class _Finish:
    """The fake engine ends a run (unless it was stopped meanwhile)."""

    run: Run
    ok: bool


@dataclass
class Cluster:
    configs: list[NodeConfig]
    seed: int = 0
    latency: float = 0.01
    send_timeout: float = 0.5
    duration: Callable[[Run, JobSpec], float] = lambda run, spec: 1.0
    outcome: Callable[[Run, JobSpec], bool] = lambda run, spec: True
    probe: Callable[[str, str], ProbeVerdict] = lambda node, execution: ProbeVerdict(True, "ok")
    now: float = 0.0
    nodes: dict[str, Node] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    cut: set[frozenset[str]] = field(default_factory=set)  # pairs that cannot talk
    runs: dict[str, Run] = field(default_factory=dict)
    completions: list[Run] = field(default_factory=list)
    _queue: list[tuple[float, int, str, Any]] = field(default_factory=list)
    _seq: int = 0
    _timers: dict[tuple[str, Any], int] = field(default_factory=dict)
    _disk: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> job id -> saved snapshot
    _dirty: dict[str, set[str]] = field(default_factory=dict)  # node -> jobs changed since its last save
    providers_found: list[tuple[str, ProvidersFound]] = field(default_factory=list)  # answers to FindProviders, by node
    _appliers: dict[str, Callable[[list[Any]], None]] = field(default_factory=dict)
    _incarnation: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for config in self.configs:
            self._boot(config)

    # ------------------------------------------------------------ driving

    def node(self, index: int) -> Node:
        return self.nodes[self.configs[index].node_id]

    def submit(self, index: int, job_id: str, spec: JobSpec) -> None:
        self._push(self.now, self.configs[index].node_id, SubmitJob(job_id, spec))

    def inject(self, index: int, event: Any) -> None:
        """Hand one input (a client's request, say) to a node now."""
        self._push(self.now, self.configs[index].node_id, event)

    def stop(self, index: int, job_id: str, reason: str = "test") -> None:
        self._push(self.now, self.configs[index].node_id, StopJob(job_id, reason))

    def run(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            at, _, node_id, event = heapq.heappop(self._queue)
            self.now = at
            if node_id in self.down:
                continue
            if isinstance(event, tuple) and event[0] == "timer":
                _, key, generation = event
                if self._timers.get((node_id, key)) != generation:
                    continue
                del self._timers[(node_id, key)]
                event = TimerFired(key)
            elif isinstance(event, _Finish):
                if event.run.stopped:
                    continue
                self.completions.append(event.run)
                result = ExecutionResult(0 if event.ok else 1, "done\n", error="" if event.ok else "exit code 1")
                event = ExecutionEnded(event.run.execution_id, event.ok, result)
            self._apply(node_id, self.nodes[node_id].handle(event, at))
            self._save(node_id)  # each input is handled as it comes: the inbox has drained
        self.now = max(self.now, until)

    def crash(self, node_id: str) -> None:
        """The process dies: it keeps only what it had saved (its timers die with it)."""
        self.down.add(node_id)
        self._dirty.pop(node_id, None)
        for key in [key for key in self._timers if key[0] == node_id]:
            del self._timers[key]
        for run in self.runs.values():
            if run.node == node_id:
                run.stopped = True

    def restart(self, node_id: str) -> None:
        self.down.discard(node_id)
        config = next(c for c in self.configs if c.node_id == node_id)
        self._boot(config, restored=list(self._disk.get(node_id, {}).values()))

    def job(self, job_id: str, index: int = 0) -> JobReplica:
        return self.node(index).jobs[job_id]

    def keepers(self, job_id: str) -> list[int]:
        """Indexes of the up nodes the freshest record names as its keepers."""
        held = [n.jobs[job_id] for n in self.nodes.values() if job_id in n.jobs]
        newest = max(held, key=lambda r: r.header.order).header
        return [i for i, c in enumerate(self.configs) if c.node_id in newest.keepers and c.node_id not in self.down]

    # ------------------------------------------------------------ the fake world

    def _boot(self, config: NodeConfig, restored: list[Any] = ()) -> None:  # type: ignore[assignment]
        self._incarnation[config.node_id] = self._incarnation.get(config.node_id, 0) + 1
        node = Node(config, rng=random.Random(f"{self.seed}/{config.node_id}"), restored=restored,
                    incarnation=self._incarnation[config.node_id])
        self.nodes[config.node_id] = node
        self._appliers[config.node_id] = dispatcher(_Effects(self, config.node_id))
        self._apply(config.node_id, node.start(self.now))

    def _push(self, at: float, node_id: str, event: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, node_id, event))

    def _reachable(self, a: str, b: str) -> bool:
        return b not in self.down and frozenset((a, b)) not in self.cut

    def _apply(self, node_id: str, effects: list[Any]) -> None:
        self._appliers[node_id](effects)

    def _save(self, node_id: str) -> None:
        """Write the node's changed jobs to its disk, as the real node does when its inbox drains."""
        dirty = self._dirty.pop(node_id, ())
        jobs = self.nodes[node_id].jobs
        for job_id in dirty:
            if job_id in jobs:
                self._disk.setdefault(node_id, {})[job_id] = jobs[job_id].snapshot()

    def running(self, job_id: str) -> list[Run]:
        """Runs of the job the fake engine still has going."""
        return [
            r for r in self.runs.values()
            if r.job_id == job_id and not r.stopped and r not in self.completions and r.node not in self.down
        ]


@dataclass
class _Effects:
    """One node's effects in the fake world (a `protocols.effects.EffectHandler`)."""

    cluster: Cluster
    node_id: str

    def publish(self, effect: Publish) -> None:
        cluster, node_id = self.cluster, self.node_id
        for other in cluster.nodes:
            if other != node_id and cluster._reachable(node_id, other):
                cluster._push(cluster.now + cluster.latency, other, Received(node_id, effect.message))

    def send(self, effect: Send) -> None:
        cluster, node_id, peer = self.cluster, self.node_id, effect.peer
        if peer == node_id or cluster._reachable(node_id, peer):
            cluster._push(cluster.now + cluster.latency, peer, Received(node_id, effect.message))
        else:
            cluster._push(cluster.now + cluster.send_timeout, node_id, SendFailed(peer, effect.message, "unreachable"))

    def set_timer(self, effect: SetTimer) -> None:
        cluster = self.cluster
        cluster._seq += 1
        cluster._timers[(self.node_id, effect.key)] = cluster._seq
        cluster._push(effect.at, self.node_id, ("timer", effect.key, cluster._seq))

    def cancel_timer(self, effect: CancelTimer) -> None:
        self.cluster._timers.pop((self.node_id, effect.key), None)

    def run_probe(self, effect: RunProbe) -> None:
        cluster, node_id = self.cluster, self.node_id
        answer = ProbeAnswered(effect.execution_id, cluster.probe(node_id, effect.execution_id))
        cluster._push(cluster.now + cluster.latency, node_id, answer)

    def start_execution(self, effect: StartExecution) -> None:
        cluster, execution, header = self.cluster, effect.execution, effect.header
        run = Run(self.node_id, execution.id, header.id, execution.partition, cluster.now)
        cluster.runs[execution.id] = run
        spec = header.spec
        cluster._push(cluster.now + cluster.duration(run, spec), self.node_id, _Finish(run, cluster.outcome(run, spec)))

    def stop_execution(self, effect: StopExecution) -> None:
        run = self.cluster.runs.get(effect.execution_id)
        if run is not None:
            run.stopped = True

    def job_changed(self, effect: JobChanged) -> None:
        self.cluster._dirty.setdefault(self.node_id, set()).add(effect.job_id)

    def providers_found(self, effect: ProvidersFound) -> None:
        self.cluster.providers_found.append((self.node_id, effect))
