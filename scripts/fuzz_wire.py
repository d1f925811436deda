"""Fuzz the wire codec: whatever the bytes, `decode` raises a WireError or returns a message.

A seeded mutation loop (no pytest, no extra packages). Inputs mix random bytes,
mutated valid encodings of every registered message type it can build
(bit flips, byte insertion and deletion, truncation, splices of two encodings),
random CBOR structures (tags, simple values, sets and big integers included),
envelopes with wrong fields, deep nesting and oversized inputs. What decodes
must also encode again to the same message. Anything else is printed with the
input in hex, and the run exits 1.

    .venv/bin/python scripts/fuzz_wire.py --count 100000 --seed 1
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import datetime
import enum
import importlib
import math
import random
import sys
import time
import traceback
import types
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cbor2  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402
from pydantic.alias_generators import to_pascal  # noqa: E402

from protocols import wire  # noqa: E402
from protocols.jobspec import JobSpec, job_spec_from_data  # noqa: E402
from sim.workload import JOB_TYPES, spec_document  # noqa: E402

MESSAGE_MODULES = ("protocols.messages", "p2pnode.execution")  # where the network's messages live


# ---------------------------------------------------------------- a message with every kind of field


class FuzzColor(enum.Enum):
    RED = 1
    BLUE = "blue"


class FuzzLimits(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_pascal, populate_by_name=True)

    cpu_millis: int = 0
    labels: dict[str, str] = {}
    deadline: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FuzzPoint:
    x: float
    y: float


@wire.message("fuzz-sample")
@dataclasses.dataclass(frozen=True, slots=True)
class FuzzSample:
    text: str
    count: int
    blob: bytes
    tags: tuple[str, ...]
    scores: dict[str, float]
    color: FuzzColor
    point: FuzzPoint
    limits: FuzzLimits
    maybe: FuzzPoint | None = None
    tree: Any = None


@wire.message("fuzz-digest")
@dataclasses.dataclass(frozen=True, slots=True)
class FuzzDigest:
    digest: tuple[tuple[str, int, int], ...]
    files: tuple[tuple[str, bytes], ...] = ()


@wire.message("fuzz-checked")
@dataclasses.dataclass(frozen=True, slots=True)
class FuzzChecked:
    """Checks itself after validation, as some messages do."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")


# ---------------------------------------------------------------- random values of a declared type


class Unsupported(Exception):
    """The generator does not know how to make a value of this type."""


def random_text(rng: random.Random) -> str:
    alphabet = "abcxyz-_/:. 0123456789ÄéΩ漢字🙂\u0000\u200b"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def random_int(rng: random.Random) -> int:
    return rng.choice([0, 1, -1, rng.randint(0, 1000), rng.randint(-(2**63), 2**63), 2**64 - 1, -(2**64)])


def random_float(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 1.5, rng.uniform(-1e9, 1e9), math.inf, -math.inf, 1e300, 5e-324])


