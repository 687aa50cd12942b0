"""`Run` drives a PyTorch training loop: early stopping, checkpointing, bit-exact resume.

The package holds the Run object (:mod:`.core`), the loop it drives (:mod:`.loop`), what a
checkpoint holds and when it is written (:mod:`.saving`), the resumable DataLoader wrapper
(:mod:`.loader`), preemption signals (:mod:`.signals`), resuming (:mod:`.resume`) and the summary
text (:mod:`.summary`).
"""

from __future__ import annotations

from highmark.run.core import Run
from highmark.run.loader import ResumableLoader

__all__ = ["ResumableLoader", "Run"]
