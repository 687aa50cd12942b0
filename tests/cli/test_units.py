"""Numbers for people, as the CLI and the reports print them."""

from __future__ import annotations

import doctest

import pytest

from highmark.cli import units
from highmark.cli.units import size


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**4, "3072.0 GiB"),
    ],
)
def test_size_uses_the_largest_unit_up_to_gib(n: int, text: str) -> None:
    assert size(n) == text


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(units).failed == 0
