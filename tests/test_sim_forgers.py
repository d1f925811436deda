"""The simulator's forgers (`sim.forgers`): members that forge every kind of
message. Each run checks every invariant itself, with "no honest node holds a
forged write" among them; the tests add the counts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from sim import SimConfig, simulate
from sim.forgers import UNFORGED, forger_count
from sim.network import SimConfigError
from sim.report import Report
from sim.workload import JobMix
from tests.test_sim_scenarios import BATCH_ONLY, ROOT, run

KINDS = {
    "JobUpdated", "Records", "DigestReply", "SubmitToLeader", "ExecutionUpdate", "BidDecision", "CancelExecution",
    "AskBid", "NodeInfo", "NodeLeft", "Members",
}


def refused_by_type(report: Report) -> Counter[str]:
    counts: Counter[str] = Counter()
    for key, count in report.refused.items():
        counts[key.split(":", 1)[0]] += count
    return counts


def test_every_forged_message_is_refused_and_changes_nothing() -> None:
    report = run(forgers=0.1)
    assert set(report.forged) == KINDS
    assert UNFORGED in report.invariants
    # a calm network refuses nothing honest: what is refused is what was forged
    assert refused_by_type(report) == Counter(report.forged)


def test_forgers_among_crashes_break_no_invariant() -> None:
    report = run(seed=2, forgers=0.1, crash_rate=0.3, mix=JobMix({"batch": 0.8, "service": 0.2}))
    assert report.faults["crashes"] >= 5 and sum(report.forged.values()) > 100
    assert sum(report.jobs_by_state.values()) == report.jobs and report.services_at_count == report.services
    refused = refused_by_type(report)
    assert all(refused[kind] > 0 for kind in KINDS)  # (a forgery at a node that lacks the job is only ignored)


@pytest.mark.parametrize(
    "faults",
    [
        {"seed": 2, "crash_rate": 0.3, "mix": JobMix({"batch": 0.8, "service": 0.2})},
        {"seed": 3, "kill_leaders": 3, "mix": BATCH_ONLY},
    ],
    ids=["crashes", "killed-leaders"],
)
def test_honest_nodes_refuse_nothing_through_failovers(faults: dict[str, object]) -> None:
    report = run(**faults)  # type: ignore[arg-type]
    assert report.leader_failovers > 0 or report.faults.get("restarts", 0) > 0
    assert report.refused == {}
    assert report.forged == {} and UNFORGED not in report.invariants


def test_forgers_are_a_fraction_or_a_count() -> None:
    assert forger_count(0.1, 200) == 20 and forger_count(3, 200) == 3 and forger_count(0, 10) == 0
    for bad in (-1, 10):
        with pytest.raises(ValueError):
            forger_count(bad, 10)
    with pytest.raises(SimConfigError, match="forgers"):
        simulate(SimConfig(nodes=5, forgers=5))


def test_cli_reports_forged_and_refused_messages() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sim", "run", "--nodes", "60", "--jobs", "40", "--forgers", "6", "--seed", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "forged messages sent: " in result.stdout and "JobUpdated" in result.stdout
    assert UNFORGED in result.stdout
    assert "messages refused (who may write what): " in result.stdout
