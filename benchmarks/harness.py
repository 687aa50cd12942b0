"""The measurement harness: sizes, shuffled interleaved rounds, statistics and the run context."""

from __future__ import annotations

import gc
import os
import random
import re
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: A measured case: does its own setup, returns the seconds of the part that is measured.
Case = Callable[[], float]

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}


def parse_size(text: str) -> int:
    """Parses a size such as ``10MB``, ``100MB`` or ``1GB`` (decimal units) into bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)\s*", text.upper())
    if match is None:
        raise ValueError(f"size {text!r} is not like 10MB, 100MB or 1GB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def progress(message: str) -> None:
    """Writes one progress line to stderr (stdout stays clean)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], object]) -> float:
    """Runs ``fn`` once and returns the wall-clock seconds it took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def python_busy() -> Iterator[None]:
    """Meanwhile another thread runs pure Python, as a training loop busy in Python code does
    (data preparation, an environment step): it holds the GIL but at the interpreter's switches."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(i * i for i in range(64))

    thread = threading.Thread(target=spin, name="python-busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def summarize(samples: list[float]) -> dict[str, Any]:
    """The min/median/max of a list of samples, with the samples themselves."""
    return {
        "min": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": samples,
    }


@dataclass
class Context:
    """What every figure gets: the state, the sizes, the scratch directory and the settings."""

    size_label: str
    repeat: int
    scratch: str
    seed: int = 0
    bench: Any = None  # state.BenchState, built once per run

    @property
    def nbytes(self) -> int:
        """The bytes of tensor data in the benchmark state."""
        return int(self.bench.nbytes)

    def workdir(self, name: str) -> str:
        """A fresh, empty directory under the scratch directory."""
        path = os.path.join(self.scratch, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path


def interleaved(
    cases: Mapping[str, Case], repeat: int, *, label: str, seed: int = 0, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Runs every case once per round, in a shuffled order, for ``warmup + repeat`` rounds.

    Interleaving puts every method under the same disk and CPU weather, so ratios stay
    meaningful on a noisy machine whose disk changes speed within one run. Warm-up rounds are
    not recorded.

    Returns:
        case name -> summary (min/median/max/samples) in seconds.
    """
    rng = random.Random(f"{label}-{seed}")
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(warmup + repeat):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            gc.collect()
            seconds = cases[name]()
            if rnd >= warmup:
                samples[name].append(seconds)
        kind = "warm-up" if rnd < warmup else f"{rnd - warmup + 1}/{repeat}"
        progress(f"{label}: round {kind} done")
    return {name: summarize(values) for name, values in samples.items()}


def row(name: str, summary: Mapping[str, Any], *, unit: str = "s", **extra: Any) -> dict[str, Any]:
    """A table row: the method's name, its statistics and any derived columns."""
    out = {"name": name, "unit": unit}
    out.update({k: summary[k] for k in ("min", "median", "max", "n", "samples") if k in summary})
    out.update(extra)
    return out


def limit_rows(
    results: Mapping[str, Mapping[str, Any]], nbytes: int, limit_s: float, skip: str
) -> list[dict[str, Any]]:
    """Rows with the best throughput and ``limit_over_this_best`` (best limit time / best time
    of the method; 1.0 = at the limit), for every case whose name does not contain ``skip``."""
    return [
        row(
            name,
            s,
            gbps_best=round(gbps(nbytes, s["min"]), 2),
            limit_over_this_best=round(limit_s / s["min"], 3),
        )
        for name, s in results.items()
        if skip not in name
    ]


def gbps(nbytes: int, seconds: float) -> float:
    """Throughput in GB/s (decimal)."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("inf")


def fsync_path(path: str) -> None:
    """Flushes a file that another library wrote to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Removes a file or a directory tree if it exists."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


@contextmanager
def scratch_dir(parent: str | None) -> Iterator[str]:
    """A temporary directory on the disk being measured, removed afterwards."""
    import tempfile

    path = tempfile.mkdtemp(prefix="highmark-bench-", dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
