"""`parse_size` (``--max-memory``), tested directly (tier names: tests/tune/test_tiers.py)."""

from __future__ import annotations

import pytest

from autoq.errors import ConfigError
from autoq.tune import parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6GB", 6 * 10**9),
        ("6gb", 6 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5g", 1_500_000_000),
        ("1.5 GiB", 3 * 2**29),
        (" 2k ", 2000),
        ("4KiB", 4096),
        ("1tib", 2**40),
        ("123", 123),
        ("123b", 123),
        (".5m", 500_000),
        (4096, 4096),
    ],
)
def test_parse_size_reads_decimal_and_binary_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "6 GBs", "1e9", "GB", "", "6 G B", "0x10", "1,5g"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ConfigError, match="Expected a size such as 6GB"):
        parse_size(text)


@pytest.mark.parametrize("text", ["0", "-1GB", "0.0001b", 0, -5])
def test_parse_size_refuses_sizes_that_are_not_positive(text: str | int) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        parse_size(text)
