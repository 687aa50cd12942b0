"""Figure 7: extra peak resident memory of saves and restores, as a multiple of the state size.

Each case runs in a fresh child process (``python -m benchmarks.memory``) that builds the live
state, prepares the case (opens the manager, ...), resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), measures the RSS, runs the case once and reads the peak
(``VmHWM``). Extra = peak - before. A thread also samples ``RssAnon``/``RssFile`` every
millisecond, to tell heap copies from page-cache pages mapped by mmap (which count in RSS but
the kernel can drop). glibc's mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so that memory
freed while building the state cannot hide a later allocation.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import methods
from benchmarks.harness import Context, progress, remove, row, summarize
from benchmarks.state import tensors_of, touch

SAVES = (
    "highmark save (sync)",
    "highmark save (async), 3 saves",
    "torch.save + fsync",
    "safetensors save_file + fsync",
)
RESTORES = (
    "highmark restore(into=live)",
    "highmark restore() + touch",
    "torch.load + load_state_dict",
    "safetensors load_file + load_state_dict",
)
HIGHMARK = {c for c in SAVES + RESTORES if c.startswith("highmark")}


def _status() -> dict[str, int]:
    """The memory lines of /proc/self/status, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Samples RSS (total, anon, file) every millisecond and keeps the peaks."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak = _status()

    def run(self) -> None:
        while not self.stop.is_set():
            now = _status()
            for key in ("VmRSS", "RssAnon", "RssFile"):
                self.peak[key] = max(self.peak[key], now[key])
            time.sleep(0.001)


def _prepare(case: str, bench: Any, directory: str) -> Callable[[], object]:
    """Sets a case up (outside the measurement) and returns the action to measure."""
    if case == "highmark save (sync)":
        mgr = methods.hm_manager(os.path.join(directory, "hm-sync-save"))
        return lambda: mgr.save(1, bench.state)
    if case == "highmark save (async), 3 saves":
        amgr = methods.hm_manager(os.path.join(directory, "hm-async-save"), async_save=True)

        def three() -> None:
            for step in (1, 2, 3):
                amgr.save(step, bench.state)
                amgr.wait()

        return three
    if case == "torch.save + fsync":
        return lambda: methods.torch_save(os.path.join(directory, "out.pt"), bench)
    if case == "safetensors save_file + fsync":
        return lambda: methods.st_save(os.path.join(directory, "out.safetensors"), bench)
    if case.startswith("highmark restore"):
        rmgr = methods.hm_manager(os.path.join(directory, "hm"), read_only=True)
        if "into" in case:
            return lambda: rmgr.restore("latest", into=bench.state)
        return lambda: touch(tensors_of(rmgr.restore("latest")))
    if case == "torch.load + load_state_dict":
        return lambda: methods.load_into_live(
            bench, methods.torch_load, os.path.join(directory, "state.pt")
        )
    if case == "safetensors load_file + load_state_dict":
        return lambda: methods.load_into_live(
            bench, methods.st_load, os.path.join(directory, "state.safetensors")
        )
    raise ValueError(f"unknown memory case {case!r}")


def child(case: str, nbytes: int, directory: str, seed: int) -> dict[str, Any]:
    """Runs one case in this (fresh) process; returns the measurements."""
    import torch

    from benchmarks.state import make_state

    torch.set_num_threads(1)
    bench = make_state(nbytes, seed)
    action = _prepare(case, bench, directory)
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status()
    sampler = Sampler()
    sampler.start()
    result = action()
    peak_hwm = _status()["VmHWM"]
    sampler.stop.set()
    sampler.join()
    del result
    return {
        "case": case,
        "state_bytes": bench.nbytes,
        "rss_before": before["VmRSS"],
        "extra_peak": peak_hwm - before["VmRSS"],
        "extra_peak_anon": sampler.peak["RssAnon"] - before["RssAnon"],
        "extra_peak_file": sampler.peak["RssFile"] - before["RssFile"],
    }


def run_child(case: str, nbytes: int, directory: str, seed: int) -> dict[str, Any]:
    """Runs one case in a child process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "benchmarks.memory", case, str(nbytes), directory, str(seed)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory case {case!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(ctx: Context) -> dict[str, Any]:
    """Measures every case in child processes; returns figure ``memory``."""
    bench = ctx.bench
    work = ctx.workdir("memory")
    methods.torch_save(os.path.join(work, "state.pt"), bench)
    methods.st_save(os.path.join(work, "state.safetensors"), bench)
    missing = methods.highmark_missing()
    cases = list(SAVES + RESTORES)
    if missing is None:
        with methods.hm_manager(os.path.join(work, "hm")) as manager:
            manager.save(1, bench.state)
    else:
        cases = [c for c in cases if c not in HIGHMARK]
    rng = random.Random(f"memory-{ctx.seed}")
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    errors: dict[str, str] = {}
    for rnd in range(ctx.repeat):
        order = cases[:]
        rng.shuffle(order)
        for case in order:
            for scratch in ("hm-sync-save", "hm-async-save", "out.pt", "out.safetensors"):
                remove(os.path.join(work, scratch))
            try:
                samples[case].append(run_child(case, ctx.nbytes, work, ctx.seed))
            except RuntimeError as exc:  # keep measuring the other cases; reported below
                errors.setdefault(case, str(exc)[-600:])
        progress(f"memory: round {rnd + 1}/{ctx.repeat} done")
    remove(work)
    rows = []
    for case, runs in samples.items():
        if not runs:
            continue
        size = runs[0]["state_bytes"]
        rows.append(
            row(
                case,
                summarize([r["extra_peak"] / size for r in runs]),
                unit="x state",
                anon_median=round(statistics.median(r["extra_peak_anon"] / size for r in runs), 3),
                file_mapped_median=round(
                    statistics.median(r["extra_peak_file"] / size for r in runs), 3
                ),
            )
        )
    figure: dict[str, Any] = {
        "title": "Figure 7 - extra peak resident memory (beyond the live state), x state size",
        "rows": rows,
        "note": "extra = peak RSS (VmHWM) - RSS before, in a fresh child per case; anon/file "
        "split from 1 ms sampling (file = page-cache pages mapped by mmap)",
    }
    if missing is not None:
        figure["skipped"] = missing
    if errors:
        figure["error"] = "; ".join(f"{case}: {text}" for case, text in errors.items())
    return {"memory": figure}


def main() -> None:
    """Child entry point: ``python -m benchmarks.memory CASE NBYTES DIR SEED``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case")
    parser.add_argument("nbytes", type=int)
    parser.add_argument("directory")
    parser.add_argument("seed", type=int)
    args = parser.parse_args()
    print(json.dumps(child(args.case, args.nbytes, args.directory, args.seed)))


if __name__ == "__main__":
    main()
