"""`python -m sim run ...`: one seeded run, a report, exit 1 on a broken invariant."""

from __future__ import annotations

import gc
import json
import sys

import click

from sim.engine import EngineConfig
from sim.invariants import InvariantViolation
from sim.network import NetworkConfig, Partition, SimConfigError
from sim.report import Report
from sim.runner import SimConfig, simulate
from sim.workload import JobMix, WorkloadConfig

ARRIVALS_PER_NODE = 0.1  # jobs per simulated second per node, when --arrival-rate is not given


@click.group()
def main() -> None:
    """Simulate a p2pnode network on a virtual clock."""


@main.command()
@click.option("--nodes", default=100, show_default=True, help="Nodes in the network.")
@click.option("--jobs", default=200, show_default=True, help="Jobs submitted.")
@click.option("--seed", default=1, show_default=True, help="Seed: one seed replays a run exactly.")
@click.option("--loss", default=0.0, show_default=True, help="Probability that a message is lost.")
@click.option("--latency-ms", default=20.0, show_default=True, help="Median one-way latency.")
@click.option("--crash-rate", default=0.0, show_default=True, help="Node crashes per simulated second while jobs arrive (each restarts 5-30 s later).")
@click.option("--partition", "partition_text", default=None, metavar="START:END:FRACTION", help="Cut FRACTION of the nodes off from START to END (simulated s).")
@click.option("--kill-leaders", default=0, show_default=True, help="Leaders of running jobs to kill for good.")
@click.option("--slow-nodes", default=0.0, show_default=True, help="Fraction of nodes that process every event ~0.3 s late.")
@click.option("--cpu-scale", default=1.0, show_default=True, help="What handling a message costs a node's one thread, times the measured figures (2: hardware twice as slow; 0: nothing, every node keeps up).")
@click.option("--burst", "burst_text", default=None, metavar="JOBS:SECONDS", help="Submit JOBS jobs within about SECONDS (sets --jobs and --arrival-rate), e.g. 200:2.")
@click.option("--job-mix", "job_mix", default=None, metavar="TYPE=W,...", help="Job type weights, e.g. batch=0.7,ops=0.1,service=0.1,daemon=0.1.")
@click.option("--arrival-rate", default=None, type=float, help="Jobs per simulated second (Poisson); default 0.1 per node (at least 10), so each node is as busy whatever the network's size.")
@click.option("--failure-prob", default=0.02, show_default=True, help="Probability that a task fails.")
@click.option("--duration", default=None, type=float, help="Time limit (simulated s) for all batch/ops jobs to end.")
@click.option("--heartbeat-rate", default=None, type=float, help="Heartbeats per second each node may receive (NodeConfig.max_heartbeats_per_second).")
@click.option("--cold-boot", is_flag=True, help="Nodes start knowing nobody (default: a network already formed).")
@click.option("--exact-bytes", is_flag=True, help="Encode every message to count bytes (slow); default: a sample per message type.")
@click.option("--forgers", default=0.0, show_default=True, help="Members that also forge every kind of message: a fraction of the nodes below 1, else a count.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", "plot_path", default=None, metavar="FILE.png", help="Draw jobs by state over time and the latency distribution.")
def run(
    nodes: int, jobs: int, seed: int, loss: float, latency_ms: float, crash_rate: float, partition_text: str | None,
    kill_leaders: int, slow_nodes: float, cpu_scale: float, burst_text: str | None, job_mix: str | None,
    arrival_rate: float | None, failure_prob: float, duration: float | None, heartbeat_rate: float | None,
    cold_boot: bool, exact_bytes: bool, forgers: float, as_json: bool,
    plot_path: str | None,
) -> None:
    """Run one simulation and print its report."""
    if burst_text is not None:
        jobs, arrival_rate = _burst(burst_text)
    if arrival_rate is None:
        arrival_rate = max(10.0, nodes * ARRIVALS_PER_NODE)
    try:
        tuning = {} if heartbeat_rate is None else {"max_heartbeats_per_second": heartbeat_rate}
        config = SimConfig(
            nodes=nodes,
            seed=seed,
            workload=WorkloadConfig(jobs=jobs, arrival_rate=arrival_rate, mix=JobMix.parse(job_mix) if job_mix else JobMix()),
            network=NetworkConfig(latency_median=latency_ms / 1000.0, loss=loss),
            engine=EngineConfig(failure_prob=failure_prob),
            crash_rate=crash_rate,
            partition=Partition.parse(partition_text) if partition_text else None,
            kill_leaders=kill_leaders,
            slow_nodes=slow_nodes,
            duration=duration,
            node_tuning=tuning,
            exact_bytes=exact_bytes,
            cold_boot=cold_boot,
            forgers=forgers,
            cpu_scale=cpu_scale,
        )
    except (SimConfigError, ValueError) as error:
        raise click.BadParameter(str(error)) from None
    # The process ends after the report: the cyclic collector would only
    # walk the run's millions of long-lived objects (a full pass when the
    # run ends cost 9% of a 1,000-node run) and, in the run, finds nothing
    # to free (`runner._rare_collections`). Reference counting still frees
    # what the run drops. The interpreter's last collection at exit runs
    # even with the collector off: `gc.freeze` below keeps the run's
    # objects out of its reach (it took a tenth of a 1,000 x 10,000 run).
    gc.disable()
    try:
        if as_json or not sys.stderr.isatty():
            report = simulate(config)
        else:
            report = _with_progress(config)
    except InvariantViolation as violation:
        click.echo(f"FAILED: {violation}", err=True)
        click.echo(f"replay with: python -m sim run --seed {violation.seed} (and the same options)", err=True)
        sys.exit(1)
    finally:
        gc.freeze()
    if plot_path:
        from sim.plot import plot

        plot(report, plot_path)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(report.text())
        if plot_path:
            click.echo(f"plot written to {plot_path}")


def _burst(text: str) -> tuple[int, float]:
    """`JOBS:SECONDS` -> (jobs, arrival rate)."""
    jobs_text, _, seconds_text = text.partition(":")
    try:
        jobs, seconds = int(jobs_text), float(seconds_text)
    except ValueError:
        raise click.BadParameter(f"burst {text!r} is not JOBS:SECONDS (e.g. 200:2)", param_hint="--burst") from None
    if jobs < 1 or not seconds > 0:
        raise click.BadParameter(f"burst {text!r} needs JOBS >= 1 and SECONDS > 0", param_hint="--burst")
    return jobs, jobs / seconds


def _with_progress(config: SimConfig) -> Report:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.fields[phase]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} jobs ended"),
        TextColumn("t={task.fields[now]:.0f}s simulated"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("run", total=config.workload.jobs, phase="boot", now=0.0)

        def update(now: float, done: int, submitted: int, phase: str) -> None:
            progress.update(task, completed=done, phase=phase, now=now)

        return simulate(config, update)
