"""The discrete-event core: a virtual clock, nodes, the network and engines.

Theory of operation
-------------------
Everything that will happen is an entry in one queue, ordered by
``(time, seq)``; `seq` grows with every push, so ties break in push order and a
seed replays a run event for event. Entries are plain tuples whose third field
says what they are (`_BCAST`, `_SEND`, `_INPUT`, `_TIMER`, `_ENGINE`,
`_CALL`); nothing is allocated per receiver of a broadcast.

The queue is a heap of what is due before a horizon (the end of the current
second of simulated time) and, past it, unordered lists by second
(`_BUCKET`); when the heap runs empty the next second's list becomes the
heap. The order is the one heap's, but the heap holds the next second's
entries, not every timer of every node (tens of thousands in a large run,
two thirds of them timers cancelled long before they fall due), so a pop
walks fewer levels of memory that is warm.

Heartbeats dominate a large network (N nodes each publishing to N-1), so a
`Publish` becomes `broadcast_buckets` heap entries, each holding the shared
list of the sender's reachable live nodes, a slice start and a stride, plus
one `Received` built once and passed by reference to every receiver. Loss and
liveness are checked per receiver in the delivery loop. Bytes are measured
once per message object (by default on a sample of each message type, see
`_size`) and multiplied by its receivers.

A node's timers live in a dict key -> (due time, generation of its live heap
entry). `CancelTimer` forgets the key, and an entry whose generation is no
longer current is skipped when it comes up (lazy deletion). Nodes re-arm some
timers on nearly every input (a membership check at an unchanged time), so a
`SetTimer` no earlier than the live entry only moves the due time; the entry,
when it comes up early, re-pushes itself to the due time. The heap thus holds
about one entry per live timer, not one per `SetTimer`.

A node's effects are carried out by `protocols.effects` (the interpreter the
real node and the test cluster share) on `_Effects`, this world's handler.

A node saves as the real one does (`p2pnode/runtime.py`): a `JobChanged`
marks the job dirty, and the dirty jobs are written to its "disk" when its
inbox has drained (with a CPU model, when no input waits for its thread), or at
once after a submit. A crash takes the node down with what it had not saved
yet: its unsaved changes, timers, engine runs and queued inputs die with its
incarnation (every entry aimed at a node carries the incarnation it was meant
for). A restart builds a new node from its disk with the next incarnation.
Messages in flight are delivered to whoever is up at the receiving end when
they arrive.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from protocols.effects import dispatcher
from protocols.events import (
    CancelTimer,
    Effect,
    ExecutionEnded,
    ExecutionProgressed,
    JobChanged,
    ProbeAnswered,
    ProvidersFound,
    Publish,
    Received,
    RunProbe,
    Send,
    SendFailed,
    SetTimer,
    StartExecution,
    StopExecution,
    SubmitJob,
    TimerFired,
)
from protocols.records import ExecutionResult, ExecutionState
from protocols.replication import HANDING_OVER, awaited_hand_over

from sim.cpu import CpuModel
from sim.engine import EngineModel
from sim.network import NetworkConfig

_BCAST, _SEND, _INPUT, _TIMER, _ENGINE, _CALL, _QUEUED = range(7)
_PUBLISHING, _END = 0, 1
_EXACT_FIRST, _SAMPLE_EVERY = 32, 512  # bytes: which messages of a type are encoded
_BUCKET = 1.0  # seconds of simulated time per bucket of the queue's later part (a power of two: exact)
_NEVER = float("inf")
_LAST_BUCKET = 1 << 62  # entries due at infinity


class NodeLike(Protocol):
    """What the world drives: `protocols.node.Node`, or a tiny test node."""

    node_id: str
    jobs: dict[str, Any]  # job id -> a replica whose snapshot() is what is saved

    def start(self, now: float) -> list[Any]: ...

    def handle(self, event: Any, now: float) -> list[Any]: ...


NodeFactory = Callable[[int, list[Any]], NodeLike]
"""(incarnation, restored snapshot) -> a fresh node."""


class Observer:
    """Hooks for metrics; the world calls them per effect, never per delivery."""

    def on_publish(self, sender: str, message: object, receivers: int, size: int) -> None: ...

    def on_send(self, sender: str, peer: str, message: object, size: int) -> None: ...

    def on_start(self, node_id: str, effect: StartExecution, now: float) -> None: ...

    def on_engine_end(self, node_id: str, run: Run, now: float) -> None: ...

    def on_providers_found(self, node_id: str, effect: ProvidersFound, now: float) -> None: ...


@dataclass(slots=True, eq=False)
class Run:
    """One execution in a simulated engine."""

    node_id: str
    execution_id: str
    job_id: str
    partition: int
    started: float
    ok: bool
    stopped: bool = False
    ended: bool = False


class Slot:
    """One node's place in the world, across its incarnations."""

    __slots__ = (
        "index", "node_id", "factory", "node", "up", "incarnation", "timers",
        "group", "log_link", "slow", "disk", "dirty", "runs", "busy_until", "max_backlog", "inbox", "apply",
    )

    def __init__(self, index: int, node_id: str, factory: NodeFactory, log_link: float) -> None:
        self.index = index
        self.node_id = node_id
        self.factory = factory
        self.node: NodeLike | None = None
        self.up = False
        self.incarnation = 0
        self.timers: dict[Hashable, tuple[float, int]] = {}  # key -> (due, live entry)
        self.group = 0  # nodes reach only nodes of their own group
        self.log_link = log_link  # log of its link-quality factor
        self.slow = 0.0  # extra seconds to process each event (0: not slow)
        self.disk: dict[str, Any] = {}  # job id -> its last saved snapshot
        self.dirty: set[str] = set()  # jobs changed since the last save
        self.apply: Callable[[Iterable[Effect]], None] = lambda effects: None  # set by the world
        self.runs: dict[str, Run] = {}
        self.busy_until = 0.0  # with a CPU model: when its thread is free again
        self.max_backlog = 0.0  # the most seconds an input waited for its thread
        self.inbox: deque[tuple[float, Any]] = deque()  # (arrived, input) waiting for its thread


