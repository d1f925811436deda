"""Chaos on real peers: N `p2pnode serve` processes on loopback (network key on),
a burst of wasm jobs from K parallel clients, kill -9 and restart, SIGSTOP and
SIGCONT, then one table of what happened.

    .venv/bin/python scripts/chaos.py --nodes 5 --jobs 200 --clients 16
    .venv/bin/python scripts/chaos.py --nodes 5 --jobs 50 --job-seconds 5 \\
        --fault kill:1:3:5 --fault kill:3:8:5 [--fault stop:2:4:6] [--json]

A fault is KIND:PEER:AT:FOR — kill (SIGKILL, restarted FOR seconds later on the
same data directory) or stop (SIGSTOP, SIGCONT FOR seconds later) peer number
PEER (0 is the one the others bootstrap from), AT seconds after the first
submit.

Length: ≈680 lines: one script an operator runs as is (start peers, drive the
load and the faults, read every peer's data back, print the table), kept in
one file on purpose.

What the table counts, and from where:
- starts: executions that began running, per job: each peer's
  `executions/<id>/` folders (made as a run starts, kept after it) together
  with the executions any keeper's record shows Running or past it. An extra
  start is any start after a job's first. It is *explained* when an earlier
  run of the job was on a peer killed or stopped after that run began.
- false verdicts: every peer's own Suspect/Down verdicts (`/agent/node`
  Verdicts, sampled all along), judged against the faults: a verdict about an
  incarnation that was running and not stopped then is false.
- keepers that disagree: every peer's copy of every job it keeps, compared by
  (epoch, revision, state, each execution's state), repeated until they agree
  or `--settle` seconds pass after the last restart; also the copies that keep
  an execution Running in an ended job.
- submit→result: from the client's submit to the job's first terminal state in
  its history (all clocks are this machine's).

Every process it starts is stopped on the way out, also on Ctrl-C, SIGTERM or
an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' WASI sleeper, one copy of it

from p2pnode.client import TERMINAL, ApiClient, ApiClientError  # noqa: E402
from p2pnode.devstack import NETWORK_KEY, Peer, start_peer, stop_peer  # noqa: E402
from p2pnode.netkey import new_key  # noqa: E402
from tests.integration_support import SLEEPER_WAT, data_url, wasm_job  # noqa: E402

STARTED = ("Running", "Publishing", "Completed")  # an execution in (or past) one of these ran
VERDICT_GRACE = 3.0  # seconds after a SIGCONT a verdict made while stopped may still be published


class ChaosError(RuntimeError):
    """The run could not be set up (a peer did not start, the network did not form)."""


@dataclass(frozen=True)
class Fault:
    kind: str  # "kill" | "stop"
    peer: int
    at: float
    length: float

    @staticmethod
    def parse(text: str) -> Fault:
        try:
            kind, peer, at, length = text.split(":")
            fault = Fault(kind, int(peer), float(at), float(length))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: a fault is KIND:PEER:AT:FOR, e.g. kill:1:3:5") from error
        if fault.kind not in ("kill", "stop") or fault.at < 0 or fault.length < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: KIND is kill or stop; AT and FOR are seconds >= 0")
        return fault


@dataclass
class Outage:
    """A time a peer was not running its node: killed (until restarted) or stopped."""

    kind: str
    start: float
    end: float = float("inf")


@dataclass
class Cluster:
    """The peers, and when each was down: starts, kills, restarts, stops; `close` ends them all."""

    base: Path
    extra: list[str]
    peers: list[Peer | None] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    outages: dict[int, list[Outage]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, nodes: int) -> None:
        for index in range(nodes):
            bootstrap = [] if index == 0 else list(self._live()[0].addresses[:1])
            self._launch(index, bootstrap)

    def _launch(self, index: int, bootstrap: list[str]) -> None:
        try:
            peer = start_peer(index, self.base / f"node-{index}", bootstrap, self.extra)
        except Exception as error:
            raise ChaosError(str(error)) from error
        with self.lock:
            if index < len(self.peers):
                self.peers[index] = peer
            else:
                self.peers.append(peer)
                self.node_ids.append(peer.node_id)

    def _live(self) -> list[Peer]:
        with self.lock:
            return [p for i, p in enumerate(self.peers) if p is not None and not self._out(i)]

    def _out(self, index: int) -> bool:
        return any(o.end == float("inf") for o in self.outages[index])

    def live_apis(self) -> list[str]:
        return [p.api for p in self._live()]

    def kill(self, index: int) -> None:
        with self.lock:
            peer = self.peers[index]
            self.peers[index] = None
            self.outages[index].append(Outage("kill", time.time()))
        if peer is not None and peer.process.poll() is None:
            os.killpg(peer.process.pid, signal.SIGKILL)
            peer.process.wait()

    def restart(self, index: int) -> None:
        live = self._live()
        self._launch(index, list(live[0].addresses[:1]) if live else [])
        with self.lock:
            self.outages[index][-1].end = time.time()

    def stop(self, index: int) -> None:
        peer = self.peers[index]
        if peer is not None:
            with self.lock:
                self.outages[index].append(Outage("stop", time.time()))
            os.killpg(peer.process.pid, signal.SIGSTOP)

    def cont(self, index: int) -> None:
        peer = self.peers[index]
        if peer is not None:
            os.killpg(peer.process.pid, signal.SIGCONT)
            with self.lock:
                self.outages[index][-1].end = time.time()

    def close(self) -> None:
        for peer in reversed([p for p in self.peers if p is not None]):
            if peer.process.poll() is None:
                os.killpg(peer.process.pid, signal.SIGCONT)  # a stopped peer cannot take its SIGTERM
            stop_peer(peer)

    def last_restart(self) -> float:
        ends = [o.end for outages in self.outages.values() for o in outages if o.end != float("inf")]
        return max(ends, default=0.0)


# ---------------------------------------------------------------- phases


def wait_formed(cluster: Cluster, nodes: int, timeout: float = 90) -> None:
    """Every live peer sees every peer connected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_connected(api) >= nodes for api in cluster.live_apis()):
            return
        time.sleep(0.5)
    raise ChaosError(f"the {nodes} peers did not all see each other within {timeout:.0f} s")


