"""read_all: positional reads on several threads, each tensor checked as it lands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import xxhash

from highmark.errors import CorruptCheckpointError
from highmark.store import parallel, readjobs
from highmark.store.readjobs import ReadJob, read_all

SIZES = [5 << 20, 3, 0, 7 << 20, 1 << 20, 6 << 20 | 12345]  # 19+ MiB: more than one thread


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, bytes]:
    payload = np.random.default_rng(0).integers(0, 256, sum(SIZES), dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(b"HEAD" + payload)
    return path, payload


def jobs_for(f: BinaryIO, payload: bytes, verify: bool = True) -> tuple[list[ReadJob], list]:
    jobs, buffers, pos = [], [], 0
    for i, n in enumerate(SIZES):
        buf = np.empty(n, dtype=np.uint8)
        digest = xxhash.xxh3_64_hexdigest(payload[pos : pos + n]) if verify else None
        jobs.append(ReadJob(f, "blob.bin", 4 + pos, buf.data, f"t{i}", digest))
        buffers.append(buf)
        pos += n
    return jobs, buffers


def test_every_tensor_is_filled_with_its_bytes_across_threads(data, monkeypatch) -> None:
    path, payload = data
    started = []
    real_thread = parallel.threading.Thread

    def counting_thread(*args, **kwargs):
        started.append(kwargs.get("name"))
        return real_thread(*args, **kwargs)

    monkeypatch.setattr(parallel.threading, "Thread", counting_thread)  # counts, does not fake
    with open(path, "rb", buffering=0) as f:
        jobs, buffers = jobs_for(f, payload)
        read_all(jobs)
    assert b"".join(b.tobytes() for b in buffers) == payload
    if len(os.sched_getaffinity(0)) > 1:
        assert started  # the later jobs were read by a helper thread


@pytest.mark.parametrize(
    ("damaged", "named"),
    [
        ([5], "checksum mismatch in tensor 't5'"),  # the last job: read by the last thread
        ([0, 5], "'t0'"),  # two failures: the first in job order is the one raised
    ],
)
def test_a_mismatch_is_raised_naming_the_first_damaged_tensor(data, damaged, named) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, _ = jobs_for(f, payload)
        for i in damaged:
            jobs[i].xxh3 = "0" * 16
        with pytest.raises(CorruptCheckpointError, match=named):
            read_all(jobs)


def test_a_truncated_file_is_reported_not_left_half_read(data) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, _ = jobs_for(f, payload)
        os.truncate(path, 4 + sum(SIZES) - 100)
        with pytest.raises(CorruptCheckpointError, match=r"blob\.bin: file is truncated"):
            read_all(jobs)


def test_unverified_jobs_are_read_without_hashing(data) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, buffers = jobs_for(f, payload, verify=False)
        read_all(jobs)
    assert b"".join(b.tobytes() for b in buffers) == payload


def test_a_buffered_file_is_read_by_the_callers_thread_with_seek(data) -> None:
    path, payload = data
    with open(path, "rb") as f:  # not a raw FileIO: no positional reads, one thread
        jobs, buffers = jobs_for(f, payload)
        read_all(jobs)
    assert b"".join(b.tobytes() for b in buffers) == payload


SMALL = [4, 100, 0, 64 << 10, 3, 70_000, 8, 8]  # 70_000 bytes is over SMALL_TENSOR: read alone


def small_jobs(f: BinaryIO, payload: bytes, sizes: list[int], gap_after: int = -1):
    """Jobs for consecutive tensors of ``sizes``, with 16 unread bytes after job ``gap_after``."""
    jobs, buffers, pos = [], [], 0
    for i, n in enumerate(sizes):
        buf = np.empty(n, dtype=np.uint8)
        digest = xxhash.xxh3_64_hexdigest(payload[pos : pos + n])
        jobs.append(ReadJob(f, "blob.bin", 4 + pos, buf.data, f"t{i}", digest))
        buffers.append((buf, payload[pos : pos + n]))
        pos += n + (16 if i == gap_after else 0)
    return jobs, buffers


@pytest.fixture
def preadv_calls(monkeypatch) -> list[int]:
    """The number of buffers of each os.preadv call (the real call is made)."""
    calls: list[int] = []
    real = os.preadv

    def counting(fd, buffers, offset, *args):
        calls.append(len(buffers))
        return real(fd, buffers, offset, *args)

    monkeypatch.setattr(os, "preadv", counting)
    return calls


def test_small_neighbours_are_read_with_one_call(data, preadv_calls) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, buffers = small_jobs(f, payload, SMALL)
        read_all(jobs)
    assert all(buf.tobytes() == want for buf, want in buffers)
    # [4, 100, 0, 64 KiB, 3] in one call, 70_000 alone, [8, 8] in one call
    assert sorted(preadv_calls) == [1, 2, 5]


def test_a_gap_between_small_tensors_splits_the_read(data, preadv_calls) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, buffers = small_jobs(f, payload, [10, 20, 30, 40], gap_after=1)
        read_all(jobs)
    assert all(buf.tobytes() == want for buf, want in buffers)
    assert preadv_calls == [2, 2]


def test_a_run_of_many_tiny_tensors_is_split_under_iov_max(data, preadv_calls) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, buffers = small_jobs(f, payload, [4] * 1500)
        read_all(jobs)
    assert all(buf.tobytes() == want for buf, want in buffers)
    most = readjobs.JOIN_COUNT
    assert most <= 1024  # IOV_MAX
    assert sorted(preadv_calls) == sorted([most] * (1500 // most) + [1500 % most])


def test_a_damaged_small_tensor_of_a_joined_read_is_named(data) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, _ = small_jobs(f, payload, SMALL)
        jobs[4].xxh3 = "0" * 16
        with pytest.raises(CorruptCheckpointError, match="checksum mismatch in tensor 't4'"):
            read_all(jobs)


def test_a_joined_read_past_the_end_reports_the_truncated_file(data) -> None:
    path, payload = data
    with open(path, "rb", buffering=0) as f:
        jobs, _ = small_jobs(f, payload, [100, 100, 100])
        os.truncate(path, 4 + 250)
        with pytest.raises(CorruptCheckpointError, match=r"blob\.bin: file is truncated"):
            read_all(jobs)
