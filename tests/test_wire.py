"""The wire codec: exact round trips, and a typed error for every bad input."""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_pascal

from protocols.wire import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    IncomingMessageTooLarge,
    InvalidMessage,
    LocalWireError,
    MalformedMessage,
    MessageTooLarge,
    OutgoingMessageTooLarge,
    RemoteWireError,
    UnencodableMessage,
    UnknownMessageType,
    UnsupportedVersion,
    WireError,
    decode,
    encode,
    encoded_size,
    message,
    registered_types,
)

# ---------------------------------------------------------------- messages of the tests


class Color(Enum):
    RED = 1
    GREEN = "green"


class Phase(StrEnum):
    ONE = "One"
    TWO = "Two"


class Limits(BaseModel):
    """A small model with PascalCase aliases, as in the job spec."""

    model_config = ConfigDict(frozen=True, alias_generator=to_pascal, populate_by_name=True)

    cpu_millis: int = 0
    memory_bytes: int = 0
    labels: dict[str, str] = {}
    note: str | None = None
    deadline: datetime.datetime | None = None


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float


@message("test-sample")
@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    count: int
    ratio: float
    flag: bool
    blob: bytes
    maybe: int | None
    tags: tuple[str, ...]
    pairs: tuple[tuple[str, int], ...]
    scores: dict[str, float]
    items: list[int]
    color: Color
    phase: Phase
    point: Point
    limits: Limits
    far: Point | None = None
    by_number: dict[int, str] = field(default_factory=dict)


@message("test-ping")
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    note: str = ""


@message("test-tree")
@dataclass(frozen=True, slots=True)
class Tree:
    value: Any


@message("test-blob")
@dataclass(frozen=True, slots=True)
class Blob:
    data: bytes


@message("test-picky")
@dataclass(frozen=True, slots=True)
class Picky:
    """Its own check fails with an exception pydantic does not translate."""

    key: str

    def __post_init__(self) -> None:
        if self.key == "boom":
            raise KeyError(self.key)


CBOR_INTS = st.integers(min_value=-(2**64), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=False)

limits = st.builds(
    Limits,
    cpu_millis=CBOR_INTS,
    memory_bytes=CBOR_INTS,
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    note=st.none() | st.text(max_size=20),
    deadline=st.none() | st.datetimes(timezones=st.just(datetime.UTC)),
)
points = st.builds(Point, FLOATS, FLOATS)
samples = st.builds(
    Sample,
    text=st.text(),
    count=CBOR_INTS,
    ratio=FLOATS,
    flag=st.booleans(),
    blob=st.binary(),
    maybe=st.none() | CBOR_INTS,
    tags=st.lists(st.text(max_size=10), max_size=4).map(tuple),
    pairs=st.lists(st.tuples(st.text(max_size=5), CBOR_INTS), max_size=4).map(tuple),
    scores=st.dictionaries(st.text(max_size=8), FLOATS, max_size=4),
    items=st.lists(CBOR_INTS, max_size=5),
    color=st.sampled_from(Color),
    phase=st.sampled_from(Phase),
    point=points,
    limits=limits,
    far=st.none() | points,
    by_number=st.dictionaries(CBOR_INTS, st.text(max_size=5), max_size=3),
)
senders = st.text(min_size=1, max_size=60)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sample(**changes: Any) -> Sample:
    values: dict[str, Any] = dict(
        text="hello",
        count=3,
        ratio=0.5,
        flag=True,
        blob=b"\x00\xff",
        maybe=None,
        tags=("a", "b"),
        pairs=(("x", 1),),
        scores={"s": 1.5},
        items=[1, 2],
        color=Color.GREEN,
        phase=Phase.TWO,
        point=Point(1.0, -2.0),
        limits=Limits(cpu_millis=500, labels={"zone": "eu"}),
    )
    values.update(changes)
    return Sample(**values)


