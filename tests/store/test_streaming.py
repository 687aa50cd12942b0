"""StreamingFile and GatheredWrites: every byte arrives in order, whatever the buffers' shapes and
counts, with or without writeback, gathered into few writes or written one by one."""

from __future__ import annotations

import io
import logging
import os
import sys

import numpy as np
import pytest

from highmark.store import streaming
from highmark.store.streaming import (
    GATHER_BYTES,
    WRITEBACK_BYTES,
    GatheredWrites,
    StreamingFile,
    _drop_written,
)


def test_writes_every_byte_of_large_and_typed_buffers(tmp_path, caplog):
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, size=2 * WRITEBACK_BYTES + 12345, dtype=np.uint8)
    typed = rng.standard_normal((300, 1001)).astype(np.float32)  # not a byte view, 2-D
    path = tmp_path / "f.bin"
    with caplog.at_level(logging.DEBUG, "highmark.store.streaming"), StreamingFile(path) as f:
        assert f.write(b"head") == 4
        assert f.write(big.data) == big.nbytes
        assert f.write(typed.data) == typed.nbytes
        os.fsync(f.fileno())
    data = path.read_bytes()
    assert data == b"head" + big.tobytes() + typed.tobytes()
    assert not caplog.records  # a regular file takes the writeback requests


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_a_file_that_refuses_writeback_is_written_plainly(caplog):
    # /dev/null is not a regular file: the kernel refuses sync_file_range on it (ESPIPE).
    payload = np.zeros(3 * WRITEBACK_BYTES, dtype=np.uint8)
    with caplog.at_level(logging.DEBUG, "highmark.store.streaming"), StreamingFile(os.devnull) as f:
        assert f.write(payload.data) == payload.nbytes
        assert f.write(payload.data) == payload.nbytes
    refusals = [r for r in caplog.records if "sync_file_range refused" in r.getMessage()]
    assert len(refusals) == 1  # asked once, then written plainly


def _buffers(count: int) -> list[np.ndarray]:
    """``count`` byte-distinct buffers of varied sizes and types (some empty, some 2-D)."""
    rng = np.random.default_rng(count)
    out: list[np.ndarray] = []
    for i in range(count):
        size = int(rng.integers(0, 5000)) if i % 7 else int(rng.integers(0, GATHER_BYTES // 3))
        if i % 5 == 0:
            out.append(rng.standard_normal((size // 40 + 1, 10)).astype(np.float32))
        else:
            out.append(rng.integers(0, 255, size=size, dtype=np.uint8))
    return out


def test_gathered_writes_put_every_buffer_in_order_with_more_buffers_than_one_writev_takes(
    tmp_path,
):
    buffers = _buffers(2500)  # over the 1024 buffers of one writev, several gathers
    path = tmp_path / "f.bin"
    with StreamingFile(path) as f:
        out = GatheredWrites(f)
        out.add(b"head")
        for buf in buffers:
            out.add(buf.data)
        out.flush()
        os.fsync(f.fileno())
    assert path.read_bytes() == b"head" + b"".join(b.tobytes() for b in buffers)


def test_gathered_writes_write_one_by_one_to_any_other_file():
    buffers = _buffers(300)
    target = io.BytesIO()
    out = GatheredWrites(target)
    for buf in buffers:
        out.add(buf.data)
    out.flush()
    assert target.getvalue() == b"".join(b.tobytes() for b in buffers)


def test_nothing_is_written_before_a_batch_fills_or_flush(tmp_path):
    path = tmp_path / "f.bin"
    with StreamingFile(path) as f:
        out = GatheredWrites(f)
        out.add(b"x" * 1000)
        assert path.stat().st_size == 0
        out.add(np.zeros(GATHER_BYTES, dtype=np.uint8).data)  # fills the batch: written
        assert path.stat().st_size == GATHER_BYTES + 1000
        out.add(b"tail")
        out.flush()
    assert path.stat().st_size == GATHER_BYTES + 1004


@pytest.mark.parametrize(
    ("sizes", "written", "left"),
    [
        ([3, 4, 5], 0, [3, 4, 5]),
        ([3, 4, 5], 2, [1, 4, 5]),  # inside the first view
        ([3, 4, 5], 3, [4, 5]),  # on a boundary
        ([3, 4, 5], 8, [4]),  # across views, inside the last
        ([3, 4, 5], 12, []),
    ],
)
def test_a_short_writev_continues_where_it_stopped(sizes, written, left):
    data = bytes(range(sum(sizes)))
    views, pos = [], 0
    for size in sizes:
        views.append(memoryview(data)[pos : pos + size])
        pos += size
    rest = _drop_written(views, written)
    assert [len(v) for v in rest] == left
    assert b"".join(bytes(v) for v in rest) == data[written:]


def test_short_writes_are_completed(tmp_path, monkeypatch):
    # A short writev cannot be caused on a regular file short of gigabytes: os.writev is
    # wrapped to write at most 1000 bytes per call (the bytes written are the real ones).
    real = os.writev

    def short(fd, buffers):
        budget, part = 1000, []
        for b in buffers:
            if budget <= 0:
                break
            part.append(memoryview(b)[:budget])
            budget -= len(part[-1])
        return real(fd, part)

    monkeypatch.setattr(streaming.os, "writev", short)
    buffers = _buffers(40)
    path = tmp_path / "f.bin"
    with StreamingFile(path) as f:
        f.write_views([memoryview(b).cast("B") for b in buffers if b.nbytes])
    assert path.read_bytes() == b"".join(b.tobytes() for b in buffers)
