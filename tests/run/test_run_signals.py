"""SIGTERM / SIGINT / SIGUSR1: save at the next step boundary, exit cleanly, resume exactly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from run_helpers import Child, assert_bit_identical, load_weights, nudge, run_child

from highmark import CheckpointManager, Run

BUDGET = ("--max-epochs", "5")


def _latest(run_dir: Path) -> Any:
    with CheckpointManager(run_dir, read_only=True) as ckpt:
        return ckpt.latest


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        (signal.SIGTERM, 128 + signal.SIGTERM),
        (signal.SIGUSR1, 128 + signal.SIGUSR1),
        (signal.SIGINT, 130),
    ],
    ids=["SIGTERM", "SIGUSR1", "SIGINT"],
)
def test_signal_saves_mid_epoch_exits_and_resumes_bit_identical(
    tmp_path: Path, reference_run: Callable[..., dict[str, Any]], sig: int, code: int
) -> None:
    reference = reference_run(*BUDGET)
    run_dir, out = tmp_path / "run", tmp_path / "final.safetensors"
    child = Child(run_dir, out, *BUDGET, "--gate", "2,3")
    assert child.read_until(lambda line: line == "batch 2 3")
    child.send(sig)
    name = signal.Signals(sig).name
    assert child.read_until(lambda line: f"received {name}" in line), child.output
    child.write("\n")  # let the batch finish: the next batch fetch is the step boundary
    assert child.finish() == code
    assert "To resume, run the same script again" in child.output
    assert "batch 2 4" not in child.lines
    latest = _latest(run_dir)
    assert (latest.step, latest.metadata["partial"]) == (2, True)

    resumed_code, resumed = run_child(run_dir, out, *BUDGET)
    assert resumed_code == 0, resumed.output
    assert resumed.lines[0] == "batch 2 4"  # the interrupted epoch goes on where it stopped
    assert [x for x in resumed.lines if x.startswith("done ")] == [reference["done"]]
    assert_bit_identical(load_weights(out), reference["weights"])


def test_second_sigint_aborts_at_once_without_saving(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "final.safetensors"
    child = Child(run_dir, out, *BUDGET, "--gate", "2,3")
    assert child.read_until(lambda line: line == "batch 2 3")
    child.send(signal.SIGINT)
    assert child.read_until(lambda line: "received SIGINT" in line)
    child.send(signal.SIGINT)  # the child still waits inside the batch
    assert child.finish() == 130
    assert "KeyboardInterrupt" in child.output
    assert "aborting at once" in child.output
    assert _latest(run_dir).step == 1  # nothing saved after the end of epoch 1


def test_handlers_are_restored_after_the_loop(tmp_path: Path, tiny: Any) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    during = {}
    model, opt = tiny
    with Run(tmp_path / "run", patience=2, async_save=False) as run:
        run.track(model=model, optimizer=opt)
        for epoch in run.epochs(2):
            during = {s: signal.getsignal(s) for s in before}
            nudge(model, opt)
            run.report(val_loss=1.0 / (epoch + 1))
    assert all(during[s] is not before[s] for s in before)
    assert {s: signal.getsignal(s) for s in before} == before


def test_loop_in_a_thread_installs_no_handlers(tmp_path: Path, tiny: Any) -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []
    model, opt = tiny

    def train() -> None:
        with Run(tmp_path / "run", patience=2, async_save=False) as run:
            run.track(model=model, optimizer=opt)
            for epoch in run.epochs(2):
                seen.append(signal.getsignal(signal.SIGTERM))
                run.report(val_loss=1.0 / (epoch + 1))

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert seen == [before, before]
