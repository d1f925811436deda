"""The one interpreter of effects: which driver method carries out which effect.

Three drivers carry out what `Node.handle` returns: the real node
(`p2pnode/runtime.py`), the simulator (`sim/world.py`) and the small test
cluster (`tests/cluster.py`). Each implements `EffectHandler`, one method per
kind of effect, and hands effects to `dispatcher(handler)` (or `apply`), so
all three know the same effects and an effect none of them knows is an error
with a clear message, never silently dropped. Pure dispatch: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from protocols.events import (
    CancelTimer,
    Effect,
    JobChanged,
    ProvidersFound,
    Publish,
    RunProbe,
    Send,
    SetTimer,
    StartExecution,
    StopExecution,
)


class UnknownEffect(TypeError):
    """The state machine asked for an effect no driver knows: a bug in `protocols/`."""


class EffectHandler(Protocol):
    """What a driver does with each kind of effect, in the order they come."""

    def publish(self, effect: Publish) -> None:
        """Broadcast `effect.message` on `effect.topic` to every peer that hears it."""

    def send(self, effect: Send) -> None:
        """Deliver to one peer; a failure comes back as a `SendFailed` input."""

    def set_timer(self, effect: SetTimer) -> None:
        """Fire `TimerFired(key)` at `at`, replacing a timer of the same key."""

    def cancel_timer(self, effect: CancelTimer) -> None:
        """Forget the timer of that key (nothing if there is none)."""

    def run_probe(self, effect: RunProbe) -> None:
        """Run the probe; its answer comes back as `ProbeAnswered`."""

    def start_execution(self, effect: StartExecution) -> None:
        """Run the task; it reports with `ExecutionProgressed` / `ExecutionEnded`."""

    def stop_execution(self, effect: StopExecution) -> None:
        """Stop the run if it is still going."""

    def job_changed(self, effect: JobChanged) -> None:
        """The job's replica changed: save it (when the inbox drains) and wake its watchers."""

    def providers_found(self, effect: ProvidersFound) -> None:
        """The answer to a local `FindProviders`: hand it to whoever asked."""


METHODS: dict[type, str] = {
    Publish: "publish",
    Send: "send",
    SetTimer: "set_timer",
    CancelTimer: "cancel_timer",
    RunProbe: "run_probe",
    StartExecution: "start_execution",
    StopExecution: "stop_execution",
    JobChanged: "job_changed",
    ProvidersFound: "providers_found",
}
"""Each kind of effect and the `EffectHandler` method that carries it out."""


def dispatcher(handler: EffectHandler) -> Callable[[Iterable[Effect]], None]:
    """A function carrying out effects in order on `handler`. Its methods are
    looked up once here, since a simulator applies millions of effects."""
    table: dict[type, Callable[[Any], None]] = {kind: getattr(handler, name) for kind, name in METHODS.items()}

    def apply_all(effects: Iterable[Effect]) -> None:
        for effect in effects:
            try:
                method = table[type(effect)]
            except KeyError:
                raise UnknownEffect(
                    f"{type(handler).__name__} got an effect it does not know: {effect!r}; "
                    "add its kind to protocols/effects.py (METHODS and EffectHandler) and to every driver"
                ) from None
            method(effect)

    return apply_all


def apply(effects: Iterable[Effect], handler: EffectHandler) -> None:
    """Carry out `effects` in order on `handler` (see `dispatcher`)."""
    dispatcher(handler)(effects)