def envelope(body: object, *, t: object = "test-ping", v: object = PROTOCOL_VERSION, s: object = "peer") -> bytes:
    return cbor2.dumps({"v": v, "t": t, "s": s, "b": body})


# ---------------------------------------------------------------- round trips


@FAST
@given(samples, senders)
def test_every_sample_round_trips_exactly(original: Sample, sender: str) -> None:
    data = encode(original, sender)
    decoded = decode(data)
    assert decoded == Envelope(sender=sender, message=original, version=PROTOCOL_VERSION)
    assert type(decoded.message.tags) is tuple and type(decoded.message.items) is list
    assert type(decoded.message.color) is Color and type(decoded.message.phase) is Phase
    assert encode(decoded.message, sender) == data  # decoding loses nothing the encoding said


@FAST
@given(samples)
def test_encoded_size_is_the_length_of_the_encoding(original: Sample) -> None:
    assert encoded_size(original, "p") == len(encode(original, "p"))


def test_pydantic_models_travel_by_their_aliases() -> None:
    body = cbor2.loads(encode(sample(), "p"))["b"]
    assert body["limits"] == {
        "CpuMillis": 500,
        "MemoryBytes": 0,
        "Labels": {"zone": "eu"},
        "Note": None,
        "Deadline": None,
    }


def test_bytes_stay_bytes_on_the_wire() -> None:
    body = cbor2.loads(encode(Blob(b"\x80\xff binary"), "p"))["b"]
    assert body == {"data": b"\x80\xff binary"}


def test_nan_and_infinities_survive() -> None:
    decoded = decode(encode(sample(ratio=math.nan, point=Point(math.inf, -math.inf)), "p")).message
    assert math.isnan(decoded.ratio) and decoded.point == Point(math.inf, -math.inf)


def test_equal_messages_encode_to_equal_bytes_whatever_their_dict_order() -> None:
    first = sample(scores={"a": 1.0, "bb": 2.0}, by_number={2: "two", 1: "one"})
    second = sample(scores={"bb": 2.0, "a": 1.0}, by_number={1: "one", 2: "two"})
    assert encode(first, "p") == encode(second, "p")


@FAST
@given(samples, senders)
def test_a_non_canonical_encoding_decodes_to_the_same_message(original: Sample, sender: str) -> None:
    data = encode(original, sender, canonical=False)
    assert decode(data) == decode(encode(original, sender))


def test_fields_unknown_to_this_node_are_ignored_so_newer_peers_can_add_some() -> None:
    assert decode(envelope({"seq": 1, "note": "n", "added_later": [1, 2]})).message == Ping(1, "n")


def test_decode_accepts_any_bytes_like_input() -> None:
    data = encode(Ping(7), "p")
    assert decode(bytearray(data)).message == decode(memoryview(data)).message == Ping(7)


# ---------------------------------------------------------------- registry


def test_a_frozen_model_is_encoded_and_validated_once_with_the_same_result() -> None:
    first = sample(tags=("once",))
    data = encode(first, "p")
    assert encode(first, "p") == data and encode(first, "p", canonical=False) == encode(first, "p", canonical=False)
    one, two = decode(data).message, decode(data).message
    assert one == first and one.limits is two.limits  # the second decode reused the validated model
    other = sample(tags=("once",), limits=Limits(cpu_millis=501, labels={"zone": "eu"}))
    assert decode(encode(other, "p")).message == other  # an equal-looking but different value is not confused
    assert cbor2.loads(encode(other, "p")) == cbor2.loads(encode(Sample(**{f: getattr(other, f) for f in Sample.__dataclass_fields__}), "p"))


def test_registered_types_lists_the_messages_by_wire_name() -> None:
    types = registered_types()
    assert types["test-sample"] is Sample and types["test-ping"] is Ping
    with pytest.raises(TypeError):
        types["test-other"] = Ping  # type: ignore[index]


def test_a_wire_name_taken_by_another_class_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="test-ping"):

        @message("test-ping")
        @dataclass(frozen=True, slots=True)
        class Impostor:
            seq: int

    assert registered_types()["test-ping"] is Ping