def _connected(api: str) -> int:
    try:
        with ApiClient(api, timeout=5) as client:
            return sum(1 for n in client.nodes()["Nodes"] if n["Connection"] == "CONNECTED")
    except ApiClientError:
        return 0


@dataclass
class Submitted:
    job_id: str
    peer: str
    sent: float
    acked: float


class Connections:
    """One API client per peer, kept for the life of a thread (see `submit_all`)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.clients: dict[str, ApiClient] = {}

    def to(self, api: str) -> ApiClient:
        client = self.clients.get(api)
        if client is None:
            client = self.clients[api] = ApiClient(api, timeout=self.timeout)
        return client

    def drop(self, api: str) -> None:
        """Forget a peer's client after an error (the peer may have been killed)."""
        client = self.clients.pop(api, None)
        if client is not None:
            client.close()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        for api in list(self.clients):
            self.drop(api)


def submit_all(cluster: Cluster, jobs: int, clients: int, job: dict[str, Any]) -> tuple[list[Submitted], int, int]:
    """`jobs` submits from `clients` threads, each to its own peer (the next live
    one if that fails). Each client then asks another peer for the job once: it
    must be found there. Returns the submits, the failed submits, the not-found."""
    shares = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    done: list[Submitted] = []
    failed = Counter[str]()
    lock = threading.Lock()

    def client(number: int) -> None:
        turn = number
        # One kept-alive connection per peer, as a real client program holds:
        # making an HTTP client costs ~60 ms of CPU (its TLS context), which 16
        # threads of this one process would otherwise count in every ack.
        with Connections(timeout=60) as http:
            for _ in range(shares[number]):
                while True:
                    apis = cluster.live_apis()
                    if not apis:
                        time.sleep(0.2)
                        continue
                    api = apis[turn % len(apis)]
                    sent = time.time()
                    try:
                        job_id = http.to(api).submit(job)["JobID"]
                    except ApiClientError:
                        http.drop(api)
                        with lock:
                            failed["submit"] += 1
                        turn += 1
                        continue
                    acked = time.time()
                    other = [a for a in cluster.live_apis() if a != api]
                    if other:
                        peer = other[turn % len(other)]
                        try:
                            http.to(peer).get_job(job_id)
                        except ApiClientError as error:
                            http.drop(peer)
                            if error.status == 404:
                                with lock:
                                    failed["not found"] += 1
                    with lock:
                        done.append(Submitted(job_id, api, sent, acked))
                    break

    with ThreadPoolExecutor(clients) as pool:
        for outcome in [pool.submit(client, n) for n in range(clients)]:
            outcome.result()
    return done, failed["submit"], failed["not found"]


