"""The jobs a simulated run submits: what they are and when they arrive.

Jobs arrive as a Poisson process. Each is a real `JobSpec`, parsed by
`protocols.jobspec` from a small document. Specs are immutable, so a pool of a
few dozen distinct specs per job type is built once and jobs share them (the
leader and engine caches key on the spec object, as in a real network where
many jobs are resubmissions of a few templates).

The defaults keep every job runnable somewhere: constraints name labels that
some nodes carry (see `sim.topology`), resources fit the smaller nodes, and
most tasks need no network (a node's default policy refuses networked jobs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from protocols.jobspec import JobSpec, job_spec_from_data

from sim.network import SimConfigError
from sim.topology import REGIONS

JOB_TYPES = ("batch", "ops", "service", "daemon")
DEFAULT_MIX = {"batch": 0.85, "ops": 0.05, "service": 0.07, "daemon": 0.03}
WASM_MODULE = {"Target": "/app/main.wasm", "Source": {"Type": "inline", "Params": {"URL": "data:,sim"}}}


@dataclass(frozen=True)
class JobMix:
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(JOB_TYPES)
        if unknown:
            raise SimConfigError(f"unknown job type(s) in the mix: {', '.join(sorted(unknown))}; use {', '.join(JOB_TYPES)}")
        if any(w < 0 for w in self.weights.values()) or not sum(self.weights.values()) > 0:
            raise SimConfigError("job mix weights must be >= 0 and not all 0")

    @classmethod
    def parse(cls, text: str) -> JobMix:
        """`batch=0.7,ops=0.1,service=0.1,daemon=0.1` (weights, normalised)."""
        weights: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise SimConfigError(f"job mix entry {part!r} is not TYPE=WEIGHT (e.g. batch=0.7)") from None
        return cls(weights)


@dataclass(frozen=True)
class WorkloadConfig:
    jobs: int = 100
    arrival_rate: float = 10.0  # jobs per second of simulated time
    mix: JobMix = JobMix()
    specs_per_type: int = 24  # distinct specs drawn per job type
    queue_timeouts: tuple[int, ...] = (0, 60, 300)
    priorities: tuple[int, ...] = (0, 50, 100)
    durations: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 45.0)  # Meta sim.duration of batch/ops tasks

    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise SimConfigError(f"the number of jobs must be >= 0, not {self.jobs}")
        if not self.arrival_rate > 0:
            raise SimConfigError(f"the arrival rate must be > 0 jobs/s, not {self.arrival_rate}")


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    job_id: str
    spec: JobSpec


def arrivals(config: WorkloadConfig, rng: random.Random, seed: int, start: float) -> list[Arrival]:
    """Every job of the run, in arrival order, from `start` on."""
    pools = {kind: [_spec(kind, rng, config) for _ in range(config.specs_per_type)] for kind in JOB_TYPES}
    kinds = [k for k in JOB_TYPES if config.mix.weights.get(k, 0) > 0]
    weights = [config.mix.weights[k] for k in kinds]
    out = []
    at = start
    for index in range(config.jobs):
        at += rng.expovariate(config.arrival_rate)
        kind = rng.choices(kinds, weights)[0]
        out.append(Arrival(at, f"job-{seed}-{index:06d}", rng.choice(pools[kind])))
    return out


def _spec(kind: str, rng: random.Random, config: WorkloadConfig) -> JobSpec:
    document = spec_document(kind, rng, config)
    return job_spec_from_data(document).spec


def spec_document(kind: str, rng: random.Random, config: WorkloadConfig = WorkloadConfig()) -> dict[str, Any]:
    """A job document of `kind`, in the job file's own field names."""
    wasm = rng.random() < 0.6
    engine: dict[str, Any]
    if wasm:
        engine = {"Type": "wasm", "Params": {"EntryModule": WASM_MODULE, "Parameters": ["--n", str(rng.randint(1, 99))]}}
    else:
        engine = {"Type": "docker", "Params": {"Image": "ubuntu:24.04", "Entrypoint": ["sh", "-c"], "Parameters": ["echo sim"]}}
    cpu = rng.choice(("100m", "250m", "500m", "1")) if kind in ("batch", "service") else "100m"
    memory = rng.choice(("64Mb", "256Mb", "512Mb")) if kind in ("batch", "service") else "64Mb"
    task: dict[str, Any] = {
        "Name": "main",
        "Engine": engine,
        "Publisher": {"Type": "ipfs"},
        "Resources": {"CPU": cpu, "Memory": memory, "Disk": "100mb", "GPU": "0"},
        "Network": {"Type": "None"},
        "Timeouts": {"QueueTimeout": 0, "TotalTimeout": 0},
    }
    if kind in ("batch", "ops"):
        task["ResultPaths"] = [{"Name": "outputs", "Path": "/outputs"}]
    document: dict[str, Any] = {
        "Name": f"sim-{kind}",
        "Type": kind,
        "Priority": rng.choice(config.priorities),
        "Meta": {},
        "Labels": {"sim": "yes"},
        "Constraints": _constraints(kind, rng),
        "Tasks": [task],
    }
    if kind in ("batch", "ops"):
        duration = rng.choice(config.durations)
        document["Meta"]["sim.duration"] = f"{duration:g}"
        task["Timeouts"]["TotalTimeout"] = int(duration * 10 + 60)
    if kind == "batch":
        document["Count"] = rng.choices((1, 2, 3), (0.6, 0.25, 0.15))[0]
        task["Timeouts"]["QueueTimeout"] = rng.choice(config.queue_timeouts)
    elif kind == "service":
        document["Count"] = rng.choices((1, 2, 3), (0.5, 0.3, 0.2))[0]
    return document


def _constraints(kind: str, rng: random.Random) -> list[dict[str, Any]]:
    if kind in ("ops", "daemon"):
        # like the reference's examples: the web servers, optionally one region
        chosen = [{"Key": "service", "Operator": "==", "Values": ["WebService"]}]
        if rng.random() < 0.5:
            chosen.append({"Key": "region", "Operator": "=", "Values": [rng.choice(REGIONS)]})
        return chosen
    draw = rng.random()
    if draw < 0.5:
        return []
    if draw < 0.75:
        return [{"Key": "Operating-System", "Operator": "=", "Values": ["linux"]}]
    if draw < 0.9:
        return [{"Key": "region", "Operator": "in", "Values": rng.sample(REGIONS, 2)}]
    return [{"Key": "Architecture", "Operator": "=", "Values": [rng.choice(("amd64", "arm64"))]}]
