"""The Hugging Face callback in the Trainer's own checkpoints (``ExportableState``) and best fields,
with a real Trainer, a tiny BERT built from a config, and real ``resume_from_checkpoint``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from highmark.criteria import MaxSteps
from highmark.errors import ConfigError
from highmark.integrations.transformers import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_history

from .conftest import load_example

ex = load_example("transformers_tiny")

# The toy curve: evaluations every 4 steps, eval_loss lowest at step 4, rising after it; with
# patience 2 an uninterrupted run stops at step 12.


def train(
    callback: HighmarkCallback,
    max_steps: int,
    out: Path,
    resume_from: str | None = None,
    **args: Any,
) -> Any:
    """Trains with the Trainer saving its own checkpoint at every evaluation into ``out``."""
    settings: dict[str, Any] = {"save_strategy": "steps", "save_steps": 4, **args}
    trainer = ex.make_trainer(ex.make_model(), [callback], max_steps, str(out), **settings)
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer


def best_eval_loss(run_dir: str) -> tuple[int, float, str]:
    with CheckpointManager(run_dir, monitor="eval_loss", read_only=True) as ckpt:
        best = ckpt.best
        assert best is not None
        return best.step, best.metrics["eval_loss"], best.path


def test_the_trainer_checkpoint_holds_the_stopper_state(run_dir: str, tmp_path: Path) -> None:
    callback = HighmarkCallback(run_dir, patience=2)
    train(callback, 8, tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "checkpoint-8" / "trainer_state.json").read_text())
    ours = saved["stateful_callbacks"]["HighmarkCallback"]["attributes"]["_highmark_state"]
    assert ours["directory"] == run_dir
    assert ours["stopper"]["n_updates"] == 2
    assert ours["stopper"]["patience"] == callback.stopper.state_dict()["patience"]


def test_resume_from_checkpoint_continues_the_stopper(run_dir: str, tmp_path: Path) -> None:
    train(HighmarkCallback(run_dir, patience=2), 8, tmp_path / "hf")
    resumed = HighmarkCallback(run_dir, patience=2)
    trainer = train(resumed, 60, tmp_path / "hf", resume_from=str(tmp_path / "hf/checkpoint-8"))
    assert resumed.session.resumed_from == 8
    assert resumed.stopper.best_step == 4
    assert resumed.stopper.stopped_step == 12  # where the uninterrupted run stops
    assert trainer.state.global_step == 12
    assert [r["step"] for r in read_history(run_dir)] == [4, 8, 12]


def test_resume_from_an_older_checkpoint_replaces_the_later_highmark_steps(
    run_dir: str, tmp_path: Path
) -> None:
    train(HighmarkCallback(run_dir, patience=2, keep_last=2), 8, tmp_path / "hf")
    resumed = HighmarkCallback(run_dir, patience=2, keep_last=2)
    train(resumed, 60, tmp_path / "hf", resume_from=str(tmp_path / "hf/checkpoint-4"))
    assert resumed.stopper.stopped_step == 12
    assert [r["step"] for r in read_history(run_dir)] == [4, 8, 12]  # step 8 once, the new one
    with CheckpointManager(run_dir, monitor="eval_loss", read_only=True) as ckpt:
        assert [c.step for c in ckpt.checkpoints()] == [4, 8, 12]


def test_the_trainer_best_fields_name_highmarks_best_checkpoint(
    run_dir: str, tmp_path: Path
) -> None:
    trainer = train(HighmarkCallback(run_dir, patience=2), 60, tmp_path / "hf")
    step, value, path = best_eval_loss(run_dir)
    assert step == 4
    assert trainer.state.best_metric == value
    assert trainer.state.best_model_checkpoint == path
    assert Path(path).is_dir()


def test_the_trainer_best_fields_survive_resume_from_checkpoint(
    run_dir: str, tmp_path: Path
) -> None:
    train(HighmarkCallback(run_dir, patience=2), 8, tmp_path / "hf")
    out = tmp_path / "hf"
    trainer = train(HighmarkCallback(run_dir, patience=2), 60, out, str(out / "checkpoint-8"))
    _, value, path = best_eval_loss(run_dir)
    assert (trainer.state.best_metric, trainer.state.best_model_checkpoint) == (value, path)


def test_the_trainer_keeps_its_own_best_when_it_ranks_checkpoints(
    run_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    trainer = train(HighmarkCallback(run_dir, patience=2), 60, out, metric_for_best_model="loss")
    assert trainer.state.best_model_checkpoint == str(out / "checkpoint-4")


def test_with_save_total_limit_1_the_trainers_last_checkpoint_is_kept(
    run_dir: str, tmp_path: Path
) -> None:
    # The Trainer deletes every checkpoint but best_model_checkpoint at the end when the limit
    # is 1: pointing it at highmark's run would delete the Trainer's last checkpoint.
    out = tmp_path / "hf"
    trainer = train(HighmarkCallback(run_dir, patience=2), 60, out, save_total_limit=1)
    _, value, _ = best_eval_loss(run_dir)
    assert trainer.state.best_metric == value
    assert trainer.state.best_model_checkpoint is None
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-12"]


def test_restore_callback_states_rebuilds_the_callback_with_its_stopper(
    run_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    train(HighmarkCallback(run_dir, patience=2, min_delta=0.001), 8, out)
    given = HighmarkCallback(run_dir, patience=2, min_delta=0.001)
    trainer = train(
        given, 60, out, str(out / "checkpoint-8"), restore_callback_states_from_checkpoint=True
    )
    (rebuilt,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, HighmarkCallback)]
    assert rebuilt is not given  # the Trainer's rule for stateful callbacks
    assert rebuilt.stopper.monitor.min_delta == 0.001
    assert rebuilt.stopper.stopped_step == 12
    assert trainer.state.global_step == 12


def test_restore_callback_states_cannot_rebuild_criteria_and_says_so(
    run_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    train(HighmarkCallback(run_dir, patience=2, criteria=[MaxSteps(100)]), 8, out)
    given = HighmarkCallback(run_dir, patience=2, criteria=[MaxSteps(100)])
    with pytest.raises(ConfigError, match="criteria"):
        train(
            given, 60, out, str(out / "checkpoint-8"), restore_callback_states_from_checkpoint=True
        )


def test_without_restore_callback_states_criteria_continue(run_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    train(HighmarkCallback(run_dir, patience=2, criteria=[MaxSteps(100)]), 8, out)
    given = HighmarkCallback(run_dir, patience=2, criteria=[MaxSteps(100)])
    train(given, 60, out, str(out / "checkpoint-8"))
    assert given.stopper.stopped_step == 12
    # its count carried on from the checkpoint: steps 4 and 8 (the stop at 12 is patience's,
    # checked before the criteria); a fresh criterion would have counted step 12 alone
    assert given.stopper.criteria[0].state_dict()["count"] == 2
