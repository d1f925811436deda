"""The one wire codec: how every message between nodes becomes bytes and back.

Theory of operation
-------------------
A message is a frozen, slotted stdlib dataclass registered under a wire name
with `@message("name")`. It may hold nested dataclasses, pydantic models,
enums, tuples, lists, dicts, and str/int/float/bool/None/bytes (integers within
CBOR's own range, -2**64 .. 2**64-1: larger ones would need the bignum tags
that decoding refuses).
On the wire it travels inside one envelope, a CBOR map::

    {"v": PROTOCOL_VERSION, "t": wire name, "s": sender id, "b": body map}

Encoding: pydantic dumps the body in *python* mode (bytes stay bytes, floats
keep inf and nan, models use their aliases), then `_plain` turns what CBOR has
no plain form for into the form pydantic's JSON mode would give (enums become
their values, datetimes ISO strings, sets sorted lists, dict keys strings).
The result is encoded canonically, so equal messages give equal bytes.
A value of the wrong type in a field is refused at encoding: it would not come
back as it left.

Decoding trusts nothing. In order: the size limit (before parsing); CBOR that
is well formed, complete, without trailing bytes, indefinite lengths, duplicate
keys, or nesting deeper than `MAX_DEPTH`; no semantic tags at all (cbor2 would
turn some into datetimes, bignums, decimals or shared references, so every tag
it knows is overridden to fail, and `tag_hook` fails the rest); only plain
values (maps with text keys, arrays, text, bytes, ints, floats, bools, null);
the envelope's shape; its version; its type name; and last the body, which
pydantic validates in lax mode against the registered class. Lax, because
CBOR has no tuples or enums: arrays arrive as lists and enums as their values,
which strict mode would refuse. Unknown body fields are ignored, so a newer
peer may add optional fields without breaking older ones.

Errors split by whose fault they are (like h11's Local/RemoteProtocolError):
a `LocalWireError` means this node tried to send something it must not, a
`RemoteWireError` means a peer sent bytes that are not a valid message. Every
library exception is translated in one place, `_translated`, so callers catch
`WireError` and nothing else.

Length: ≈600 lines: the envelope, the checks above, and encoding each value
once (frozen models and records reused by many messages) belong to the one
codec; split, each half would need the other's internals.
"""

from __future__ import annotations

import dataclasses
import io
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import cbor2
from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

PROTOCOL_VERSION = 1
# Whole envelope, both directions: as large as a stream frame may be
# (`p2pnode.transport.MAX_FRAME_BYTES`), since the record of a job on
# thousands of nodes holds thousands of executions. Pubsub has its own,
# smaller limit, which the transport enforces on publish.
MAX_MESSAGE_BYTES = 4 << 20
MAX_DEPTH = 64  # nested maps and arrays, envelope included

__all__ = [
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Envelope",
    "IncomingMessageTooLarge",
    "InvalidMessage",
    "LocalWireError",
    "MalformedMessage",
    "MessageTooLarge",
    "OutgoingMessageTooLarge",
    "RemoteWireError",
    "UnencodableMessage",
    "UnknownMessageType",
    "UnsupportedVersion",
    "WireError",
    "decode",
    "encode",
    "encoded_size",
    "message",
    "registered_types",
]


# ---------------------------------------------------------------- errors


class WireError(Exception):
    """A message could not be encoded or decoded. Catch this, and only this."""


class LocalWireError(WireError):
    """This node tried to send something it must not: a bug or an oversized payload here."""


class RemoteWireError(WireError):
    """A peer sent bytes that are not a valid message: drop them, maybe distrust the peer."""


class MessageTooLarge(WireError):
    """A whole envelope is over `MAX_MESSAGE_BYTES`."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = MAX_MESSAGE_BYTES


class OutgoingMessageTooLarge(MessageTooLarge, LocalWireError):
    """We tried to send too much: split the payload or send a reference to it."""


class IncomingMessageTooLarge(MessageTooLarge, RemoteWireError):
    """A peer sent more than any valid message can be; refused before parsing."""


class UnencodableMessage(LocalWireError):
    """The message is not registered, or holds a value its declared types do not allow."""


class MalformedMessage(RemoteWireError):
    """Not one complete, plain, tag-free CBOR value in the envelope's shape."""


class UnsupportedVersion(RemoteWireError):
    """The envelope speaks a protocol version this node does not."""


