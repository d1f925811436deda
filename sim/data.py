"""Where data lives in a simulated run, and the bytes each job moves.

With `DataConfig.datasets` > 0, the run places that many datasets (a size
each, drawn from `sizes_mib`) on `replicas` random nodes at boot, tells those
nodes they hold them (`DataHeld`: they announce themselves as providers), and
gives a share of the batch jobs one dataset as an `ipfs` input. When a run
starts on a node that lacks an input, the input's bytes move to it, and the
node holds (and announces) it from then on, as a real node caches what it
fetched. The report then gives the bytes moved per job and how many runs
found their data in place. With no datasets nothing is drawn, so runs
without data are the same as before.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from protocols.events import DataHeld, ProvidersFound, StartExecution
from protocols.jobspec import JobSpec, job_spec_from_data
from protocols.locality import input_cids

from sim.network import SimConfigError
from sim.workload import Arrival
from sim.world import Observer, Run, World

MIB = 1 << 20


@dataclass(frozen=True)
class DataConfig:
    datasets: int = 0  # 0: jobs read no data
    replicas: int = 2  # nodes holding each dataset at boot
    sizes_mib: tuple[int, ...] = (64, 256, 1024)
    share: float = 1.0  # fraction of batch jobs that read a dataset

    def __post_init__(self) -> None:
        if self.datasets < 0 or self.replicas < 1 or not self.sizes_mib or not 0 <= self.share <= 1:
            raise SimConfigError("data: datasets >= 0, replicas >= 1, some sizes, and a share between 0 and 1")


def dataset_cid(index: int) -> str:
    return f"bafysimdata{index:06d}"


class DataModel(Observer):
    """Follows what each node holds; forwards every hook to `inner` (the metrics)."""

    def __init__(self, config: DataConfig, seed: int, node_ids: list[str], inner: Observer) -> None:
        self.config = config
        self.inner = inner
        self.world: World | None = None
        self._rng = random.Random(f"data-{seed}")  # its own: a run without data draws nothing more
        self.sizes = {dataset_cid(i): self._rng.choice(config.sizes_mib) * MIB for i in range(config.datasets)}
        replicas = min(config.replicas, len(node_ids))
        self.placed = {cid: self._rng.sample(node_ids, replicas) for cid in self.sizes}
        self.held: dict[str, set[str]] = {}
        for cid, nodes in self.placed.items():
            for node_id in nodes:
                self.held.setdefault(node_id, set()).add(cid)
        self.moved: Counter[str] = Counter()  # bytes, by job
        self.runs = self.local_runs = 0
        self._variants: dict[tuple[int, str], JobSpec] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.sizes)

    def with_inputs(self, arrivals: list[Arrival]) -> list[Arrival]:
        """The arrivals, a share of the batch jobs given a dataset as input."""
        if not self.enabled:
            return arrivals
        cids = sorted(self.sizes)
        out = []
        for arrival in arrivals:
            spec = arrival.spec
            if spec.type == "batch" and self._rng.random() < self.config.share:
                spec = self._variant(spec, self._rng.choice(cids))
            out.append(Arrival(arrival.at, arrival.job_id, spec))
        return out

    def _variant(self, spec: JobSpec, cid: str) -> JobSpec:
        key = (id(spec), cid)
        held = self._variants.get(key)
        if held is None:
            document = spec.to_document()
            document["Tasks"][0]["InputSources"] = [
                {"Target": "/inputs", "Source": {"Type": "ipfs", "Params": {"CID": cid}}}
            ]
            held = self._variants[key] = job_spec_from_data(document).spec
        return held

    def announce(self, world: World, at: float) -> None:
        """Tell the boot holders what they hold (they announce it)."""
        self.world = world
        for cid, nodes in sorted(self.placed.items()):
            for node_id in nodes:
                world.call_at(at, lambda n=node_id, c=cid: world.inject(n, DataHeld((c,))))

    # ------------------------------------------------------------ hooks

    def on_start(self, node_id: str, effect: StartExecution, now: float) -> None:
        self.inner.on_start(node_id, effect, now)
        cids = input_cids(effect.header.spec)
        if not cids:
            return
        held = self.held.setdefault(node_id, set())
        missing = tuple(c for c in cids if c not in held)
        self.runs += 1
        self.local_runs += not missing
        self.moved[effect.execution.job_id] += sum(self.sizes.get(c, 0) for c in missing)
        if missing:
            held.update(missing)
            if self.world is not None:
                self.world.inject(node_id, DataHeld(missing))

    def on_publish(self, sender: str, message: object, receivers: int, size: int) -> None:
        self.inner.on_publish(sender, message, receivers, size)

    def on_send(self, sender: str, peer: str, message: object, size: int) -> None:
        self.inner.on_send(sender, peer, message, size)

    def on_engine_end(self, node_id: str, run: Run, now: float) -> None:
        self.inner.on_engine_end(node_id, run, now)

    def on_providers_found(self, node_id: str, effect: ProvidersFound, now: float) -> None:
        self.inner.on_providers_found(node_id, effect, now)

    def summary(self, jobs_with_data: int) -> dict[str, float]:
        """Bytes moved per job that read data, and runs that found it in place."""
        total = sum(self.moved.values())
        return {
            "jobs_with_data": jobs_with_data,
            "runs_with_data": self.runs,
            "runs_local": self.local_runs,
            "bytes_moved": total,
            "bytes_moved_per_job": total / jobs_with_data if jobs_with_data else 0.0,
        }
