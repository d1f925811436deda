"""Each change encoded once, however many peers it goes to.

The protocol sends one write to each of a job's keepers and executors as a
message per peer, but those messages carry the same delta or record objects.
Encoding is a third of a peer's protocol CPU (canonical CBOR of a 4 KB record
is ≈300 µs), so the runtime asks this cache, which knows a message by its
type and the identity of its fields: the second keeper gets the first one's
bytes. It holds the messages it remembers, so an identity is never reused
while it is a key."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable

REMEMBERED = 256  # messages: enough for every peer of the last few writes


class EncodeOnce:
    def __init__(self, encode: Callable[[object], bytes], remembered: int = REMEMBERED) -> None:
        self._encode = encode
        self._remembered = remembered
        self._recent: OrderedDict[tuple[object, ...], tuple[object, bytes]] = OrderedDict()
        self.encoded = 0  # how many times it really encoded
        self.reused = 0  # how many times it handed out bytes it had

    def __call__(self, message: object) -> bytes:
        """`encode(message)`, or the bytes of an earlier message of the same
        type whose fields are the very same (frozen) objects."""
        key = _identity(message)
        if key is None:
            return self._encode(message)
        held = self._recent.get(key)
        if held is not None:
            self._recent.move_to_end(key)
            self.reused += 1
            return held[1]
        data = self._encode(message)  # raises for what cannot be encoded: nothing is remembered
        self.encoded += 1
        self._recent[key] = (message, data)
        if len(self._recent) > self._remembered:
            self._recent.popitem(last=False)
        return data


def _identity(message: object) -> tuple[object, ...] | None:
    """The message's type and its fields' identities, when every field is a
    frozen dataclass or a tuple of them (the same object is then the same
    value for good); None for anything else, which is simply encoded."""
    if not dataclasses.is_dataclass(message):
        return None
    values = [getattr(message, f.name) for f in dataclasses.fields(message)]
    for value in values:
        items = value if isinstance(value, tuple) else (value,)
        if not all(_frozen(item) for item in items):
            return None
    return (type(message), *map(id, values))


def _frozen(value: object) -> bool:
    return dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