def run_faults(cluster: Cluster, faults: list[Fault], t0: float, stop: threading.Event) -> None:
    """Play the faults at their times; every stopped peer continues, every killed one restarts."""
    steps = []
    for fault in faults:
        first, second = (cluster.kill, cluster.restart) if fault.kind == "kill" else (cluster.stop, cluster.cont)
        steps += [(fault.at, first, fault.peer), (fault.at + fault.length, second, fault.peer)]
    for at, action, index in sorted(steps, key=lambda s: s[0]):
        if stop.wait(max(0.0, t0 + at - time.time())):
            if action in (cluster.restart, cluster.cont):
                action(index)  # leave none stopped or dead when cut short
            continue
        action(index)


def sample_verdicts(cluster: Cluster, seen: dict[tuple, dict[str, Any]], incarnations: dict[tuple[str, int], float],
                    stop: threading.Event) -> None:
    """Every peer's own verdicts and incarnation, every second, until `stop`."""
    with Connections(timeout=3) as http:
        while True:
            _sample_once(cluster, http, seen, incarnations)
            if stop.wait(1.0):
                return


def _sample_once(cluster: Cluster, http: Connections, seen: dict[tuple, dict[str, Any]],
                 incarnations: dict[tuple[str, int], float]) -> None:
    with cluster.lock:
        live = [(i, p) for i, p in enumerate(cluster.peers) if p is not None and not cluster._out(i)]
    for index, peer in live:
        try:
            info = http.to(peer.api).agent_node()
        except ApiClientError:
            http.drop(peer.api)
            continue
        incarnations.setdefault((info["NodeID"], info.get("Incarnation", 0)), time.time())
        for verdict in info.get("Verdicts", []):
            key = (info["NodeID"], verdict["Time"], verdict["Kind"], verdict["NodeID"], verdict["Incarnation"])
            seen[key] = dict(verdict, By=info["NodeID"], ByIndex=index)


def _listing(api: str) -> dict[str, tuple[int, int, str]]:
    """The jobs a peer keeps, each as (epoch, revision, state): one listing, not one request per job."""
    kept: dict[str, tuple[int, int, str]] = {}
    with ApiClient(api, timeout=30) as http:
        token = ""
        while True:
            page = http.list_jobs(limit=500, next_token=token)
            kept.update((j["ID"], (j["Epoch"], j["Revision"], j["State"]["StateType"])) for j in page["Items"])
            token = page.get("NextToken", "")
            if not token:
                return kept


def _kept(api: str) -> dict[str, str]:
    return {job_id: state for job_id, (_, _, state) in _listing(api).items()}


