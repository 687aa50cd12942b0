"""run_in_groups and run_batches: every item once, contiguous byte-balanced groups, the first
error in order."""

from __future__ import annotations

import threading

import pytest

from highmark.store.parallel import _groups, run_batches, run_in_groups


def test_groups_are_contiguous_and_balanced_by_bytes() -> None:
    sizes = [10, 10, 10, 10, 40, 10, 10]
    groups = _groups(sizes, 2)
    assert [i for g in groups for i in g] == list(range(len(sizes)))  # in order, each once
    assert [sum(sizes[i] for i in g) for g in groups] == [40, 60]


def test_every_item_is_worked_once_and_on_more_than_one_thread() -> None:
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(item: int) -> None:
        with lock:
            seen.append((item, threading.current_thread().name))

    run_in_groups(list(range(20)), [1] * 20, work, threads=3)
    assert sorted(item for item, _ in seen) == list(range(20))
    assert len({name for _, name in seen}) == 3


def test_the_first_failing_item_in_order_is_raised_and_its_group_stops() -> None:
    done: list[int] = []

    def work(item: int) -> None:
        if item in (2, 7):
            raise ValueError(f"item {item}")
        done.append(item)

    with pytest.raises(ValueError, match="item 2"):
        run_in_groups(list(range(10)), [1] * 10, work, threads=2)
    assert {3, 4}.isdisjoint(done)  # the first group stopped at its failure
    assert {5, 6} <= set(done)  # the second group ran until its own failure
    assert 8 not in done


def test_run_batches_gives_each_thread_one_contiguous_batch() -> None:
    batches: list[tuple[list[int], str]] = []
    lock = threading.Lock()

    def work(batch: list[int]) -> None:
        with lock:
            batches.append((batch, threading.current_thread().name))

    run_batches(list(range(6)), [10, 10, 10, 10, 40, 10], work, threads=2)
    assert sorted(b for b, _ in batches) == [[0, 1, 2, 3], [4, 5]]
    assert len({name for _, name in batches}) == 2


def test_run_batches_raises_the_error_of_the_first_batch_in_order() -> None:
    def work(batch: list[int]) -> None:
        raise ValueError(f"batch from {batch[0]}")

    with pytest.raises(ValueError, match="batch from 0"):
        run_batches(list(range(4)), [1] * 4, work, threads=2)


def test_run_batches_of_nothing_does_nothing() -> None:
    run_batches([], [], lambda batch: pytest.fail("called"), threads=2)
