"""Resource amounts: what users write, read into exact integers, and what is refused."""

from __future__ import annotations

import pytest

from protocols.units import MAX_AMOUNT, format_cpu, parse_bytes, parse_cpu, parse_gpu

GIB = 1 << 30


@pytest.mark.parametrize(
    ("value", "millicores"),
    [
        ("1", 1000), (1, 1000), ("0.25", 250), (0.25, 250), (0.5, 500), ("250m", 250), ("250 m", 250),
        ("1.5", 1500), ("0", 0), (0, 0), (".5", 500), ("0.001", 1), ("1000m", 1000), (" 2 ", 2000),
        (1e-3, 1), (16, 16000),
    ],
)
def test_cpu_is_read_in_millicores(value: object, millicores: int) -> None:
    assert parse_cpu(value) == millicores


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "cannot be negative"),
        (-0.5, "cannot be negative"),
        ("0.0001", "finer than a millicore"),
        (0.0001, "finer than a millicore"),
        ("0.5m", "finer than a millicore"),
        ("lots", "not a number of cores"),
        ("1e3", "not a number of cores"),
        ("250M", "not a number of cores"),
        ("", "empty"),
        (True, "must be a number or text"),
        (None, "must be a number or text"),
        (float("nan"), "not a number of cores"),
        (float("inf"), "not a number of cores"),
        ("9" * 30, "too large"),
        ("1" * 50, "too long"),
    ],
)
def test_bad_cpu_says_why(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpu(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1Gb", GIB), ("100mb", 100 << 20), ("512MB", 512 << 20), ("2Tb", 2 << 40), ("1kb", 1024), ("1KB", 1024),
        ("1.5Gb", 3 << 29), ("4096", 4096), (4096, 4096), ("1Gi", GIB), ("1GiB", GIB), ("64M", 64 << 20),
        ("1k", 1024), ("1 Gb", GIB), ("3Ki", 3072), ("1Ti", 1 << 40), ("10b", 10), ("0", 0), (0.5 * 1024, 512),
    ],
)
def test_memory_and_disk_are_read_in_bytes(value: object, size: int) -> None:
    assert parse_bytes(value, "Memory") == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1Pb", "not an amount of bytes"),
        ("1 gigabyte", "not an amount of bytes"),
        ("Gb", "not an amount of bytes"),
        ("-5Gb", "cannot be negative"),
        ("0.5b", "not a whole number of bytes"),
        ("1.0000001Kb", "not a whole number of bytes"),
        ([1], "must be a number or text"),
        ("9999999999Tb", "too large"),
    ],
)
def test_bad_sizes_say_why(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bytes(value, "Memory")


@pytest.mark.parametrize(("value", "count"), [("0", 0), (2, 2), ("3", 3), (1.0, 1), (" 4 ", 4)])
def test_gpu_is_a_count(value: object, count: int) -> None:
    assert parse_gpu(value) == count


@pytest.mark.parametrize(
    ("value", "message"), [("1.5", "not a whole number"), ("-1", "negative"), ("two", "not a whole number"),
                           ("²", "not a whole number"), (False, "must be a number")]
)
def test_bad_gpu_says_why(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gpu(value)


def test_cpu_formats_back_to_what_parses() -> None:
    for millicores in (0, 1, 250, 1000, 123456):
        assert parse_cpu(format_cpu(millicores)) == millicores
    assert parse_cpu(f"{MAX_AMOUNT}m") == MAX_AMOUNT
