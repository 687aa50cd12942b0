"""Which run and which step a checkpoint belongs to: the run id, and the check of a manifest.

A run gets a random id when it is first opened for writing, kept in ``highmark.json``; every
manifest written since records it (``"run"``) next to its ``"step"``. A checkpoint whose
manifest names another step than its directory, or another run, is a copy from elsewhere (an
older step copied under a newer name, a directory of another run): restoring it is refused with
:class:`~highmark.errors.CorruptCheckpointError` naming the directory. Checkpoints written before
run ids existed record none and are accepted; a run opened read-only without an id is not
checked for it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from highmark.__about__ import __version__
from highmark.errors import CheckpointError, CorruptCheckpointError
from highmark.store.index import INDEX, IndexState, step_dir
from highmark.store.manifests import ManifestCache
from highmark.store.storage import Storage

__all__ = ["check_identity", "ensure_run_id"]

log = logging.getLogger(__name__)


def check_identity(manifest: Mapping[str, Any], step: int, run_id: str | None, where: str) -> None:
    """Checks that ``manifest`` is that of checkpoint ``step`` of the run ``run_id``.

    Raises:
        CorruptCheckpointError: naming ``where`` (the checkpoint's directory), when the manifest
            records another step, or another run (a manifest without a run id, written before
            run ids existed, passes; so does any manifest when ``run_id`` is None).
    """
    if manifest["step"] != step:
        raise CorruptCheckpointError(
            where,
            f"its manifest is that of step {manifest['step']}, not {step}: a copy of another "
            "checkpoint under this name; not restored",
        )
    theirs = manifest.get("run")
    if run_id is not None and theirs is not None and theirs != run_id:
        raise CorruptCheckpointError(
            where, f"written by another run (run id {theirs}, this run's is {run_id}); not restored"
        )


def ensure_run_id(
    storage: Storage, state: IndexState, manifests: ManifestCache, read_only: bool
) -> None:
    """Gives the run an id when its index has none, and records it in ``highmark.json``.

    The id is the one most of the run's checkpoints record (an index rebuilt from the
    directories, or rewritten by an older highmark), else a new random one. A read-only run
    keeps none.
    """
    if state.run_id is not None or read_only:
        return
    recorded: Counter[str] = Counter()
    for step in sorted(state.entries):
        try:
            run = manifests.get(step_dir(step)).get("run")
        except (CheckpointError, OSError):  # unreadable: it says nothing about the run
            continue
        if isinstance(run, str):
            recorded[run] += 1
    if recorded:
        state.run_id = recorded.most_common(1)[0][0]
        log.info("%s: the run's id %s is taken from its checkpoints", storage.url, state.run_id)
    else:
        state.run_id = uuid.uuid4().hex
    storage.replace_atomic(INDEX, state.to_bytes(__version__))
