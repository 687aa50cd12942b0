"""The child of the kill test: saves a deterministic state per step until it is killed.

Usage: ``python kill_child.py RUN_URL SEED START_STEP ASYNC [STORAGE_OPTIONS_JSON]``.
Prints ``ready`` once the run is open, then the step of each save known to be committed (sync:
after ``save`` returns; async: step N-1 after ``save(N)`` returns, since a save waits for the
one in flight). Between saves it busy-spins for a random time, so the parent's SIGKILL lands
anywhere on the save path.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import numpy as np

SIZES = (1_000, 250_000, 2_000_000)  # float32 elements: 4 KB, 1 MB, 8 MB


def state_for(step: int) -> dict[str, Any]:
    """The state saved at ``step`` (the parent recomputes it to check a restore)."""
    n = SIZES[step % len(SIZES)]
    return {
        "model": {"w": np.arange(n, dtype=np.float32) + step, "b": np.full(7, step, np.int64)},
        "opt": {"m": np.arange(step % 5 + 1, dtype=np.float64) * step, "lr": 0.5 / (step + 1)},
        "step": step,
    }


def main() -> None:
    from highmark.store.manager import CheckpointManager

    url, seed, start, use_async = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
    rng = random.Random(seed)
    mgr = CheckpointManager(
        url, keep_best=0, keep_last=2, async_save=use_async == "1", storage_options=options
    )
    print("ready", flush=True)
    step = start
    while True:
        spin_until = time.perf_counter() + rng.random() * 0.02
        while time.perf_counter() < spin_until:
            pass
        mgr.save(step, state_for(step), {"loss": 1.0 / (step + 1)})
        committed = step - 1 if mgr.async_save else step
        if committed >= start:
            print(committed, flush=True)
        step += 1


if __name__ == "__main__":
    main()
