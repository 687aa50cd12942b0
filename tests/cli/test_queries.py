"""``RUN:STEP`` specs (highmark.cli.queries.parse_spec) are parsed exactly: ASCII digits, the whole
spec, nothing trailing."""

from __future__ import annotations

import pytest

from highmark.cli.queries import parse_spec


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("runs/a:best", ("runs/a", "best")),
        ("runs/a:latest", ("runs/a", "latest")),
        ("s3://bucket/run:12", ("s3://bucket/run", 12)),
        ("runs/a", ("runs/a", "latest")),
    ],
)
def test_a_spec_names_the_run_and_the_checkpoint(spec: str, parsed: tuple[str, object]) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize(
    "spec",
    [
        "runs/a:12\n",  # "$" matched before a trailing newline
        "runs/a:best\n",
        "runs/a:\uff11\uff12",  # fullwidth digits: \d matched them and int() read them as 12
        "runs/a:\u0661\u0662",  # Arabic-Indic digits
    ],
)
def test_a_spec_with_anything_but_ascii_digits_or_a_keyword_is_a_run_path(spec: str) -> None:
    assert parse_spec(spec) == (spec, "latest")
