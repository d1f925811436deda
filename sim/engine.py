"""Simulated engines and probes: how long a task runs, whether it succeeds.

A task runs for the seconds in its job's `Meta["sim.duration"]` when set, else
for a lognormal draw around `duration_median`. Batch and ops tasks end (then
publish for `publish_delay`); service and daemon tasks run until stopped,
unless a failure is drawn, which then strikes after an exponential lifetime.
`Meta["sim.fail"]` (a probability) overrides `failure_prob` per job.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from protocols.events import ProbeVerdict
from protocols.records import JobHeader

from sim.network import SimConfigError

CONTINUOUS_TYPES = frozenset({"service", "daemon"})


@dataclass(frozen=True)
class EngineConfig:
    duration_median: float = 10.0  # seconds, batch/ops tasks without Meta sim.duration
    duration_sigma: float = 0.6
    failure_prob: float = 0.02  # a task fails (batch/ops: at its end; continuous: some day)
    continuous_lifetime: float = 300.0  # mean seconds before a failing service/daemon task dies
    publish_delay: float = 0.2  # seconds spent Publishing after the task ends
    probe_delay: float = 0.05  # seconds a probe takes to answer
    probe_bid: bool = True  # what probes answer

    def __post_init__(self) -> None:
        if not 0 <= self.failure_prob <= 1:
            raise SimConfigError(f"failure probability must be in [0, 1], not {self.failure_prob}")
        if not self.duration_median > 0:
            raise SimConfigError(f"duration median must be > 0 seconds, not {self.duration_median}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What the engine will do with one execution: end after `duration`
    seconds (None: run until stopped), successfully or not."""

    duration: float | None
    ok: bool


class EngineModel:
    def __init__(self, config: EngineConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self._log_median = math.log(config.duration_median)
        self._meta_cache: dict[int, tuple[object, float | None, float]] = {}

    def plan(self, header: JobHeader) -> Plan:
        spec = header.spec
        duration, failure = self._from_meta(spec)
        rng = self.rng
        fails = rng.random() < failure
        if str(spec.type) in CONTINUOUS_TYPES:
            if not fails:
                return Plan(None, True)
            return Plan(rng.expovariate(1.0 / self.config.continuous_lifetime), False)
        if duration is None:
            duration = rng.lognormvariate(self._log_median, self.config.duration_sigma)
        return Plan(duration, not fails)

    def probe(self, node_id: str, execution_id: str, kind: str) -> ProbeVerdict:
        bid = self.config.probe_bid
        return ProbeVerdict(bid, f"simulated {kind} probe says {'yes' if bid else 'no'}")

    def _from_meta(self, spec: object) -> tuple[float | None, float]:
        """(duration, failure probability) from the job's Meta; cached per spec
        object, since the workload reuses a few immutable specs."""
        held = self._meta_cache.get(id(spec))
        if held is not None and held[0] is spec:
            return held[1], held[2]
        meta = getattr(spec, "meta", None) or {}
        duration = _number(meta.get("sim.duration"))
        failure = _number(meta.get("sim.fail"))
        result = (duration, self.config.failure_prob if failure is None else failure)
        self._meta_cache[id(spec)] = (spec, *result)
        return result


def _number(value: object) -> float | None:
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
