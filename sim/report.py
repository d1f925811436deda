"""A run's results, as text for people and as JSON for scripts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Report:
    seed: int
    nodes: int
    jobs: int
    arrival_rate: float  # jobs per simulated second
    sim_time: float  # simulated seconds, all phases
    work_phase_end: float  # when every batch/ops job had ended
    wall_time: float
    events: int  # inputs handled by nodes
    events_per_second: float  # per wall-clock second
    jobs_by_state: dict[str, int]
    jobs_by_type: dict[str, dict[str, int]]
    latency_p50: float  # submit -> first execution Running, simulated seconds
    latency_p99: float
    job_messages_per_job: float  # job-related deliveries (a publish counts each receiver)
    job_bytes_per_job: float
    job_sends_per_job: float  # job-related publishes + sends
    heartbeat_messages: int
    heartbeat_bytes: int
    repair_messages: int  # anti-entropy
    repair_bytes: int
    traffic: dict[str, dict[str, int]]  # by message type
    bids_per_job: float  # AskBid sent per job
    bids_by_kind: dict[str, float]
    leader_failovers: int  # epochs beyond the first, summed over jobs
    jobs_failed_over: int
    faults: dict[str, int]
    dropped_deliveries: int
    engine_failures: int
    duplicate_engine_completions: int  # wasted work: a partition run to the end twice
    services: int
    services_at_count: int  # service jobs running exactly Count replicas after settling
    jobs_with_stale_executions: int  # same header everywhere, yet some node holds older executions
    detection_time: float  # how long a death goes unnoticed at this size
    oversize_messages: dict[str, int]  # measured messages a real node could not send (over the size limit)
    extra_starts: int  # starts of a partition whose earlier run's node was late, not crashed or cut off
    jobs_with_extra_starts: int
    false_downs: int  # Down verdicts about a node that was up and reachable
    false_suspects: int
    detection_p50: float  # seconds from a crash to the first Down about it
    detection_max: float
    max_backlog: float  # the longest an input waited for a node's thread (CPU model)
    invariants: list[str]
    forged: dict[str, int] = field(default_factory=dict)  # messages the forgers sent, by type (`--forgers`)
    refused: dict[str, int] = field(default_factory=dict)  # messages dropped by `protocols.authority`, by type and reason
    data: dict[str, float] = field(default_factory=dict)  # bytes moved for jobs' inputs (`sim.data`), when datasets were placed
    latencies: list[float] = field(default_factory=list, repr=False)
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list, repr=False)

    def as_dict(self, *, with_series: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_series:
            del data["latencies"], data["samples"]
        for key, value in data.items():
            if isinstance(value, float) and math.isnan(value):
                data[key] = None
        return data

    def text(self) -> str:
        lines = [
            f"seed {self.seed}: {self.nodes} nodes, {self.jobs} jobs at {self.arrival_rate:g}/s, "
            f"{self.sim_time:.1f} s simulated in {self.wall_time:.1f} s wall "
            f"({self.events:,} events, {self.events_per_second:,.0f} events/s)",
            "jobs by final state: " + _pairs(self.jobs_by_state),
        ]
        for kind, states in self.jobs_by_type.items():
            lines.append(f"  {kind}: " + _pairs(states))
        lines += [
            f"scheduling latency (submit -> first Running): p50 {_seconds(self.latency_p50)}, "
            f"p99 {_seconds(self.latency_p99)} (simulated)",
            f"job messages per job: {self.job_messages_per_job:,.1f} deliveries "
            f"({self.job_sends_per_job:.1f} sent), {self.job_bytes_per_job / 1024:,.1f} KiB",
            f"heartbeats: {self.heartbeat_messages:,} deliveries, {self.heartbeat_bytes / 2**20:,.1f} MiB; "
            f"anti-entropy: {self.repair_messages:,} messages, {self.repair_bytes / 2**20:,.1f} MiB",
            f"bids per job: {self.bids_per_job:.2f} (" + _pairs({k: f"{v:.2f}" for k, v in self.bids_by_kind.items()}) + ")",
            f"leader failovers: {self.leader_failovers} ({self.jobs_failed_over} jobs); "
            f"death detection takes ~{self.detection_time:.0f} s at this size",
            f"services at Count after settling: {self.services_at_count}/{self.services}; "
            f"jobs whose executions still differ between replicas: {self.jobs_with_stale_executions}",
            "faults: " + (_pairs(self.faults) or "none") + f"; {self.dropped_deliveries:,} pubsub deliveries lost; "
            f"{self.engine_failures} task failures; {self.duplicate_engine_completions} duplicate completions (wasted work)",
            f"extra starts (a partition started again while its first node was only late): {self.extra_starts} "
            f"({self.jobs_with_extra_starts} jobs); false verdicts about live nodes: {self.false_downs} Down, "
            f"{self.false_suspects} Suspect; crash -> first Down: p50 {_seconds(self.detection_p50)}, "
            f"max {_seconds(self.detection_max)}; longest wait for a node's thread: {self.max_backlog:.2f} s",
            "invariants held: " + "; ".join(self.invariants),
            *(["forged messages sent: " + _pairs(self.forged)] if self.forged else []),
            "messages refused (who may write what): " + (_pairs(self.refused) or "none"),
            *([f"data: {self.data['bytes_moved_per_job'] / 2**20:,.1f} MiB moved per job that reads data; "
               f"{self.data['runs_local']:g} of {self.data['runs_with_data']:g} runs found their input in place"]
              if self.data else []),
        ]
        if self.oversize_messages:
            lines.append(
                "WARNING: messages over the wire's size limit (a real node could not send them; "
                "counted among the measured sample): " + _pairs(self.oversize_messages)
            )
        return "\n".join(lines)


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def _seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} s"
