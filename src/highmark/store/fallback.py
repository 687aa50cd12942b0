"""Restoring one of a run's checkpoints for a manager: the one asked for, or the newest that can be.

Each checkpoint tried is first checked to be what its directory name and its run say it is
(:func:`~highmark.store.identity.check_identity`), then read by
:func:`~highmark.store.restore.read_checkpoint`, which verifies every byte before any reaches an
``into`` tensor. With ``fallback`` a checkpoint that cannot be restored, for any reason
(damaged, missing or unreadable files, a newer format, a copy from another step or run), is
skipped with a warning that says why, for the next one; when none can be restored the error of
the one asked for is raised. A request the checkpoint asked for cannot meet (``keys`` it does
not hold, ``into`` tensors of other shapes) is the caller's to fix and is raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from highmark.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    UnsupportedStateError,
)
from highmark.store.identity import check_identity
from highmark.store.index import IndexState, step_dir
from highmark.store.manifests import ManifestCache
from highmark.store.restore import read_checkpoint
from highmark.store.storage import Storage

__all__ = ["Request", "candidates", "restore_newest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """What a restore asks for: the key paths (None: all), tensors to fill, mapped or owned."""

    keys: Sequence[str] | None = None
    into: Any = None
    zero_copy: bool = False


def candidates(state: IndexState, which: str | int, url: str, fallback: bool) -> list[int]:
    """The steps to try for ``which``: its own, then (``fallback``) every other, newest first.

    Raises:
        CheckpointNotFoundError: ``which`` names no checkpoint.
    """
    step = state.resolve(which, url)
    others = sorted((s for s in state.entries if s != step), reverse=True) if fallback else []
    return [step, *others]


def restore_newest(
    storage: Storage,
    manifests: ManifestCache,
    steps: Sequence[int],
    request: Request,
    run_id: str | None,
    path: Callable[[int], str],
) -> Any:
    """Restores the first of ``steps`` that can be restored; returns its state (a warning says
    when it is not ``steps[0]``). ``path(step)`` names a checkpoint's directory in errors.

    Raises:
        ConfigError, UnsupportedStateError: the request does not fit ``steps[0]``.
        CheckpointError, OSError: why ``steps[0]`` cannot be restored, when no step can be (a
            missing file is a CorruptCheckpointError naming the directory).
    """
    first: BaseException | None = None
    for step in steps:
        try:
            state = _restore(storage, manifests, step, request, run_id, path(step))
        except Exception as err:
            if first is None and isinstance(err, (ConfigError, UnsupportedStateError)):
                raise
            named = _named(err, path(step))
            if len(steps) == 1:  # no fallback
                if named is err:
                    raise
                raise named from err
            first = first or named
            log.warning(
                "%s: checkpoint %s cannot be restored (%s); falling back to the next one",
                storage.url, step_dir(step), _reason(err),
            )  # fmt: skip
            continue
        if step != steps[0]:
            log.warning("%s: restored step %d instead of step %d", storage.url, step, steps[0])
        return state
    assert first is not None
    raise first


def _restore(
    storage: Storage,
    manifests: ManifestCache,
    step: int,
    request: Request,
    run_id: str | None,
    where: str,
) -> Any:
    name = step_dir(step)
    manifest = manifests.get(name)
    check_identity(manifest, step, run_id, where)
    return read_checkpoint(
        storage,
        name,
        manifest,
        keys=request.keys,
        into=request.into,
        zero_copy=request.zero_copy,
    )


def _named(err: Exception, where: str) -> BaseException:
    """``err``, or for a file missing under the checkpoint a CorruptCheckpointError naming it."""
    if isinstance(err, FileNotFoundError) and not isinstance(err, CheckpointError):
        return CorruptCheckpointError(where, str(err))
    return err


def _reason(err: Exception) -> str:
    if isinstance(err, CheckpointError):
        return str(err)
    return f"{type(err).__name__}: {err}"
