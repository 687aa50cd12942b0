"""The public surface of ``highmark``: pinned names, lazy and framework-free import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import highmark

EXPECTED = {
    "CheckpointInfo",
    "CheckpointManager",
    "EarlyStopping",
    "KeepBest",
    "KeepEvery",
    "KeepLast",
    "MaxBytes",
    "Monitor",
    "ReduceLROnPlateau",
    "ResumableLoader",
    "Retention",
    "Run",
    "VerifyReport",
    "__version__",
    "criteria",
    "errors",
}


def test_all_is_pinned() -> None:
    assert set(highmark.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in highmark.__all__:
        assert getattr(highmark, name) is not None, name


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        highmark.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_import_leaves_frameworks_out() -> None:
    code = (
        "import sys, highmark\n"
        "highmark.EarlyStopping; highmark.CheckpointManager; highmark.Run\n"
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'keras', 'transformers',"
        " 'optuna', 'sklearn', 'tensorflow') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_subclass_the_builtins_users_catch() -> None:
    from highmark import errors

    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.MetricNotFoundError, KeyError)
    assert issubclass(errors.UnsupportedStateError, TypeError)
    assert issubclass(errors.CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(errors.InsufficientSpaceError, OSError)
    assert issubclass(errors.ReadOnlyError, OSError)
    checkpoint_errors = (
        errors.CorruptCheckpointError,
        errors.LockedError,
        errors.IncompatibleFormatError,
        errors.ReadOnlyError,
    )
    for cls in checkpoint_errors:
        assert issubclass(cls, errors.CheckpointError)
        assert issubclass(cls, errors.HighmarkError)


def test_metric_not_found_lists_the_given_keys() -> None:
    from highmark.errors import MetricNotFoundError

    message = str(MetricNotFoundError("val_loss", ["loss", "acc"]))
    assert "val_loss" in message
    assert "'acc', 'loss'" in message


def test_read_only_error_keeps_the_errno_and_says_how_to_read_the_run() -> None:
    import errno

    from highmark.errors import ReadOnlyError

    err = ReadOnlyError("runs/a", OSError(errno.EROFS, "Read-only file system"))
    assert err.errno == errno.EROFS
    assert "runs/a is on read-only storage" in str(err)
    assert "read_only=True" in str(err)