def test_one_class_cannot_take_two_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        message("test-ping-again")(Ping)


def test_only_dataclasses_can_be_messages() -> None:
    with pytest.raises(TypeError, match="dataclass"):

        @message("test-not-a-dataclass")
        class Plain:
            pass


# ---------------------------------------------------------------- local errors


def test_an_unregistered_message_cannot_be_sent() -> None:
    @dataclass(frozen=True)
    class Unknown:
        x: int

    with pytest.raises(UnencodableMessage, match="@message"):
        encode(Unknown(1), "p")


def test_a_field_of_the_wrong_type_cannot_be_sent() -> None:
    with pytest.raises(UnencodableMessage, match="tuple"):
        encode(sample(tags=["a", "list"]), "p")  # would come back as a tuple


def test_integers_beyond_cbor_range_cannot_be_sent() -> None:
    assert decode(encode(Ping(2**64 - 1), "p")).message == Ping(2**64 - 1)
    assert decode(encode(Ping(-(2**64)), "p")).message == Ping(-(2**64))
    with pytest.raises(UnencodableMessage, match="64-bit"):
        encode(Ping(2**64), "p")


def test_the_sender_must_be_text() -> None:
    with pytest.raises(UnencodableMessage, match="sender"):
        encode(Ping(1), 42)  # type: ignore[arg-type]


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_messages_too_deep_for_peers_cannot_be_sent_but_the_deepest_allowed_travels() -> None:
    deepest = Tree(nested(MAX_DEPTH - 2))  # the envelope and the body are two levels
    assert decode(encode(deepest, "p")).message == deepest
    with pytest.raises(UnencodableMessage, match="deeper"):
        encode(Tree(nested(MAX_DEPTH - 1)), "p")