def _zero_size(message: object, sender: str) -> int:
    return 0


class World:
    def __init__(
        self,
        rng: random.Random,
        network: NetworkConfig = NetworkConfig(),
        engine: EngineModel | None = None,
        *,
        sizer: Callable[[object, str], int] = _zero_size,
        observer: Observer | None = None,
        exact_bytes: bool = False,
        cpu: CpuModel | None = None,
    ) -> None:
        """`cpu`: what inputs and effects cost a node's one thread (None:
        nothing, every node keeps up with anything)."""
        self.rng = rng
        self.network = network
        self.engine = engine
        self.sizer = sizer
        self.observer = observer or Observer()
        self.now = 0.0
        self.events = 0  # inputs handled by nodes
        self.delivered = 0  # pubsub deliveries
        self.dropped = 0  # pubsub deliveries lost
        self.slots: dict[str, Slot] = {}
        self._order: list[Slot] = []
        self._heap: list[tuple[Any, ...]] = []  # the entries due before `_horizon`
        self._horizon = 0.0
        self._later: dict[int, list[tuple[Any, ...]]] = {}  # the others, by `_BUCKET` of time (unordered)
        self._buckets: list[int] = []  # the keys of `_later`, a heap
        self._seq = itertools.count().__next__
        self._groups: dict[int, list[Slot]] | None = None
        self._up: list[Slot] | None = None
        self._sizes: dict[int, tuple[object, int]] = {}
        self._size_stats: dict[type, list[int]] = {}
        self.exact_bytes = exact_bytes
        self.group_changes: list[tuple[float, dict[str, int]]] = []  # (from when, groups) of every set_groups
        self.cpu = cpu if cpu is not None and cpu.scale > 0 else None
        self._halted = False

    # ------------------------------------------------------------ nodes

    def add_node(self, node_id: str, factory: NodeFactory) -> Slot:
        """Place a node (not started yet); its link quality is drawn now."""
        if node_id in self.slots:
            raise ValueError(f"node {node_id!r} is already in the world")
        log_link = self.rng.gauss(0.0, self.network.link_sigma) if self.network.link_sigma else 0.0
        slot = Slot(len(self._order), node_id, factory, log_link)
        slot.apply = dispatcher(_Effects(self, slot))
        self.slots[node_id] = slot
        self._order.append(slot)
        return slot

    def start(self, node_id: str) -> None:
        """Boot the node's next incarnation from what it had on disk."""
        slot = self.slots[node_id]
        if slot.up:
            return
        slot.incarnation += 1
        slot.node = slot.factory(slot.incarnation, list(slot.disk.values()))
        slot.up = True
        slot.timers = {}
        slot.busy_until = self.now
        slot.inbox.clear()
        self._membership_changed()
        self._apply(slot, slot.node.start(self.now))

    def crash(self, node_id: str) -> None:
        """The process dies: it keeps what it saved, loses unsaved changes, timers, runs, inbox."""
        slot = self.slots[node_id]
        if not slot.up:
            return
        slot.up = False
        slot.dirty = set()
        slot.timers = {}
        for run in slot.runs.values():
            run.stopped = True
        slot.runs = {}
        slot.inbox.clear()
        self._membership_changed()

    def leave(self, node_id: str) -> None:
        """A graceful stop: the node says goodbye, saves, then goes down."""
        slot = self.slots[node_id]
        if slot.up:
            leave = getattr(slot.node, "leave", None)
            if leave is not None:
                self._apply(slot, leave(self.now))
            self._save(slot)
            self.crash(node_id)

    def set_groups(self, groups: dict[str, int]) -> None:
        """Partition: nodes reach only nodes of the same group (absent: 0)."""
        for slot in self._order:
            slot.group = groups.get(slot.node_id, 0)
        self.group_changes.append((self.now, dict(groups)))
        self._membership_changed()

    def separated(self, a: str, b: str, since: float) -> bool:
        """Whether nodes `a` and `b` were in different groups at any time from `since` on."""
        changes = self.group_changes
        for i, (at, groups) in enumerate(changes):
            until = changes[i + 1][0] if i + 1 < len(changes) else self.now
            if until >= since and groups.get(a, 0) != groups.get(b, 0):
                return True
        return False

    def heal(self) -> None:
        self.set_groups({})

    def set_slow(self, node_id: str, delay: float) -> None:
        """Every event the node processes waits about `delay` more seconds."""
        self.slots[node_id].slow = delay

    def up_slots(self) -> list[Slot]:
        """Live nodes in the order they were added (shared: do not modify)."""
        if self._up is None:
            self._up = [s for s in self._order if s.up]
        return self._up

    def all_slots(self) -> Sequence[Slot]:
        return self._order

    # ------------------------------------------------------------ scheduling from outside

    def inject(self, node_id: str, event: Any, at: float | None = None) -> None:
        """Hand a node an input (e.g. `SubmitJob`) at `at` (default: now),
        whichever incarnation is up then."""
        slot = self.slots[node_id]
        when = self.now if at is None else max(at, self.now)
        self._push((when, self._seq(), _INPUT, slot, -1, event))

    def call_at(self, at: float, function: Callable[[], None]) -> None:
        self._push((max(at, self.now), self._seq(), _CALL, function))

    def halt(self) -> None:
        """Make `run` return after the current event."""
        self._halted = True

    def pending(self) -> int:
        return len(self._heap) + sum(map(len, self._later.values()))

    def _push(self, entry: tuple[Any, ...]) -> None:
        """Queue an entry: into the heap if it is due before the horizon,
        else into its bucket of time (see the module notes)."""
        at = entry[0]
        if at < self._horizon:
            heapq.heappush(self._heap, entry)
            return
        bucket = int(at // _BUCKET) if at < _NEVER else _LAST_BUCKET
        held = self._later.get(bucket)
        if held is None:
            self._later[bucket] = [entry]
            heapq.heappush(self._buckets, bucket)
        else:
            held.append(entry)

    def _next_bucket(self, until: float) -> bool:
        """The heap ran empty: move into it the earliest bucket of time, if
        that starts by `until`; the horizon moves to the bucket's end."""
        buckets = self._buckets
        if not buckets or buckets[0] * _BUCKET > until:
            return False
        bucket = heapq.heappop(buckets)
        self._heap.extend(self._later.pop(bucket))
        heapq.heapify(self._heap)
        self._horizon = (bucket + 1) * _BUCKET if bucket != _LAST_BUCKET else _NEVER
        return True

    # ------------------------------------------------------------ the loop

    def run(self, until: float) -> float:
        """Process events up to `until` (or a `halt`); returns the clock."""
        heap = self._heap
        pop = heapq.heappop
        self._halted = False
        while heap or self._next_bucket(until):
            if heap[0][0] > until:
                break
            entry = pop(heap)
            self.now = entry[0]
            kind = entry[2]
            # (the kinds tested in the order of how many there are)
            if kind == _SEND:
                peer = entry[5]
                if peer.up:
                    self._handle(peer, entry[6])
                else:
                    self._send_failed(entry)
            elif kind == _TIMER:
                _, _, _, slot, incarnation, key, generation = entry
                held = slot.timers.get(key)
                if held is None or held[1] != generation or not slot.up or slot.incarnation != incarnation:
                    continue
                if held[0] > self.now:  # the timer was moved later: come back then
                    self._push((held[0], self._seq(), _TIMER, slot, incarnation, key, generation))
                    continue
                del slot.timers[key]
                self._handle(slot, TimerFired(key), timer=True)  # its own clock is not slowed (its thread may be busy)
            elif kind == _QUEUED:
                _, _, _, slot, incarnation = entry
                if slot.up and slot.incarnation == incarnation:
                    self._work(slot)
            elif kind == _ENGINE:
                self._engine_step(entry)
            elif kind == _CALL:
                entry[3]()
            elif kind == _INPUT:
                _, _, _, slot, incarnation, event = entry
                if slot.up and (incarnation < 0 or slot.incarnation == incarnation):
                    self._handle(slot, event, deferred=incarnation == -2)
            else:
                self._deliver_broadcast(entry)
            if self._halted:
                break
        if not self._halted and self.now < until:
            self.now = until
        return self.now

    # ------------------------------------------------------------ delivery

    def _handle(self, slot: Slot, event: Any, deferred: bool = False, timer: bool = False) -> None:
        if slot.slow and not deferred and not timer:
            self._defer(slot, event)
            return
        cpu = self.cpu
        if cpu is not None:
            if slot.inbox or slot.busy_until > self.now:  # its thread is busy: the input waits its turn
                if not slot.inbox:  # wake the thread when it is free
                    self._push((slot.busy_until, self._seq(), _QUEUED, slot, slot.incarnation))
                slot.inbox.append((self.now, event))
                return
            slot.busy_until = self.now + cpu.input_cost(event)
        self._process(slot, event)

    def _work(self, slot: Slot) -> None:
        """The node's thread is free: it takes the oldest waiting input."""
        arrived, event = slot.inbox.popleft()
        wait = self.now - arrived
        if wait > slot.max_backlog:
            slot.max_backlog = wait
        slot.busy_until = self.now + self.cpu.input_cost(event, queued=True)  # type: ignore[union-attr]
        self._process(slot, event)
        if slot.inbox and slot.up:
            self._push((slot.busy_until, self._seq(), _QUEUED, slot, slot.incarnation))

    def _process(self, slot: Slot, event: Any) -> None:
        """The node handles the input now; doing what it decided keeps its thread busy."""
        self.events += 1
        node = slot.node
        # (only a peer's message of a few kinds may hand a job over: asked of those alone)
        handed = (
            awaited_hand_over(slot.node_id, node.jobs, event)  # type: ignore[union-attr]
            if type(event) is Received and type(event.message) in HANDING_OVER
            else None
        )
        effects = node.handle(event, self.now)  # type: ignore[union-attr]
        if effects:
            cpu = self.cpu
            if cpu is not None:
                slot.busy_until += cpu.effects_cost(effects)
            slot.apply(effects)
        if slot.dirty and (not slot.inbox or type(event) is SubmitJob or handed is not None):
            self._save(slot)

    def _save(self, slot: Slot) -> None:
        """Write the node's dirty jobs to its disk, as the real node does
        when its inbox drains (a submit, or a hand-over of one, at once: its
        client waits on it)."""
        dirty, slot.dirty = slot.dirty, set()
        jobs = slot.node.jobs  # type: ignore[union-attr]
        for job_id in dirty:
            replica = jobs.get(job_id)
            if replica is not None:
                slot.disk[job_id] = replica.snapshot()

    def _defer(self, slot: Slot, event: Any) -> None:
        """A slow node gets to the event later (incarnation -2 marks it deferred)."""
        delay = slot.slow * (0.5 + self.rng.random())
        self._push((self.now + delay, self._seq(), _INPUT, slot, -2, event))

    def _deliver_broadcast(self, entry: tuple[Any, ...]) -> None:
        _, _, _, sender, received, receivers, start, stride = entry
        now = self.now
        loss = self.network.loss
        rnd = self.rng.random
        delivered = dropped = 0
        for slot in receivers[start::stride] if stride > 1 else receivers:
            if slot is sender or not slot.up:
                continue
            if loss and rnd() < loss:
                dropped += 1
                continue
            if slot.slow:
                self._defer(slot, received)
                continue
            if self.cpu is not None:
                self.delivered += 1
                self._handle(slot, received)  # (counts the event)
                continue
            delivered += 1
            effects = slot.node.handle(received, now)
            if effects:
                slot.apply(effects)
            if slot.dirty:  # (no CPU model: its inbox is always empty)
                self._save(slot)
        self.events += delivered
        self.delivered += delivered
        self.dropped += dropped

    def _send_failed(self, entry: tuple[Any, ...]) -> None:
        """A `_SEND` entry found its peer down: its sender (if still the
        same incarnation) hears so when the stream times out."""
        _, _, _, sender, sender_incarnation, peer, received, sent_at = entry
        if sender.up and sender.incarnation == sender_incarnation:
            failed = SendFailed(peer.node_id, received.message, "peer is unreachable (stream reset)")
            at = max(self.now, sent_at + self.network.stream_timeout)
            self._push((at, self._seq(), _INPUT, sender, sender_incarnation, failed))

    # ------------------------------------------------------------ effects

    def _apply(self, slot: Slot, effects: Iterable[Any]) -> None:
        slot.apply(effects)

    def _set_timer(self, slot: Slot, effect: SetTimer) -> None:
        now = self.now
        at = effect.at if effect.at > now else now
        held = slot.timers.get(effect.key)
        if held is not None and held[0] <= at:  # its entry comes first: reuse it
            slot.timers[effect.key] = (at, held[1])
        else:
            generation = self._seq()
            slot.timers[effect.key] = (at, generation)
            self._push((at, generation, _TIMER, slot, slot.incarnation, effect.key, generation))

    def _stop_execution(self, slot: Slot, effect: StopExecution) -> None:
        run = slot.runs.pop(effect.execution_id, None)
        if run is not None:
            run.stopped = True

    def _size(self, message: object, sender: str) -> int:
        """Encoded bytes of a message: measured once per message object; with
        `exact_bytes` off, only a sample of each type is encoded (the first
        `_EXACT_FIRST`, then one in `_SAMPLE_EVERY`) and the others get their
        type's running mean, since encoding every large record costs more
        than simulating it."""
        key = id(message)
        held = self._sizes.get(key)
        if held is not None and held[0] is message:
            return held[1]
        kind = type(message)
        stats = self._size_stats.get(kind)
        if stats is None:
            stats = self._size_stats[kind] = [0, 0, 0]  # seen, measured, measured bytes
        stats[0] += 1
        if self.exact_bytes or stats[0] <= _EXACT_FIRST or stats[0] % _SAMPLE_EVERY == 0:
            size = self.sizer(message, sender)
            stats[1] += 1
            stats[2] += size
        else:
            size = stats[2] // stats[1]
        if len(self._sizes) > 50_000:
            self._sizes.clear()
        self._sizes[key] = (message, size)
        return size

    def _publish(self, slot: Slot, message: object) -> None:
        if self._groups is None:
            self._groups = {}
            for s in self._order:
                if s.up:
                    self._groups.setdefault(s.group, []).append(s)
        receivers = self._groups.get(slot.group, ())
        count = len(receivers) - (1 if slot.up else 0)
        self.observer.on_publish(slot.node_id, message, count, self._size(message, slot.node_id))
        if count <= 0:
            return
        received = Received(slot.node_id, message)
        network = self.network
        buckets = min(network.broadcast_buckets, count)
        mu = network.log_median + slot.log_link
        sigma = network.latency_sigma
        lognorm = self.rng.lognormvariate
        now = self.now
        for start in range(buckets):
            at = now + lognorm(mu, sigma)
            self._push((at, self._seq(), _BCAST, slot, received, receivers, start, buckets))

    def _send(self, slot: Slot, effect: Send) -> None:
        peer_id, message = effect.peer, effect.message
        sender = slot.node_id
        self.observer.on_send(sender, peer_id, message, self._size(message, sender))
        peer = self.slots.get(peer_id)
        network = self.network
        now = self.now
        if peer is None or not peer.up or peer.group != slot.group or (network.loss and self.rng.random() < network.loss):
            reason = "no such peer" if peer is None else "peer is unreachable (stream timed out)"
            failed = SendFailed(peer_id, message, reason)
            self._push((now + network.stream_timeout, self._seq(), _INPUT, slot, slot.incarnation, failed))
            return
        mu = network.log_median + 0.5 * (slot.log_link + peer.log_link)
        at = now + self.rng.lognormvariate(mu, network.latency_sigma)
        entry = (at, self._seq(), _SEND, slot, slot.incarnation, peer, Received(sender, message), now)
        if at < self._horizon:  # (`_push`, its common case inlined: most sends arrive within the second)
            heapq.heappush(self._heap, entry)
        else:
            self._push(entry)

    # ------------------------------------------------------------ engines and probes

    def _run_probe(self, slot: Slot, effect: RunProbe) -> None:
        engine = self._engine()
        verdict = engine.probe(slot.node_id, effect.execution_id, effect.kind)
        at = self.now + engine.config.probe_delay
        answer = ProbeAnswered(effect.execution_id, verdict)
        self._push((at, self._seq(), _INPUT, slot, slot.incarnation, answer))

    def _start_execution(self, slot: Slot, effect: StartExecution) -> None:
        execution = effect.execution
        plan = self._engine().plan(effect.header)
        run = Run(slot.node_id, execution.id, execution.job_id, execution.partition, self.now, plan.ok)
        slot.runs[execution.id] = run
        self.observer.on_start(slot.node_id, effect, self.now)
        if plan.duration is not None:
            phase = _PUBLISHING if plan.ok else _END
            self._push((self.now + plan.duration, self._seq(), _ENGINE, slot, slot.incarnation, run, phase))

    def _engine_step(self, entry: tuple[Any, ...]) -> None:
        _, _, _, slot, incarnation, run, phase = entry
        if run.stopped or not slot.up or slot.incarnation != incarnation:
            return
        if phase == _PUBLISHING:
            delay = self._engine().config.publish_delay
            self._push((self.now + delay, self._seq(), _ENGINE, slot, incarnation, run, _END))
            self._handle(slot, ExecutionProgressed(run.execution_id, ExecutionState.PUBLISHING, "publishing results"))
            return
        slot.runs.pop(run.execution_id, None)
        run.ended = True
        self.observer.on_engine_end(slot.node_id, run, self.now)
        if run.ok:
            result = ExecutionResult(0, "done\n", "", "ipfs", _fake_cid(run.execution_id))
        else:
            result = ExecutionResult(1, "", "simulated failure\n", error="the task exited with code 1")
        self._handle(slot, ExecutionEnded(run.execution_id, run.ok, result))

    def _engine(self) -> EngineModel:
        if self.engine is None:
            raise RuntimeError("this world has no engine model; pass engine=EngineModel(...) to run executions")
        return self.engine

    def _membership_changed(self) -> None:
        self._groups = None
        self._up = None


class _Effects:
    """One node's effects carried out in the world (a `protocols.effects.EffectHandler`)."""

    __slots__ = ("world", "slot", "send", "set_timer")

    def __init__(self, world: World, slot: Slot) -> None:
        self.world = world
        self.slot = slot
        # The most frequent effects go straight to the world: one call each, not two.
        self.send: Callable[[Send], None] = partial(world._send, slot)
        self.set_timer: Callable[[SetTimer], None] = partial(world._set_timer, slot)

    def publish(self, effect: Publish) -> None:
        self.world._publish(self.slot, effect.message)

    def cancel_timer(self, effect: CancelTimer) -> None:
        self.slot.timers.pop(effect.key, None)

    def run_probe(self, effect: RunProbe) -> None:
        self.world._run_probe(self.slot, effect)

    def start_execution(self, effect: StartExecution) -> None:
        self.world._start_execution(self.slot, effect)

    def stop_execution(self, effect: StopExecution) -> None:
        self.world._stop_execution(self.slot, effect)

    def job_changed(self, effect: JobChanged) -> None:
        self.slot.dirty.add(effect.job_id)  # saved when its inbox drains (`World._process`)

    def providers_found(self, effect: ProvidersFound) -> None:
        self.world.observer.on_providers_found(self.slot.node_id, effect, self.world.now)


def _fake_cid(execution_id: str) -> str:
    return "bafysim" + execution_id.removeprefix("e-")

