"""Verification of a run's checkpoints: real damage is reported, a live writer's work is not.

Verify checks a fixed list of steps: the view of the run it started from (the manager's index).
The writer may commit, replace or delete checkpoints meanwhile. A checkpoint whose check finds
problems is damaged when, after the check, it is still the same committed checkpoint (its
manifest unchanged), or when it was absent all along although the run's index lists it. One
that is gone or going and that the index no longer lists was deleted by the writer meanwhile
(the writer writes the index before it deletes): it is reported as removed, not damaged. One
that was saved again meanwhile (``force=True``) is checked again. Damage is never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import xxhash

from highmark.errors import CheckpointError
from highmark.store import format as fmt
from highmark.store.index import load_index, step_dir
from highmark.store.restore import checkpoint_path
from highmark.store.storage import Storage

__all__ = ["CheckpointStatus", "VerifyReport", "verify_steps"]

#: How often a checkpoint that keeps being saved again while it is checked is checked again.
ATTEMPTS = 5


@dataclass
class CheckpointStatus:
    """The verification result of one checkpoint (problems: run-relative file, reason).

    ``removed``: the writer deleted it while verify ran (it was not checked and is not damaged).
    """

    step: int
    path: str
    problems: list[tuple[str, str]] = field(default_factory=list)
    removed: bool = False

    @property
    def ok(self) -> bool:
        """Whether every file is present and matches its checksum (or it was removed)."""
        return not self.problems

    @property
    def damaged(self) -> list[tuple[str, str]]:
        """Every damaged, missing or unexpected file as (its full path, reason); the
        checkpoint's own path when the problem is the checkpoint as a whole."""
        root = self.path.rstrip("/").rpartition("/")[0]
        return [(f"{root}/{rel}" if rel else self.path, why) for rel, why in self.problems]


@dataclass
class VerifyReport:
    """Which checkpoints and files are intact or damaged (verification never raises for damage)."""

    checkpoints: list[CheckpointStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every checkpoint verified intact (or was removed by the writer meanwhile)."""
        return all(c.ok for c in self.checkpoints)

    @property
    def damaged(self) -> list[tuple[str, str]]:
        """Every damaged, missing or unexpected file as (path, reason)."""
        return [item for c in self.checkpoints for item in c.damaged]

    @property
    def removed(self) -> list[int]:
        """The steps the writer deleted while verify ran (not checked, not damaged)."""
        return [c.step for c in self.checkpoints if c.removed]


def _identity(storage: Storage, name: str) -> str | None:
    """What tells one save of a checkpoint from another: a hash of its manifest's bytes (they
    hold its creation time); None when it is not committed or has no readable manifest."""
    try:
        if not storage.is_committed(name):
            return None
        return xxhash.xxh3_64_hexdigest(storage.read_bytes(checkpoint_path(name, fmt.MANIFEST)))
    except OSError:
        return None


def _problems(storage: Storage, name: str) -> list[tuple[str, str]]:
    try:
        if not storage.is_committed(name):
            return [("", "not committed")]
        return fmt.verify_checkpoint(storage, name)
    except (CheckpointError, OSError) as err:
        return [(checkpoint_path(name, fmt.MANIFEST), str(err))]


def listed_in_index(storage: Storage) -> Callable[[int], bool]:
    """Whether the run's index on storage lists a step now (True when it cannot tell)."""

    def listed(step: int) -> bool:
        try:
            state = load_index(storage)
        except (CheckpointError, OSError):
            return True
        return state is None or step in state.entries

    return listed


def verify_steps(
    storage: Storage,
    steps: list[int],
    path: Callable[[int], str],
    listed: Callable[[int], bool] | None = None,
) -> VerifyReport:
    """Verifies the files of the given checkpoints; damage is reported, never raised.

    Args:
        storage: The run's storage.
        steps: The checkpoints to check (the view verify started from).
        path: The path or URL of a step's checkpoint, for the report.
        listed: Whether the run still lists a step now (the writer's own index, when it is the
            writer that verifies); by default the run's index on storage is read.
    """
    listed = listed or listed_in_index(storage)
    report = VerifyReport()
    for step in steps:
        name = step_dir(step)
        status = CheckpointStatus(step, path(step))
        for _ in range(ATTEMPTS):
            before = _identity(storage, name)
            status.problems = _problems(storage, name)
            if not status.problems:
                break
            after = _identity(storage, name)
            if after is not None and after == before:  # the same committed checkpoint: damaged
                break
            if not listed(step):  # gone or going: deleted by the writer since verify started
                status.problems, status.removed = [], True
                break
            if after == before:  # absent all along, yet listed: damaged
                break
            # saved again while it was checked: check the new one
        report.checkpoints.append(status)
    return report
