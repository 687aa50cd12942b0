"""The methods under comparison: highmark, torch.save/torch.load and safetensors, same state.

Every save here is durable when it returns (fsynced), so that the comparison is fair: highmark
always fsyncs and commits; torch.save and safetensors are given an fsync of the file they wrote.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchmarks.harness import fsync_path
from benchmarks.state import (
    BenchState,
    flatten_for_safetensors,
    load_into,
    tensors_of,
    touch,
    unflatten_from_safetensors,
)


def highmark_missing() -> str | None:
    """Why highmark's CheckpointManager cannot be benchmarked yet, or None when it can."""
    try:
        importlib.import_module("highmark.store.manager").CheckpointManager  # noqa: B018
    except (ImportError, AttributeError) as exc:
        return f"highmark.CheckpointManager not available ({exc})"
    return None


def hm_manager(directory: str, *, async_save: bool = False, **options: Any) -> Any:
    """A highmark CheckpointManager keeping only the latest checkpoint (unless told otherwise)."""
    from highmark.store.manager import CheckpointManager

    options.setdefault("keep_last", 1)
    return CheckpointManager(directory, async_save=async_save, **options)


def torch_save(path: str, bench: BenchState) -> None:
    """``torch.save`` of the whole state to a path, then fsync."""
    torch.save(bench.state, path)
    fsync_path(path)


def torch_load(path: str) -> Any:
    """``torch.load(weights_only=True)`` of the whole state."""
    return torch.load(path, weights_only=True)


def st_save(path: str, bench: BenchState) -> None:
    """``safetensors.torch.save_file`` of the flattened state (param groups as metadata) + fsync."""
    flat, groups = flatten_for_safetensors(bench.state)
    save_file(flat, path, metadata={"param_groups": groups})
    fsync_path(path)


def st_load(path: str) -> dict[str, Any]:
    """``safetensors.torch.load_file`` of the whole state, rebuilt into the nested tree."""
    with safe_open(path, "pt") as f:
        groups = f.metadata()["param_groups"]
    return unflatten_from_safetensors(load_file(path), groups)


def load_and_touch(loader: Any, *args: Any) -> None:
    """Loads with ``loader`` and touches every page of every tensor it returned."""
    touch(tensors_of(loader(*args)))


def load_into_live(bench: BenchState, loader: Any, *args: Any) -> None:
    """Loads with ``loader`` and copies the result into the live model and optimizer."""
    load_into(bench, loader(*args))