class Deep(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: Any


@message("test-shallow")
@dataclass(frozen=True, slots=True)
class Shallow:
    deep: Deep


@dataclass(frozen=True, slots=True)
class Holder:
    deep: Deep


@message("test-deeper")
@dataclass(frozen=True, slots=True)
class Deeper:
    holder: Holder


def test_a_value_encoded_once_is_refused_where_it_would_nest_too_deep_and_reused_where_it_fits() -> None:
    deep = Deep(value=nested(MAX_DEPTH - 3))  # as deep as fits in Shallow: envelope, body, model, lists
    assert decode(encode(Shallow(deep), "p")).message == Shallow(deep)
    with pytest.raises(UnencodableMessage, match="deeper"):
        encode(Deeper(Holder(deep)), "p")  # one level deeper: the bytes made for Shallow must not be reused
    fits = Deep(value=nested(MAX_DEPTH - 4))
    assert decode(encode(Deeper(Holder(fits)), "p")).message == Deeper(Holder(fits))
    assert decode(encode(Shallow(fits), "p")).message == Shallow(fits)  # shallower: reused


def blob_of_encoded_size(size: int) -> Blob:
    overhead = len(encode(Blob(bytes(70_000)), "p")) - 70_000  # one length header size above 64 KiB
    return Blob(bytes(size - overhead))


def test_the_size_limit_holds_when_sending() -> None:
    largest = blob_of_encoded_size(MAX_MESSAGE_BYTES)
    assert len(encode(largest, "p")) == MAX_MESSAGE_BYTES
    with pytest.raises(OutgoingMessageTooLarge) as caught:
        encode(blob_of_encoded_size(MAX_MESSAGE_BYTES + 1), "p")
    assert isinstance(caught.value, MessageTooLarge) and isinstance(caught.value, LocalWireError)
    assert caught.value.size == MAX_MESSAGE_BYTES + 1 and caught.value.limit == MAX_MESSAGE_BYTES


# ---------------------------------------------------------------- remote errors


def test_the_size_limit_holds_when_receiving_before_any_parsing() -> None:
    assert decode(encode(blob_of_encoded_size(MAX_MESSAGE_BYTES), "p")).message.data == bytes(
        len(blob_of_encoded_size(MAX_MESSAGE_BYTES).data)
    )
    with pytest.raises(IncomingMessageTooLarge) as caught:
        decode(b"\xff" * (MAX_MESSAGE_BYTES + 1))  # not CBOR either: size is checked first
    assert isinstance(caught.value, MessageTooLarge) and isinstance(caught.value, RemoteWireError)


@pytest.mark.parametrize(
    "data, complaint",
    [
        (b"", "premature end"),
        (b"\xff", "break"),
        (b"\x1c", "subtype"),
        (encode(Ping(1), "p")[:-1], "premature end"),
        (encode(Ping(1), "p") + b"\x00", "1 bytes follow"),
        (cbor2.dumps([1, 2]), "must be a map"),
        (cbor2.dumps({"v": True, "t": "test-ping", "s": "p", "b": {}}), "'v'"),
        (cbor2.dumps({"v": 1, "t": "test-ping", "s": "p"}), "exactly the keys"),
        (cbor2.dumps({"v": 1, "t": "test-ping", "s": "p", "b": {}, "x": 0}), "exactly the keys"),
        (envelope({}, t=5), "'t'"),
        (envelope({}, s=b"peer"), "'s'"),
        (envelope([1]), "'b'"),
        (b"\x61\xff", "text string"),  # invalid UTF-8
        (envelope({"seq": 1, "note": "x"}).replace(b"dnoteax", b"dnotea\xff"), "text string"),
        (cbor2.dumps({1: 2}), "text string or byte string"),
        (envelope({b"seq": 1}), "keys must be text"),
        (envelope({"seq": cbor2.undefined}), "undefined"),
        (envelope({"seq": cbor2.CBORSimpleValue(99)}), "simple value"),
        (b"\x9f\x01\xff", "indefinite"),
        (b"\xa2\x61a\x01\x61a\x02", "Duplicate"),
        (b"\x81" * (MAX_DEPTH + 1) + b"\x00", "depth"),
        (b"\x9b" + (2**40).to_bytes(8, "big"), "premature end"),  # claims a huge array
    ],
)
def test_bytes_that_are_no_message_are_malformed(data: bytes, complaint: str) -> None:
    with pytest.raises(MalformedMessage, match=complaint) as caught:
        decode(data)
    assert isinstance(caught.value, RemoteWireError)


CBOR2_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000, 55799)


@pytest.mark.parametrize("tag", CBOR2_TAGS + (6, 24, 32, 1000, 2**32, 2**64 - 1))
def test_every_semantic_tag_is_refused_even_those_cbor2_would_decode(tag: int) -> None:
    with pytest.raises(MalformedMessage, match=f"tag {tag}"):
        decode(envelope({"seq": cbor2.CBORTag(tag, 1)}))


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        2**70,
        -(2**70),
        {1, 2},
        __import__("decimal").Decimal("1.5"),
        __import__("uuid").UUID(int=5),
        __import__("fractions").Fraction(1, 3),
    ],
)
def test_values_that_cbor2_writes_as_tags_are_refused(value: object) -> None:
    with pytest.raises(MalformedMessage, match="tags are not allowed"):
        decode(envelope({"seq": value}))


@pytest.mark.parametrize("version", [0, 2, -1, 2**40])
def test_other_protocol_versions_are_unsupported(version: int) -> None:
    with pytest.raises(UnsupportedVersion, match=str(version)):
        decode(envelope({"seq": 1}, v=version))


def test_a_future_version_is_unsupported_whatever_its_envelope_holds() -> None:
    with pytest.raises(UnsupportedVersion):
        decode(cbor2.dumps({"v": 2, "everything": "changed"}))


def test_an_unknown_type_name_is_reported() -> None:
    with pytest.raises(UnknownMessageType, match="no-such-thing"):
        decode(envelope({}, t="no-such-thing"))


