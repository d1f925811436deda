"""Real `Runtime`s (store, wasm engine, timers, the protocol) in one process,
joined by `MemoryTransport` instead of libp2p: whole-node behaviour without
processes or sockets."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from p2pnode.config import NodeSettings
from p2pnode.identity import load_or_create_identity
from p2pnode.runtime import JobNotFound, Runtime
from p2pnode.transport.memory import MemoryNetwork
from protocols.jobid import make_job_id
from protocols.jobspec import job_spec_from_data
from protocols.messages import NODES_TOPIC, Capacity
from protocols.records import ExecutionState, JobReplica, JobState
from tests.integration_support import SLEEPER_WAT, data_url, wasm_job

HELLO_WAT = (Path(__file__).resolve().parent.parent / "examples" / "hello.wat").read_text()

pytestmark = pytest.mark.timeout(180)


class Nodes:
    """Runtimes on one memory network; each can be stopped on its own."""

    def __init__(self, base: Path, nursery: trio.Nursery) -> None:
        self.base = base
        self.nursery = nursery
        self.network = MemoryNetwork()
        self.runtimes: list[Runtime] = []
        self._scopes: dict[str, trio.CancelScope] = {}

    async def start(self, count: int) -> None:
        for index in range(count):
            data_dir = self.base / f"node-{index}"
            data_dir.mkdir(parents=True)
            peer_id = ID.from_pubkey(load_or_create_identity(data_dir).public_key).to_base58()
            settings = NodeSettings(
                data_dir, engines=("wasm",), publishers=("local",), heartbeat_interval=0.5,
                capacity=Capacity(cpu=2000, memory=2 << 30, disk=10 << 30),
            )
            runtime = Runtime(settings, transport=self.network.transport(peer_id, [NODES_TOPIC]))
            await self.nursery.start(self._run, runtime)
            self.runtimes.append(runtime)
        await self.until(lambda: all(len(r.node.membership.alive_ids()) == count for r in self.up()),
                         30, f"{count} runtimes see each other")

    async def _run(self, runtime: Runtime, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scopes[runtime.node_id] = scope
            await runtime.run(task_status=task_status)

    def stop(self, node_id: str) -> None:
        """The runtime ends (its run is cancelled); its peers must notice by themselves."""
        self._scopes.pop(node_id).cancel()

    def up(self) -> list[Runtime]:
        return [r for r in self.runtimes if r.node_id in self._scopes]

    def by_id(self, node_id: str) -> Runtime:
        return next(r for r in self.runtimes if r.node_id == node_id)

    async def until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        with trio.move_on_after(timeout):
            while not (found := check()):
                await trio.sleep(0.05)
            return found
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


@asynccontextmanager
async def nodes_in_memory(base: Path, count: int) -> AsyncIterator[Nodes]:
    async with trio.open_nursery() as nursery:
        nodes = Nodes(base, nursery)
        try:
            await nodes.start(count)
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


async def submit(runtime: Runtime, document: dict[str, Any]) -> str:
    """As the API submits: the node's defaults, a certified job ID."""
    spec = job_spec_from_data(document).spec.with_node_defaults(runtime.settings.job_defaults)
    salt = secrets.token_hex(8)
    job_id = make_job_id("j", runtime.node_id, salt, spec)
    await runtime.submit(job_id, spec, salt)
    return job_id


def state_of(runtime: Runtime, job_id: str) -> JobReplica | None:
    return runtime.node.jobs.get(job_id) if runtime.node is not None else None


async def test_five_runtimes_in_one_process_run_wasm_jobs_to_completion(tmp_path: Path) -> None:
    async with nodes_in_memory(tmp_path, 5) as nodes:
        job_ids = [await submit(nodes.runtimes[i], wasm_job(data_url(HELLO_WAT), f"node{i}")) for i in range(5)]

        def all_done() -> list[JobReplica] | None:
            replicas = [state_of(nodes.runtimes[i], job_id) for i, job_id in enumerate(job_ids)]
            return replicas if all(r is not None and r.header.state.terminal for r in replicas) else None

        replicas = await nodes.until(all_done, 60, "the five jobs end")
        for index, replica in enumerate(replicas):
            assert replica.header.state == JobState.COMPLETED, replica.header
            [done] = [e for e in replica.executions.values() if e.state == ExecutionState.COMPLETED]
            assert done.result is not None and done.result.stdout == f"hello, node{index}!\n"
        ran_on = {e.node_id for r in replicas for e in r.executions.values() if e.state == ExecutionState.COMPLETED}
        assert ran_on <= {r.node_id for r in nodes.runtimes}
        saved = {delta.header.id for r in nodes.runtimes for delta in r.store.load_jobs()}
        assert set(job_ids) <= saved  # each job is on some node's disk


