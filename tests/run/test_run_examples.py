"""The examples run (with small budgets), so they cannot rot."""

from __future__ import annotations

import importlib.util
import signal
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from run_helpers import Child

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_digits_trains_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _load("train_digits")
    out = str(tmp_path / "run")
    assert example.main(["--out", out, "--max-epochs", "2"]) == 0
    assert "epochs run:  2 of 2" in capsys.readouterr().out
    assert example.main(["--out", out, "--max-epochs", "3"]) == 0
    text = capsys.readouterr().out
    assert "epoch 2: val_loss" in text
    assert "resumed from the checkpoint of epoch 1" in text


def test_resume_after_ctrl_c_continues_mid_epoch(tmp_path: Path) -> None:
    main: Callable[[list[str]], int] = _load("resume_after_ctrl_c").main
    argv = ("--out", str(tmp_path / "run"), "--max-epochs", "2")
    first = Child(None, None, *argv, main=main)
    assert first.read_until(lambda line: line == "epoch 1 batch 5")
    first.send(signal.SIGINT)
    assert first.finish() == 130
    assert "To resume" in first.output
    second = Child(None, None, *argv, main=main)
    assert second.finish() == 0, second.output
    batches = [line for line in second.lines if line.startswith("epoch ")]
    epoch, _, count = batches[0].split()[1:]
    assert epoch == "1"
    assert int(count) > 5  # the loader skipped the batches consumed before Ctrl-C
    assert "resumed from the checkpoint of epoch 1" in second.output
