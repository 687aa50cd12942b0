"""StreamingFile: every byte arrives, whatever the buffer's shape, with or without writeback."""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest

from highmark.store.streaming import WRITEBACK_BYTES, StreamingFile


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
