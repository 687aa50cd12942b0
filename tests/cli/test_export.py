"""``highmark export``: a standalone safetensors file that plain safetensors + torch read."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from highmark.cli.commands import app

from .helpers import RunFixture, make_model


@pytest.mark.parametrize("run_location", ["local", pytest.param("s3", marks=pytest.mark.s3)],
                         indirect=True)  # fmt: skip
def test_export_best_loads_into_a_fresh_model_with_identical_outputs(
    runner, any_run: RunFixture, tmp_path
) -> None:
    out = str(tmp_path / "best.safetensors")
    result = runner.invoke(app, ["export", f"{any_run.url}:best", "-o", out, *any_run.options])
    assert result.exit_code == 0, result.output
    fresh = make_model(seed=123)
    fresh.load_state_dict(load_file(out))  # strict: names stripped of "model."
    saved = make_model(seed=0)
    saved.load_state_dict(any_run.models[3])
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(fresh(x), saved(x))


def test_export_step_with_empty_key_keeps_full_names(runner, local_run, tmp_path) -> None:
    out = str(tmp_path / "all.safetensors")
    result = runner.invoke(app, ["export", f"{local_run.url}:6", "-o", out, "--key", ""])
    assert result.exit_code == 0, result.output
    tensors = load_file(out)
    assert "model.0.weight" in tensors
    assert "optimizer.state.0.momentum_buffer" in tensors
    assert torch.equal(tensors["model.2.bias"], local_run.models[6]["2.bias"])


def test_export_to_a_directory_writes_file_and_metadata(runner, local_run, tmp_path) -> None:
    out = str(tmp_path / "exported") + os.sep
    result = runner.invoke(app, ["export", f"{local_run.url}:4", "-o", out])
    assert result.exit_code == 0, result.output
    assert set(os.listdir(out)) == {"model.safetensors", "highmark-export.json"}
    with open(os.path.join(out, "highmark-export.json")) as f:
        meta = json.load(f)
    assert meta["step"] == "4"
    assert meta["metrics"]["val_loss"] == 0.55
    assert torch.equal(load_file(os.path.join(out, "model.safetensors"))["0.bias"],
                       local_run.models[4]["0.bias"])  # fmt: skip


def test_export_unknown_key_names_the_top_level_keys(runner, local_run, tmp_path) -> None:
    out = str(tmp_path / "x.safetensors")
    result = runner.invoke(app, ["export", local_run.url, "-o", out, "--key", "ema"])
    assert result.exit_code == 1
    assert "model" in result.stderr
    assert "optimizer" in result.stderr
    assert not os.path.exists(out)


def test_export_of_a_corrupted_tensor_fails_and_leaves_no_file(runner, local_run, tmp_path) -> None:
    target = os.path.join(local_run.url, "step-00000003", "model.safetensors")
    with open(target, "r+b") as f:
        f.seek(-2, os.SEEK_END)
        f.write(b"\x00\x01")
    out = tmp_path / "best.safetensors"
    result = runner.invoke(app, ["export", f"{local_run.url}:best", "-o", str(out)])
    assert result.exit_code == 1
    assert "step-00000003/model.safetensors" in result.stderr
    assert "checksum" in result.stderr
    assert not out.exists()
    assert os.listdir(tmp_path) == ["run-a"]  # no temporary file left behind


def test_export_creates_missing_parent_folders(runner, local_run, tmp_path) -> None:
    out = tmp_path / "new" / "deeper" / "model.safetensors"
    result = runner.invoke(app, ["export", f"{local_run.url}:best", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert torch.equal(load_file(out)["0.weight"], local_run.models[3]["0.weight"])


def test_export_refuses_to_overwrite_an_existing_file(runner, local_run, tmp_path) -> None:
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"mine")
    result = runner.invoke(app, ["export", f"{local_run.url}:best", "-o", str(out)])
    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert out.read_bytes() == b"mine"


def test_export_force_overwrites_an_existing_file(runner, local_run, tmp_path) -> None:
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"mine")
    result = runner.invoke(app, ["export", f"{local_run.url}:4", "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert torch.equal(load_file(out)["2.bias"], local_run.models[4]["2.bias"])


def test_export_into_a_folder_refuses_to_overwrite_its_files(runner, local_run, tmp_path) -> None:
    out = tmp_path / "exported"
    out.mkdir()
    (out / "highmark-export.json").write_text("mine")
    result = runner.invoke(app, ["export", f"{local_run.url}:4", "-o", str(out)])
    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert os.listdir(out) == ["highmark-export.json"]
    assert (out / "highmark-export.json").read_text() == "mine"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_writes_with_the_users_umask(runner, local_run, tmp_path, umask: int) -> None:
    out = tmp_path / "model.safetensors"
    old = os.umask(umask)
    try:
        result = runner.invoke(app, ["export", f"{local_run.url}:best", "-o", str(out)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def _plant(run_url: str, step_dir: str, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file in a checkpoint directory that its manifest does not name."""
    save_file(tensors, os.path.join(run_url, step_dir, name))


def test_export_ignores_a_stray_file_the_manifest_does_not_name(
    runner, local_run, tmp_path
) -> None:
    _plant(local_run.url, "step-00000003", "backdoor.safetensors",
           {"backdoor": torch.ones(2), "w": torch.ones(2)})  # fmt: skip
    _plant(local_run.url, "step-00000003", "zz.safetensors", {"model.0.weight": torch.zeros(8, 4)})
    out = tmp_path / "all.safetensors"
    result = runner.invoke(app, ["export", f"{local_run.url}:3", "-o", str(out), "--key", ""])
    assert result.exit_code == 0, result.output
    tensors = load_file(out)
    assert "backdoor" not in tensors
    assert "w" not in tensors
    assert torch.equal(tensors["model.0.weight"], local_run.models[3]["0.weight"])
