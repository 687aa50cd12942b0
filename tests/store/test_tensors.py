"""``highmark.store.tensors``: dtype decoding for the diff, checked against torch's conversion."""

from __future__ import annotations

import pytest
import torch

from highmark.store.manager import CheckpointManager
from highmark.store.tensors import checkpoint_tensors, decode, diff_tensors, is_rng_key

DTYPES = [torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2, torch.int64,
          torch.bool]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_matches_torch(dtype: torch.dtype, tmp_path) -> None:
    values = torch.linspace(-300, 300, 257).to(dtype)
    with CheckpointManager(str(tmp_path / "run")) as manager:
        manager.save(1, {"x": values})
        storage = manager.storage
        entry = checkpoint_tensors(storage, "step-00000001")["x"]
        with storage.open_read(entry.file) as f:
            f.seek(entry.start)
            raw = f.read(entry.nbytes)
    decoded = decode(raw, entry.dtype)
    assert decoded is not None
    expected = values.to(torch.float64).numpy()
    assert decoded.tolist() == pytest.approx(expected.tolist(), nan_ok=True)


def test_diff_of_bfloat16_tensors_uses_their_values(tmp_path) -> None:
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    b = torch.tensor([1.0, 2.0, 4.0], dtype=torch.bfloat16)
    with CheckpointManager(str(tmp_path / "run"), keep_last=2) as manager:
        manager.save(1, {"w": a})
        manager.save(2, {"w": b})
        storage = manager.storage
    row = diff_tensors(storage, "step-00000001", storage, "step-00000002")["tensors"][0]
    assert row["max_abs_diff"] == 1.0
    assert row["rel_l2"] == pytest.approx(1 / 14**0.5)
    assert row["cosine"] == pytest.approx(17 / (14**0.5 * 21**0.5))  # a.b = 1 + 4 + 12


def test_rng_keys_are_the_run_s_generator_states_only() -> None:
    assert is_rng_key("highmark.rng.numpy.keys")
    assert is_rng_key("highmark.loaders.train.generators.0")
    assert is_rng_key("highmark.loaders.train.start.rng.torch")
    assert not is_rng_key("model.rng.weight")  # a user's own module named rng is weights
    assert not is_rng_key("highmark.stopping.best")


def test_docstring_examples_hold() -> None:
    import doctest

    from highmark.cli import queries
    from highmark.store import tensors

    for module in (queries, tensors):
        result = doctest.testmod(module)
        assert (result.failed, result.attempted > 0) == (0, True)
