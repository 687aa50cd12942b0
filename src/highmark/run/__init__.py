"""`Run` drives a PyTorch training loop: early stopping, checkpointing, bit-exact resume.

The package holds the loop itself (:mod:`.core`), the resumable DataLoader wrapper
(:mod:`.loader`), preemption signals (:mod:`.signals`), resuming (:mod:`.resume`) and the summary
text (:mod:`.summary`).
"""

from __future__ import annotations

from highmark.run.core import Run
from highmark.run.loader import ResumableLoader

__all__ = ["ResumableLoader", "Run"]
