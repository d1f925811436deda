"""Faster construction of frozen dataclasses.

A frozen dataclass's generated `__init__` sets every field through
`object.__setattr__`, a generic attribute lookup per field. The protocol
builds records and messages on every event, and in a large simulation those
lookups were a seventh of the run. `quick_init` gives such a class an
`__init__` of the same signature that sets each slot through its descriptor.
Instances stay frozen: assigning to a field still raises. `quick_replace`
is `dataclasses.replace` for such classes, without its generic field walk
(records are replaced on every state change).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any


def quick_init(cls: type) -> type:
    """Replace the `__init__` of a frozen, slotted dataclass (others are left alone)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        return cls
    namespace: dict[str, Any] = {}
    arguments, lines = [], []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        descriptor = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
        if not isinstance(descriptor, types.MemberDescriptorType) or f.kw_only or f.default_factory is not dataclasses.MISSING:
            return cls  # a shape this does not handle: keep the generated one
        if f.default is dataclasses.MISSING:
            arguments.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            arguments.append(f"{f.name}=_default_{f.name}")
        namespace[f"_set_{f.name}"] = descriptor.__set__
        lines.append(f"    _set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + ("\n".join(lines) or "    pass")
    exec(source, namespace)  # noqa: S102 - as dataclasses itself builds __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    namespace = {"_cls": cls, "_names": frozenset(names), "_replace": dataclasses.replace}
    source = (
        "def _quick_replace(self, changes):\n"
        "    if not _names.issuperset(changes):\n"
        "        return _replace(self, **changes)  # it raises, naming the field\n"
        f"    return _cls({', '.join(f'changes[{n!r}] if {n!r} in changes else self.{n}' for n in names)})"
    )
    exec(source, namespace)  # noqa: S102
    cls._quick_replace = namespace["_quick_replace"]  # type: ignore[attr-defined]
    return cls


def quick_replace(obj: Any, /, **changes: Any) -> Any:
    """`dataclasses.replace(obj, **changes)`, faster for a `quick_init` class."""
    replacer = getattr(type(obj), "_quick_replace", None)
    return replacer(obj, changes) if replacer is not None else dataclasses.replace(obj, **changes)


def quick_init_module(namespace: Mapping[str, Any]) -> None:
    """`quick_init` every frozen dataclass a module defines (call it last, with `globals()`)."""
    for value in list(namespace.values()):
        if isinstance(value, type) and value.__module__ == namespace["__name__"] and dataclasses.is_dataclass(value):
            quick_init(value)