class UnknownMessageType(RemoteWireError):
    """The envelope names a message type this node does not know."""


class InvalidMessage(RemoteWireError):
    """The body does not fit its message type; the text names the field."""


# ---------------------------------------------------------------- registry

_T = TypeVar("_T", bound=type)

_types_by_name: dict[str, type] = {}
_names_by_type: dict[type, str] = {}
_adapters: dict[type, TypeAdapter[Any]] = {}


def message(name: str) -> Callable[[_T], _T]:
    """Register a dataclass as a wire message called `name` (unique in the network)."""

    def register(cls: _T) -> _T:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"@message({name!r}) needs a dataclass; put it above @dataclass")
        if not name or not isinstance(name, str):
            raise ValueError(f"@message on {cls.__qualname__} needs a non-empty name")
        holder = _types_by_name.get(name)
        if holder is not None and _qualified(holder) != _qualified(cls):
            raise ValueError(
                f"wire name {name!r} is taken by {_qualified(holder)}; pick another for {_qualified(cls)}"
            )
        previous = _names_by_type.get(cls)
        if previous is not None and previous != name:
            raise ValueError(f"{_qualified(cls)} is already registered as {previous!r}")
        if holder is not None:  # the same class again, from a reloaded module
            del _names_by_type[holder]
            _adapters.pop(holder, None)
        _types_by_name[name] = cls
        _names_by_type[cls] = name
        return cls

    return register


def registered_types() -> Mapping[str, type]:
    """Every message type known to this process, by wire name (read-only view)."""
    return MappingProxyType(_types_by_name)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _adapter(cls: type) -> TypeAdapter[Any]:
    # Built on first use: forward references resolve only once their module is complete.
    adapter = _adapters.get(cls)
    if adapter is None:
        adapter = _adapters[cls] = TypeAdapter(cls)
    return adapter


# ---------------------------------------------------------------- envelope


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message and who says they sent it (the transport vouches, not the codec)."""

    sender: str
    message: object
    version: int


def encode(message: object, sender: str, *, canonical: bool = True) -> bytes:
    """The envelope bytes for `message` from `sender`; raises a `LocalWireError`.
    `canonical=False` keeps maps in the order the message holds them: 4-5x
    faster CBOR for bytes that only need to decode to the same message (to a
    peer, to the store), not to equal bytes (a hash of them)."""
    name = _names_by_type.get(type(message))
    if name is None:
        raise UnencodableMessage(
            f"{type(message).__qualname__} is not a wire message; register it with @message(...)"
        )
    if not isinstance(sender, str):
        raise UnencodableMessage(f"the sender id must be a str, not {type(sender).__name__}")
    adapter = _adapter(type(message))
    with _translated("encode", name):
        paths, _, left_out = _paths(type(message))
        if left_out is None:
            body = adapter.dump_python(message, mode="python", by_alias=True, round_trip=True, warnings="error")
            for path, _ in paths:
                body = _models_out(message, body, path, canonical, 2)
        else:  # the values at `paths` are not dumped at all: most are encoded already
            body = adapter.dump_python(message, mode="python", by_alias=True, round_trip=True, warnings="error",
                                       exclude=left_out)
            for path, kind in paths:
                _models_in_place(message, body, path, kind, canonical, 2)
        envelope = {"v": PROTOCOL_VERSION, "t": name, "s": sender, "b": _plain(body, 2)}
        data = cbor2.dumps(envelope, canonical=canonical, default=_write_encoded)
    if len(data) > MAX_MESSAGE_BYTES:
        raise OutgoingMessageTooLarge(
            f"a {name!r} message encodes to {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit; "
            "send less per message or a reference to the data",
            len(data),
        )
    return data


def encoded_size(message: object, sender: str) -> int:
    """How many bytes `message` takes on the wire (the simulator counts them)."""
    return len(encode(message, sender))


def decode(data: bytes) -> Envelope:
    """The message in `data`; raises a `RemoteWireError` for anything but a valid message."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"a message is bytes, not {type(data).__name__}")
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    if size > MAX_MESSAGE_BYTES:
        raise IncomingMessageTooLarge(
            f"refused a {size}-byte message: the limit is {MAX_MESSAGE_BYTES} bytes", size
        )
    with _translated("parse"):
        stream = io.BytesIO(data)
        envelope = _decoder(stream).decode()
        if stream.tell() != size:
            raise MalformedMessage(f"{size - stream.tell()} bytes follow the message")
        _check_plain(envelope, 1)
    body, cls, name = _open_envelope(envelope)
    for path, model in _model_paths(cls):
        body = _models_in(body, path, model)
    adapter = _adapter(cls)
    with _translated("validate", name):
        value = adapter.validate_python(body, strict=False)
    return Envelope(sender=envelope["s"], message=value, version=envelope["v"])