async def test_a_stopped_runtimes_job_is_taken_over_and_completes(tmp_path: Path) -> None:
    async with nodes_in_memory(tmp_path, 4) as nodes:
        submitter = nodes.runtimes[0]
        job_id = await submit(submitter, wasm_job(data_url(SLEEPER_WAT), "3"))
        replica = state_of(submitter, job_id)
        assert replica is not None
        leader = replica.header.leader
        nodes.stop(leader)

        def finished() -> JobReplica | None:
            """The job ended, as a surviving keeper holds it."""
            held = [state_of(r, job_id) for r in nodes.up()]
            return next((r for r in held if r is not None and r.header.state.terminal), None)

        final = await nodes.until(finished, 90, "the job ends after its leader stopped")
        assert final.header.state == JobState.COMPLETED, final.header
        assert final.header.leader != leader and final.header.epoch >= 2


async def test_a_busy_peer_finds_a_job_it_does_not_hold_right_after_its_submit(tmp_path: Path) -> None:
    """Issue 14, item 5: once a submit is answered, any peer finds the job,
    even one whose inbox is so far behind that the protocol's fetch (asked
    through it) would be answered after the API gave up."""
    async with nodes_in_memory(tmp_path, 5) as nodes:
        submitter, asker = nodes.runtimes[0], nodes.runtimes[1]
        assert asker.node is not None
        handle = asker.node.handle
        held: list[Any] = []  # what the busy peer has not got round to yet

        def busy(event: Any, now: float) -> list[Any]:
            held.append(event)
            return []

        asker.node.handle = busy  # type: ignore[method-assign]
        try:
            job_id = await submit(submitter, wasm_job(data_url(HELLO_WAT), "busy"))
            assert job_id not in asker.node.jobs
            found = await asker.lookup_job(job_id)
            assert found.id == job_id and found.header.submitter == submitter.node_id
            with pytest.raises(JobNotFound):  # no peer holds this one: still a 404
                await asker.lookup_job("j-" + "0" * 32)
        finally:
            asker.node.handle = handle  # type: ignore[method-assign]
            for event in held:
                asker._inputs_send.send_nowait(event)


async def test_a_submit_is_answered_only_once_a_keeper_has_saved_the_job(tmp_path: Path) -> None:
    """Issue 14, item 5: the API answers once the job is durable on the
    submitter and on one keeper. Received is not saved: a keeper killed
    between the two would lose the job its client was told is safe."""
    async with nodes_in_memory(tmp_path, 3) as nodes:
        submitter, keepers = nodes.runtimes[0], nodes.runtimes[1:]
        may_save: dict[str, bool] = {}
        for keeper in keepers:  # each holds its saves back until the test lets it save
            may_save[keeper.node_id] = False
            persist = keeper._persist_now

            def held_back(keeper: Runtime = keeper, persist: Callable[[], None] = persist) -> None:
                if may_save[keeper.node_id]:
                    persist()

            keeper._persist_now = held_back  # type: ignore[method-assign]
        answered: list[str] = []

        async def submit_it() -> None:
            answered.append(await submit(submitter, wasm_job(data_url(HELLO_WAT), "saved")))

        nodes.nursery.start_soon(submit_it)
        handed = await nodes.until(lambda: state_of_all(keepers), 30, "both keepers hold the job")
        job_id = handed[0]
        assert not answered  # held by both keepers, saved by neither: not yet durable
        assert all(job_id not in {d.header.id for d in k.store.load_jobs()} for k in keepers)
        first = keepers[0]
        may_save[first.node_id] = True
        await nodes.until(lambda: answered, 30, "the submit is answered")
        assert answered == [job_id]
        assert job_id in {d.header.id for d in first.store.load_jobs()}  # saved before the answer went


def state_of_all(runtimes: list[Runtime]) -> list[str]:
    """The jobs every one of the runtimes holds."""
    held = [set(r.node.jobs) if r.node is not None else set() for r in runtimes]
    return sorted(set.intersection(*held)) if held else []
