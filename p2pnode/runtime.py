"""The node process: feeds real events to `protocols.node.Node` and carries
out its effects.

Everything the protocol decides happens in one task, `_drive`, which takes
inputs one at a time from a channel; every other task (pubsub reader, stream
handler, timers, probes, executions) only puts inputs into that channel. So
the state machine never runs concurrently with itself, and a crash in one
execution or one peer's stream ends that task, never the node.

Length: ≈650 lines: the one process's tasks (drive, effects, submits, stops,
peers, executions) share its channel and state; the pieces with a life of
their own live beside it (`execution.py`, `transport/`, `results.py`,
`probes.py`).
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from p2pnode import handover
from p2pnode.config import NodeSettings, node_config
from p2pnode.encode_once import EncodeOnce
from p2pnode.engines.docker import DockerEngine
from p2pnode.engines.egress_proxy import EgressPolicy
from p2pnode.execution import ExecutionRunner
from p2pnode.results import ExecutionFiles, ResultChunkAsk, ResultFetcher, ResultManifestAsk, ResultServer
from p2pnode.storage import s3 as s3_storage
from p2pnode.storage.local import FileEntry, LocalResults, ResultsGone
from p2pnode.storage.paths import UnsafePath
from p2pnode.storage.s3 import S3Access
from p2pnode.storage.url import UrlPolicy
from p2pnode.identity import load_or_create_identity
from p2pnode.ipfs.external import ExternalIpfsService
from p2pnode.ipfs.locate import ProviderLookups
from p2pnode.ipfs.service import IpfsService
from p2pnode.netkey import load_key
from p2pnode.logs import LogChunk, LogFiles, LogRead
from p2pnode.lookup import DIRECT_FROM, DIRECT_WAIT, RecordAsk, answer, kept_record
from p2pnode.probes import run_exec_probe, run_http_probe
from p2pnode.store import Store
from p2pnode.transport import PayloadTooLarge, PeerTransport, PeerUnreachable, Transport, TransportError
from protocols import election, wire
from protocols.effects import UnknownEffect, dispatcher
from protocols.events import (
    CancelTimer,
    EnginesChanged,
    ExecutionEnded,
    FetchJob,
    Input,
    JobChanged,
    ProbeAnswered,
    ProbeVerdict,
    ProvidersFound,
    Publish,
    Received,
    RunProbe,
    Send,
    SendFailed,
    SetTimer,
    StartExecution,
    StopExecution,
    StopJob,
    SubmitJob,
    TimerFired,
)
from protocols.jobspec import JobSpec
from protocols.executor import HeldBid
from protocols.messages import NODES_TOPIC, BidReply
from protocols.node import Node
from protocols.replication import awaited_hand_over
from protocols.records import ExecutionResult, JobReplica

log = logging.getLogger("p2pnode")
FETCH_WAIT = 3.0  # seconds to wait for the keepers of a job this node does not keep
REFUSAL_LOG_INTERVAL = 10.0  # seconds between warnings of one kind of refused message
ENGINE_CHECK_INTERVAL = 10.0  # seconds between checks that the Docker daemon still answers
HANDOVER_WAIT = 10.0  # seconds a submit waits for another peer to hold the new job


class JobNotFound(LookupError):
    """No job has this id or id prefix on this node."""


class AmbiguousJobRef(LookupError):
    """Several jobs start with this prefix: give more of the id."""


class BidNotHeld(LookupError):
    """No bid of that execution is held here for the operator."""


class BidDecided(RuntimeError):
    """The held bid was decided already (by the operator, its wait, or the job's end)."""


@dataclass
class _Timers:
    """Wall-clock timers keyed like the protocol's, latest `SetTimer` wins."""

    heap: list[tuple[float, int, Hashable]] = field(default_factory=list)
    current: dict[Hashable, int] = field(default_factory=dict)
    counter: int = 0
    wakeup: trio.Event = field(default_factory=trio.Event)

    def set(self, key: Hashable, at: float) -> None:
        self.counter += 1
        self.current[key] = self.counter
        heapq.heappush(self.heap, (at, self.counter, key))
        self.wakeup.set()

    def cancel(self, key: Hashable) -> None:
        self.current.pop(key, None)

    def due(self, now: float) -> list[Hashable]:
        fired = []
        while self.heap and self.heap[0][0] <= now:
            _, generation, key = heapq.heappop(self.heap)
            if self.current.get(key) == generation:
                del self.current[key]
                fired.append(key)
        return fired

    def next_at(self) -> float:
        while self.heap and self.current.get(self.heap[0][2]) != self.heap[0][1]:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else float("inf")


class Runtime:
    """One node: its transport, the state machine, engines and store."""

    def __init__(self, settings: NodeSettings, transport: PeerTransport | None = None) -> None:
        """`transport`: None for the libp2p one the settings describe; tests
        pass a `MemoryTransport` to run many nodes in one process."""
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.data_dir / "node.db")
        self.transport: PeerTransport = transport or Transport(
            load_or_create_identity(settings.data_dir),
            listen=list(settings.listen),
            bootstrap=list(settings.peers),
            topics=[NODES_TOPIC],
            mdns=settings.mdns,
            network_key=load_key(settings.network_key_file) if settings.network_key_file else None,
        )
        self.node_id = self.transport.peer_id
        self.node: Node | None = None
        self.api_url = ""
        # Unbounded: every producer is paced by the network or by the node itself.
        self._inputs_send, self._inputs = trio.open_memory_channel[Input](math.inf)
        self._timers = _Timers()
        self._peer_queues: dict[str, trio.MemorySendChannel[object]] = {}
        self._encode_once = EncodeOnce(lambda message: wire.encode(message, self.node_id, canonical=False))
        self._publish_send, self._publish_receive = trio.open_memory_channel[tuple[str, bytes]](1024)
        self._dirty: set[str] = set()
        self._handed_over: dict[str, trio.Event] = {}  # submitted here, waiting for a keeper to save them
        self._saved_acks: list[tuple[str, str]] = []  # (peer, job) hand-overs answered once saved (`handover`)
        self._refusals_logged: dict[str, tuple[float, int]] = {}  # refusal -> (last logged, refused since)
        self._changed = trio.Condition()
        self._nursery: trio.Nursery | None = None
        self._apply = dispatcher(_Effects(self))
        self.docker = (
            DockerEngine(self.node_id, settings.docker_host, gpus=settings.capacity.gpu if settings.capacity else 0,
                         egress=EgressPolicy(allow_networks=settings.url_allow_networks))
            if "docker" in settings.engines
            else None
        )
        self._docker_cleaned = False
        self.logs = LogFiles(settings.data_dir / "executions", settings.log_keep_bytes)
        self.local_results = LocalResults(
            settings.data_dir / "executions", settings.results_retention, settings.results_quota
        )
        self.s3 = S3Access(settings.s3_credentials_file, settings.s3_config_file, settings.s3_profile)
        self.ipfs = (ExternalIpfsService(settings.ipfs_connect) if settings.ipfs_connect
                     else IpfsService(settings.data_dir / "ipfs", results_pin=settings.ipfs_results_pin,
                                      cache_quota=settings.ipfs_cache_quota,
                                      bulk_listen=_stream_listen(settings)))
        self.providers = ProviderLookups(self.node_id, self._inputs_send.send_nowait, self._dial,
                                         self.transport.connected_peers)
        self.executions = ExecutionRunner(
            settings.data_dir / "executions", settings.data_dir / "wasm-cache", settings.allowed_local_paths,
            self.local_results, self.s3,
            UrlPolicy(settings.url_allow_networks, settings.input_max_bytes, settings.url_timeout),
            settings.job_defaults,
            ipfs=self.ipfs,
            docker=self.docker,
        )
        self.s3_ready = False  # known once the node starts
        self.result_server = ResultServer(self.local_results, self.s3)
        self.results = ResultFetcher(self.transport.peer_id, self._request, self.result_server, self._is_gone)
        self.started = trio.Event()

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.transport.on_request(self._on_request)
                await nursery.start(self.transport.run)
                await self._start_ipfs(nursery)
                addresses = tuple(self.transport.listen_addrs) + ((self.api_url,) if self.api_url else ())
                s3_missing = self.s3.missing()
                if s3_missing is not None:
                    log.info("this node does not take S3 jobs: %s", s3_missing)
                self.s3_ready = s3_missing is None
                engines = await self._engines_now()
                config = replace(node_config(self.settings, self.node_id, addresses, s3=self.s3_ready), engines=engines)
                self.node = Node(
                    config,
                    rng=random.Random(),
                    restored=self.store.load_jobs(),
                    incarnation=self.store.next_incarnation(),
                )
                nursery.start_soon(self._read_pubsub)
                nursery.start_soon(self._publisher)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._expire_results)
                self._apply(self.node.start(time.time()))
                if isinstance(self.ipfs, IpfsService):  # a daemon announces its own blocks
                    self.ipfs.announce, self.ipfs.locate = self.providers.announce, self.providers.locate
                    self.providers.announce(self.ipfs.held(), True)
                nursery.start_soon(self._drive)
                if self.docker is not None:
                    nursery.start_soon(self._watch_engines, engines)
                self.started.set()
                task_status.started()
        finally:
            self._persist_now()
            self.store.close()
            await self.transport.aclose()

    async def _start_ipfs(self, nursery: trio.Nursery) -> None:
        """The embedded IPFS speaks bitswap on the transport's libp2p host; on
        a transport without one (in memory) it cannot run."""
        host = self.transport.host
        if host is not None or not isinstance(self.ipfs, IpfsService):
            await nursery.start(self.ipfs.run, host)
        elif "ipfs" in self.settings.publishers:
            raise TransportError(
                "the embedded IPFS needs a libp2p host, and this node's transport has none: "
                "configure publishers without ipfs, or connect an IPFS daemon (ipfs_connect)"
            )

    async def _engines_now(self) -> tuple[str, ...]:
        """The configured engines that can run now: docker only while its daemon answers.
        The first time it answers, the containers a killed run of this node left are removed."""
        engines = self.settings.engines
        if self.docker is None:
            return engines
        if not await trio.to_thread.run_sync(self.docker.available):
            return tuple(engine for engine in engines if engine != "docker")
        if not self._docker_cleaned:
            await trio.to_thread.run_sync(self.docker.remove_leftovers)
            self._docker_cleaned = True
        return engines

    async def _watch_engines(self, engines: tuple[str, ...]) -> None:
        while True:
            await trio.sleep(ENGINE_CHECK_INTERVAL)
            now = await self._engines_now()
            if now != engines:
                log.info("engines changed: %s -> %s", ", ".join(engines), ", ".join(now))
                engines = now
                await self._inputs_send.send(EnginesChanged(now))

    async def leave(self) -> None:
        """Tell the network we go, so it need not wait for our silence (its
        publishes leave now, not through the queue: the node is going away)."""
        if self.node is not None:
            for effect in self.node.leave(time.time()):
                if isinstance(effect, Publish):
                    try:
                        await self.transport.publish(effect.topic, wire.encode(effect.message, self.node_id))
                    except Exception:  # noqa: BLE001 - best effort on the way out
                        log.debug("could not publish our leaving", exc_info=True)

    # ------------------------------------------------------------ what clients ask

    async def submit(self, job_id: str, spec: JobSpec, salt: str = "") -> None:
        """Return once a keeper has saved the job too (if any peer is up), so
        the death of this one right after cannot lose it (`p2pnode.handover`)."""
        held = self._handed_over[job_id] = trio.Event()
        try:
            await self._inputs_send.send(SubmitJob(job_id, spec, salt))
            if self.node is not None and len(self.node.membership.alive_ids()) > 1:
                with trio.move_on_after(HANDOVER_WAIT):  # unreachable peers: it is saved here and resent
                    await held.wait()
        finally:
            self._handed_over.pop(job_id, None)

    async def stop_job(self, job_id: str, reason: str) -> None:
        await self._inputs_send.send(StopJob(job_id, reason))

    def held_bids(self) -> list[HeldBid]:
        """Bids a probe held for the operator (newest last), decided ones too."""
        return [] if self.node is None else list(self.node.executor.holds.values())

    async def decide_bid(self, execution_id: str, accept: bool, reason: str) -> HeldBid:
        """The operator decides a held ("shouldWait") bid."""
        held = None if self.node is None else self.node.executor.holds.get(execution_id)
        if held is None:
            raise BidNotHeld(f"no bid of execution {execution_id!r} is held on this node")
        if held.outcome:
            raise BidDecided(f"the bid of execution {execution_id} was already decided: {held.outcome}")
        log.info("operator %s the bid of execution %s (job %s): %s", "approved" if accept else "rejected",
                 execution_id, held.job_id, reason)
        await self._inputs_send.send(ProbeAnswered(execution_id, ProbeVerdict(bid=accept, reason=reason)))
        return held

    def find_job(self, ref: str) -> JobReplica:
        jobs = self._jobs()
        if ref in jobs:
            return jobs[ref]
        matches = [job for job_id, job in jobs.items() if job_id.startswith(ref)] if ref else []
        if not matches:
            raise JobNotFound(f"no job {ref!r} is known to this node")
        if len(matches) > 1:
            raise AmbiguousJobRef(f"{len(matches)} jobs start with {ref!r}: give more of the id")
        return matches[0]

    def kept_jobs(self) -> list[JobReplica]:
        """The jobs in this node's care (submitted here, or given to it by
        rendezvous hashing): the ones it always holds up to date."""
        node = self.node
        return [] if node is None else [r for r in node.jobs.values() if node.keeps(r)]

    async def lookup_job(self, ref: str) -> JobReplica:
        """A job by id or unique prefix: from here if this node keeps it,
        else as its keepers hold it now (a job no peer asked keeps: after
        `FETCH_WAIT` seconds; a busy peer may take up to `DIRECT_WAIT`)."""
        try:
            replica: JobReplica | None = self.find_job(ref)
        except JobNotFound:
            replica = None  # a whole id may still be known to its keepers
        if replica is not None and self.node is not None and self.node.keeps(replica):
            return replica
        job_id = ref if replica is None else replica.id
        if replica is None and (self.node is None or len(self.node.membership.alive_ids()) <= 1):
            raise JobNotFound(f"no job {ref!r} is known to this node, and no other node is up to ask")
        deadline = trio.current_time() + FETCH_WAIT
        await self._inputs_send.send(FetchJob(job_id))
        if replica is None:
            found = await self._ask_directly(job_id)  # meanwhile, ahead of every queue (`p2pnode.lookup`)
            if found is not None:
                return found
            with trio.move_on_at(deadline):
                while job_id not in self._jobs():
                    await self.wait_for_change(FETCH_WAIT)
        else:
            await self.wait_for_change(FETCH_WAIT / 4)  # the keepers' copy, if they answer in time
        if job_id not in self._jobs():
            raise JobNotFound(f"no job {ref!r} is known to this node or to the nodes that would keep it")
        return self._jobs()[job_id]

    async def _ask_directly(self, job_id: str) -> JobReplica | None:
        """The job as the first peer that keeps it answers (the rendezvous top
        asked at once, `DIRECT_WAIT` s at most), or as the protocol's fetch
        brought it meanwhile; the node merges a peer's answer as it would the
        fetch's. None once every peer asked said it does not keep it."""
        assert self.node is not None
        ranked = election.rank(job_id, self.node.membership.alive_ids(), k=DIRECT_FROM + 1)
        peers = [n for n in ranked if n != self.node_id][:DIRECT_FROM]
        data = wire.encode(RecordAsk(job_id), self.node_id)
        answers, answered = trio.open_memory_channel[tuple[str, Any]](len(peers) + 1)

        async def ask(peer: str) -> None:
            try:
                message: Any = wire.decode(await self._request(peer, data, DIRECT_WAIT)).message
            except (PeerUnreachable, PayloadTooLarge, wire.WireError) as error:
                log.debug("no record of %s from %s: %s", job_id, peer, error)
                message = None
            answers.send_nowait((peer, message))

        async def fetched() -> None:  # (polled: a busy node notifies changes only once its inbox drains)
            while job_id not in self._jobs():
                await trio.sleep(0.1)
            answers.send_nowait(("", None))

        with trio.move_on_after(DIRECT_WAIT):  # (dialling a peer has no time-out of its own)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetched)
                for peer in peers:
                    nursery.start_soon(ask, peer)
                for _ in peers:
                    peer, message = await answered.receive()
                    if not peer:
                        nursery.cancel_scope.cancel()
                        return self._jobs()[job_id]
                    delta = kept_record(peer, job_id, message)
                    if delta is not None:
                        self._inputs_send.send_nowait(Received(peer, message))  # as a `RecordRequest`'s answer
                        nursery.cancel_scope.cancel()
                        return JobReplica.from_delta(delta)
        return None

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Return once `ready()` holds, checked at once and after every change
        here (none is missed: it is checked under the lock changes notify
        under), or after `timeout` seconds."""
        with trio.move_on_after(timeout):
            async with self._changed:
                while not ready():
                    await self._changed.wait()

    async def wait_for_change(self, timeout: float) -> None:
        """Return when any job changes here, or after `timeout` seconds."""
        with trio.move_on_after(timeout):
            async with self._changed:
                await self._changed.wait()

    async def result_manifests(self, job_id: str, execution_id: str | None = None) -> list[ExecutionFiles]:
        """The published files (names, sizes, sha256) of each execution that
        published any (or of `execution_id` only), as their node describes them."""
        replica = self.find_job(job_id)
        ordered = sorted(replica.executions.values(), key=lambda e: (e.create_time, e.id))
        found = []
        for execution in ordered:
            if execution.result is None or not execution.result.location or execution_id not in (None, execution.id):
                continue
            if execution.result.publisher == "s3" and self.s3_ready:
                found.append(await self._s3_manifest(replica, execution))
            else:
                found.append(await self.results.manifest(execution.node_id, execution.id))
        return found

    async def read_log(self, execution: Any, request: LogRead) -> LogChunk | None:
        """What an execution wrote past the offsets, from the node running it;
        None if that node cannot be reached."""
        if execution.node_id == self.node_id:
            return self.logs.read(request)
        try:
            reply = await self._request(execution.node_id, wire.encode(request, self.node_id), 10)
            chunk = wire.decode(reply).message
        except (PeerUnreachable, wire.WireError) as error:
            log.debug("no logs of %s from %s: %s", execution.id, execution.node_id, error)
            return None
        return chunk if isinstance(chunk, LogChunk) and chunk.execution_id == request.execution_id else None
    async def _s3_manifest(self, replica: JobReplica, execution: Any) -> ExecutionFiles:
        """Results in S3, read by this node itself (it has access): no need
        for the node that published them to be up. Kept as a manifest in
        this node's store, so its result server streams them like any other."""
        params = replica.header.spec.task.publisher.params
        region, endpoint = str(params.get("Region") or ""), str(params.get("Endpoint") or "")
        try:
            manifest = await trio.to_thread.run_sync(
                s3_storage.list_manifest, self.s3, execution.result.location, region, endpoint)
            (self.local_results.root / execution.id).mkdir(parents=True, exist_ok=True)
            self.local_results.write_manifest(execution.id, manifest)
        except (s3_storage.S3Error, UnsafePath, ResultsGone, OSError) as error:
            return ExecutionFiles(execution.id, self.node_id, (), f"{execution.result.location}: {error}")
        return ExecutionFiles(execution.id, self.node_id, manifest.files)

    def result_stream(self, node_id: str, execution_id: str, entry: FileEntry, offset: int) -> Any:
        """One file's bytes from `offset`, streamed from the node that holds it."""
        return self.results.stream(node_id, execution_id, entry, offset)

    def _is_gone(self, node_id: str) -> bool:
        return self.node is not None and not self.node.membership.is_alive(node_id)

    def _jobs(self) -> dict[str, JobReplica]:
        return self.node.jobs if self.node is not None else {}

    # ------------------------------------------------------------ the one task that drives the protocol

    async def _drive(self) -> None:
        assert self.node is not None
        async for event in self._inputs:
            handed = awaited_hand_over(self.node_id, self.node.jobs, event)
            try:
                effects = self.node.handle(event, time.time())
            except Exception:
                # A bug, not bad input (the protocol ignores what does not fit):
                # log it loudly and keep the node up.
                log.exception("the protocol failed on %r", type(event).__name__)
                continue
            if self.node.authority.last is not None:
                self._log_refusal(*self.node.authority.last)
                self.node.authority.last = None
            for sender, why in self.node.dropped.take():  # stale or repeated, mostly: normal in gossip
                log.debug("dropped a message from %s: %s", sender, why)
            try:
                self._apply(effects)
            except UnknownEffect:
                log.exception("the protocol asked for an effect this node cannot carry out")
            if handed is not None and handover.taken(self.node, handed[1]):
                self._saved_acks.append(handed)
            if self._dirty and (
                type(event) is SubmitJob or self._saved_acks or self._inputs.statistics().current_buffer_used == 0
            ):
                # (A submit, here or handed over, is saved at once: its client
                # is answered once it is saved here and by a keeper, even
                # while work piles up.) Save before anyone can see the change
                # through the API: a node killed right after must come back
                # as it was seen.
                self._persist_now()
                async with self._changed:
                    self._changed.notify_all()
            if self._saved_acks and not self._dirty:
                acks, self._saved_acks = self._saved_acks, []
                for peer, job_id in acks:
                    self._send(peer, handover.JobSaved(job_id))

    def _log_refusal(self, sender: str, key: str) -> None:
        """A peer's message refused by who may write what (`protocols.authority`):
        at WARNING, each reason at most once per `REFUSAL_LOG_INTERVAL`."""
        now = time.monotonic()
        last, quiet = self._refusals_logged.get(key, (-math.inf, 0))
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals_logged[key] = (last, quiet + 1)
            return
        more = f" ({quiet} more since the last such warning)" if quiet else ""
        log.warning("refused a message from %s: %s%s", sender, key, more)
        self._refusals_logged[key] = (now, 0)

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            await fn(*args)
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))

    # ------------------------------------------------------------ network

    async def _read_pubsub(self) -> None:
        async for inbound in self.transport.incoming:
            try:
                envelope = wire.decode(inbound.data)
            except wire.WireError as error:
                log.warning("dropped a bad message from %s: %s", inbound.sender, error)
                continue
            if envelope.sender != inbound.sender:
                log.warning("dropped a message from %s claiming to be %s", inbound.sender, envelope.sender)
                continue
            # The sender is the peer whose key signed it, never a field (`protocols.authority`).
            await self._inputs_send.send(Received(inbound.sender, envelope.message))

    async def _publisher(self) -> None:
        async for topic, data in self._publish_receive:
            try:
                await self.transport.publish(topic, data)
            except Exception:
                log.warning("could not publish on %s", topic, exc_info=True)

    def _send(self, peer: str, message: object) -> None:
        if peer == self.node_id:
            self._inputs_send.send_nowait(Received(self.node_id, message))
            return
        queue = self._peer_queues.get(peer)
        if queue is None:
            queue, receive = trio.open_memory_channel[object](1024)
            self._peer_queues[peer] = queue
            self._spawn(self._peer_sender, peer, receive)
        try:
            queue.send_nowait(message)
        except trio.WouldBlock:
            self._inputs_send.send_nowait(SendFailed(peer, message, "too many messages queued for this peer"))

    async def _peer_sender(self, peer: str, receive: trio.MemoryReceiveChannel[object]) -> None:
        """Messages to one peer leave in order on its channel, without waiting
        for one's answer before the next leaves."""
        async with trio.open_nursery() as nursery:
            async for message in receive:
                try:
                    data = self._encode_once(message)
                except wire.WireError as error:
                    log.error("could not encode %s for %s: %s", type(message).__name__, peer, error)
                    continue
                await nursery.start(self._deliver, peer, message, data)

    async def _deliver(self, peer: str, message: object, data: bytes, *, task_status: Any) -> None:
        try:
            await self._request(peer, data, task_status=task_status)
        except (PeerUnreachable, PayloadTooLarge) as error:
            await self._inputs_send.send(SendFailed(peer, message, str(error)))

    async def _request(
        self, peer: str, data: bytes, timeout: float | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> bytes:
        if peer not in self.transport.connected_peers():
            await self._dial(peer)
        return await self.transport.request(peer, data, timeout=timeout, task_status=task_status)

    async def _dial(self, peer: str) -> None:
        """Reach a peer we are not connected to, by the addresses it gossips."""
        info = self.node.membership.info(peer) if self.node is not None else None
        for address in info.addresses if info is not None else ():
            if address.startswith("/"):
                try:
                    await self.transport.connect(address)
                    return
                except Exception as error:  # noqa: BLE001 - try its next address
                    log.debug("could not dial %s at %s: %s", peer, address, error)

    async def _on_request(self, sender: str, data: bytes) -> bytes:
        envelope = wire.decode(data)  # a WireError resets the stream; the transport logs it
        if envelope.sender != sender:
            raise wire.InvalidMessage(f"peer {sender} sent a message signed as {envelope.sender}")
        if isinstance(envelope.message, LogRead):
            return wire.encode(self.logs.read(envelope.message), self.node_id)
        if isinstance(envelope.message, handover.JobSaved):
            waiting = self._handed_over.get(envelope.message.job_id)
            if waiting is not None and handover.saved_by_keeper(self.node, sender, envelope.message.job_id):
                waiting.set()
            return b""
        if isinstance(envelope.message, RecordAsk):
            return wire.encode(answer(self.node, envelope.message.job_id), self.node_id)
        if isinstance(envelope.message, ResultManifestAsk | ResultChunkAsk):
            return wire.encode(await self.result_server.answer(envelope.message), self.node_id)
        await self._inputs_send.send(Received(sender, envelope.message))  # the connection's authenticated peer
        return b""

    # ------------------------------------------------------------ timers and persistence

    async def _timer_loop(self) -> None:
        while True:
            self._timers.wakeup = trio.Event()
            delay = self._timers.next_at() - time.time()
            if delay > 0:
                with trio.move_on_after(min(delay, 60.0)):
                    await self._timers.wakeup.wait()
            for key in self._timers.due(time.time()):
                await self._inputs_send.send(TimerFired(key))

    async def _expire_results(self) -> None:
        """The local publisher's retention and quota, checked once a minute."""
        while True:
            try:
                await trio.to_thread.run_sync(self.local_results.sweep, time.time())
                await self.ipfs.maintain()  # unpin results due, keep fetched inputs under the cache quota
            except OSError:
                log.warning("could not expire old results", exc_info=True)
            await trio.sleep(60)

    def _persist_now(self) -> None:
        if not self._dirty or self.node is None:
            return
        dirty, self._dirty = self._dirty, set()
        self.store.save_jobs(self.node.jobs[job_id].snapshot() for job_id in dirty if job_id in self.node.jobs)

    # ------------------------------------------------------------ probes and executions

    async def _probe(self, execution_id: str, kind: str, target: str, document: dict[str, Any]) -> None:
        timeout = self.settings.probe_timeout
        if kind == "exec":
            verdict = await run_exec_probe(target, document, timeout=timeout)
        else:
            verdict = await run_http_probe(target, document, timeout=timeout)
        await self._inputs_send.send(ProbeAnswered(execution_id, verdict))

    async def _execute(self, execution: Any, header: Any) -> None:
        async def progressed(event: Input) -> None:
            await self._inputs_send.send(event)

        try:
            ended = await self.executions.run(execution, header, progressed)
        except Exception as error:  # the runner reports what it can; this is the net
            log.exception("execution %s crashed", execution.id)
            result = ExecutionResult(exit_code=-1, error=f"the node failed to run it: {error}")
            ended = ExecutionEnded(execution.id, False, result, result.error)
        self.logs.seal(execution.id)
        await self._inputs_send.send(ended)


class _Effects:
    """The runtime's side of `protocols.effects`: each effect carried out on
    the real transport, timers, engines and store."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def publish(self, effect: Publish) -> None:
        runtime = self.runtime
        runtime._publish_send.send_nowait((effect.topic, wire.encode(effect.message, runtime.node_id)))

    def send(self, effect: Send) -> None:
        message = effect.message
        if isinstance(message, BidReply) and not message.bid:
            log.info("declined job %s (execution %s): %s", message.job_id, message.execution_id, message.reason)
        self.runtime._send(effect.peer, message)

    def set_timer(self, effect: SetTimer) -> None:
        self.runtime._timers.set(effect.key, effect.at)

    def cancel_timer(self, effect: CancelTimer) -> None:
        self.runtime._timers.cancel(effect.key)

    def run_probe(self, effect: RunProbe) -> None:
        self.runtime._spawn(self.runtime._probe, effect.execution_id, effect.kind, effect.target, effect.document)

    def start_execution(self, effect: StartExecution) -> None:
        self.runtime._spawn(self.runtime._execute, effect.execution, effect.header)

    def stop_execution(self, effect: StopExecution) -> None:
        self.runtime.executions.cancel(effect.execution_id, effect.reason)

    def job_changed(self, effect: JobChanged) -> None:
        self.runtime._dirty.add(effect.job_id)  # saved when the inbox drains (`Runtime._drive`)

    def providers_found(self, effect: ProvidersFound) -> None:
        self.runtime.providers.found(effect.cid, effect.providers)


def _stream_listen(settings: NodeSettings) -> tuple[str, int] | None:
    """Where whole DAGs are served: the first listen address's IP, on the
    configured port; None when the operator turned it off."""
    if settings.ipfs_stream_port is None:
        return None
    for address in settings.listen:
        parts = address.split("/")
        if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
            return parts[2], settings.ipfs_stream_port
    return "127.0.0.1", settings.ipfs_stream_port