def _open_envelope(envelope: object) -> tuple[dict[str, Any], type, str]:
    if not isinstance(envelope, dict):
        raise MalformedMessage(f"the envelope must be a map, not {_cbor_kind(envelope)}")
    version = envelope.get("v")
    if type(version) is not int:
        raise MalformedMessage(f"the envelope's 'v' must be an integer version, not {_cbor_kind(version)}")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version} is not supported; this node speaks {PROTOCOL_VERSION}")
    if envelope.keys() != _ENVELOPE_KEYS:
        raise MalformedMessage(f"the envelope must hold exactly the keys v, t, s, b; it holds {sorted(envelope)}")
    name, sender, body = envelope["t"], envelope["s"], envelope["b"]
    if type(name) is not str:
        raise MalformedMessage(f"the envelope's 't' must be a text type name, not {_cbor_kind(name)}")
    if type(sender) is not str:
        raise MalformedMessage(f"the envelope's 's' must be a text sender id, not {_cbor_kind(sender)}")
    if type(body) is not dict:
        raise MalformedMessage(f"the envelope's 'b' must be a map, not {_cbor_kind(body)}")
    cls = _types_by_name.get(name)
    if cls is None:
        raise UnknownMessageType(f"unknown message type {name[:100]!r}")
    return body, cls, name


_ENVELOPE_KEYS = frozenset({"v", "t", "s", "b"})


# ---------------------------------------------------------------- frozen values, encoded and validated once
#
# A job's spec (a frozen pydantic model) rides in most messages about the job
# (asks, updates, records) and in every save of it, unchanged for the job's
# life; turning it into CBOR is about half of encoding such a message, and
# validating it about half of decoding one. Its executions and history
# events (frozen dataclasses) are saved again with every write to the job.
# So each message type's paths to such values are found once from its type
# hints, and:
# - encoding writes the CBOR bytes this process made for the very same
#   object before (`_Encoded`, written as they are: CBOR items concatenate):
#   frozen models, and frozen dataclasses held in tuples that hold no model.
#   pydantic's dump of the message leaves them out (`_left_out`), so only a
#   value met for the first time is dumped;
# - decoding hands pydantic the model instance it validated from an equal
#   plain value before (equal `repr` of plain CBOR values means equal
#   values), which lax validation takes as it is. A value that fails is
#   left in place, so the whole body's validation reports it at its path.

REMEMBERED_MODELS = 512  # validated specs kept
REMEMBERED_ENCODINGS = 4096  # encoded values kept: a burst's jobs' specs, executions and events


