"""Run driving an epoch or step loop: stopping, saving, restoring the best, summary, errors."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import TinyModel, nudge

from highmark import EarlyStopping, ReduceLROnPlateau, Run
from highmark.errors import ConfigError, UnsupportedStateError
from highmark.store.objectstore import MemoryStorage
from highmark.store.runfiles import read_history, read_run_info


def drive(
    run: Run, curve: list[float], model: TinyModel, opt: Any, budget: int | None = None
) -> tuple[list[int], dict[int, dict[str, torch.Tensor]]]:
    """Runs an epoch loop reporting ``curve``; returns the epochs run and the weights at each."""
    seen: list[int] = []
    weights: dict[int, dict[str, torch.Tensor]] = {}
    for epoch in run.epochs(len(curve) if budget is None else budget):
        nudge(model, opt)
        weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        run.report(val_loss=curve[epoch])
        seen.append(epoch)
    return seen, weights


def same_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_loop_stops_when_patience_runs_out(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=2, async_save=False) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        seen, _ = drive(run, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9], *tiny)
    assert seen == [0, 1, 2, 3]
    assert (run.stopped, run.status, run.best_step) == (True, "stopped", 1)
    assert "did not improve" in (run.stop_reason or "")


def test_loop_ends_at_the_budget_without_stopping(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=2, async_save=False) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        seen, _ = drive(run, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], *tiny, budget=4)
    assert seen == [0, 1, 2, 3]
    assert (run.stopped, run.status, run.stop_reason) == (False, "budget", None)


def test_best_checkpoint_is_the_stoppers_best_on_curves_with_ties_and_min_delta() -> None:
    rng = random.Random(3)
    cases = 0
    for _ in range(40):
        mode = rng.choice(["min", "max"])
        kwargs: dict[str, Any] = {
            "min_delta": rng.choice([0.0, 0.05, 0.1]),
            "min_delta_mode": rng.choice(["abs", "rel"]),
        }
        if rng.random() < 0.3:
            kwargs["start_from"] = rng.randint(1, 3)
        if rng.random() < 0.2:
            kwargs["smoothing"] = {"kind": "ema", "alpha": 0.5}
        if rng.random() < 0.2:
            kwargs["stopping_threshold"] = 0.2 if mode == "min" else 0.8
        curve = [round(rng.uniform(0, 1), 1) for _ in range(14)]  # rounding makes ties
        model = TinyModel()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with Run(
            MemoryStorage(), mode=mode, patience=rng.randint(1, 4), keep_best=1, keep_last=1,
            save_every=rng.choice([1, 3]), async_save=False, handle_signals=False, **kwargs,
        ) as run:  # fmt: skip
            run.track(model=model, optimizer=opt)
            drive(run, curve, model, opt)
            best = run.manager.best
            assert (best.step if best else None) == run.best_step, (curve, mode, kwargs)
            cases += run.best_step is not None
    assert cases > 30


@pytest.mark.parametrize("async_save", [True, False, "deferred"])
def test_model_holds_the_best_weights_after_the_loop(
    tmp_path: Path, tiny: Any, async_save: bool | str
) -> None:
    with Run(tmp_path / "r", patience=3, async_save=async_save, keep_last=6) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        _, weights = drive(run, [1.0, 0.4, 0.6, 0.5, 0.7, 0.8], *tiny)
        checkpoints = {
            c.step: run.manager.restore(c.step)["model"] for c in run.manager.checkpoints()
        }
    assert run.restored_from == 1
    assert same_weights(tiny[0], weights[1])
    for step, saved in checkpoints.items():  # every checkpoint holds the weights of its epoch
        assert all(torch.equal(saved[k], v) for k, v in weights[step].items()), step


def test_model_holds_the_best_weights_after_an_exception(tmp_path: Path, tiny: Any) -> None:
    model, opt = tiny
    weights: dict[int, dict[str, torch.Tensor]] = {}
    run = Run(tmp_path / "r", patience=5)

    def train() -> None:
        with run:
            run.track(model=model, optimizer=opt)
            for epoch in run.epochs(10):
                nudge(model, opt)
                if epoch == 3:
                    raise RuntimeError("boom")
                weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
                run.report(val_loss=[0.9, 0.3, 0.5][epoch])

    with pytest.raises(RuntimeError, match="boom"):
        train()
    assert same_weights(model, weights[1])
    assert run.status == "failed"
    assert read_run_info(tmp_path / "r")["status"] == "failed"  # type: ignore[index]


def test_restore_best_false_keeps_the_last_weights(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=3, restore_best=False) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        _, weights = drive(run, [1.0, 0.4, 0.6, 0.5], *tiny)
    assert run.restored_from is None
    assert same_weights(tiny[0], weights[3])


def test_summary_tells_best_stop_budget_checkpoints_and_weights(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=2, keep_best=2) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.5, 0.6, 0.7, 0.8], *tiny, budget=50)
    text = run.summary()
    assert "stopped early at epoch 3" in text
    assert "4 of 50" in text
    assert "epoch 1  val_loss=0.5" in text
    assert "checkpoints: 3 kept at epochs 1 (best), 2, 3" in text
    assert "best weights, from epoch 1" in text


def test_track_refuses_an_object_without_state_dict(tmp_path: Path) -> None:
    with Run(tmp_path / "r") as run, pytest.raises(UnsupportedStateError, match="thing"):
        run.track(thing=object())


def test_track_refuses_an_unsupported_state_value_naming_its_path(tmp_path: Path) -> None:
    class Odd:
        def state_dict(self) -> dict[str, Any]:
            return {"fine": 1, "hook": print}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    with Run(tmp_path / "r") as run, pytest.raises(UnsupportedStateError, match=r"odd\.hook"):
        run.track(odd=Odd())


def test_report_outside_the_loop_is_refused(tmp_path: Path) -> None:
    with Run(tmp_path / "r") as run, pytest.raises(ConfigError, match="inside"):
        run.report(val_loss=1.0)


def test_report_twice_in_one_epoch_is_refused(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r") as run:
        run.track(model=tiny[0])
        for _ in run.epochs(1):
            run.report(val_loss=1.0)
            with pytest.raises(ConfigError, match="already"):
                run.report(val_loss=0.5)


def test_stopping_and_its_arguments_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either"):
        Run(tmp_path / "r", patience=3, stopping=EarlyStopping())


@pytest.mark.parametrize(
    "kwargs", [{"save_every": 0}, {"save_every": "auto"}, {"save_every": 2, "mtbf": 60.0}]
)
def test_bad_save_every_is_refused(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"save_every|mtbf"):
        Run(tmp_path / "r", **kwargs)


def test_save_every_n_saves_every_nth_evaluation_each_best_and_the_end(
    tmp_path: Path, tiny: Any
) -> None:
    curve = [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.99, 0.98]
    with Run(tmp_path / "r", patience=10, save_every=3, keep_best=99, keep_last=99) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, curve, *tiny)
        steps = [c.step for c in run.manager.checkpoints()]
    assert steps == [0, 1, 4, 5, 7]  # bests 0, 1, 5; every 3rd evaluation since a save; the end


def test_save_every_auto_logs_the_interval_from_youngs_formula(
    tmp_path: Path, tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="highmark.run")
    with Run(tmp_path / "r", patience=10, save_every="auto", mtbf=3600.0) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.9, 0.95, 0.96], *tiny)
    assert any("Young's formula" in r.getMessage() for r in caplog.records)
    assert (run.schedule.interval or 0.0) > 0


def test_run_json_and_history_describe_the_run(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=2) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.5, 0.6, float("nan")], *tiny)
    info = read_run_info(tmp_path / "r")
    assert info is not None
    assert (info["status"], info["best_step"], info["epochs_run"]) == ("stopped", 1, 4)
    assert (info["stop_step"], info["unit"], info["budget"]) == (3, "epoch", 4)
    assert info["stop_cause"] == "non_finite_metric"
    assert info["policy"]["patience"] == 2
    history = read_history(tmp_path / "r")
    assert [h["step"] for h in history] == [0, 1, 2, 3]
    assert history[1]["metrics"] == {"val_loss": 0.5}
    assert history[3]["metrics"]["val_loss"] != history[3]["metrics"]["val_loss"]  # NaN kept
    json.dumps(info)


def test_resume_starts_after_the_last_completed_epoch(tmp_path: Path, tiny: Any) -> None:
    model, opt = tiny
    with Run(tmp_path / "r", patience=9) as run:
        run.track(model=model, optimizer=opt)
        for epoch in run.epochs(6):
            nudge(model, opt)
            run.report(val_loss=1.0 - epoch / 10)
            if epoch == 2:
                break
    with Run(tmp_path / "r", patience=9) as again:
        again.track(model=TinyModel(), optimizer=opt)
        assert list(again.epochs(6)) == [3, 4, 5]
    assert again.resumed_from == 2
    assert [h["step"] for h in read_history(tmp_path / "r")] == [0, 1, 2]  # no reports made


def test_stopped_run_stays_stopped_on_resume(
    tmp_path: Path, tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with Run(tmp_path / "r", patience=1) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        _, weights = drive(run, [1.0, 0.5, 0.6, 0.7], *tiny, budget=10)
    caplog.set_level(logging.INFO, logger="highmark.run")
    model = TinyModel()
    with Run(tmp_path / "r", patience=1) as again:
        again.track(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        assert list(again.epochs(10)) == []
    assert "had already stopped at epoch 2" in again.summary()
    assert any("nothing to do" in r.getMessage() for r in caplog.records)
    assert same_weights(model, weights[1])


def test_larger_budget_continues_a_stopped_run_and_says_so(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=1) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.5, 0.6, 0.7], *tiny, budget=4)
    with Run(tmp_path / "r", patience=1) as again:
        again.track(model=tiny[0], optimizer=tiny[1])
        seen, _ = drive(again, [1.0, 0.5, 0.6, 0.4, 0.3, 0.2], *tiny, budget=6)
    assert seen == [3, 4, 5]
    assert "budget raised from 4 to 6" in again.summary()


def test_new_policy_continues_a_stopped_run_and_says_so(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=1) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9], *tiny, budget=6)
    with Run(tmp_path / "r", patience=5) as again:
        again.track(model=tiny[0], optimizer=tiny[1])
        seen, _ = drive(again, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9], *tiny, budget=6)
    assert seen == [3, 4, 5]
    assert "changed stopping policy" in again.summary()


def test_lr_plateau_state_is_saved_and_resumed(tmp_path: Path, tiny: Any) -> None:
    model, opt = tiny

    def stopper() -> EarlyStopping:
        return EarlyStopping(patience=50, lr_schedule=ReduceLROnPlateau(opt, patience=0))

    with Run(tmp_path / "r", stopping=stopper()) as run:
        run.track(model=model, optimizer=opt)
        drive(run, [1.0, 1.0, 1.0, 1.0], *tiny)
        saved = run.stopping.lr_schedule.state_dict()  # type: ignore[union-attr]
    assert saved["reductions"] >= 2
    with Run(tmp_path / "r", stopping=stopper()) as again:
        again.track(model=model, optimizer=opt)
        list(again.epochs(4))
        assert again.stopping.lr_schedule.state_dict() == saved  # type: ignore[union-attr]


def test_step_loop_resumes_after_the_last_saved_step(tmp_path: Path, tiny: Any) -> None:
    model, opt = tiny
    with Run(tmp_path / "r", patience=9) as run:
        run.track(model=model, optimizer=opt)
        for step in run.steps(10):
            nudge(model, opt)
            if step % 3 == 0:
                run.report(val_loss=1.0 / (step + 1))
            if step == 5:
                break  # steps 4 and 5 ran after the checkpoint of step 3
    with Run(tmp_path / "r", patience=9) as again:
        again.track(model=model, optimizer=opt)
        assert list(again.steps(10)) == [4, 5, 6, 7, 8, 9]


def test_epoch_loop_cannot_resume_a_step_loop(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r") as run:
        run.track(model=tiny[0])
        for step in run.steps(2):
            run.report(val_loss=float(step))
    with Run(tmp_path / "r") as again:
        again.track(model=tiny[0])
        with pytest.raises(ConfigError, match="steps"):
            list(again.epochs(3))


def test_resume_false_refuses_a_directory_holding_checkpoints(tmp_path: Path, tiny: Any) -> None:
    with Run(tmp_path / "r", patience=9) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.9], *tiny)
    with Run(tmp_path / "r", patience=9, resume=False) as again:
        again.track(model=tiny[0], optimizer=tiny[1])
        with pytest.raises(ConfigError, match="resume=False"):
            list(again.epochs(1))
    assert read_run_info(tmp_path / "r")["status"] == "budget"  # type: ignore[index]


def test_best_weights_are_read_into_the_live_parameters(tmp_path: Path, tiny: Any) -> None:
    model = tiny[0]
    pointers = [p.data_ptr() for p in model.parameters()]
    with Run(tmp_path / "r", patience=3) as run:
        run.track(model=model, optimizer=tiny[1])
        _, weights = drive(run, [1.0, 0.4, 0.6, 0.5], *tiny)
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert same_weights(model, weights[1])


def test_run_stops_saves_and_resumes_on_local_disk_and_s3(run_location: Any, tiny: Any) -> None:
    kwargs = {"patience": 2, **run_location.kwargs}
    with Run(run_location.url, **kwargs) as run:
        run.track(model=tiny[0], optimizer=tiny[1])
        drive(run, [1.0, 0.5, 0.6, 0.7, 0.8], *tiny, budget=3)
    assert [h["step"] for h in read_history(run_location.url, run_location.storage_options)] == [
        0,
        1,
        2,
    ]
    with Run(run_location.url, **kwargs) as again:
        again.track(model=tiny[0], optimizer=tiny[1])
        seen, _ = drive(again, [1.0, 0.5, 0.6, 0.7, 0.8], *tiny, budget=10)
    assert seen == [3]
    assert again.status == "stopped"
    info = read_run_info(run_location.url, run_location.storage_options)
    assert info is not None
    assert (info["status"], info["best_step"], len(info["resumed"])) == ("stopped", 1, 1)


def _step_run(
    path: Path, stop_at: int | None = None
) -> tuple[list[list[int]], dict[str, torch.Tensor], Run]:
    """A step loop over a shuffled loader (cycled), reporting every 4 steps."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = TinyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = DataLoader(
        TensorDataset(torch.arange(10.0).repeat(4, 1).T),
        batch_size=3,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    seen: list[list[int]] = []
    with Run(path, patience=50, restore_best=False) as run:
        run.track(model=model, optimizer=opt)
        stream = run.loader(data).cycle()  # made before the loop: the resume still applies
        for step in run.steps(20):
            (xb,) = next(stream)
            seen.append([int(v) for v in xb[:, 0]])
            loss = model(xb + torch.randn_like(xb)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 4 == 3:
                run.report(val_loss=loss.item())
            if step == stop_at:
                break
    return seen, {k: v.clone() for k, v in model.state_dict().items()}, run


def test_step_loop_resumes_mid_pass_with_the_same_batches_and_bits(tmp_path: Path) -> None:
    reference, weights, _ = _step_run(tmp_path / "ref")
    first, _, _ = _step_run(tmp_path / "r", stop_at=9)  # the checkpoint of step 7 is the latest
    rest, resumed, run = _step_run(tmp_path / "r")
    assert run.resumed_from == 7
    assert first[:8] + rest == reference  # steps 0-7, then 8-19 after the resume
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


def test_restore_best_follows_the_stopper_when_the_index_lags_after_a_crash(
    tmp_path: Path, tiny: Any
) -> None:
    model, opt = tiny
    with Run(tmp_path / "r", patience=5) as run:
        run.track(model=model, optimizer=opt)
        _, weights = drive(run, [1.0, 0.8, 0.5], *tiny, budget=3)
    # A crash between committing step 2 (a new best) and writing the index: the index lists
    # steps 0-1 only, and the store re-indexes step 2 at the next open without re-ranking it.
    index_path = tmp_path / "r" / "highmark.json"
    index = json.loads(index_path.read_text())
    index["checkpoints"] = [c for c in index["checkpoints"] if c["step"] != 2]
    index["ranking"]["best_step"] = 1
    index_path.write_text(json.dumps(index))
    with Run(tmp_path / "r", patience=5) as again:
        again.track(model=model, optimizer=opt)
        assert list(again.epochs(3)) == []
    assert again.restored_from == 2
    assert same_weights(model, weights[2])
