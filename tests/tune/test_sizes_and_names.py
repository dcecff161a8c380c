"""`parse_size` (``--max-memory``) and `tier_names`, tested directly."""

from __future__ import annotations

import pytest

from autoq.errors import ConfigError
from autoq.tune import parse_size
from autoq.tune._tiers import tier_names


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


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["quality"]),
        (2, ["quality", "minimal"]),
        (3, ["quality", "balanced", "minimal"]),
        (5, ["quality", "balanced", "balanced-2", "balanced-3", "minimal"]),
    ],
)
def test_tier_names(count: int, expected: list[str]) -> None:
    assert tier_names(count) == expected


def test_tier_names_are_unique_for_many_tiers() -> None:
    names = tier_names(12)
    assert len(set(names)) == 12 and names[0] == "quality" and names[-1] == "minimal"