class _Encoded:
    """CBOR bytes of one value, spliced into a message being encoded."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _write_encoded(encoder: cbor2.CBOREncoder, value: object) -> None:
    if type(value) is not _Encoded:
        raise UnencodableMessage(f"cannot encode a {type(value).__name__} value")
    encoder.write(value.data)


_Paths = tuple[tuple[tuple[str, ...], type], ...]
_Exclude = dict[str, Any]
_model_paths_of: dict[type, tuple[_Paths, _Paths, _Exclude | None]] = {}
_encoded_values: OrderedDict[tuple[int, bool], tuple[object, _Encoded, int]] = OrderedDict()
_validated_models: OrderedDict[tuple[type, str], object] = OrderedDict()


def _model_paths(cls: type) -> _Paths:
    """(path, model class) of each frozen model a message type may hold,
    through dataclass fields ("name"), homogeneous tuples ("*") and optionals."""
    return _paths(cls)[1]


def _encoded_paths(cls: type) -> _Paths:
    """Those paths, and those of frozen dataclasses in tuples that hold no model."""
    return _paths(cls)[0]


def _paths(cls: type) -> tuple[_Paths, _Paths, _Exclude | None]:
    """The encoded paths, the model paths, and what pydantic's dump may leave
    out because encoding puts it back (None: the dump is whole, see `_left_out`)."""
    paths = _model_paths_of.get(cls)
    if paths is None:
        found: list[tuple[tuple[str, ...], type]] = []
        _find_models(cls, (), found, frozenset())
        models = tuple((path, kind) for path, kind in found if issubclass(kind, BaseModel))
        paths = _model_paths_of[cls] = (tuple(found), models, _left_out(cls, tuple(found)))
    return paths


def _left_out(cls: type, paths: _Paths) -> _Exclude | None:
    """pydantic's `exclude` for every encoded path: a path's last field, or the
    whole tuple for a path ending in "*". Only when each path runs through
    plain fields and homogeneous tuples, with one type at its end: through a
    union, a value need not be of the type found there, and the dump stays whole."""
    if not paths:
        return None
    left_out: _Exclude = {}
    for path, _ in paths:
        if not _plain_path(cls, path):
            return None
        steps = path[:-1] if path[-1] == "*" else path
        node = left_out
        for step in steps[:-1]:
            node = node.setdefault("__all__" if step == "*" else step, {})
            if node is True:
                return None
        if isinstance(node.get(steps[-1]), dict):
            return None
        node[steps[-1]] = True
    return left_out


def _plain_path(cls: type, path: tuple[str, ...]) -> bool:
    """Every step of `path` a field of a dataclass or an item of a `tuple[X, ...]`, no unions."""
    hint: Any = cls
    for step in path:
        origin = typing.get_origin(hint)
        if step == "*":
            if origin is not tuple:
                return False
            hint = typing.get_args(hint)[0]
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint).get(step)
        else:
            return False
        if typing.get_origin(hint) in (typing.Union, types.UnionType) or hint is None:
            return False
    return isinstance(hint, type)


def _find_models(hint: Any, path: tuple[str, ...], found: list[tuple[tuple[str, ...], type]], seen: frozenset[type]) -> None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(hint):
            _find_models(arg, path, found, seen)
    elif origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            inner: list[tuple[tuple[str, ...], type]] = []
            _find_models(item, (*path, "*"), inner, seen)
            frozen = isinstance(item, type) and dataclasses.is_dataclass(item) and item.__dataclass_params__.frozen  # type: ignore[attr-defined]
            found.extend(inner if inner or not frozen else [((*path, "*"), item)])
    elif isinstance(hint, type) and issubclass(hint, BaseModel):
        if path and hint.model_config.get("frozen"):
            found.append((path, hint))
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint not in seen:
        try:
            hints = typing.get_type_hints(hint)
        except Exception:  # noqa: BLE001 - an unresolvable hint: that type is simply encoded in full
            return
        for f in dataclasses.fields(hint):
            if f.name in hints:
                _find_models(hints[f.name], (*path, f.name), found, seen | {hint})


def _models_out(value: Any, node: Any, path: tuple[str, ...], canonical: bool, depth: int) -> Any:
    """`node` (the dump of `value`) with the model at `path` as its CBOR bytes."""
    if not path:
        return node if value is None or type(node) is not dict else _encoded_value(value, node, canonical, depth)
    if value is None:
        return node
    step, rest = path[0], path[1:]
    if step == "*":
        if not isinstance(value, tuple) or not isinstance(node, (list, tuple)) or len(node) != len(value):
            return node
        return [_models_out(item, sub, rest, canonical, depth + 1) for item, sub in zip(value, node)]
    if type(node) is dict and step in node:
        node[step] = _models_out(getattr(value, step, None), node[step], rest, canonical, depth + 1)
    return node


def _models_in_place(value: Any, node: Any, path: tuple[str, ...], kind: type, canonical: bool, depth: int) -> None:
    """Put back into `node` (the dump of `value`, with `path` left out) the
    encoded values at `path`: the field at its end, or each item of a tuple."""
    step = path[0]
    if len(path) == 1 or (len(path) == 2 and path[1] == "*"):
        field = getattr(value, step)
        if len(path) == 1:
            node[step] = _encoded_value(field, None, canonical, depth + 1, kind)
        else:  # the array whole, already CBOR: one item for the encoder, not one per value
            if depth + 1 > MAX_DEPTH:
                raise UnencodableMessage(f"the message nests deeper than {MAX_DEPTH} levels; peers would refuse it")
            items = [_encoded_value(item, None, canonical, depth + 2, kind).data for item in field]
            node[step] = _Encoded(_array_head(len(items)) + b"".join(items))
        return
    if step == "*":
        for item, sub in zip(value, node, strict=True):
            _models_in_place(item, sub, path[1:], kind, canonical, depth + 1)
    else:
        _models_in_place(getattr(value, step), node[step], path[1:], kind, canonical, depth + 1)


def _array_head(length: int) -> bytes:
    """The head of a CBOR array of `length` items, in its shortest form (as cbor2 writes it)."""
    if length < 24:
        return bytes((0x80 + length,))
    for marker, size in ((0x98, 1), (0x99, 2), (0x9A, 4), (0x9B, 8)):
        if length < 1 << (8 * size):
            return bytes((marker,)) + length.to_bytes(size, "big")
    raise UnencodableMessage(f"an array of {length} items is too long for CBOR")


def _encoded_value(value: object, dumped: Any, canonical: bool, depth: int, kind: type | None = None) -> _Encoded:
    """The CBOR of `value` (dumped already, or dumped here as a `kind`), made once per object."""
    key = (id(value), canonical)
    held = _encoded_values.get(key)
    if held is not None and held[0] is value and depth <= held[2]:  # (deeper, it would nest past MAX_DEPTH)
        _encoded_values.move_to_end(key)
        return held[1]
    if kind is not None:  # (as the message's own dump would: a wrong type is refused there too)
        dumped = _adapter(kind).dump_python(value, mode="python", by_alias=True, round_trip=True, warnings="error")
    plain = _plain(dumped, depth)
    encoded = _Encoded(cbor2.dumps(plain, canonical=canonical))
    # Kept with the deepest place it may go (the same record rides one level
    # deeper in a `Records` for the store than in a `JobUpdated` to a keeper):
    # `_plain` refuses a map or array nested past MAX_DEPTH.
    deepest = MAX_DEPTH - max(_levels(plain) - 1, 0)
    _encoded_values[key] = (value, encoded, deepest)  # holding the value: its id is not reused while it is a key
    if len(_encoded_values) > REMEMBERED_ENCODINGS:
        _encoded_values.popitem(last=False)
    return encoded


def _levels(plain: Any) -> int:
    """How many maps and arrays deep a plain value nests (0 for a leaf)."""
    kind = type(plain)
    if kind is dict:
        return 1 + max(map(_levels, plain.values()), default=0)
    if kind is list:
        return 1 + max(map(_levels, plain), default=0)
    return 0


def _models_in(node: Any, path: tuple[str, ...], model: type) -> Any:
    """`node` with the plain value at `path` replaced by the model it validates to."""
    if not path:
        return _validated_model(node, model)
    step, rest = path[0], path[1:]
    if step == "*":
        return [_models_in(item, rest, model) for item in node] if type(node) is list else node
    if type(node) is dict and step in node:
        node[step] = _models_in(node[step], rest, model)
    return node


def _validated_model(value: Any, model: type) -> Any:
    if type(value) is not dict:
        return value
    key = (model, repr(value))
    held = _validated_models.get(key)
    if held is not None:
        _validated_models.move_to_end(key)
        return held
    try:
        held = model.model_validate(value, strict=False)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - left for the whole body's validation to report where it is
        return value
    _validated_models[key] = held
    if len(_validated_models) > REMEMBERED_MODELS:
        _validated_models.popitem(last=False)
    return held


# ---------------------------------------------------------------- CBOR details


class _TagRefused(Exception):
    def __init__(self, tag: int) -> None:
        super().__init__(tag)
        self.tag = tag


def _refuse_tag(tag: int) -> Callable[..., Any]:
    def refuse(*_args: Any) -> Any:
        raise _TagRefused(tag)

    return refuse


def _refuse_unknown_tag(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    raise _TagRefused(tag.tag)


# The tags cbor2 6.x decodes by itself (datetimes, bignums, decimals, fractions,
# regexes, MIME, UUIDs, IP addresses, sets, complex numbers, shared values,
# string references, self-describe). Each is overridden to fail; `_check_plain`
# still refuses any non-plain value should a future cbor2 decode more.
_CBOR2_SEMANTIC_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000, 55799,
)  # fmt: skip
_REFUSE_SEMANTIC_TAGS = {tag: _refuse_tag(tag) for tag in _CBOR2_SEMANTIC_TAGS}


def _decoder(stream: io.BytesIO) -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_unknown_tag,
        semantic_decoders=_REFUSE_SEMANTIC_TAGS,
        str_errors="strict",
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )


_PLAIN_LEAVES = frozenset({str, int, float, bool, bytes, type(None)})
_INT_LIMIT = 1 << 64  # CBOR's own integers; larger ones need the bignum tags we refuse


def _check_plain(value: object, depth: int) -> None:
    """Refuse anything but maps with text keys, arrays and plain leaves."""
    kind = type(value)
    if kind in _PLAIN_LEAVES:
        return
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"nesting deeper than {MAX_DEPTH} levels")
    leaves = _PLAIN_LEAVES
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            if type(item) not in leaves:
                _check_plain(item, depth + 1)
    elif kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise MalformedMessage(f"map keys must be text, not {_cbor_kind(key)}")
            if type(item) not in leaves:
                _check_plain(item, depth + 1)
    else:
        raise MalformedMessage(f"{_cbor_kind(value)} is not allowed on the wire")


def _cbor_kind(value: object) -> str:
    return _CBOR_KINDS.get(type(value), f"a {type(value).__name__}")


_CBOR_KINDS = {
    dict: "a map", list: "an array", str: "text", bytes: "bytes", int: "an integer", float: "a float",
    bool: "a boolean", type(None): "null", type(cbor2.undefined): "undefined", cbor2.CBORSimpleValue: "a simple value",
}  # fmt: skip


_NON_INT_LEAVES = (_PLAIN_LEAVES - {int}) | {_Encoded}  # (already CBOR: see `_models_out`)


def _plain(value: Any, depth: int) -> Any:
    """Pydantic's python-mode dump, made of plain CBOR values only."""
    kind = type(value)
    if kind in _NON_INT_LEAVES:
        return value
    if kind is int:
        if -_INT_LIMIT <= value < _INT_LIMIT:
            return value
        raise UnencodableMessage(f"{value} does not fit CBOR's 64-bit integers; send it as text")
    if depth > MAX_DEPTH:
        raise UnencodableMessage(f"the message nests deeper than {MAX_DEPTH} levels; peers would refuse it")
    leaves, inner = _NON_INT_LEAVES, depth + 1  # leaves inline: most values are leaves, calls cost
    if kind is dict:
        return {
            key if type(key) is str else _plain_key(key): item if type(item) in leaves else _plain(item, inner)
            for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [item if type(item) in leaves else _plain(item, inner) for item in value]
    if isinstance(value, Enum):
        return _plain(value.value, depth)
    if isinstance(value, (set, frozenset)):
        items = [_plain(item, inner) for item in value]
        return sorted(items, key=lambda item: cbor2.dumps(item, canonical=True))
    return _plain(to_jsonable_python(value), depth)  # datetimes, decimals, UUIDs, paths, ...


def _plain_key(key: object) -> str:
    if type(key) is str:
        return key
    if isinstance(key, Enum):
        return _plain_key(key.value)
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return repr(key)  # what lax validation reads back into the number
    plain = to_jsonable_python(key)  # datetimes, UUIDs, ...
    if isinstance(plain, str):
        return str.__str__(plain)
    raise UnencodableMessage(f"map keys must be text, numbers or enums, not {type(key).__name__}")


# ---------------------------------------------------------------- the one place errors are mapped

_Stage = Literal["encode", "parse", "validate"]


@contextmanager
def _translated(stage: _Stage, name: str = "") -> Iterator[None]:
    """Turn whatever cbor2, pydantic or a model's validator raises into a `WireError`."""
    try:
        yield
    except (WireError, PydanticUserError):
        raise  # already ours, or a message class here is broken: not the peer's doing
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {name!r} message: {_describe(exc)}") from exc
    except cbor2.CBORDecodeError as exc:
        refused = _refused_tag(exc)
        if refused is not None:
            raise MalformedMessage(f"CBOR tags are not allowed on the wire (found tag {refused.tag})") from exc
        raise MalformedMessage(f"not a valid CBOR message: {exc}") from exc
    except Exception as exc:
        if stage == "encode":
            raise UnencodableMessage(f"cannot encode this {name!r} message: {exc}") from exc
        if stage == "parse":
            raise MalformedMessage(f"not a valid CBOR message: {exc!r}") from exc
        raise InvalidMessage(f"invalid {name!r} message: {type(exc).__name__}: {exc}") from exc


def _refused_tag(exc: BaseException) -> _TagRefused | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _TagRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    text = f"{where or 'body'}: {first['msg']}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return text
