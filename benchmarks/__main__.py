"""Entry point: ``python -m benchmarks [--size 100MB] [--repeat 5] [--only ...] [--out DIR]``.

Builds the benchmark state once, runs the chosen figures (each interleaving its methods in
shuffled rounds), checks the issue's targets and writes ``<out>/<date>-<size>.json`` and
``.md``. Progress goes to stderr; the paths of the two files are printed on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

FIGURES = ("limits", "save", "restore", "training", "stopping", "storage", "memory")


def _runners() -> dict[str, Callable[[Any], dict[str, Any]]]:
    from benchmarks import (
        limits,
        memory,
        restoring,
        saving,
        stopping_overhead,
        storage,
        training,
    )

    return {
        "limits": lambda ctx: {"limits": limits.run(ctx)},
        "save": saving.run,  # figures 2a + 3a
        "restore": restoring.run,  # figures 2b + 4
        "training": training.run,  # figure 3b
        "stopping": stopping_overhead.run,  # figure 5
        "storage": storage.run,  # figure 6
        "memory": memory.run,  # figure 7
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure highmark against the physical limits, torch.save and safetensors.",
    )
    parser.add_argument("--size", default="100MB", help="state size: 10MB, 100MB or 1GB")
    parser.add_argument("--repeat", type=int, default=5, help="measured rounds per figure")
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated figures of {FIGURES}"
    )
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
        help="directory for <date>-<size>.json and .md (default: benchmarks/results)",
    )
    parser.add_argument(
        "--scratch", default=None, help="parent of the scratch directory (default: system tmp)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tag", default="", help="appended to the file names, e.g. io -> <date>-1GB-io.json"
    )
    args = parser.parse_args(argv)
    args.only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(args.only) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; choose from {FIGURES}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _machine() -> str:
    import psutil

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Linux {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the suite; returns the exit status (1 when a figure failed)."""
    args = parse_args(argv)
    import safetensors
    import torch

    from benchmarks import report
    from benchmarks.harness import Context, parse_size, progress, scratch_dir
    from benchmarks.state import make_state

    torch.set_num_threads(1)  # copies with two threads were once 20x slower on this machine
    nbytes = parse_size(args.size)
    started = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    progress(f"building a {args.size} state")
    bench = make_state(nbytes, args.seed)
    results: dict[str, Any] = {
        "meta": {
            "started": stamp,
            "size": args.size,
            "repeat": args.repeat,
            "seed": args.seed,
            "figures": args.only,
            "state": bench.describe(),
            "machine": _machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "safetensors": safetensors.__version__,
        },
        "figures": {},
    }
    failed = False
    runners = _runners()
    with scratch_dir(args.scratch) as scratch:
        ctx = Context(args.size, args.repeat, scratch, seed=args.seed, bench=bench)
        for name in args.only:
            progress(f"figure {name}")
            try:
                results["figures"].update(runners[name](ctx))
            except Exception as exc:  # report the failure, keep measuring the rest
                failed = True
                traceback.print_exc()
                results["figures"][name] = {"title": name, "error": f"{type(exc).__name__}: {exc}"}
    failed = failed or any("error" in fig for fig in results["figures"].values())
    results["meta"]["seconds"] = time.time() - started
    results["targets"] = report.targets(results)
    stem = f"{stamp[:10]}-{args.size}" + (f"-{args.tag}" if args.tag else "")
    for path in report.write(results, args.out, stem):
        print(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
