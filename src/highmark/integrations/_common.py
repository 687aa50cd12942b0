"""What every ``HighmarkCallback`` shares: one signature with Run's defaults, and small helpers.

Imports no framework. :class:`CallbackBase` holds the one constructor of the Lightning, Keras and
Hugging Face callbacks: the arguments of :class:`~highmark.Run`, with its defaults
(:data:`~highmark.run.defaults.DEFAULTS`), gathered into :class:`CallbackSettings`; each
framework module implements only :meth:`CallbackBase._configure`, the framework glue, and its
hooks. :func:`require` checks a framework's version, :func:`make_stopper` builds the stopping
policy, :func:`scalar_metrics` keeps the metrics that are one number.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from highmark.errors import ConfigError
from highmark.integrations._session import Session
from highmark.policy.stopping import EarlyStopping
from highmark.run.defaults import DEFAULTS

__all__ = [
    "CallbackBase",
    "CallbackSettings",
    "make_stopper",
    "monitor_default",
    "require",
    "scalar_metrics",
]


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        match = re.match(r"[0-9]+", piece)  # a leading number, ASCII digits only
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def require(distribution: str, minimum: str, extra: str) -> str:
    """Checks that ``distribution`` is installed at ``minimum`` or newer; returns its version.

    Raises:
        ImportError: naming the package, the version found and the extra to install.
    """
    hint = f"pip install 'highmark[{extra}]'"
    try:
        found = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"highmark.integrations.{extra} needs {distribution}>={minimum}, "
            f"which is not installed; {hint}"
        ) from None
    if _version_tuple(found) < _version_tuple(minimum):
        raise ImportError(
            f"highmark.integrations.{extra} needs {distribution}>={minimum}, found {found}; {hint}"
        )
    return found


def make_stopper(
    monitor: str,
    mode: str,
    patience: int,
    stopping: EarlyStopping | None,
    options: Mapping[str, Any],
) -> EarlyStopping:
    """Builds the stopping policy from the callback arguments, or takes the one given."""
    if stopping is not None:
        if options:
            raise ConfigError(
                "pass either stopping=EarlyStopping(...) or EarlyStopping keyword arguments, "
                f"not both (got stopping and {sorted(options)})"
            )
        return stopping
    return EarlyStopping(monitor=monitor, mode=mode, patience=patience, **options)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keeps the metrics that convert to one float (tensors of one element, numpy scalars)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, (bool, str)):
            continue
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class CallbackSettings:
    """The arguments a ``HighmarkCallback`` was built with (see :class:`CallbackBase`)."""

    directory: str
    monitor: str
    mode: str
    patience: int
    stopping: EarlyStopping | None
    keep_best: int
    keep_last: int
    keep_every: int | None
    async_save: bool | str
    restore_best: bool
    resume: bool | str
    storage_options: Mapping[str, Any] | None
    options: dict[str, Any]  #: any other EarlyStopping argument

    def store(self) -> dict[str, Any]:
        """The arguments that say what is kept and how: keep_*, async_save, restore_best, resume."""
        return {
            "keep_best": self.keep_best,
            "keep_last": self.keep_last,
            "keep_every": self.keep_every,
            "async_save": self.async_save,
            "restore_best": self.restore_best,
            "resume": self.resume,
        }

    def session(
        self, framework: str, unit: str, stopper: EarlyStopping, directory: str | None = None
    ) -> Session:
        """A :class:`Session` writing to ``directory`` (default: the one given) with ``stopper``."""
        store = {**self.store(), "resume": bool(self.resume)}
        return Session(
            self.directory if directory is None else directory,
            framework=framework,
            unit=unit,
            stopper=stopper,
            storage_options=self.storage_options,
            **store,
        )


class CallbackBase:
    """What every ``HighmarkCallback`` shares; a mixin put before the framework's callback base.

    Its constructor is the one signature of every callback (Run's arguments and defaults); a
    framework module implements :meth:`_configure` (the glue: build the stopper and the
    :attr:`session`) and its framework's hooks.
    """

    #: Keyword arguments of one framework's callback besides EarlyStopping's (e.g. Lightning's
    #: ``check_on_train_epoch_end``), handed to :meth:`_configure`.
    framework_options: ClassVar[tuple[str, ...]] = ()
    settings: CallbackSettings
    session: Session

    def __init__(
        self,
        directory: str | os.PathLike[str],
        monitor: str = DEFAULTS.monitor,
        mode: str = DEFAULTS.mode,
        patience: int = DEFAULTS.patience,
        *,
        stopping: EarlyStopping | None = None,
        keep_best: int = DEFAULTS.keep_best,
        keep_last: int = DEFAULTS.keep_last,
        keep_every: int | None = DEFAULTS.keep_every,
        async_save: bool | str = DEFAULTS.async_save,
        restore_best: bool = DEFAULTS.restore_best,
        resume: bool | str = DEFAULTS.resume,
        storage_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Every default equals ``Run``'s (:mod:`highmark.run.defaults` says why).

        Args:
            directory: run directory, a local path or an fsspec URL.
            monitor: the logged metric the policy watches.
            mode: ``"min"``, ``"max"`` or ``"auto"`` (see each framework for how it settles).
            patience: evaluations without improvement before stopping.
            stopping: a ready ``highmark.EarlyStopping`` instead of the three arguments above.
            keep_best: how many best checkpoints to keep (by ``monitor``).
            keep_last: how many latest checkpoints to keep.
            keep_every: also keep every checkpoint whose step is a multiple of this, for good.
            async_save: write checkpoints in a background thread (``"deferred"``: the copy too).
            restore_best: load the best weights into the model when training ends.
            resume: continue from the run directory's latest checkpoint.
            storage_options: passed to fsspec for URLs.
            **options: any other ``highmark.EarlyStopping`` argument (min_delta, baseline, ...),
                and the framework's own (:attr:`framework_options`).
        """
        own = {name: options.pop(name) for name in self.framework_options if name in options}
        self.settings = CallbackSettings(
            directory=os.fspath(directory),
            monitor=monitor,
            mode=mode,
            patience=patience,
            stopping=stopping,
            keep_best=keep_best,
            keep_last=keep_last,
            keep_every=keep_every,
            async_save=async_save,
            restore_best=restore_best,
            resume=resume,
            storage_options=storage_options,
            options=options,
        )
        self._configure(self.settings, **own)

    def _configure(self, settings: CallbackSettings, **own: Any) -> None:
        """The framework's glue: checks its own arguments, builds :attr:`session`."""
        raise NotImplementedError

    @property
    def stopper(self) -> EarlyStopping:
        """The stopping policy (its ``best``, ``wait``, ``reason``, ``stopped_step``...)."""
        return self.session.stopper


def monitor_default(name: str) -> Callable[..., None]:
    """:meth:`CallbackBase.__init__` with ``monitor`` defaulting to ``name``, its signature saying
    so: for a framework whose name of the validation loss differs (the Trainer's ``eval_loss``)."""
    base = CallbackBase.__init__
    signature = inspect.signature(base)
    parameters = [
        p.replace(default=name) if p.name == "monitor" else p for p in signature.parameters.values()
    ]
    signature = signature.replace(parameters=parameters)

    @functools.wraps(base)
    def __init__(self: CallbackBase, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        base(*bound.args, **bound.kwargs)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__