def random_plain(rng: random.Random, depth: int = 0) -> Any:
    """A value CBOR carries without tags."""
    roll = rng.random()
    if depth < 4 and roll < 0.15:
        return [random_plain(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 4 and roll < 0.3:
        return {random_text(rng): random_plain(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    maker = rng.choice([random_text, random_int, random_float, lambda r: r.randbytes(r.randint(0, 8))])
    return rng.choice([None, True, False, maker(rng)])


def random_value(tp: Any, rng: random.Random, depth: int = 0) -> Any:
    if depth > 12:
        raise Unsupported("too deep")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return random_plain(rng)
    if origin is typing.Annotated:
        return random_value(args[0], rng, depth)
    if origin in (typing.Union, types.UnionType):
        return random_value(rng.choice(args), rng, depth + 1)
    if origin is typing.Literal:
        return rng.choice(args)
    if tp is None or tp is type(None):
        return None
    simple: dict[Any, Callable[[random.Random], Any]] = {
        bool: lambda r: r.random() < 0.5,
        int: random_int,
        float: random_float,
        str: random_text,
        bytes: lambda r: r.randbytes(r.randint(0, 24)),
        datetime.datetime: lambda r: datetime.datetime.fromtimestamp(r.randint(0, 2**32), datetime.UTC),
    }
    if tp in simple:
        return simple[tp](rng)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return rng.choice(list(tp))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(random_value(args[0], rng, depth + 1) for _ in range(rng.randint(0, 3)))
        return tuple(random_value(arg, rng, depth + 1) for arg in args)
    if origin in (list, set, frozenset, collections.abc.Sequence, collections.abc.Set):
        made = [random_value(args[0], rng, depth + 1) for _ in range(rng.randint(0, 3))]
        return list(made) if origin in (list, collections.abc.Sequence) else origin(made)
    if origin in (dict, collections.abc.Mapping):
        key, value = args
        return {random_value(key, rng, depth + 1): random_value(value, rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: random_value(hints[f.name], rng, depth + 1) for f in dataclasses.fields(tp) if f.init})
    if tp is JobSpec:  # too constrained to fill field by field: the simulator's valid random jobs
        return job_spec_from_data(spec_document(rng.choice(JOB_TYPES), rng)).spec
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        values = {
            (info.alias or name): random_value(info.annotation, rng, depth + 1)
            for name, info in tp.model_fields.items()
            if info.is_required() or rng.random() < 0.5
        }
        return tp.model_validate(values)
    raise Unsupported(repr(tp))


def build_corpus(rng: random.Random, per_type: int) -> tuple[list[bytes], list[str]]:
    """Valid encodings of every registered type the generator can fill, and the types it could not."""
    corpus: list[bytes] = []
    skipped: list[str] = []
    for name, cls in sorted(wire.registered_types().items()):
        made = 0
        for _attempt in range(per_type * 10):
            try:
                corpus.append(wire.encode(random_value(cls, rng), random_text(rng) or "peer"))
            except (Unsupported, ValueError, TypeError, wire.LocalWireError):
                continue  # a model's own checks refused the random values; try others
            made += 1
            if made == per_type:
                break
        if made == 0:
            skipped.append(name)
    return corpus, skipped


# ---------------------------------------------------------------- input generators


def flip_bits(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def insert_bytes(rng: random.Random, data: bytearray) -> None:
    at = rng.randint(0, len(data))
    data[at:at] = rng.randbytes(rng.randint(1, 6))


def delete_bytes(rng: random.Random, data: bytearray) -> None:
    at = rng.randint(0, len(data))
    del data[at : at + rng.randint(1, 6)]


INTERESTING_BYTES = (
    0x00, 0x17, 0x18, 0x1B, 0x1F, 0x5B, 0x5F, 0x7B, 0x7F, 0x9B, 0x9F, 0xBB, 0xBF, 0xC0, 0xC2, 0xD8, 0xF7, 0xF9, 0xFB, 0xFF,
)  # fmt: skip


def set_interesting_byte(rng: random.Random, data: bytearray) -> None:
    if data:  # CBOR heads that change meaning: lengths, tags, floats, breaks, indefinite
        data[rng.randrange(len(data))] = rng.choice(INTERESTING_BYTES)


TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000, 55799)


class Inputs:
    """Seeded sources of fuzz inputs, each named for the report."""

    def __init__(self, rng: random.Random, corpus: list[bytes]) -> None:
        self.rng = rng
        self.corpus = corpus
        self.names = sorted({cbor2.loads(data)["t"] for data in corpus})
        self.sources: list[tuple[str, Callable[[], bytes]]] = [
            ("random bytes", self.random_bytes),
            ("bit flips", lambda: self.mutate(flip_bits)),
            ("byte insert", lambda: self.mutate(insert_bytes)),
            ("byte delete", lambda: self.mutate(delete_bytes)),
            ("interesting byte", lambda: self.mutate(set_interesting_byte)),
            ("mixed mutations", self.mixed),
            ("truncation", self.truncated),
            ("splice", self.splice),
            ("random CBOR", self.random_cbor),
            ("wrong envelope", self.wrong_envelope),
            ("wrong body field", self.wrong_body_field),
            ("deep nesting", self.deep),
        ]

    def next(self) -> tuple[str, bytes]:
        if self.rng.random() < 0.0005:
            return "oversized", self.rng.choice(self.corpus) + bytes(wire.MAX_MESSAGE_BYTES)
        name, make = self.rng.choice(self.sources)
        return name, make()

    def valid(self) -> bytearray:
        return bytearray(self.rng.choice(self.corpus))

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 300))

    def mutate(self, mutation: Callable[[random.Random, bytearray], None]) -> bytes:
        data = self.valid()
        mutation(self.rng, data)
        return bytes(data)

    def mixed(self) -> bytes:
        data = self.valid()
        for _ in range(self.rng.randint(2, 6)):
            self.rng.choice([flip_bits, insert_bytes, delete_bytes, set_interesting_byte])(self.rng, data)
        return bytes(data)

    def truncated(self) -> bytes:
        data = self.valid()
        return bytes(data[: self.rng.randrange(len(data))])

    def splice(self) -> bytes:
        first, second = self.valid(), self.valid()
        return bytes(first[: self.rng.randint(0, len(first))] + second[self.rng.randint(0, len(second)) :])

    def random_cbor(self) -> bytes:
        return cbor2.dumps(self.tricky(0), canonical=self.rng.random() < 0.5)

    def tricky(self, depth: int) -> Any:
        """Random CBOR content, including what the codec must refuse."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            return rng.choice(
                [
                    cbor2.CBORTag(rng.choice(TAGS + (rng.randint(0, 2**20),)), self.tricky(depth + 1)),
                    cbor2.undefined,
                    cbor2.CBORSimpleValue(rng.choice([0, 19, 32, 255])),
                    {rng.randint(0, 3)},
                    rng.choice([2**70, -(2**70)]),
                    datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                    {rng.randint(0, 9): "int key"},
                    {b"bytes key": 1},
                ]
            )
        if roll < 0.2:
            return {"v": 1, "t": rng.choice(self.names), "s": "peer", "b": self.tricky(depth + 1)}
        if depth < 6 and roll < 0.4:
            return [self.tricky(depth + 1) for _ in range(rng.randint(0, 3))]
        if depth < 6 and roll < 0.6:
            return {random_text(rng): self.tricky(depth + 1) for _ in range(rng.randint(0, 3))}
        return random_plain(rng, 3)

    def wrong_envelope(self) -> bytes:
        rng = self.rng
        envelope = cbor2.loads(bytes(self.valid()))
        key = rng.choice(["v", "t", "s", "b", "extra"])
        action = rng.random()
        if action < 0.25:
            envelope.pop(key, None)
        elif action < 0.5 and key == "t":
            envelope["t"] = rng.choice(self.names + ["", "unknown-type"])
        elif action < 0.6 and key == "v":
            envelope["v"] = rng.choice([0, 2, -1, 2**64 - 1, 1.0, True, "1"])
        else:
            envelope[key] = self.tricky(1)
        return cbor2.dumps(envelope, canonical=rng.random() < 0.5, indefinite_containers=rng.random() < 0.1)

    def wrong_body_field(self) -> bytes:
        rng = self.rng
        envelope = cbor2.loads(bytes(self.valid()))
        body = envelope["b"]
        target = body
        for _ in range(rng.randint(0, 3)):  # sometimes reach into a nested map
            nested = [value for value in target.values() if isinstance(value, dict) and value]
            if not nested:
                break
            target = rng.choice(nested)
        if target and rng.random() < 0.8:
            field = rng.choice(list(target))
            target[field] = random_plain(rng) if rng.random() < 0.7 else self.tricky(2)
        else:
            target[random_text(rng)] = random_plain(rng)
        if rng.random() < 0.2:
            envelope["t"] = rng.choice(self.names)  # a body of one type under another's name
        return cbor2.dumps(envelope)

    def deep(self) -> bytes:
        depth = self.rng.randint(wire.MAX_DEPTH - 4, wire.MAX_DEPTH + 4)
        if self.rng.random() < 0.5:  # bare nesting
            return self.rng.choice([b"\x81", b"\xa1\x61a"]) * depth + b"\x00"
        name = cbor2.dumps(self.rng.choice(self.names))  # nesting inside a body field
        return b"\xa4\x61v\x01\x61t" + name + b"\x61s\x61p\x61b\xa1\x65value" + b"\x81" * depth + b"\x00"


# ---------------------------------------------------------------- the run


def check_one(data: bytes) -> str:
    """The outcome's name; raises whatever is not a WireError."""
    try:
        envelope = wire.decode(data)
    except wire.WireError as error:
        return type(error).__name__
    try:
        again = wire.encode(envelope.message, envelope.sender)
    except wire.MessageTooLarge:
        return "decoded (too large to re-send)"
    if wire.encode(wire.decode(again).message, envelope.sender) != again:
        raise AssertionError("a decoded message does not encode back to the same bytes")
    return "decoded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="how many inputs to try")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed; equal seeds give equal runs")
    parser.add_argument("--show", type=int, default=5, help="print at most this many failing inputs")
    args = parser.parse_args(argv)

    for module in MESSAGE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"note: {module} not importable ({exc}); fuzzing without its messages")
    rng = random.Random(args.seed)
    corpus, skipped = build_corpus(rng, per_type=6)
    types_used = sorted({cbor2.loads(data)["t"] for data in corpus})
    print(f"corpus: {len(corpus)} valid encodings of {len(types_used)} message types: {', '.join(types_used)}")
    if skipped:
        print(f"no valid random instance for: {', '.join(skipped)}")

    inputs = Inputs(rng, corpus)
    outcomes: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    failures = 0
    started = time.perf_counter()
    for _ in range(args.count):
        source, data = inputs.next()
        sources[source] += 1
        try:
            outcomes[check_one(data)] += 1
        except Exception as exc:  # the finding: anything but a WireError
            failures += 1
            outcomes[f"FAILURE {type(exc).__name__}"] += 1
            if failures <= args.show:
                print(f"\nFAILURE from {source}: {type(exc).__name__}: {exc}")
                print("".join(traceback.format_exception(exc)[-3:]).rstrip())
                print(f"input ({len(data)} bytes): {data[:4096].hex()}")
    elapsed = time.perf_counter() - started

    print(f"\ninputs: {args.count} (seed {args.seed}) in {elapsed:.1f} s, {args.count / elapsed:,.0f} inputs/s")
    print("outcomes:")
    for name, count in outcomes.most_common():
        print(f"  {count:8d}  {name}")
    print("sources:")
    for name, count in sorted(sources.items()):
        print(f"  {count:8d}  {name}")
    if failures:
        print(f"\n{failures} inputs raised something other than a WireError")
        return 1
    print("\nevery input decoded or raised a WireError")
    return 0


if __name__ == "__main__":
    sys.exit(main())