def watch(cluster: Cluster, job_ids: list[str], faults: threading.Thread, deadline: float, settle_seconds: float,
          rounds: list[tuple[float, int, int]]) -> tuple[dict[str, str], float | None]:
    """List every live peer's jobs once a second (a job no peer lists is asked for)
    until every job is terminal at every keeper and the keepers agree on its
    (epoch, revision, state) after the last fault, or `deadline` seconds pass, or
    `settle_seconds` after the last restart and the jobs' ends. Returns each job's
    state (terminal if any keeper holds it so) and when they agreed (seconds after
    the last restart); `rounds` gets (when, jobs whose keepers differ, jobs not yet
    ended everywhere) at every change."""
    states = {job_id: "?" for job_id in job_ids}
    give_up = time.monotonic() + deadline
    ended_at: float | None = None

    def ask(pair: tuple[str, str]) -> None:
        job_id, api = pair
        try:
            with ApiClient(api, timeout=10) as http:
                states[job_id] = http.get_job(job_id)["Job"]["State"]["StateType"]
        except ApiClientError:
            pass

    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < give_up:
            apis = cluster.live_apis()
            views: dict[str, set[tuple[int, int, str]]] = defaultdict(set)
            for kept in pool.map(_listing_or_none, apis):
                for job_id, view in kept.items():
                    views[job_id].add(view)
                    if job_id in states and states[job_id] not in TERMINAL:
                        states[job_id] = view[2]
            unlisted = [j for j, state in states.items() if state == "?"]
            if apis and unlisted:
                list(pool.map(ask, [(j, apis[n % len(apis)]) for n, j in enumerate(unlisted)]))
            if all(state in TERMINAL for state in states.values()) and ended_at is None:
                ended_at = time.time()
            if not faults.is_alive():
                differ = sum(1 for v in views.values() if len(v) > 1)
                unended = sum(1 for v in views.values() if any(state not in TERMINAL for _, _, state in v))
                since = round(time.time() - cluster.last_restart(), 1) if cluster.last_restart() else 0.0
                if not rounds or rounds[-1][1:] != (differ, unended):
                    rounds.append((since, differ, unended))
                if ended_at is not None and not differ and not unended:
                    return states, since if cluster.last_restart() else None
                if ended_at is not None and time.time() > max(ended_at, cluster.last_restart()) + settle_seconds:
                    return states, None
            time.sleep(1.0)
    return states, None


def _listing_or_none(api: str) -> dict[str, tuple[int, int, str]]:
    try:
        return _listing(api)
    except ApiClientError:
        return {}


def kept_copies(cluster: Cluster) -> dict[str, dict[str, dict[str, Any]]]:
    """job -> peer's node id -> that peer's own copy (with executions and history), for the jobs each keeps
    (also any a client was never told of: a submit cut short by a kill may still have made one)."""
    copies: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)

    def one_peer(api: str) -> tuple[str, dict[str, dict[str, Any]]]:
        try:
            with ApiClient(api, timeout=30) as http:
                node_id = http.agent_node()["NodeID"]
                return node_id, {j: http.get_job(j, include="executions,history") for j in _kept(api)}
        except ApiClientError:
            return "", {}

    with ThreadPoolExecutor(8) as pool:
        for node_id, held in pool.map(one_peer, cluster.live_apis()):
            for job_id, copy in held.items():
                copies[job_id][node_id] = copy
    return copies


def _summary(copy: dict[str, Any]) -> tuple[Any, ...]:
    job = copy["Job"]
    executions = sorted((e["ID"], e["ComputeState"]["StateType"]) for e in copy["Executions"]["Items"])
    return (job["Epoch"], job["Revision"], job["State"]["StateType"], tuple(executions))


