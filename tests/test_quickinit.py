"""`quick_init` builds what a frozen dataclass's generated `__init__` built."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from protocols.quickinit import quick_init, quick_replace


@dataclass(frozen=True, slots=True)
class Sample:
    number: int
    name: str = "x"
    pair: tuple[int, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pair", (self.number, self.name))


def test_quick_init_keeps_signature_values_post_init_and_frozenness() -> None:
    signature = inspect.signature(Sample.__init__)
    built = [Sample(1), Sample(2, "y"), Sample(number=3, name="z")]
    quick_init(Sample)
    assert inspect.signature(Sample.__init__) == signature
    again = [Sample(1), Sample(2, "y"), Sample(number=3, name="z")]
    assert again == built
    assert [s.pair for s in again] == [(1, "x"), (2, "y"), (3, "z")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        again[0].number = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]


def test_quick_replace_builds_what_replace_builds() -> None:
    quick_init(Sample)
    sample = Sample(1, "y")
    for changes in ({}, {"number": 2}, {"name": "z"}, {"number": 3, "name": "w"}):
        again = quick_replace(sample, **changes)
        assert again == dataclasses.replace(sample, **changes) and again.pair == (again.number, again.name)
    with pytest.raises(TypeError):
        quick_replace(sample, colour="red")
    with pytest.raises(ValueError):
        quick_replace(sample, pair=(0, ""))  # a field that is not an init argument, as replace says


def test_classes_it_cannot_speed_up_keep_their_init() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        number: int

    @dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = field(default_factory=list)

    for cls in (NoSlots, WithFactory):
        init = cls.__init__
        assert quick_init(cls) is cls and cls.__init__ is init
