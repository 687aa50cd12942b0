"""Figures 2a and 3a: synchronous save of the whole state, and the stall of an async save.

One set of shuffled rounds holds every writer: the raw write limit (new file + fsync of the same
byte count), highmark's synchronous save, highmark's async save (the time ``save()`` blocks; the
background write is then awaited outside the measurement), ``torch.save`` + fsync and
``safetensors.save_file`` + fsync. Best is compared with best, median with median. One more
case times an async save until it is durable while another thread runs Python, as a training
loop busy in Python code does: the background write then waits for the GIL after each system
call.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks import methods
from benchmarks.harness import (
    Context,
    interleaved,
    limit_rows,
    python_busy,
    remove,
    row,
    summarize,
    timed,
)
from benchmarks.limits import state_bytes, write_fsync
from benchmarks.state import tensors_of

BUSY = "highmark save (async): save + wait, another thread running Python"


def run(ctx: Context) -> dict[str, Any]:
    """Measures the savers; returns figures ``save`` and ``async``."""
    bench = ctx.bench
    work = ctx.workdir("save")
    buf = state_bytes(tensors_of(bench.state))
    raw = os.path.join(work, "raw.bin")
    tpath = os.path.join(work, "state.pt")
    spath = os.path.join(work, "state.safetensors")

    def fresh(path: str, fn: Any) -> float:
        remove(path)
        return timed(fn)

    cases = {
        "limit: write new file + fsync": lambda: fresh(raw, lambda: write_fsync(raw, buf)),
        "torch.save + fsync": lambda: fresh(tpath, lambda: methods.torch_save(tpath, bench)),
        "safetensors save_file + fsync": lambda: fresh(
            spath, lambda: methods.st_save(spath, bench)
        ),
    }
    missing = methods.highmark_missing()
    managers: dict[str, Any] = {}
    if missing is None:
        # Every writer deletes its previous output immediately before its timed save, as the raw
        # limit does. On this kind of VM, memory freed a few seconds earlier has been handed
        # back to the host, and writing into the page cache then costs a host fault per page
        # (1 GB: ~4 s instead of ~0.3 s), so deleting at different times is not comparable.
        # highmark's synchronous save therefore writes into a new run directory each round,
        # the previous one removed just before (the manager is opened outside the timing).
        from highmark import KeepLast, Retention

        keep = ctx.repeat + 3
        last = Retention([KeepLast(1)])
        sync_dir = os.path.join(work, "hm-sync")
        asy = methods.hm_manager(os.path.join(work, "hm-async"), async_save=True, keep_last=keep)
        deferred = methods.hm_manager(
            os.path.join(work, "hm-deferred"), async_save="deferred", keep_last=keep
        )
        managers["async"] = asy
        managers["deferred"] = deferred
        steps = {"sync": 0, "async": 0, "deferred": 0}
        async_total: list[float] = []
        fenced: list[float] = []

        def hm_sync() -> float:
            steps["sync"] += 1
            if "sync" in managers:
                managers.pop("sync").close()
            remove(sync_dir)
            sync = managers["sync"] = methods.hm_manager(sync_dir)
            return timed(lambda: sync.save(steps["sync"], bench.state))

        def hm_async() -> float:
            # The blocking part copies into reused host buffers and writes nothing: the
            # previous checkpoint is pruned after the background write, outside the timing.
            steps["async"] += 1
            blocked = timed(lambda: asy.save(steps["async"], bench.state))
            async_total.append(blocked + timed(asy.wait))
            asy.prune(last)
            return blocked

        def hm_async_busy() -> float:
            steps["async"] += 1
            with python_busy():
                seconds = timed(lambda: (asy.save(steps["async"], bench.state), asy.wait()))
            asy.prune(last)
            return seconds

        def hm_deferred() -> float:
            # The copy runs in the background too. "+ fence" is the worst case: the training
            # loop changes the state at once, so it waits for the whole copy right away.
            steps["deferred"] += 1
            blocked = timed(lambda: deferred.save(steps["deferred"], bench.state))
            fenced.append(blocked + timed(deferred.fence))
            deferred.wait()
            deferred.prune(last)
            return blocked

        cases["highmark save (sync)"] = hm_sync
        cases["highmark save (async): blocking part"] = hm_async
        cases[BUSY] = hm_async_busy
        cases["highmark save (deferred async): blocking part"] = hm_deferred

    res = interleaved(cases, ctx.repeat, label="save", seed=ctx.seed)
    for manager in managers.values():
        manager.close()
    remove(work)

    limit = res["limit: write new file + fsync"]
    rows = limit_rows(res, buf.size, limit["min"], skip="async")
    figures: dict[str, Any] = {
        "save": {
            "title": "Figure 2a - synchronous save of the whole state (fsynced, committed)",
            "rows": rows,
            "note": "limit_over_this_best = best raw write time / best time of the method "
            "(1.0 = at the limit)",
        }
    }
    if missing is not None:
        figures["save"]["skipped"] = missing
        return figures
    sync_s = res["highmark save (sync)"]
    block = res["highmark save (async): blocking part"]
    total = async_total[-ctx.repeat :]
    figures["async"] = {
        "title": "Figure 3a - async save: time save() blocks the training loop",
        "rows": [
            row("highmark save (sync)", sync_s),
            row(
                "highmark save (async): blocking part",
                block,
                fraction_of_sync_median=round(block["median"] / sync_s["median"], 3),
                fraction_of_sync_best=round(block["min"] / sync_s["min"], 3),
            ),
            row(
                "highmark save (async): save + wait",
                summarize(total),
            ),
            row(BUSY, res[BUSY]),
            row(
                "highmark save (deferred async): blocking part",
                res["highmark save (deferred async): blocking part"],
                fraction_of_sync_median=round(
                    res["highmark save (deferred async): blocking part"]["median"]
                    / sync_s["median"],
                    3,
                ),
                fraction_of_sync_best=round(
                    res["highmark save (deferred async): blocking part"]["min"] / sync_s["min"], 3
                ),
            ),
            row(
                "highmark save (deferred async): save + fence at once",
                summarize(fenced[-ctx.repeat :]),
            ),
        ],
    }
    return figures