def disagreements(copies: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """Jobs whose keepers hold different records; jobs some keeper holds ended with an execution Running."""
    differ = [j for j, by_peer in copies.items() if len({_summary(c) for c in by_peer.values()}) > 1]
    running = [
        j for j, by_peer in copies.items()
        if any(c["Job"]["State"]["StateType"] in TERMINAL
               and any(e["ComputeState"]["StateType"] == "Running" for e in c["Executions"]["Items"])
               for c in by_peer.values())
    ]
    return differ, running


# ---------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Start:
    execution_id: str
    node_id: str
    at: float  # when the execution was made (its record's CreateTime, else its folder's)


def starts_by_job(cluster: Cluster, copies: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict[str, list[Start]], int]:
    """job -> every execution of it that began running, oldest first; and starts no record names."""
    owner: dict[str, tuple[str, str, float]] = {}  # execution id -> (job, node, made at)
    started: dict[str, dict[str, Start]] = defaultdict(dict)
    for job_id, by_peer in copies.items():
        for copy in by_peer.values():
            ran = {e["ExecutionID"] for e in copy["History"]["Items"]
                   if e.get("ExecutionState", {}).get("New") in STARTED}
            for execution in copy["Executions"]["Items"]:
                made = execution["CreateTime"] / 1e9
                owner[execution["ID"]] = (job_id, execution["NodeID"], made)
                if execution["ID"] in ran or execution["ComputeState"]["StateType"] in STARTED:
                    started[job_id][execution["ID"]] = Start(execution["ID"], execution["NodeID"], made)
    orphans = 0
    for index, node_id in enumerate(cluster.node_ids):
        folder = cluster.base / f"node-{index}" / "executions"
        for run in folder.iterdir() if folder.is_dir() else ():
            if run.is_dir() and (run / "stdout").exists():
                if run.name in owner:
                    job_id, _, made = owner[run.name]
                    started[job_id][run.name] = Start(run.name, node_id, made)
                else:
                    orphans += 1
    return {j: sorted(runs.values(), key=lambda s: s.at) for j, runs in started.items()}, orphans


def unexplained_starts(cluster: Cluster, runs: list[Start]) -> int:
    """Starts after a job's first that no fault explains: a start is explained when an
    earlier run of the job was on a peer that was killed or stopped after that run began."""
    index_of = {node_id: i for i, node_id in enumerate(cluster.node_ids)}
    count = 0
    for later, run in enumerate(runs[1:], start=1):
        if not any(o.end >= earlier.at for earlier in runs[:later]
                   for o in cluster.outages.get(index_of.get(earlier.node_id, -1), ())):
            count += 1
    return count


def judge_verdicts(cluster: Cluster, verdicts: dict[tuple, dict[str, Any]],
                   incarnations: dict[tuple[str, int], float], since: float) -> Counter[str]:
    """False Suspect/Down: about a peer's incarnation that ran, not stopped, at the verdict's time."""
    counts = Counter[str]()
    index_of = {node_id: i for i, node_id in enumerate(cluster.node_ids)}
    for verdict in verdicts.values():
        when = verdict["Time"] / 1e9
        if when < since:
            continue  # from the network's forming
        index = index_of.get(verdict["NodeID"])
        if index is None:
            continue
        counts[f"{verdict['Kind']} verdicts"] += 1
        outages = cluster.outages[index]
        excused = any(o.start - 1.0 <= when <= o.end + (VERDICT_GRACE if o.kind == "stop" else 0.0) for o in outages)
        # A verdict about an incarnation before a restart is about a dead one.
        newer = [t for (node, inc), t in incarnations.items() if node == verdict["NodeID"] and inc > verdict["Incarnation"]]
        if not excused and not newer:
            counts[f"false {verdict['Kind']}"] += 1
    return counts


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(nodes: int, jobs: int, clients: int, faults: list[Fault], job_seconds: int = 1, deadline: float = 600,
        settle_seconds: float = 30, base: Path | None = None) -> dict[str, Any]:
    """One chaos run on real peers; its figures. Every peer is stopped before it returns or raises."""
    if any(f.peer >= nodes or f.peer < 0 for f in faults):
        raise ChaosError(f"a fault names a peer outside 0..{nodes - 1}")
    if not 0 <= job_seconds <= 9:
        raise ChaosError("--job-seconds is one digit (the sleeper's argument)")
    scratch = None if base is not None else tempfile.TemporaryDirectory(prefix="p2pnode-chaos-")
    base = Path(scratch.name) if scratch is not None else base
    base.mkdir(parents=True, exist_ok=True)
    key = base / NETWORK_KEY
    if not key.exists():
        new_key(key)
    cluster = Cluster(base, ["--network-key", str(key)])
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        cluster.start(nodes)
        wait_formed(cluster, nodes)
        formed = time.time()
        verdicts: dict[tuple, dict[str, Any]] = {}
        incarnations: dict[tuple[str, int], float] = {}
        job = wasm_job(data_url(SLEEPER_WAT), str(job_seconds))
        t0 = time.time()
        threads = [
            threading.Thread(target=run_faults, args=(cluster, faults, t0, stop), daemon=True),
            threading.Thread(target=sample_verdicts, args=(cluster, verdicts, incarnations, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        submitted, submit_errors, not_found = submit_all(cluster, jobs, clients, job)
        rounds: list[tuple[float, int, int]] = []
        states, agreed = watch(cluster, [s.job_id for s in submitted], threads[0], deadline, settle_seconds, rounds)
        copies = kept_copies(cluster)
        differ, running = disagreements(copies)
        if differ or running:
            agreed = None  # the listings agreed, the executions in the whole copies do not
        stop.set()
        threads[1].join(timeout=10)
        return figures(cluster, submitted, states, copies, differ, running, agreed, submit_errors, not_found,
                       judge_verdicts(cluster, verdicts, incarnations, formed), nodes, clients, faults, t0, rounds)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        cluster.close()
        if scratch is not None:
            scratch.cleanup()


def figures(cluster: Cluster, submitted: list[Submitted], states: dict[str, str], copies: dict, differ: list[str],
            running: list[str], agreed: float | None, submit_errors: int, not_found: int, verdicts: Counter[str],
            nodes: int, clients: int, faults: list[Fault], t0: float, rounds: list[tuple[float, int, int]]) -> dict[str, Any]:
    started, orphans = starts_by_job(cluster, copies)
    index_of = {node_id: i for i, node_id in enumerate(cluster.node_ids)}
    extra = {j: len(runs) - 1 for j, runs in started.items() if len(runs) > 1}
    unexplained = {j: n for j in extra if (n := unexplained_starts(cluster, started[j]))}
    ended: dict[str, float] = {}
    for job_id, by_peer in copies.items():
        times = [
            e["Time"] for c in by_peer.values() for e in c["History"]["Items"]
            if e["Type"] == "JobLevel" and e.get("JobState", {}).get("New") in TERMINAL
        ]
        if times:
            ended[job_id] = min(_seconds(t) for t in times)
    latency = [ended[s.job_id] - s.sent for s in submitted if s.job_id in ended]
    acks = [s.acked - s.sent for s in submitted]
    return {
        "nodes": nodes, "clients": clients, "faults": [f"{f.kind}:{f.peer}:{f.at:g}:{f.length:g}" for f in faults],
        "jobs": len(submitted),
        "jobs_no_client_was_told_of": len(set(copies) - {s.job_id for s in submitted}),
        "terminal": sum(1 for s in states.values() if s in TERMINAL),
        "states": dict(Counter(states.values())),
        "never_started": sum(1 for s in submitted if not started.get(s.job_id)),
        "starts": sum(len(r) for r in started.values()),
        "extra_starts": sum(extra.values()),
        "jobs_with_extra_starts": len(extra),
        "extra_starts_unexplained": sum(unexplained.values()),
        "jobs_with_unexplained_extra_starts": sorted(unexplained),
        "starts_no_record_names": orphans,
        "false_down": verdicts["false Down"],
        "false_suspect": verdicts["false Suspect"],
        "down_verdicts": verdicts["Down verdicts"],
        "suspect_verdicts": verdicts["Suspect verdicts"],
        "submit_errors": submit_errors,
        "not_found_after_submit": not_found,
        "submit_ack_p50": percentile(acks, 0.5), "submit_ack_p99": percentile(acks, 0.99),
        "result_p50": percentile(latency, 0.5), "result_p99": percentile(latency, 0.99),
        "jobs_kept": len(copies),
        "keepers_disagree": len(differ),
        "ended_with_running_execution": len(running),
        "agreed_after_last_restart": agreed,
        "disagreeing_jobs": sorted(differ)[:20],
        # (seconds after the last restart, jobs whose keepers differ, jobs not ended at every keeper), at each change
        "settle_rounds": rounds,
        "extra_start_runs": {  # job -> its runs: (peer number, execution id, state in the record)
            j: [(index_of[r.node_id], r.execution_id, _state(copies.get(j, {}), r.execution_id)) for r in started[j]]
            for j in extra
        },
    }


def _state(by_peer: dict[str, dict[str, Any]], execution_id: str) -> str:
    """An execution's state in each keeper's copy, e.g. "Completed" or "Completed/Cancelled" when they differ."""
    states = {e["ComputeState"]["StateType"] for c in by_peer.values() for e in c["Executions"]["Items"] if e["ID"] == execution_id}
    return "/".join(sorted(states)) or "unrecorded"


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def table(result: dict[str, Any]) -> str:
    def sec(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    rows = [
        ("peers / clients / faults", f"{result['nodes']} / {result['clients']} / {' '.join(result['faults']) or 'none'}"),
        ("jobs (more the network made)", f"{result['jobs']} ({result['jobs_no_client_was_told_of']})"),
        ("terminal", f"{result['terminal']} {result['states']}"),
        ("never started", result["never_started"]),
        ("extra starts (jobs)", f"{result['extra_starts']} ({result['jobs_with_extra_starts']})"),
        ("  not explained by a kill/stop", result["extra_starts_unexplained"]),
        ("  starts no record names", result["starts_no_record_names"]),
        ("false Down / Suspect verdicts", f"{result['false_down']} / {result['false_suspect']}"
                                           f" (of {result['down_verdicts']} / {result['suspect_verdicts']})"),
        ("submit errors / 404 right after", f"{result['submit_errors']} / {result['not_found_after_submit']}"),
        ("submit ack p50 / p99", f"{sec(result['submit_ack_p50'])} / {sec(result['submit_ack_p99'])}"),
        ("submit→result p50 / p99", f"{sec(result['result_p50'])} / {sec(result['result_p99'])}"),
        ("keepers that disagree (jobs)", f"{result['keepers_disagree']} of {result['jobs_kept']}"),
        ("ended with an execution Running", result["ended_with_running_execution"]),
        ("agreed, after the last restart", f"{sec(result['agreed_after_last_restart'])} (checks: {result['settle_rounds']})"),
    ]
    for job_id, runs in list(result["extra_start_runs"].items())[:10]:
        rows.append((f"  {job_id[:14]}", ", ".join(f"peer {peer} {state}" for peer, _, state in runs)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--job-seconds", type=int, default=1, help="how long each job sleeps (0-9)")
    parser.add_argument("--fault", type=Fault.parse, action="append", default=[], metavar="KIND:PEER:AT:FOR")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for every job to end")
    parser.add_argument("--settle", type=float, default=30, help="seconds after the last restart the keepers have to agree")
    parser.add_argument("--keep", type=Path, help="keep the peers' data directories here (else a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # through every finally: the peers are stopped

    signal.signal(signal.SIGTERM, terminate)
    try:
        result = run(args.nodes, args.jobs, args.clients, args.fault, args.job_seconds, args.deadline, args.settle, args.keep)
    except ChaosError as error:
        print(f"chaos: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaos: interrupted; every peer it started is stopped", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
