"""The simulator under load, with its CPU model: a busy node answers late,
and late must not pass for dead (issue 14). These runs reproduced the real
peers' symptom before the fix (`--nodes 5 --burst 200:2 --cpu-scale 3`, seeds
1-6: 4-49 false Down verdicts, 74-582 leader failovers, a job left Queued)."""

from __future__ import annotations

import math

from sim import SimConfig, simulate
from sim.network import NetworkConfig
from sim.workload import JobMix, WorkloadConfig

BURST = WorkloadConfig(jobs=200, arrival_rate=100.0, mix=JobMix({"batch": 1.0}))


def test_a_burst_on_five_busy_nodes_declares_no_live_node_down_and_starts_nothing_twice() -> None:
    report = simulate(SimConfig(nodes=5, seed=4, workload=BURST, cpu_scale=3.0))
    assert report.max_backlog > 2.0  # the nodes really fell behind (more than a watch round)
    assert report.false_downs == 0 and report.false_suspects == 0
    assert report.leader_failovers == 0
    assert report.extra_starts == 0
    assert sum(report.jobs_by_state.values()) == 200
    assert set(report.jobs_by_state) <= {"Completed", "Failed"}


def test_a_leader_that_crashed_after_deciding_a_round_does_not_place_its_partition_again() -> None:
    # Burst seed 63: the leader crashed after it decided a bid round and
    # before it saved that; restarted, it held the round's asks, and the run
    # it had placed (on a live node, which kept the record of it) lost to
    # them: the round closed as unanswered and the partition started again.
    report = simulate(SimConfig(nodes=5, seed=63, workload=BURST, cpu_scale=3.0, crash_rate=0.5,
                                network=NetworkConfig(loss=0.02)))
    assert report.faults["restarts"] >= 1
    assert report.extra_starts == 0


def test_a_real_crash_is_still_declared_within_about_ten_seconds() -> None:
    workload = WorkloadConfig(jobs=80, arrival_rate=10.0, mix=JobMix({"batch": 1.0}), durations=(2.0, 5.0, 10.0))
    # (A seed whose crashes each leave their watcher up: with one watcher per
    # node, a crash whose watcher is itself down waits for that watcher's
    # return or its own watcher's verdict, which this bound does not cover --
    # seed 1 on f362dc0, and seed 2 once a protocol change moves the crashes.)
    report = simulate(SimConfig(nodes=40, seed=4, workload=workload, crash_rate=0.3, cpu_scale=1.0))
    assert report.faults["crashes"] >= 3
    assert not math.isnan(report.detection_p50)
    assert report.detection_max <= 12.0  # simulated seconds: the watch rounds, plus patience earned by lateness
    assert report.false_downs == 0
