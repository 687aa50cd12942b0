"""ResumableLoader: a pass interrupted mid-way resumes in the same order, skipping what was seen."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from highmark.errors import ConfigError
from highmark.run.loader import ResumableLoader


def _loader(seed: int | None = 5, dataset: Any = None) -> DataLoader[Any]:
    data = dataset if dataset is not None else TensorDataset(torch.arange(23))
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=3, shuffle=True, generator=gen)


def _ids(batches: list[Any]) -> list[int]:
    return [int(v) for b in batches for v in (b[0] if isinstance(b, list) else b)]


def _interrupted(loader: ResumableLoader[Any], consumed: int) -> tuple[dict[str, Any], list[Any]]:
    """One full pass, then ``consumed`` batches of the next; returns the state and the rest."""
    list(loader)
    it = iter(loader)
    for _ in range(consumed):
        next(it)
    state = loader.state_dict()
    return state, list(it)


def test_resumed_pass_replays_the_order_and_skips_consumed_batches() -> None:
    original = ResumableLoader(_loader())
    state, rest = _interrupted(original, 4)
    resumed = ResumableLoader(_loader(seed=999))  # its own seed is overwritten by the state
    resumed.load_state_dict(state)
    assert _ids(list(resumed)) == _ids(rest)
    assert resumed.consumed == 8  # 4 skipped + 4 fetched


def test_no_sample_is_seen_twice_or_missed_across_a_resume() -> None:
    original = ResumableLoader(_loader())
    list(original)
    it = iter(original)
    seen = _ids([next(it) for _ in range(5)])
    resumed = ResumableLoader(_loader())
    resumed.load_state_dict(original.state_dict())
    seen += _ids(list(resumed))
    assert sorted(seen) == list(range(23))


def test_later_passes_continue_the_same_sequence_after_a_resume() -> None:
    original = ResumableLoader(_loader())
    state, _ = _interrupted(original, 2)
    expected_next_pass = _ids(list(original))
    resumed = ResumableLoader(_loader())
    resumed.load_state_dict(state)
    list(resumed)
    assert _ids(list(resumed)) == expected_next_pass


def test_global_rng_shuffling_is_replayed_and_global_rng_left_as_it_was() -> None:
    torch.manual_seed(11)
    original = ResumableLoader(_loader(seed=None))
    state, rest = _interrupted(original, 3)
    after = torch.get_rng_state()
    torch.manual_seed(12345)  # the resumed process starts elsewhere...
    torch.set_rng_state(after)  # ...and the Run restores the checkpoint's RNG state
    resumed = ResumableLoader(_loader(seed=None))
    resumed.load_state_dict(state)
    assert _ids(list(resumed)) == _ids(rest)


def test_state_between_passes_restores_the_generator() -> None:
    original = ResumableLoader(_loader())
    list(original)
    state = original.state_dict()
    assert state["active"] is False
    expected = _ids(list(original))
    resumed = ResumableLoader(_loader(seed=1))
    resumed.load_state_dict(state)
    assert _ids(list(resumed)) == expected


class CountingDataset(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n
        self.fetched: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        self.fetched.append(index)
        return index


def test_skipped_batches_of_a_dataloader_are_not_loaded() -> None:
    original = ResumableLoader(_loader(dataset=CountingDataset(23)))
    state, rest = _interrupted(original, 4)
    data = CountingDataset(23)
    resumed = ResumableLoader(_loader(dataset=data))
    resumed.load_state_dict(state)
    assert _ids(list(resumed)) == _ids(rest)
    assert sorted(data.fetched) == sorted(_ids(rest))


def test_a_plain_list_resumes_by_skipping() -> None:
    original = ResumableLoader([[1], [2], [3], [4]])
    it = iter(original)
    next(it)
    resumed = ResumableLoader([[1], [2], [3], [4]])
    resumed.load_state_dict(original.state_dict())
    assert list(resumed) == [[2], [3], [4]]


def test_a_one_shot_iterator_is_refused() -> None:
    with pytest.raises(ConfigError, match="re-iterable"):
        ResumableLoader(iter([1, 2, 3]))


def test_a_different_generator_setup_is_refused() -> None:
    original = ResumableLoader(_loader())
    list(original)
    with pytest.raises(ConfigError, match="generator"):
        ResumableLoader(_loader(seed=None)).load_state_dict(original.state_dict())
