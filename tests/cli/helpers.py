"""Helpers of the CLI tests: real runs (CheckpointManager + HistoryWriter) and golden files."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import HistoryWriter

# steps 1..6; best val_loss 0.5 at step 3; keep_best=2 + keep_last=1 + keep_every=4 keeps 2,3,4,6
VAL_LOSS = [0.9, 0.7, 0.5, 0.55, 0.6, 0.65]
VAL_ACC = [0.6, 0.7, 0.8, 0.79, 0.78, 0.77]


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


@dataclass
class RunFixture:
    """A run on disk or S3 plus what the test needs to reach it from the command line."""

    url: str
    storage_options: dict[str, Any] | None
    models: dict[int, dict[str, torch.Tensor]]  # step -> the model's state_dict saved there

    @property
    def options(self) -> list[str]:
        """``--storage-option`` arguments for the CLI (empty for a local run)."""
        args: list[str] = []
        for key, value in (self.storage_options or {}).items():
            if isinstance(value, dict):
                args += [f"-S{key}.{k}={v}" for k, v in value.items()]
            else:
                args += [f"-S{key}={value}"]
        return args


def write_run(
    url: str,
    storage_options: dict[str, Any] | None = None,
    losses: list[float] = VAL_LOSS,
    seed: int = 0,
) -> RunFixture:
    """Trains nothing, but saves a real torch model/optimizer at steps 1..n with fixed metrics."""
    model = make_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    kwargs = {"storage_options": storage_options} if storage_options else {}
    models: dict[int, dict[str, torch.Tensor]] = {}
    started = time.time()
    with CheckpointManager(url, monitor="val_loss", keep_best=2, keep_last=1, keep_every=4,
                           **kwargs) as manager:  # fmt: skip
        history = HistoryWriter(manager.storage)
        for step, (loss, acc) in enumerate(zip(losses, VAL_ACC, strict=False), start=1):
            out = model(torch.ones(2, 4)).sum()
            opt.zero_grad()
            out.backward()
            opt.step()
            metrics = {"val_loss": loss, "val_acc": acc, "train_loss": loss - 0.1}
            manager.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict()},
                         metrics=metrics, metadata={"epoch": step})  # fmt: skip
            models[step] = {k: v.clone() for k, v in model.state_dict().items()}
            history.append({"step": step, "epoch": step, "time": time.time(), "metrics": metrics})
        best = min(range(len(losses)), key=lambda i: losses[i])
        history.write_run_info({
            "monitor": "val_loss", "mode": "min", "unit": "epoch", "budget": 10,
            "started": started, "updated": time.time(), "wall_time": 12.5, "status": "stopped",
            "stop_reason": "val_loss did not improve for 3 evaluations",
            "stop_cause": "patience_exhausted", "stop_step": len(losses), "best_step": best + 1,
            "best_metrics": {"val_loss": losses[best], "val_acc": VAL_ACC[best]},
            "epochs_run": len(losses), "steps_run": len(losses), "policy": {}, "resumed": [],
        })  # fmt: skip
    return RunFixture(url, storage_options, models)


GOLDEN = Path(__file__).parent / "golden"
VOLATILE = {"created", "age_s", "size", "total_bytes", "bytes", "wall_time_now"}


def normalise(value: Any, roots: dict[str, str]) -> Any:
    """Replaces volatile fields by placeholders and run locations by names like <run-a>."""
    if isinstance(value, dict):
        return {
            k: f"<{k}>" if k in VOLATILE and value[k] is not None else normalise(v, roots)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalise(v, roots) for v in value]
    if isinstance(value, str):
        for root, name in roots.items():
            value = value.replace(root, name)
    return value


def check_golden(name: str, data: Any) -> None:
    """Compares with tests/cli/golden/<name>; HIGHMARK_REGOLD=1 rewrites the file."""

    path = GOLDEN / name
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if os.environ.get("HIGHMARK_REGOLD"):
        path.write_text(text)
    assert json.loads(text) == json.loads(path.read_text())
