"""Resource amounts as users write them, read into exact integers.

CPU is kept in millicores, memory and disk in bytes, so sums and comparisons
are exact. Binary multiples throughout: 1Kb = 1K = 1Ki = 1KiB = 1024 bytes (and
so on up to Tb), in any letter case, which is how the reference network reads
its own examples (`1Gb`, `100mb`). Plain numbers are bytes.

Every error message reads "what is wrong; how to fix it". Amounts are capped
at 2**63 - 1 so they fit every store and wire format.
"""

from __future__ import annotations

import re
from decimal import Decimal

MAX_AMOUNT = (1 << 63) - 1
_NUMBER = r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_CPU = re.compile(_NUMBER + r"\s*(?P<milli>m?)")
_BYTES = re.compile(_NUMBER + r"\s*(?P<unit>[A-Za-z]*)")
_WHOLE = re.compile(_NUMBER)
_MULTIPLES = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgt", start=1):
    for _suffix in ("", "b", "i", "ib"):
        _MULTIPLES[_letter + _suffix] = 1 << (10 * _power)


def parse_cpu(value: object) -> int:
    """`1`, `0.25` (cores) or `250m` (millicores), as text or a number → millicores."""
    text = _text(value, "CPU")
    match = _CPU.fullmatch(text)
    if match is None:
        raise ValueError(f"CPU {text!r} is not a number of cores; write cores (0.5) or millicores (500m)")
    amount = Decimal(match.group("number")) * (1 if match.group("milli") else 1000)
    if amount != amount.to_integral_value():
        raise ValueError(f"CPU {text!r} is finer than a millicore; round it to whole millicores (e.g. 250m)")
    return _capped(int(amount), "CPU", text)


def parse_bytes(value: object, what: str = "amount") -> int:
    """`1Gb`, `100mb`, `512Mi`, `1.5GB`, `64M` or plain bytes → bytes."""
    text = _text(value, what)
    match = _BYTES.fullmatch(text)
    unit = match.group("unit").lower() if match else ""
    if match is None or unit not in _MULTIPLES:
        raise ValueError(f"{what} {text!r} is not an amount of bytes; write e.g. 512Mb, 1.5Gb or 2Tb (Kb, Mb, Gb, Tb)")
    amount = Decimal(match.group("number")) * _MULTIPLES[unit]
    if amount != amount.to_integral_value():
        raise ValueError(f"{what} {text!r} is not a whole number of bytes; use a smaller unit (e.g. 1536Mb)")
    return _capped(int(amount), what, text)


def parse_gpu(value: object, what: str = "GPU") -> int:
    """A whole number of at least 0, given as a number or as text (`"0"`)."""
    text = _text(value, what)
    match = _WHOLE.fullmatch(text)
    if match is None or (amount := Decimal(text)) != amount.to_integral_value():
        raise ValueError(f"{what} {text!r} is not a whole number; write a count such as 0, 1 or 2")
    return _capped(int(amount), what, text)


def format_cpu(millicores: int) -> str:
    """Millicores as a job file writes them: `250m`."""
    return f"{millicores}m"


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number or text, not {type(value).__name__}; write e.g. 1 or \"1\"")
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f") if value == value and abs(value) != float("inf") else repr(value)
    else:
        text = str(value).strip()
    if not text:
        raise ValueError(f"{what} is empty; give an amount or leave the field out")
    if text.startswith("-"):
        raise ValueError(f"{what} {text!r} cannot be negative; give 0 or more")
    if len(text) > 40:
        raise ValueError(f"{what} {text[:40]!r}... is too long to be an amount; write a shorter one with a unit")
    return text


def _capped(amount: int, what: str, text: str) -> int:
    if amount > MAX_AMOUNT:
        raise ValueError(f"{what} {text!r} is too large; amounts stop at 2**63-1")
    return amount
