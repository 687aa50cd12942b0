"""Figures 2b and 4: restore of the whole state, and partial restore of the model only.

The files are written once, then read warm (from the page cache) in shuffled rounds together
with the page-cache read limits. "+ touch" reads one value per 4 KiB page of every returned
tensor, so a lazily memory-mapped result pays for its reads like everyone else. "into live"
means the bytes end up in the live model and optimizer: highmark's ``restore(into=...)`` fills
the existing tensors in place; for torch and safetensors, ``load_state_dict`` copies them in.

Figure 4 also counts the bytes a partial restore really reads: the checkpoint's files are
evicted from the page cache (``posix_fadvise(DONTNEED)``), the model alone is restored, and
``mincore`` tells how many bytes of each file came back into the cache.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
from typing import Any

import numpy as np

from benchmarks import methods
from benchmarks.harness import Context, interleaved, limit_rows, progress, remove, row, timed
from benchmarks.limits import host_buffer, read_into, read_mmap, state_bytes, write_fsync
from benchmarks.state import tensors_of, touch


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return libc


def resident_bytes(path: str) -> int:
    """How many bytes of ``path`` are in the page cache now (``mincore``)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    libc = _libc()
    page = mmap.PAGESIZE
    with open(path, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
            resident = int(np.frombuffer(memoryview(vec), dtype=np.uint8).__and__(1).sum())
        finally:
            libc.munmap(addr, size)
    return min(size, resident * page)


def evict(directory: str) -> list[str]:
    """Drops every file under ``directory`` from the page cache; returns their paths."""
    paths = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            paths.append(path)
    return paths


def bytes_read_by(directory: str, fn: Any) -> dict[str, int]:
    """Evicts ``directory`` from the cache, runs ``fn``, returns the bytes read back per file.

    Raises:
        RuntimeError: when the eviction did not work (pages still mapped somewhere), so that a
            wrong count is never reported.
    """
    gc.collect()  # unmap what an earlier restore mapped, or its pages cannot be evicted
    paths = evict(directory)
    left = sum(resident_bytes(p) for p in paths)
    if left > (1 << 20):
        raise RuntimeError(f"{left} bytes of {directory} stayed in the page cache after eviction")
    fn()
    gc.collect()
    return {os.path.relpath(p, directory): resident_bytes(p) for p in paths}


def run(ctx: Context) -> dict[str, Any]:
    """Measures the readers; returns figures ``restore`` and ``partial``."""
    bench = ctx.bench
    work = ctx.workdir("restore")
    buf = state_bytes(tensors_of(bench.state))
    nbytes = buf.size
    raw = os.path.join(work, "raw.bin")
    tpath = os.path.join(work, "state.pt")
    spath = os.path.join(work, "state.safetensors")
    write_fsync(raw, buf)
    methods.torch_save(tpath, bench)
    methods.st_save(spath, bench)
    target = host_buffer(buf.size)
    read_into(raw, target)

    cases = {
        "limit: page-cache read (readinto)": lambda: timed(lambda: read_into(raw, target)),
        "limit: page-cache read (mmap + copy)": lambda: timed(lambda: read_mmap(raw, target)),
        "torch.load + touch": lambda: timed(
            lambda: methods.load_and_touch(methods.torch_load, tpath)
        ),
        "torch.load + load_state_dict (into live)": lambda: timed(
            lambda: methods.load_into_live(bench, methods.torch_load, tpath)
        ),
        "safetensors load_file + touch": lambda: timed(
            lambda: methods.load_and_touch(methods.st_load, spath)
        ),
        "safetensors load_file + load_state_dict (into live)": lambda: timed(
            lambda: methods.load_into_live(bench, methods.st_load, spath)
        ),
    }
    missing = methods.highmark_missing()
    hm_dir = os.path.join(work, "hm")
    manager: Any = None
    if missing is None:
        manager = methods.hm_manager(hm_dir)
        manager.save(1, bench.state)
        model_only = {"model": bench.state["model"]}
        cases["highmark restore(into=live), verified"] = lambda: timed(
            lambda: manager.restore("latest", into=bench.state)
        )
        cases["highmark restore() + touch"] = lambda: timed(
            lambda: touch(tensors_of(manager.restore("latest")))
        )
        cases["highmark restore(keys=[model]) + touch"] = lambda: timed(
            lambda: touch(tensors_of(manager.restore("latest", keys=["model"])))
        )
        cases["highmark restore(keys=[model], into=live model)"] = lambda: timed(
            lambda: manager.restore("latest", keys=["model"], into=model_only)
        )

    res = interleaved(cases, ctx.repeat, label="restore", seed=ctx.seed)
    limit = min(
        res["limit: page-cache read (readinto)"]["min"],
        res["limit: page-cache read (mmap + copy)"]["min"],
    )
    full_rows = limit_rows(res, nbytes, limit, skip="keys=")
    figures: dict[str, Any] = {
        "restore": {
            "title": "Figure 2b - restore of the whole state, warm (page cache)",
            "rows": full_rows,
            "note": "limit = the faster page-cache read; limit_over_this_best = best limit time / "
            "best time of the method (1.0 = at the limit)",
        }
    }
    if manager is None:
        figures["restore"]["skipped"] = missing
        remove(work)
        return figures

    progress("partial: counting bytes read from a cold cache")
    try:
        read_full = bytes_read_by(hm_dir, lambda: touch(tensors_of(manager.restore("latest"))))
        read_model = bytes_read_by(
            hm_dir, lambda: touch(tensors_of(manager.restore("latest", keys=["model"])))
        )
        cold: dict[str, Any] = {
            "full restore": sum(read_full.values()),
            "model-only restore": sum(read_model.values()),
            "model tensors": bench.model_nbytes,
            "per file, model-only restore": read_model,
        }
    except (RuntimeError, OSError) as exc:  # no trustworthy count on this machine
        cold = {"error": str(exc)}
    manager.close()
    full = res["highmark restore() + touch"]
    part = res["highmark restore(keys=[model]) + touch"]
    into_full = res["highmark restore(into=live), verified"]
    into_part = res["highmark restore(keys=[model], into=live model)"]
    figures["partial"] = {
        "title": "Figure 4 - partial restore (model only) vs everything",
        "rows": [
            row("highmark restore() + touch", full),
            row(
                "highmark restore(keys=[model]) + touch",
                part,
                fraction_of_full_median=round(part["median"] / full["median"], 3),
            ),
            row("highmark restore(into=live), verified", into_full),
            row(
                "highmark restore(keys=[model], into=live model)",
                into_part,
                fraction_of_full_median=round(into_part["median"] / into_full["median"], 3),
            ),
        ],
        "model_fraction_of_state": round(bench.model_nbytes / nbytes, 3),
        "bytes_read_cold": cold,
    }
    remove(work)
    return figures
