"""Resource amounts as users write them, read into exact integers.

CPU is kept in millicores and memory and disk in bytes, so sums and
comparisons are exact. Binary multiples throughout: 1Kb = 1Ki = 1024 bytes,
as the reference network reads its own examples (`1Gb`, `100mb`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BYTES = re.compile(_NUMBER + r"\s*(?P<unit>[a-z]*)$", re.IGNORECASE)
_MULTIPLES = {
    "": 1,
    "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "ki": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mi": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gi": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "ti": 1 << 40, "tib": 1 << 40,
}


def parse_cpu(value: object) -> int:
    """`1`, `0.25` (cores) or `250m` (millicores) → millicores."""
    text = _text(value, "CPU")
    millicores = text.endswith("m")
    amount = _decimal(text[:-1] if millicores else text, "CPU", "write cores (0.5) or millicores (500m)")
    exact = amount if millicores else amount * 1000
    if exact != exact.to_integral_value():
        raise ValueError(f"CPU {text!r} is finer than a millicore; round it to whole millicores (e.g. 250m)")
    return int(exact)


def parse_bytes(value: object, what: str = "amount") -> int:
    """`1Gb`, `100mb`, `512Mi`, `1.5GB` or plain bytes → bytes."""
    text = _text(value, what)
    match = _BYTES.match(text)
    unit = match.group("unit").lower() if match else ""
    if match is None or unit not in _MULTIPLES:
        raise ValueError(f"{what} {text!r} is not an amount of bytes; write e.g. 512Mb, 1Gb or 2Tb")
    exact = _decimal(match.group("number"), what, "write e.g. 1.5Gb") * _MULTIPLES[unit]
    if exact != exact.to_integral_value():
        raise ValueError(f"{what} {text!r} is not a whole number of bytes")
    return int(exact)


def parse_gpu(value: object, what: str = "GPU") -> int:
    """A non-negative whole number, given as a number or a string."""
    text = _text(value, what)
    if not text.isdigit():
        raise ValueError(f"{what} {text!r} must be a whole number of at least 0")
    return int(text)


def format_cpu(millicores: int) -> str:
    return f"{millicores}m"


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number or a string, not {type(value).__name__}")
    text = str(value).strip()
    if text.startswith("-"):
        raise ValueError(f"{what} {text!r} cannot be negative")
    if not text:
        raise ValueError(f"{what} is empty; give an amount or leave the field out")
    return text


def _decimal(text: str, what: str, hint: str) -> Decimal:
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a number; {hint}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{what} {text!r} must be a finite amount of at least 0")
    return amount
