"""One simulated run, from a seed to a report.

A run goes through phases, each ended by a condition or a time limit:

1. boot: every node starts within the first half second, in a network that
   has formed already (each node is given the member list), or with
   `cold_boot` knowing nobody: then jobs begin arriving once heartbeats and
   welcomes have made everyone known;
2. work: jobs arrive (Poisson) while faults strike (crashes and restarts,
   killed leaders, a partition that heals); it ends when faults have stopped
   and every batch and ops job is terminal (else: invariant violated);
3. settle: the network gets time to notice what died (twice the detection
   time, when there were faults); then no service job may run more than Count
   replicas in the engines;
4. stop: every service and daemon job is stopped (StopJob at a random live
   node) and must end;
5. converge: anti-entropy runs until every live node holds the same
   (epoch, revision) of every job, and every job is present and terminal.

A death is noticed by the dead node's watchers after `dead_after` unanswered
pings, whatever the network's size; the time limits scale with that
`detection_time`.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from protocols.events import StopJob, SubmitJob
from protocols.jobid import make_job_id
from protocols.membership import Membership
from protocols.node import Node, NodeConfig, initial_info
from protocols.records import JobReplica, JobState
from protocols.wire import OutgoingMessageTooLarge, encoded_size

from sim import invariants
from sim.cpu import CpuModel
from sim.data import DataConfig, DataModel
from sim.engine import EngineConfig, EngineModel
from sim.forgers import UNFORGED, Forgers, check_unforged, forger_count
from sim.metrics import Metrics
from sim.network import NetworkConfig, Partition, SimConfigError
from sim.report import Report
from sim.topology import node_configs
from sim.workload import Arrival, WorkloadConfig, arrivals
from sim.world import World

SUBMIT_ANSWER_WITHIN = 2.0  # simulated seconds a client waits for its node to take a job

Progress = Callable[[float, int, int, str], None]
"""(simulated time, jobs terminal, jobs submitted so far, phase)."""


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 50
    seed: int = 1
    workload: WorkloadConfig = WorkloadConfig()
    network: NetworkConfig = NetworkConfig()
    engine: EngineConfig = EngineConfig()
    crash_rate: float = 0.0  # node crashes per simulated second, network-wide, while jobs arrive
    downtime: tuple[float, float] = (5.0, 30.0)  # a crashed node restarts after this long
    partition: Partition | None = None
    kill_leaders: int = 0  # leaders of running jobs killed for good while jobs arrive
    slow_nodes: float = 0.0  # fraction of nodes that process every event late
    slow_delay: float = 0.3  # about how late (seconds)
    duration: float | None = None  # limit for the work phase (simulated s from 0; at least until the last arrival)
    sample_interval: float = 1.0  # how often states are sampled and invariants checked
    node_tuning: dict[str, Any] = field(default_factory=dict)  # NodeConfig timing fields
    exact_bytes: bool = False  # encode every message (slow) rather than a sample per type
    cold_boot: bool = False  # nodes start knowing nobody (else: a formed network)
    forgers: float = 0.0  # members that also forge messages (`sim.forgers`): a fraction below 1, else a count
    cpu_scale: float = 1.0  # what handling costs a node's thread, times the measured figures (0: nothing)
    data: DataConfig = DataConfig()  # where datasets live and which jobs read them (`sim.data`)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise SimConfigError(f"a network needs at least 1 node, not {self.nodes}")
        if self.crash_rate < 0 or self.kill_leaders < 0:
            raise SimConfigError("crash rate and leaders to kill must be >= 0")
        if not self.cpu_scale >= 0:
            raise SimConfigError(f"the CPU cost scale must be >= 0 (0: handling costs nothing), not {self.cpu_scale}")
        if not 0 <= self.slow_nodes <= 1:
            raise SimConfigError(f"the fraction of slow nodes must be in [0, 1], not {self.slow_nodes}")
        if not 0 <= self.downtime[0] <= self.downtime[1]:
            raise SimConfigError(f"downtime must be MIN <= MAX seconds, not {self.downtime}")
        try:
            forger_count(self.forgers, self.nodes)
        except ValueError as error:
            raise SimConfigError(str(error)) from None
        unknown = set(self.node_tuning) - set(NodeConfig.__dataclass_fields__)
        if unknown:
            raise SimConfigError(f"unknown node setting(s): {', '.join(sorted(unknown))}")
        for name, value in self.node_tuning.items():
            if isinstance(value, float) and not value > 0:  # intervals and rates
                raise SimConfigError(f"node setting {name} must be > 0, not {value}")


@dataclass(slots=True)
class _Track:
    """What the run knows of one submitted job."""

    arrival: Arrival
    kind: str
    where: str  # the node whose replica we read (the leader, as far as we know)


class Simulation:
    """Build with a config, then `run()`; everything is drawn from the seed."""

    def __init__(self, config: SimConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.metrics = Metrics()
        self.world = World(
            self.rng,
            config.network,
            EngineModel(config.engine, self.rng),
            sizer=self._measure,
            observer=self.metrics,
            exact_bytes=config.exact_bytes,
            cpu=CpuModel(config.cpu_scale),
        )
        self.metrics.watch(self.world)
        self.configs = node_configs(config.nodes, self.rng, **config.node_tuning)
        self.data = DataModel(config.data, config.seed, [c.node_id for c in self.configs], self.metrics)
        if self.data.enabled:
            self.world.observer = self.data  # it forwards every hook to the metrics
        probe = self.configs[0]
        # how long a death goes unnoticed: the pings, then a slow watcher's round
        self.detection_time = (probe.dead_after + 2) * probe.ping_interval + 2 * config.network.latency_median
        self.heartbeat_interval = probe.heartbeat_interval
        self.members = None if config.cold_boot else Membership.warm_start(initial_info(c) for c in self.configs)
        self.tracks: dict[str, _Track] = {}
        self.ids: dict[str, str] = {}  # an arrival's label -> the ID of its latest submission
        self._attempts: dict[str, int] = {}
        self.active: set[str] = set()  # submitted, not yet seen terminal
        self.terminal_states: Counter[str] = Counter()
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.faults: Counter[str] = Counter()
        self.made: list[Node] = []  # every node object made, restarts included
        count = forger_count(config.forgers, config.nodes)
        self.forgers = Forgers(self.world, [c.node_id for c in self.configs], count, config.seed) if count else None
        self.killed: set[str] = set()
        self.faults_end = 0.0
        self._done_check: Callable[[], bool] | None = None
        self._phase = "boot"

    # ------------------------------------------------------------ the run

    def run(self) -> Report:
        with _rare_collections():
            return self._run()

    def _run(self) -> Report:
        config = self.config
        world = self.world
        started = time.perf_counter()
        for index, node_config in enumerate(self.configs):
            world.add_node(node_config.node_id, self._factory(index, node_config))
        for node_config in self.configs:
            world.call_at(self.rng.uniform(0.0, 0.5), lambda n=node_config.node_id: world.start(n))
        warm = 0.5 + (2.5 * self.heartbeat_interval if config.cold_boot else 0.5)
        jobs = self.data.with_inputs(arrivals(config.workload, self.rng, config.seed, warm))
        if self.data.enabled:
            self.data.announce(world, 0.5 * warm)
        for arrival in jobs:
            world.call_at(arrival.at, lambda a=arrival: self._submit(a))
        last_arrival = jobs[-1].at if jobs else warm
        self._schedule_faults(warm, last_arrival)
        if self.forgers is not None:
            self.forgers.schedule(warm, last_arrival)
        self._monitor()

        # work: until faults stopped and every batch/ops job is terminal
        self._phase = "work"
        longest = max(config.workload.durations) * 3 + max(config.workload.queue_timeouts)
        if config.duration is not None:
            limit = max(config.duration, last_arrival + 1.0)
        else:
            limit = max(last_arrival, self.faults_end) + longest + 4 * self.detection_time + 120
        self._run_until(limit, lambda: world.now >= max(last_arrival, self.faults_end) and not self._unfinished())
        invariants.check_terminal(config.seed, {j: self.view(j) for j in self._unfinished()}, world.now)
        work_end = world.now

        # settle, then count service replicas in the engines
        self._phase = "settle"
        faulty = config.crash_rate > 0 or config.kill_leaders > 0 or config.partition is not None
        # time to notice who died, and for runs orphaned by a partition to check in and be cancelled
        quiet = 2 * self.detection_time + max(c.check_in_interval for c in self.configs) if faulty else 0.0
        world.run(max(world.now, self.faults_end) + quiet + 10)
        services = {job_id for job_id, t in self.tracks.items() if t.kind == "service"}
        running = invariants.service_replicas(world.all_slots(), services)
        counts = {job_id: max(self.tracks[job_id].arrival.spec.count, 1) for job_id in services}
        invariants.check_service_count(config.seed, running, counts)
        at_count = sum(1 for job_id in services if running[job_id] == counts[job_id])

        # stop the continuous jobs; everything must end
        self._phase = "stop"
        for job_id in sorted(j for j, t in self.tracks.items() if t.kind in ("service", "daemon")):
            target = self.rng.choice(world.up_slots()).node_id
            world.inject(target, StopJob(job_id, "the simulation is over"))
        self._run_until(world.now + 3 * self.detection_time + 60, lambda: not self.active)

        # converge: anti-entropy repairs what gossip lost
        self._phase = "converge"
        job_ids = sorted(self.tracks)
        anti_entropy = self.configs[0].anti_entropy_interval
        horizon = world.now + 30 * anti_entropy + 2 * self.detection_time
        step = 2 * anti_entropy
        while invariants.divergence(world.up_slots(), job_ids) and world.now < horizon:
            world.run(world.now + step)
            step = min(step * 1.5, 60.0)
        up = world.up_slots()
        invariants.check_converged(config.seed, up, job_ids)
        invariants.check_nothing_lost(config.seed, up, job_ids)
        stale = len(invariants.divergence(up, job_ids, executions=True))
        reference = invariants.newest(up, job_ids)
        invariants.check_no_double_completion(
            config.seed, (reference[j] for j in job_ids), self.metrics.engine_completions
        )
        if self.forgers is not None:
            check_unforged(config.seed, up, self.forgers.ids)
        return self._report(reference, job_ids, time.perf_counter() - started, work_end, len(services), at_count, stale)

    def _measure(self, message: object, sender: str) -> int:
        """Bytes on the wire; a message over the wire's size limit (which a
        real node could not send) is counted, and delivered all the same."""
        try:
            return encoded_size(message, sender)
        except OutgoingMessageTooLarge as error:
            self.metrics.oversize[type(message).__name__] += 1
            return error.size

    def _factory(self, index: int, node_config: NodeConfig) -> Callable[[int, list[Any]], Node]:
        seed = self.config.seed

        def make(incarnation: int, restored: list[Any]) -> Node:
            rng = random.Random(f"{seed}/{index}/{incarnation}")
            members = self.members if incarnation == 1 else None  # a restart knows only what it is told
            node = Node(node_config, rng=rng, restored=restored, incarnation=incarnation, members=members)
            self.made.append(node)  # (a restart makes a new one: its refusals are summed at the end)
            return node

        return make

    def _run_until(self, limit: float, done: Callable[[], bool]) -> None:
        self._done_check = done
        while self.world.now < limit and not done():
            self.world.run(limit)
        self._done_check = None

    # ------------------------------------------------------------ jobs

    def _submit(self, arrival: Arrival) -> None:
        up = self.world.up_slots()
        if not up:
            return
        slot = self.rng.choice(up)
        # With forgers about, or when a client submits again (to another
        # node), the job's ID certifies its submitter (`protocols.jobid`), as
        # the API's IDs do: a submit made again is another job, never a second
        # version of the first under its ID (which keepers refuse, and with it
        # every repair message that carries it). Otherwise the readable label
        # is the ID (a plain name), so a seed replays as it always has.
        attempt = self._attempts[arrival.job_id] = self._attempts.get(arrival.job_id, 0) + 1
        previous = self.ids.get(arrival.job_id)
        if previous is not None:
            self.tracks.pop(previous, None)
            self.active.discard(previous)
        salt = str(attempt) if self.forgers is not None or attempt > 1 else ""
        job_id = make_job_id(arrival.job_id, slot.node_id, salt, arrival.spec) if salt else arrival.job_id
        self.ids[arrival.job_id] = job_id
        self.tracks[job_id] = _Track(arrival, str(arrival.spec.type), slot.node_id)
        self.active.add(job_id)
        self.world.inject(slot.node_id, SubmitJob(job_id, arrival.spec, salt))
        incarnation = slot.incarnation
        check = lambda: self._check_accepted(arrival, slot.node_id, incarnation)  # noqa: E731
        self.world.call_at(self.world.now + SUBMIT_ANSWER_WITHIN, check)

    def _check_accepted(self, arrival: Arrival, node_id: str, incarnation: int | None = None) -> None:
        """A client whose node died before taking its job (a slow node that
        crashed with the request unread) gets an error and submits again; one
        whose node is only busy keeps waiting."""
        slot = self.world.slots[node_id]
        if incarnation is None:
            incarnation = slot.incarnation
        job_id = self.ids[arrival.job_id]
        if slot.up and job_id in slot.node.jobs:  # type: ignore[union-attr]
            return
        if slot.up and slot.incarnation == incarnation:
            check = lambda: self._check_accepted(arrival, node_id, incarnation)  # noqa: E731
            self.world.call_at(self.world.now + SUBMIT_ANSWER_WITHIN, check)
            return
        if not any(job_id in s.node.jobs for s in self.world.up_slots()):  # type: ignore[union-attr]
            self._submit(arrival)

    def view(self, job_id: str) -> JobReplica | None:
        """The job as its leader (as far as we can tell) holds it."""
        track = self.tracks[job_id]
        slots = self.world.slots
        slot = slots[track.where]
        replica = slot.node.jobs.get(job_id) if slot.up else None  # type: ignore[union-attr]
        if replica is None:
            for other in self.world.up_slots():
                replica = other.node.jobs.get(job_id)  # type: ignore[union-attr]
                if replica is not None:
                    track.where = other.node_id
                    break
            else:
                return None
        leader = slots.get(replica.header.leader)
        if leader is not None and leader.up:
            named = [leader]
        else:  # our copy names a dead leader: a stale copy? ask the keepers it names
            named = [k for n in sorted(replica.header.keepers) if (k := slots.get(n)) is not None and k.up]
        for slot in named:
            theirs = slot.node.jobs.get(job_id) if slot.node_id != track.where else None  # type: ignore[union-attr]
            # The leader's copy wins a tie: a keeper may hold, for a moment,
            # what a deposed leader wrote and the leader has yet to overrule.
            if theirs is not None and (theirs.header.order > replica.header.order or (
                slot is leader and theirs.header.order == replica.header.order
            )):
                track.where = slot.node_id
                replica = theirs
        return replica

    def _unfinished(self) -> list[str]:
        return [j for j in self.active if self.tracks[j].kind in ("batch", "ops")]

    def _monitor(self) -> None:
        """Every `sample_interval`: note who finished, sample states, check
        invariants on the jobs that just ended, report progress, and halt the
        world when the phase's goal is reached."""
        world = self.world
        live: Counter[str] = Counter()
        finished = []
        for job_id in self.active:
            replica = self.view(job_id)
            state = "Pending" if replica is None else str(replica.header.state)
            if replica is not None and replica.header.state.terminal:
                finished.append((job_id, replica))
            else:
                live[state] += 1
        for job_id, replica in finished:
            self.active.discard(job_id)
            self.terminal_states[str(replica.header.state)] += 1
            if self.tracks[job_id].kind == "batch" and invariants.double_completions(replica):
                invariants.check_no_double_completion(self.config.seed, [replica], self.metrics.engine_completions)
        sample = dict(self.terminal_states)
        for state, n in live.items():
            sample[state] = sample.get(state, 0) + n
        self.samples.append((world.now, sample))
        if self.progress is not None:
            self.progress(world.now, sum(self.terminal_states.values()), len(self.tracks), self._phase)
        if self._done_check is not None and self._done_check():
            world.halt()
        world.call_at(world.now + self.config.sample_interval, self._monitor)

    # ------------------------------------------------------------ faults

    def _schedule_faults(self, start: float, end: float) -> None:
        config = self.config
        world = self.world
        rng = self.rng
        ids = [c.node_id for c in self.configs]
        if config.slow_nodes:
            for node_id in rng.sample(ids, round(config.slow_nodes * len(ids))):
                world.set_slow(node_id, config.slow_delay)
                self.faults["slow nodes"] += 1
        if config.partition is not None:
            partition = config.partition
            cut = rng.sample(ids, max(1, round(partition.fraction * len(ids))))
            world.call_at(partition.start, lambda: self._partition(cut))
            world.call_at(partition.end, world.heal)
            self.faults_end = max(self.faults_end, partition.end)
        if config.crash_rate > 0:
            at = start + rng.expovariate(config.crash_rate)
            while at < end:
                down = rng.uniform(*config.downtime)
                world.call_at(at, lambda d=down: self._crash_one(d))
                self.faults_end = max(self.faults_end, at + down)
                at += rng.expovariate(config.crash_rate)
        for k in range(config.kill_leaders):
            at = start + (end - start) * (0.3 + 0.4 * (k + 0.5) / config.kill_leaders)
            world.call_at(at, self._kill_a_leader)
            self.faults_end = max(self.faults_end, at)

    def _partition(self, cut: list[str]) -> None:
        self.world.set_groups({node_id: 1 for node_id in cut})
        self.faults["partitions"] += 1

    def _crash_one(self, downtime: float) -> None:
        candidates = [s for s in self.world.up_slots() if s.node_id not in self.killed]
        if len(candidates) <= 1:
            return
        node_id = self.rng.choice(candidates).node_id
        self.metrics.crashed(node_id, self.world.slots[node_id].incarnation, self.world.now)
        self.world.crash(node_id)
        self.faults["crashes"] += 1
        self.world.call_at(self.world.now + downtime, lambda: self._restart(node_id))

    def _restart(self, node_id: str) -> None:
        if node_id not in self.killed:
            self.world.start(node_id)
            self.faults["restarts"] += 1

    def _kill_a_leader(self) -> None:
        """Crash, for good, the leader of a job that is still running."""
        candidates = sorted(j for j in self.active if self.tracks[j].kind in ("batch", "service"))
        self.rng.shuffle(candidates)
        for job_id in candidates:
            replica = self.view(job_id)
            if replica is None or replica.header.state.terminal:
                continue
            slot = self.world.slots.get(replica.header.leader)
            if slot is not None and slot.up and len(self.world.up_slots()) > 2:
                self.killed.add(slot.node_id)
                self.metrics.crashed(slot.node_id, slot.incarnation, self.world.now)
                self.world.crash(slot.node_id)
                self.faults["leaders killed"] += 1
                return

    # ------------------------------------------------------------ the report

    def _report(
        self,
        reference: dict[str, JobReplica],
        job_ids: list[str],
        wall: float,
        work_end: float,
        services: int,
        services_at_count: int,
        stale_executions: int,
    ) -> Report:
        world = self.world
        metrics = self.metrics
        by_state: Counter[str] = Counter()
        by_type_state: dict[str, Counter[str]] = defaultdict(Counter)
        latencies = []
        failovers = jobs_failed_over = 0
        bids: dict[str, list[int]] = defaultdict(list)
        for job_id in job_ids:
            track = self.tracks[job_id]
            header = reference[job_id].header
            by_state[str(header.state)] += 1
            by_type_state[track.kind][str(header.state)] += 1
            started = metrics.first_running.get(job_id)
            if started is not None:
                latencies.append(started - track.arrival.at)
            failovers += header.epoch - 1
            jobs_failed_over += header.epoch > 1
            label = f"{track.kind} Count={track.arrival.spec.count}" if track.kind in ("batch", "service") else track.kind
            bids[label].append(metrics.asks[job_id])
        split = metrics.split()
        n = max(len(job_ids), 1)
        return Report(
            seed=self.config.seed,
            nodes=self.config.nodes,
            jobs=len(job_ids),
            arrival_rate=self.config.workload.arrival_rate,
            sim_time=world.now,
            work_phase_end=work_end,
            wall_time=wall,
            events=world.events,
            events_per_second=world.events / wall if wall > 0 else 0.0,
            jobs_by_state=dict(sorted(by_state.items())),
            jobs_by_type=
                {kind: dict(sorted(states.items())) for kind, states in sorted(by_type_state.items())},
            latency_p50=_percentile(latencies, 0.5),
            latency_p99=_percentile(latencies, 0.99),
            latencies=latencies,
            job_messages_per_job=split["job"].delivered / n,
            job_bytes_per_job=split["job"].bytes / n,
            job_sends_per_job=split["job"].sent / n,
            heartbeat_messages=split["heartbeat"].delivered,
            heartbeat_bytes=split["heartbeat"].bytes,
            repair_messages=split["repair"].delivered,
            repair_bytes=split["repair"].bytes,
            traffic={kind.__name__: t.as_dict() for kind, t in sorted(metrics.traffic.items(), key=lambda kv: kv[0].__name__)},
            bids_per_job=sum(metrics.asks[j] for j in job_ids) / n,
            bids_by_kind={label: statistics.fmean(v) for label, v in sorted(bids.items())},
            leader_failovers=failovers,
            jobs_failed_over=jobs_failed_over,
            faults=dict(sorted(self.faults.items())),
            dropped_deliveries=world.dropped,
            engine_failures=metrics.engine_failures,
            duplicate_engine_completions=sum(
                len(runs) - 1
                for (job_id, _), runs in metrics.engine_completions.items()
                if job_id in self.tracks and self.tracks[job_id].kind == "batch" and len(runs) > 1  # (not a submit given up)
            ),
            services=services,
            services_at_count=services_at_count,
            jobs_with_stale_executions=stale_executions,
            oversize_messages=dict(sorted(metrics.oversize.items())),
            detection_time=self.detection_time,
            extra_starts=sum(metrics.extra_starts.values()),
            jobs_with_extra_starts=len(metrics.extra_starts),
            false_downs=metrics.false_verdicts["Down"],
            false_suspects=metrics.false_verdicts["Suspect"],
            detection_p50=_percentile(metrics.detections, 0.5),
            detection_max=max(metrics.detections, default=math.nan),
            max_backlog=max((s.max_backlog for s in world.all_slots()), default=0.0),
            invariants=list(invariants.ALL) + ([UNFORGED] if self.forgers is not None else []),
            forged=dict(sorted(self.forgers.sent.items())) if self.forgers is not None else {},
            refused=dict(sorted(sum((n.authority.refused for n in self.made), Counter()).items())),
            samples=self.samples,
            data=self.data.summary(sum(bool(self.tracks[j].arrival.spec.task.input_sources) for j in job_ids))
            if self.data.enabled else {},
        )


@contextmanager
def _rare_collections() -> Iterator[None]:
    """A run builds millions of long-lived objects (records, messages) and
    almost no reference cycles, so the cyclic collector's passes over them
    cost a third of the run and free nothing: run it rarely meanwhile."""
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def simulate(config: SimConfig, progress: Progress | None = None) -> Report:
    """Run one simulation; raises `InvariantViolation` (naming the seed) when
    the network breaks a promise."""
    with _rare_collections():  # building thousands of nodes, and the report, too
        return Simulation(config, progress).run()
