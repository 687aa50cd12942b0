"""``highmark show``: one checkpoint's metadata and tensors; ``--diff`` tensor by tensor."""

from __future__ import annotations

import json
import os

import pytest
import torch

from highmark.cli.commands import app

from .helpers import RunFixture


def test_show_best_lists_tensors_with_shapes_dtypes_and_checksums(runner, local_run) -> None:
    result = runner.invoke(app, ["show", f"{local_run.url}:best", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["step"] == 3
    assert "best" in data["flags"]
    assert data["metrics"]["val_loss"] == 0.5
    assert data["metadata"] == {"epoch": 3}
    tensors = {t["key"]: t for t in data["tensors"]}
    assert tensors["model.0.weight"]["shape"] == [8, 4]
    assert tensors["model.0.weight"]["dtype"] == "float32"
    assert all(len(t["xxh3"]) == 16 for t in data["tensors"])
    assert {f["name"] for f in data["files"]} == {"model.safetensors", "optimizer.safetensors"}


def test_show_unknown_step_is_one_error_line(runner, local_run) -> None:
    result = runner.invoke(app, ["show", f"{local_run.url}:99"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "99" in result.stderr
    assert "Traceback" not in result.output


def _expected(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    a64, b64 = a.double().flatten(), b.double().flatten()
    return (
        float((b64 - a64).abs().max()),
        float((b64 - a64).norm() / a64.norm()),
        float(a64.dot(b64) / (a64.norm() * b64.norm())),
    )


@pytest.mark.parametrize("run_location", ["local", pytest.param("s3", marks=pytest.mark.s3)],
                         indirect=True)  # fmt: skip
def test_diff_reports_max_abs_rel_l2_and_cosine(runner, any_run: RunFixture) -> None:
    args = ["show", f"{any_run.url}:3", "--diff", f"{any_run.url}:6", "--json", *any_run.options]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in json.loads(result.stdout)["tensors"]}
    for key in ("0.weight", "2.bias"):
        row = rows[f"model.{key}"]
        max_abs, rel, cos = _expected(any_run.models[3][key], any_run.models[6][key])
        assert row["status"] == "changed"
        assert row["max_abs_diff"] == pytest.approx(max_abs, rel=1e-9)
        assert row["rel_l2"] == pytest.approx(rel, rel=1e-9)
        assert row["cosine"] == pytest.approx(cos, rel=1e-9)


def test_diff_with_itself_is_all_same(runner, local_run) -> None:
    args = ["show", f"{local_run.url}:4", "--diff", f"{local_run.url}:4", "--json"]
    data = json.loads(runner.invoke(app, args).stdout)
    assert {r["status"] for r in data["tensors"]} == {"same"}
    assert all(r["max_abs_diff"] == 0 and r["cosine"] == pytest.approx(1) for r in data["tensors"])
    assert data["changed"] == data["added"] == data["removed"] == []


def test_diff_names_added_and_removed_keys(runner, tmp_path, local_run) -> None:
    from highmark.store.manager import CheckpointManager

    other = str(tmp_path / "other")
    with CheckpointManager(other) as manager:
        manager.save(1, {"model": {"0.weight": torch.zeros(8, 4), "extra": torch.ones(2)}})
    args = ["show", f"{local_run.url}:3", "--diff", f"{other}:1", "--json"]
    data = json.loads(runner.invoke(app, args).stdout)
    assert data["added"] == ["model.extra"]
    assert "model.2.bias" in data["removed"]
    assert data["changed"] == ["model.0.weight"]
    weight = next(r for r in data["tensors"] if r["key"] == "model.0.weight")
    assert weight["rel_l2"] == pytest.approx(1.0)  # |0 - a| / |a|
    assert weight["cosine"] is None  # undefined against a zero tensor


def test_show_prints_the_tree_of_keys(runner, local_run) -> None:
    result = runner.invoke(app, ["show", local_run.url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "step 6" in result.stdout
    assert "momentum_buffer  float32 [8x4]" in result.stdout
    assert "optimizer.safetensors" in result.stdout


def test_show_with_a_mistyped_selector_names_the_selectors(runner, local_run) -> None:
    result = runner.invoke(app, ["show", f"{local_run.url}:bestt"])
    assert result.exit_code == 1
    assert "not a highmark run" not in result.stderr
    assert "'bestt'" in result.stderr
    for selector in (":best", ":latest", ":STEP", "3, 4, 6"):
        assert selector in result.stderr


def _run_with_rng_state(url: str) -> None:
    """A real Run: its checkpoints hold the RNG states (highmark.rng.*) besides the model."""
    from highmark import Run

    model = torch.nn.Linear(3, 2)
    with Run(url, patience=5, async_save=False, handle_signals=False) as run:
        run.track(model=model)
        for epoch in run.epochs(max_epochs=3):
            with torch.no_grad():
                model.weight.add_(torch.rand(2, 3))  # moves the torch RNG as training would
            run.report(val_loss=[1.0, 0.5, 0.7][epoch])


def test_diff_leaves_the_rng_state_out_unless_asked(runner, tmp_path) -> None:
    url = str(tmp_path / "run")
    _run_with_rng_state(url)
    args = ["show", f"{url}:best", "--diff", f"{url}:latest", "--json"]
    data = json.loads(runner.invoke(app, args).stdout)
    keys = [r["key"] for r in data["tensors"]]
    assert "model.weight" in keys
    assert not any(k.startswith("highmark.rng.") for k in keys)
    assert "highmark.rng.torch" in data["left_out"]
    with_rng = json.loads(runner.invoke(app, [*args, "--rng"]).stdout)
    rows = {r["key"]: r for r in with_rng["tensors"]}
    assert rows["highmark.rng.torch"]["status"] == "changed"
    assert with_rng["left_out"] == []


def test_diff_table_says_what_it_left_out(runner, tmp_path) -> None:
    url = str(tmp_path / "run")
    _run_with_rng_state(url)
    args = ["show", f"{url}:best", "--diff", f"{url}:latest"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "RNG state tensor(s) (--rng compares them too)" in result.stdout


def test_diff_ignores_a_stray_file_the_manifest_does_not_name(runner, local_run) -> None:
    from safetensors.torch import save_file

    stray = {"model.0.weight": torch.zeros(8, 4), "backdoor": torch.ones(2)}
    save_file(stray, os.path.join(local_run.url, "step-00000004", "zz.safetensors"))
    args = ["show", f"{local_run.url}:4", "--diff", f"{local_run.url}:4", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {r["status"] for r in data["tensors"]} == {"same"}
    assert "backdoor" not in [r["key"] for r in data["tensors"]]


def test_diff_of_a_damaged_tensor_fails_naming_the_file(runner, local_run) -> None:
    target = os.path.join(local_run.url, "step-00000006", "model.safetensors")
    with open(target, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0x01]))
    args = ["show", f"{local_run.url}:3", "--diff", f"{local_run.url}:6", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stdout == ""  # no numbers computed from damaged bytes
    assert f"{target}: checksum mismatch in tensor 'model.2.bias'" in result.stderr
