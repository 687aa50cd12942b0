"""The checkpoint store: how bytes reach disk or S3 (backend), what they are (format), the async
writer, and :class:`~highmark.store.manager.CheckpointManager` driving the lifecycle.

Submodules are imported on use; this package imports nothing heavy.
"""

from __future__ import annotations
