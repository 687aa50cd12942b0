"""The validated manifests of a run's recent checkpoints, reused while their file is unchanged.

Reading and validating a manifest (JSON, its checksum, every tensor entry) is a sizeable part of
a restore (docs/benchmarks.md). A :class:`ManifestCache` keeps the manifests a manager has just
written or read, keyed to the identity of ``manifest.json`` on local disk (device, inode, size,
modification time), so a replaced or edited manifest is read again. Committed checkpoints never
change in place: a forced re-save renames a new directory over the old one. (An in-place edit by
someone else that keeps the file's size, within one tick of the filesystem's clock, would go
unseen.) Object stores are always read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from highmark.store import format as fmt
from highmark.store.restore import checkpoint_path
from highmark.store.storage import Storage

__all__ = ["ManifestCache"]

_Stamp = tuple[int, int, int, int]


class ManifestCache:
    """Validated manifests by checkpoint directory, the ``size`` most recently used.

    Callers must not modify the manifests they get.
    """

    def __init__(self, storage: Storage, size: int = 8) -> None:
        self.storage = storage
        self.size = size
        self._entries: OrderedDict[str, tuple[_Stamp, dict[str, Any]]] = OrderedDict()
        self._mu = threading.Lock()

    def _stamp(self, ckpt_dir: str) -> _Stamp | None:
        path = self.storage.local_path(checkpoint_path(ckpt_dir, fmt.MANIFEST))
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, ckpt_dir: str) -> dict[str, Any]:
        """The checkpoint's manifest: the one held if its file is unchanged, else read anew.

        Raises:
            CorruptCheckpointError, IncompatibleFormatError: as :func:`~highmark.store.format.
                read_manifest`.
        """
        stamp = self._stamp(ckpt_dir)
        with self._mu:
            held = self._entries.get(ckpt_dir)
            if held is not None and stamp is not None and held[0] == stamp:
                self._entries.move_to_end(ckpt_dir)
                return held[1]
        manifest = fmt.read_manifest(self.storage, ckpt_dir)
        self._keep(ckpt_dir, stamp, manifest)
        return manifest

    def put(self, ckpt_dir: str, manifest: dict[str, Any]) -> None:
        """Holds the manifest just written and committed for ``ckpt_dir``."""
        self._keep(ckpt_dir, self._stamp(ckpt_dir), manifest)

    def _keep(self, ckpt_dir: str, stamp: _Stamp | None, manifest: dict[str, Any]) -> None:
        with self._mu:
            self._entries.pop(ckpt_dir, None)
            if stamp is None:
                return
            self._entries[ckpt_dir] = (stamp, manifest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
