"""A writer process for the lock and verify tests: a real CheckpointManager in its own process.

Usage:
    ``python writer_child.py loop RUN ELEMENTS``: saves steps 0, 1, 2, ... in a loop
    (keep_best=1 by a loss that grows with the step, so step 0 stays as the best; keep_last=1),
    printing each step once it is committed, until it is killed.
    ``python writer_child.py serve RUN``: saves step 0, prints ``ready``, then for each line
    ``save`` on stdin saves the next step and prints ``saved N`` (or ``error TYPE: MESSAGE``);
    closes the manager at the end of stdin.
"""

from __future__ import annotations

import sys

import numpy as np


def state_for(step: int, elements: int) -> dict[str, object]:
    """The state saved at ``step``."""
    return {"model": {"w": np.arange(elements, dtype=np.float32) + step}, "step": step}


def loop(run: str, elements: int) -> None:
    from highmark.store.manager import CheckpointManager

    mgr = CheckpointManager(run, monitor="loss", keep_best=1, keep_last=1)
    step = 0
    while True:
        mgr.save(step, state_for(step, elements), {"loss": float(step)})
        print(step, flush=True)
        step += 1


def serve(run: str) -> None:
    from highmark.store.manager import CheckpointManager

    with CheckpointManager(run, keep_best=0, keep_last=10) as mgr:
        mgr.save(0, state_for(0, 10))
        print("ready", flush=True)
        step = 1
        for line in sys.stdin:
            if line.strip() != "save":
                continue
            try:
                mgr.save(step, state_for(step, 10))
            except Exception as err:
                print(f"error {type(err).__name__}: {err}", flush=True)
            else:
                print(f"saved {step}", flush=True)
            step += 1


if __name__ == "__main__":
    if sys.argv[1] == "loop":
        loop(sys.argv[2], int(sys.argv[3]))
    else:
        serve(sys.argv[2])
