"""What reading a hostile manifest or index may allocate: its size and parsing cost are checked
before it is parsed, so parsing never takes more than PARSE_FACTOR times the file's size. Peak
memory is measured in a fresh process (its maximum resident set size), not estimated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import highmark
from highmark.store.checks import PARSE_FACTOR, document_problem, parse_cost
from highmark.store.format import MANIFEST
from highmark.store.index import INDEX
from highmark.store.manager import CheckpointManager

MIB = 1 << 20
STEP = "step-00000001"

# Reads one manifest (or the index) in a fresh process and reports how much its peak resident
# memory grew while reading, and how the read ended. The peak is the kernel's VmHWM of the new
# process image (ru_maxrss would do, but Linux carries it over from the forking parent).
CHILD = r"""
import json, sys
from highmark.errors import CorruptCheckpointError
from highmark.store.local import LocalStorage
from highmark.store.format import read_manifest
from highmark.store.index import read_index

def peak():
    with open("/proc/self/status") as f:
        return 1024 * int(next(l for l in f if l.startswith("VmHWM:")).split()[1])

storage = LocalStorage(sys.argv[1])
before = peak()
if sys.argv[2] == "index":
    state, outcome = read_index(storage)
else:
    try:
        read_manifest(storage, sys.argv[2])
        outcome = "read"
    except CorruptCheckpointError as exc:
        outcome = str(exc)
print(json.dumps({"outcome": outcome, "growth": peak() - before}))
"""
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="measures peak memory with Linux's VmHWM"
)


def repeated(item: bytes, size: int) -> bytes:
    """A JSON array of ``item`` repeated to about ``size`` bytes."""
    return b"[" + b",".join([item] * (size // (len(item) + 1))) + b"]"


def just_under_the_cap(size: int) -> bytes:
    """Empty arrays diluted with a long string: as many as parsing within the limit allows."""

    def document(arrays: int, size: int) -> bytes:
        return b'["' + b"x" * (size - 3 * arrays) + b'",' + b",".join([b"[]"] * arrays) + b"]"

    small = 1 << 16  # find the share of arrays on a small document, then scale it up
    low, high = 0, small // 3  # low: within the limit, high: over it
    while high - low > 1:
        middle = (low + high) // 2
        fits = document_problem(document(middle, small)) is None
        low, high = (middle, high) if fits else (low, middle)
    arrays = low * (size // small)
    while document_problem(document(arrays, size)) is not None:
        arrays = arrays * 99 // 100
    return document(arrays, size)


def read_in_a_fresh_process(run: Path, what: str) -> tuple[str, int]:
    src = Path(highmark.__file__).resolve().parents[1]  # the highmark under test
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(run), what],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    report = json.loads(out.stdout)
    return str(report["outcome"]), int(report["growth"])


@pytest.fixture
def run(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    with CheckpointManager(path) as mgr:
        mgr.save(1, {"w": torch.ones(2)})
    return path


DENSE: dict[str, tuple[bytes, int]] = {  # refused before parsing: over PARSE_FACTOR
    "the issue's 40 MiB of []": (b"[]", 40 * MIB),
    "1 MiB of []": (b"[]", 1 * MIB),
    "{}": (b"{}", 16 * MIB),
    '{"":0}': (b'{"":0}', 16 * MIB),
    "[0]": (b"[0]", 16 * MIB),
    "[[[]]]": (b"[[[]]]", 16 * MIB),
}
WITHIN: dict[str, tuple[bytes, int]] = {  # parsed (within PARSE_FACTOR), then refused
    "10,10": (b"10", 16 * MIB),
    '"ab"': (b'"ab"', 16 * MIB),
    "1e1": (b"1e1", 16 * MIB),
}


@pytest.mark.parametrize(
    ("target", "case"),
    [("manifest", case) for case in DENSE]
    + [("index", "the issue's 40 MiB of []"), ("index", "{}")],
)
def test_a_dense_hostile_document_is_refused_before_parsing(
    run: Path, target: str, case: str
) -> None:
    item, size = DENSE[case]
    data = repeated(item, size)
    (run / (f"{STEP}/{MANIFEST}" if target == "manifest" else INDEX)).write_bytes(data)
    outcome, growth = read_in_a_fresh_process(run, STEP if target == "manifest" else "index")
    assert "before parsing" in outcome, outcome
    assert growth < 3 * len(data) + 16 * MIB, f"{growth / MIB:.0f} MiB for {len(data) / MIB} MiB"


@pytest.mark.parametrize("case", list(WITHIN))
def test_a_hostile_document_within_the_limit_is_parsed_within_it(run: Path, case: str) -> None:
    item, size = WITHIN[case]
    data = repeated(item, size)
    (run / STEP / MANIFEST).write_bytes(data)
    outcome, growth = read_in_a_fresh_process(run, STEP)
    assert "not a JSON object" in outcome  # parsed, then refused as a manifest
    assert growth < (PARSE_FACTOR + 3) * len(data), f"{growth / MIB:.0f} MiB"


def test_a_document_just_within_the_parsing_limit_stays_within_it(run: Path) -> None:
    data = just_under_the_cap(8 * MIB)
    assert parse_cost(data) > (PARSE_FACTOR - 1) * len(data)  # as costly as is allowed
    (run / STEP / MANIFEST).write_bytes(data)
    outcome, growth = read_in_a_fresh_process(run, STEP)
    assert "not a JSON object" in outcome  # parsed, then refused as a manifest
    assert growth < (PARSE_FACTOR + 3) * len(data), f"{growth / MIB:.0f} MiB"


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False),
        st.text(max_size=12), st.text(alphabet="ab\u0100\U0001f600", max_size=6),
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6), st.dictionaries(st.text(max_size=6), children)
        ),
        max_leaves=60,
    )


def _parse_peak(text: bytes) -> int:
    decoded = text.decode()
    tracemalloc.start()
    try:
        json.loads(decoded)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=300, deadline=None)
@given(value=_json_values(), compact=st.booleans(), copies=st.integers(1, 300))
def test_parse_cost_bounds_what_parsing_allocates(value: Any, compact: bool, copies: int) -> None:
    """The cost counted from the bytes is never below what json.loads really allocates."""
    separators = (",", ":") if compact else (", ", ": ")
    ascii_only = copies % 2 == 0
    text = json.dumps([value] * copies, separators=separators, ensure_ascii=ascii_only).encode()
    assert _parse_peak(text) <= parse_cost(text)


@pytest.mark.parametrize("item", [b"[]", b"{}", b'{"":0}', b"[0]", b"10", b'"ab"', b'"\\u0100a"'])
def test_parse_cost_bounds_dense_documents(item: bytes) -> None:
    text = repeated(item, MIB)
    assert _parse_peak(text) <= parse_cost(text)
