"""Figure 6: bytes on disk after 20 checkpoints with keep_best=3, keep_last=1, and prune time.

Twenty synchronous saves of the state, each with a validation loss from a noisy U-shaped curve,
into a manager configured with ``monitor="val_loss", keep_best=3, keep_last=1``: what stays on
disk must be four checkpoints' worth (or three, when the latest is also among the best). Then,
per round, twenty checkpoints saved with everything kept are pruned down to the same retention
with ``CheckpointManager.prune``; the prune alone is timed.
"""

from __future__ import annotations

import functools
import os
import random
from typing import Any

from benchmarks import methods
from benchmarks.harness import Context, progress, remove, row, summarize, timed

CHECKPOINTS = 20


def curve(n: int, seed: int) -> list[float]:
    """A noisy validation loss that falls, bottoms out two-thirds in, then rises (overfitting).

    So the best three are not the latest, and four checkpoints stay.
    """
    rng = random.Random(seed)
    bottom = 2 * n // 3
    return [0.5 + ((i - bottom) / n) ** 2 + rng.gauss(0.0, 0.002) for i in range(n)]


def disk_usage(directory: str) -> dict[str, int]:
    """Apparent bytes, allocated bytes and file count of everything under ``directory``."""
    apparent = allocated = files = 0
    for root, _, names in os.walk(directory):
        for name in names:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return {"apparent_bytes": apparent, "allocated_bytes": allocated, "files": files}


def run(ctx: Context) -> dict[str, Any]:
    """Measures retention on disk and prune; returns figure ``storage``."""
    title = "Figure 6 - storage: 20 checkpoints with keep_best=3, keep_last=1"
    missing = methods.highmark_missing()
    if missing is not None:
        return {"storage": {"title": title, "rows": [], "skipped": missing}}
    from highmark import KeepBest, KeepLast, Monitor, Retention

    state = ctx.bench.state
    losses = curve(CHECKPOINTS, ctx.seed + 1)
    work = ctx.workdir("storage")
    kept_dir = os.path.join(work, "kept")
    with methods.hm_manager(kept_dir, monitor="val_loss", keep_best=3, keep_last=1) as manager:
        infos = [
            manager.save(step, state, metrics={"val_loss": loss})
            for step, loss in enumerate(losses, start=1)
        ]
        kept = manager.checkpoints()
    one = infos[0].size
    usage = disk_usage(kept_dir)
    best3 = sorted(range(CHECKPOINTS), key=lambda i: (losses[i], i))[:3]
    expected = {i + 1 for i in best3} | {CHECKPOINTS}
    remove(kept_dir)

    prune_s = []
    monitor = Monitor("val_loss", mode="min")
    retention = Retention([KeepBest(3, monitor), KeepLast(1)])
    for rnd in range(ctx.repeat):
        pdir = os.path.join(work, f"prune-{rnd}")
        with methods.hm_manager(pdir, keep_last=CHECKPOINTS + 1) as manager:
            for step, loss in enumerate(losses, start=1):
                manager.save(step, state, metrics={"val_loss": loss})
            prune_s.append(timed(functools.partial(manager.prune, retention)))
            after = len(manager.checkpoints())
        remove(pdir)
        progress(f"storage: prune round {rnd + 1}/{ctx.repeat}: {after} checkpoints left")
    remove(work)
    return {
        "storage": {
            "title": title,
            "rows": [
                row(f"prune {CHECKPOINTS} -> {len(expected)} checkpoints", summarize(prune_s))
            ],
            "checkpoint_bytes": one,
            "kept_steps": sorted(info.step for info in kept),
            "expected_steps": sorted(expected),
            "disk": usage,
            "checkpoints_worth": round(usage["apparent_bytes"] / one, 3),
            "expected_checkpoints_worth": len(expected),
        }
    }
