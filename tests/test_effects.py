"""The one interpreter of effects (`protocols.effects`) that the runtime, the
simulator and the test cluster share."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from protocols.effects import METHODS, EffectHandler, UnknownEffect, apply
from protocols.events import CancelTimer, Effect, JobChanged, Publish, Send, SetTimer, StopExecution


class Recorder:
    """A handler that notes which method got which effect."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in METHODS.values():
            raise AttributeError(name)
        return lambda effect: self.calls.append((name, effect))


def test_every_effect_kind_has_its_handler_method() -> None:
    assert set(METHODS) == set(typing.get_args(Effect))
    declared = {name for name in vars(EffectHandler) if not name.startswith("_")}
    assert set(METHODS.values()) == declared


def test_effects_are_carried_out_in_order_by_their_method() -> None:
    effects = [SetTimer("t", 1.0), Send("p", "hi"), JobChanged("j"), Publish("nodes", "m"), CancelTimer("t"),
               StopExecution("e", "why")]
    recorder = Recorder()
    apply(effects, recorder)  # type: ignore[arg-type]
    assert recorder.calls == [("set_timer", effects[0]), ("send", effects[1]), ("job_changed", effects[2]),
                              ("publish", effects[3]), ("cancel_timer", effects[4]), ("stop_execution", effects[5])]


def test_an_unknown_effect_is_an_error_that_says_what_to_do() -> None:
    recorder = Recorder()
    with pytest.raises(UnknownEffect, match="Recorder.*'mystery'.*protocols/effects.py"):
        apply([SetTimer("t", 1.0), "mystery"], recorder)  # type: ignore[list-item, arg-type]
    assert recorder.calls == [("set_timer", SetTimer("t", 1.0))]  # the ones before it were carried out