@pytest.mark.parametrize(
    "type_name, body, field_path",
    [
        ("test-ping", {}, "seq: Field required"),
        ("test-ping", {"seq": "many"}, "seq: Input should be a valid integer"),
        ("test-ping", {"seq": 1.5}, "seq"),
        ("test-ping", {"seq": 1, "note": b"\xff"}, "note"),
        ("test-sample", cbor2.loads(encode(sample(), "p"))["b"] | {"point": {"x": 1.0}}, "point.y: Field required"),
        ("test-sample", cbor2.loads(encode(sample(), "p"))["b"] | {"color": "blue"}, "color"),
        ("test-sample", cbor2.loads(encode(sample(), "p"))["b"] | {"pairs": [["a", "b"]]}, "pairs[0][1]"),
        (
            "test-sample",
            cbor2.loads(encode(sample(), "p"))["b"] | {"limits": {"CpuMillis": "lots"}},
            "limits.CpuMillis",
        ),
    ],
)
def test_an_invalid_body_names_the_field_at_fault(type_name: str, body: dict[str, Any], field_path: str) -> None:
    with pytest.raises(InvalidMessage, match=re.escape(f"'{type_name}' message: {field_path}")):
        decode(envelope(body, t=type_name))


def test_an_exception_from_a_messages_own_check_is_an_invalid_message() -> None:
    assert decode(envelope({"key": "fine"}, t="test-picky")).message == Picky("fine")
    with pytest.raises(InvalidMessage, match="KeyError"):
        decode(envelope({"key": "boom"}, t="test-picky"))


def test_something_other_than_bytes_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="bytes"):
        decode("not bytes")  # type: ignore[arg-type]


def test_local_and_remote_errors_are_distinct_wire_errors() -> None:
    assert issubclass(LocalWireError, WireError) and issubclass(RemoteWireError, WireError)
    assert not issubclass(LocalWireError, RemoteWireError) and not issubclass(RemoteWireError, LocalWireError)
    for remote in (MalformedMessage, UnsupportedVersion, UnknownMessageType, InvalidMessage, IncomingMessageTooLarge):
        assert issubclass(remote, RemoteWireError)
    for local in (UnencodableMessage, OutgoingMessageTooLarge):
        assert issubclass(local, LocalWireError)


# ---------------------------------------------------------------- garbage in, WireError out

VALID = [
    encode(sample(), "peer-a"),
    encode(Ping(5, "hi"), "peer-b"),
    encode(Tree({"a": [1, 2.5, None, b"x"]}), "peer-c"),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
        elif data:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


def decodes_or_raises_a_wire_error(data: bytes) -> None:
    try:
        decoded = decode(data)
    except WireError:
        return
    try:  # whatever decodes must travel on unchanged
        assert decode(encode(decoded.message, decoded.sender)).sender == decoded.sender
    except MessageTooLarge:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    decodes_or_raises_a_wire_error(data)


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_mutated_messages_raise_only_wire_errors(data: bytes) -> None:
    decodes_or_raises_a_wire_error(data)


plain_values = st.recursive(
    st.none() | st.booleans() | CBOR_INTS | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["test-ping", "test-sample", "test-tree", "test-picky", "nope", 3]),
    st.dictionaries(st.sampled_from(["seq", "note", "value", "key", "text", "point", "limits"]), plain_values),
    st.sampled_from([1, 1, 1, 0, 2, "1", None]),
)
def test_well_formed_cbor_with_wrong_content_raises_only_wire_errors(
    type_name: object, body: dict[str, Any], version: object
) -> None:
    decodes_or_raises_a_wire_error(envelope(body, t=type_name, v=version))


@message("test-broken")
@dataclass(frozen=True, slots=True)
class Broken:
    part: "NotDefinedAnywhere"  # noqa: F821


def test_a_broken_message_class_is_our_bug_not_the_peers() -> None:
    from pydantic import PydanticUserError

    with pytest.raises(PydanticUserError):
        decode(envelope({"part": 1}, t="test-broken"))
