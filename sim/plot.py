"""Draw a run: jobs by state over simulated time, and the scheduling latencies."""

from __future__ import annotations

from pathlib import Path

from sim.report import Report

STATE_ORDER = ("Pending", "Queued", "Running", "Completed", "Failed", "Stopped")


def plot(report: Report, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (states_axis, latency_axis) = plt.subplots(1, 2, figsize=(13, 4.8))
    times = [t for t, _ in report.samples]
    seen = {s for _, sample in report.samples for s in sample}
    states = [s for s in STATE_ORDER if s in seen] + sorted(seen - set(STATE_ORDER))
    for state in states:
        states_axis.plot(times, [sample.get(state, 0) for _, sample in report.samples], label=state)
    states_axis.set(xlabel="simulated time (s)", ylabel="jobs", title="Jobs by state")
    states_axis.legend()
    if report.latencies:
        latency_axis.hist(report.latencies, bins=50)
        for value, name in ((report.latency_p50, "p50"), (report.latency_p99, "p99")):
            latency_axis.axvline(value, linestyle="--", color="black")
            latency_axis.annotate(name, (value, 0), xytext=(3, 10), textcoords="offset points")
    latency_axis.set(xlabel="submit -> first Running (simulated s)", ylabel="jobs", title="Scheduling latency")
    figure.suptitle(f"{report.nodes} nodes, {report.jobs} jobs, seed {report.seed}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
