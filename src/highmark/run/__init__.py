"""`Run` drives a PyTorch training loop: early stopping, checkpointing, bit-exact resume.

The package holds the Run object (:mod:`.core`), the loop it drives (:mod:`.loop`), what a
checkpoint holds and when it is written (:mod:`.saving`), the resumable DataLoader wrapper
(:mod:`.loader`), preemption signals (:mod:`.signals`), resuming (:mod:`.resume`) and ``run.json``
with the summary text (:mod:`.summary`). The helpers share the run's :class:`~.state.RunState`,
passed explicitly: none of them imports the Run. ``highmark.Run`` and ``highmark.ResumableLoader``
are the public names; this package imports nothing.
"""

from __future__ import annotations
