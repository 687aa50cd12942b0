"""Figure 1: the physical limits of this machine for a byte count equal to the state's.

- a plain write of a preallocated buffer into a new file + fsync (the floor of any durable save),
- a read of that file from the page cache into a preallocated buffer (the floor of a restore),
- copies of every state tensor into reused buffers (one torch thread; and two threads, as the
  async save copies) and into fresh memory: the floor of an async save's blocking part,
- a copy of all the state's bytes as one buffer (one ``memmove``; and two halves on two
  threads). glibc switches to non-temporal stores, which do not read the destination into the
  cache first, only above a size its cache sizes set (about 192 MB on this project's machine);
  every per-tensor copy stays below it, so at 1 GB these rows show what such stores would give,
- hashing the bytes with xxh3-64, crc32, sha256 and blake2b (the candidates for checksums).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
import time
import zlib
from typing import Any

import numpy as np
import torch
import xxhash

from benchmarks.harness import Context, gbps, interleaved, remove, row, timed
from benchmarks.state import tensors_of

_CHUNK = 1 << 30


def host_buffer(nbytes: int) -> np.ndarray:
    """A preallocated byte buffer from torch's allocator, touched (like a live tensor's memory).

    On this machine where the memory comes from matters: ``readinto`` from the page cache into
    torch-allocated memory ran 3x faster than into a plain numpy allocation at 1 GB.
    """
    buf = torch.empty(nbytes, dtype=torch.uint8)
    buf.zero_()
    return buf.numpy()


def state_bytes(tensors: list[torch.Tensor]) -> np.ndarray:
    """One preallocated buffer holding the bytes of every tensor, back to back."""
    total = sum(t.nbytes for t in tensors)
    buf = host_buffer(total)
    pos = 0
    for t in tensors:
        view = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        buf[pos : pos + view.size] = view
        pos += view.size
    return buf


def write_fsync(path: str, buf: np.ndarray) -> None:
    """Writes ``buf`` to a new file with plain unbuffered writes, then fsyncs it."""
    view = buf.data.cast("B")
    with open(path, "xb", buffering=0) as f:
        pos = 0
        while pos < len(view):
            pos += f.write(view[pos : pos + _CHUNK]) or 0
        os.fsync(f.fileno())


def read_into(path: str, buf: np.ndarray) -> None:
    """Reads a whole file into a preallocated buffer with ``readinto``."""
    view = buf.data.cast("B")
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < len(view):
            n = f.readinto(view[pos : pos + _CHUNK])
            if not n:
                break
            pos += n


def read_mmap(path: str, buf: np.ndarray) -> None:
    """Reads a whole file into a preallocated buffer by memory-mapping it and copying."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        src = np.frombuffer(m, dtype=np.uint8)
        buf[: src.size] = src
        del src


def on_two_threads(first: Any, second: Any) -> None:
    """Runs ``second`` on a helper thread while the caller runs ``first``; returns when both are
    done."""
    helper = threading.Thread(target=second)
    helper.start()
    first()
    helper.join()


def run(ctx: Context) -> dict[str, Any]:
    """Measures the limits; returns the figure's rows."""
    tensors = tensors_of(ctx.bench.state)
    buf = state_bytes(tensors)
    nbytes = buf.size
    work = ctx.workdir("limits")
    path = os.path.join(work, "raw.bin")
    target = host_buffer(buf.size)
    reused = [torch.empty_like(t) for t in tensors]

    def write() -> float:
        remove(path)
        return timed(lambda: write_fsync(path, buf))

    write_fsync(os.path.join(work, "cached.bin"), buf)
    read_into(os.path.join(work, "cached.bin"), target)  # warm

    def read() -> float:
        return timed(lambda: read_into(os.path.join(work, "cached.bin"), target))

    def read_mapped() -> float:
        return timed(lambda: read_mmap(os.path.join(work, "cached.bin"), target))

    def copy_reused() -> float:
        def go() -> None:
            for dst, src in zip(reused, tensors, strict=True):
                dst.copy_(src)

        return timed(go)

    acc, half = 0, len(tensors)
    for i, t in enumerate(tensors):  # the first index of the second half of the bytes
        acc += t.nbytes
        if 2 * acc >= nbytes:
            half = i + 1
            break

    def copy_reused_two() -> float:
        return timed(
            lambda: on_two_threads(
                lambda: torch._foreach_copy_(reused[:half], tensors[:half]),  # without the GIL
                lambda: torch._foreach_copy_(reused[half:], tensors[half:]),
            )
        )

    def copy_flat() -> float:
        return timed(lambda: np.copyto(target, buf))  # one memmove of every byte

    def copy_flat_two() -> float:
        mid = nbytes // 2
        return timed(
            lambda: on_two_threads(
                lambda: np.copyto(target[:mid], buf[:mid]),  # a memmove, without the GIL
                lambda: np.copyto(target[mid:], buf[mid:]),
            )
        )

    def copy_fresh() -> float:
        start = time.perf_counter()
        fresh = [t.clone() for t in tensors]
        seconds = time.perf_counter() - start
        del fresh
        return seconds

    mv = buf.data
    cases = {
        "write new file + fsync": write,
        "read from page cache (readinto)": read,
        "read from page cache (mmap + copy)": read_mapped,
        "copy into reused buffers": copy_reused,
        "copy into reused buffers, 2 threads": copy_reused_two,
        "copy as one buffer (one memmove)": copy_flat,
        "copy as one buffer, 2 threads (a memmove each)": copy_flat_two,
        "copy into fresh memory": copy_fresh,
        "hash xxh3-64": lambda: timed(lambda: xxhash.xxh3_64(mv).intdigest()),
        "hash crc32": lambda: timed(lambda: zlib.crc32(mv)),
        "hash sha256": lambda: timed(lambda: hashlib.sha256(mv).digest()),
        "hash blake2b": lambda: timed(lambda: hashlib.blake2b(mv).digest()),
    }
    results = interleaved(cases, ctx.repeat, label="limits", seed=ctx.seed)
    remove(work)
    return {
        "title": "Figure 1 - physical limits (same byte count as the state)",
        "rows": [
            row(name, s, gbps_best=round(gbps(nbytes, s["min"]), 2)) for name, s in results.items()
        ],
        "bytes": int(nbytes),
    }
