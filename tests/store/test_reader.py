"""read_all: positional reads on several threads, each tensor checked as it lands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import xxhash

from highmark.errors import CorruptCheckpointError
from highmark.store import parallel
from highmark.store.reader import ReadJob, read_all

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
