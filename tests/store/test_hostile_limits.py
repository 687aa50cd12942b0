"""The writer refuses what a reader would refuse, from the same limits (store.checks, tree): no save
produces a checkpoint that cannot be restored. Each extreme input is refused at save with a typed
error naming the limit, and nothing is committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from highmark.errors import ConfigError, UnsupportedStateError
from highmark.state.skeleton import MAX_DEPTH
from highmark.state.tree import tensor_leaves
from highmark.store.checks import MAX_DIMS, MAX_HEADER, MAX_JSON, PARSE_FACTOR
from highmark.store.manager import CheckpointManager
from highmark.store.objectstore import MemoryStorage


def refused_at_save(path: Path, state: Any, match: str) -> UnsupportedStateError:
    with CheckpointManager(path) as mgr:
        with pytest.raises(UnsupportedStateError, match=match) as info:
            mgr.save(1, state)
        assert mgr.checkpoints() == []
    assert not [p for p in path.iterdir() if p.name.startswith(("step-", ".tmp"))]
    return info.value


def round_trips(path: Path, state: Any) -> Any:
    with CheckpointManager(path) as mgr:
        mgr.save(1, state)
    with CheckpointManager(path, read_only=True) as mgr:
        assert mgr.verify().ok
        return mgr.restore()


def test_a_key_making_a_header_larger_than_the_reader_reads_is_refused(tmp_path: Path) -> None:
    """The issue's 101 MiB key: it saved, and the restore refused the 101 MiB header."""
    key = "k" * (MAX_HEADER + 1)
    error = refused_at_save(tmp_path / "run", {"model": {key: torch.ones(1)}}, "limit")
    assert str(MAX_JSON) in str(error) or str(MAX_HEADER) in str(error)


def test_a_key_making_the_manifest_larger_than_the_reader_reads_is_refused(tmp_path: Path) -> None:
    key = "k" * (MAX_JSON // 2 + 1)  # appears in the skeleton and in the file list
    refused_at_save(tmp_path / "run", {"model": {key: torch.ones(1)}}, f"limit of {MAX_JSON}")


def test_a_json_value_making_the_manifest_too_large_is_refused(tmp_path: Path) -> None:
    refused_at_save(tmp_path / "run", {"notes": "x" * (MAX_JSON + 1)}, f"limit of {MAX_JSON}")


def test_json_values_too_costly_to_parse_back_are_refused(tmp_path: Path) -> None:
    """Nested lists of small ints cost ~40 times their JSON size to parse: more than a reader
    allows (PARSE_FACTOR), so the save is refused rather than written unreadable."""
    state = {"w": torch.ones(1), "pairs": [[[i % 7]] for i in range(20_000)]}
    refused_at_save(tmp_path / "run", state, f"more than {PARSE_FACTOR} times its size")


def test_a_real_training_state_is_far_within_the_parse_limit(tmp_path: Path) -> None:
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(50)])
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
    back = round_trips(tmp_path / "run", state)
    assert back["optimizer"]["param_groups"][0]["params"] == list(range(100))


def test_a_tensor_with_more_dimensions_than_the_limit_is_refused(tmp_path: Path) -> None:
    """torch holds 65 dimensions, numpy (which a reader may build) at most 64."""
    error = refused_at_save(
        tmp_path / "run", {"x": torch.ones((1,) * (MAX_DIMS + 1))}, f"limit of {MAX_DIMS}"
    )
    assert error.path == "x"


def test_a_tensor_with_exactly_the_dimension_limit_round_trips(tmp_path: Path) -> None:
    state = {"t": torch.ones((1,) * MAX_DIMS), "n": np.ones((1,) * MAX_DIMS)}
    back = round_trips(tmp_path / "run", state)
    assert back["t"].shape == (1,) * MAX_DIMS
    assert back["n"].shape == (1,) * MAX_DIMS


def test_an_empty_tensor_too_large_to_index_is_refused(tmp_path: Path) -> None:
    """torch makes a [2**31, 2**31, 0] float tensor; numpy cannot build its shape back."""
    big = torch.empty((1 << 31, 1 << 31, 0))
    refused_at_save(tmp_path / "run", {"x": big}, "more elements than numpy and torch")


def test_state_nested_past_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    node: Any = torch.ones(1)
    for _ in range(MAX_DEPTH):
        node = [node]
    refused_at_save(tmp_path / "run", {"deep": node}, f"deeper than {MAX_DEPTH}")


_KEYS = st.one_of(st.text(max_size=12), st.integers(-5, 5))
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.builds(lambda n: torch.arange(float(n)), st.integers(0, 4)),
    st.builds(lambda n: np.arange(n, dtype=np.int16), st.integers(0, 4)),
)
_STATES = st.recursive(
    _LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(_KEYS, children, max_size=4),
    ),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.dictionaries(st.text(min_size=1, max_size=8), _STATES, min_size=1, max_size=3))
def test_every_state_that_saves_restores(state: dict[str, Any]) -> None:
    """Whatever a state holds, a save either refuses it with a typed error or writes a
    checkpoint that restores, verified, to the same tensors."""
    storage = MemoryStorage()
    with CheckpointManager(storage) as mgr:
        try:
            mgr.save(1, state)
        except (UnsupportedStateError, ConfigError):
            assert mgr.checkpoints() == []
            return
        back = mgr.restore()
        assert mgr.verify().ok
    want, got = tensor_leaves(state), tensor_leaves(back)
    assert set(got) == set(want)
    for path, (leaf, _) in want.items():
        assert np.array_equal(np.asarray(got[path][0]), np.asarray(leaf)), path
