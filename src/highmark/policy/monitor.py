"""The monitored value: metric lookup, direction, the improvement rule and optional smoothing.

One :class:`Monitor` is the single comparator shared by the stopper, the LR scheduler and the
retention of checkpoints, so "better" means the same thing everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from highmark.errors import ConfigError, MetricNotFoundError
from highmark.policy.smoothing import Smoothing, smoothing_from_config

__all__ = [
    "Metrics",
    "Monitor",
    "as_float",
    "as_monitor",
    "infer_mode",
    "resolve_mode",
]

Metrics = float | Mapping[str, Any]
Mode = Literal["min", "max"]
_INF = math.inf


def as_float(value: Any, key: str) -> float:
    """Converts a metric value to ``float``; anything with ``__float__`` works (numpy, torch).

    Raises:
        TypeError: for ``bool``, ``str``, ``bytes``, ``None`` or other non-numeric values, naming
            the metric ``key``.
    """
    if type(value) is float:
        return value
    dtype = str(getattr(value, "dtype", ""))
    if (
        isinstance(value, (bool, str, bytes))
        or dtype in ("bool", "torch.bool")  # numpy/torch booleans convert silently otherwise
        or not hasattr(value, "__float__")
    ):
        raise TypeError(
            f"metric {key!r} must be a number, got {type(value).__name__}: {value!r:.80}"
        )
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric {key!r} must be a single number, got {value!r:.80}") from exc


# Words that name a metric to maximise or to minimise, matched against the words of a metric
# name (split at non-letters and at camelCase humps, lower-cased, trailing digits dropped:
# "val/mAP50" -> "map", "ap"; "MulticlassAccuracy" -> "accuracy"). Keras' metrics with a
# direction are all covered (cosine_similarity, r2_score, pearson_correlation: up; hinge,
# poisson-like losses, kl_divergence: down), and so are the usual Hugging Face and torchmetrics
# names (eval_exact_match, eval_wer, val_MulticlassF1Score).
MAX_WORDS = frozenset(
    "acc accuracy auc auroc auprc ap f1 fbeta fmeasure precision recall map iou miou dice r2 "  # noqa: SIM905
    "bleu sacrebleu chrf rouge rougel rougelsum meteor cider spice bertscore exact ndcg mrr "
    "hit hits top1 top5 psnr ssim kappa mcc reward return sensitivity specificity jaccard "
    "similarity correlation pearson spearman concordance".split()
)
MIN_WORDS = frozenset(
    "loss losses error err mse mae rmse mape smape msle rmsle nll ppl perplexity cer wer ter "  # noqa: SIM905
    "crossentropy kld kl divergence logcosh huber hinge poisson brier ece fid kid lpips bpd "
    "bpc distance regret cost fpr fnr eer time latency".split()
)
_PREFIXES = ("val", "valid", "validation", "train", "training", "test", "eval", "dev")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # "valF1Score" -> "val_F1_Score"


def infer_mode(key: str) -> Mode | None:
    """The direction a metric name implies, or None when the name does not say.

    The name is split into lower-case words at every character that is not a letter or digit
    (and, as well, at camelCase humps), and each word also counts without its trailing digits
    (``"val/mAP50"`` gives ``map50``, ``map``, ``m``, ``ap50`` and ``ap``).
    ``"max"`` when some word is in :data:`MAX_WORDS` (accuracy-like: acc, accuracy, auc, f1,
    precision, recall, map, iou, dice, r2, bleu, rouge...), ``"min"`` when some word is in
    :data:`MIN_WORDS` (loss- and error-like), None when neither or both match.

    >>> infer_mode("val_accuracy"), infer_mode("val_loss"), infer_mode("mean_squared_error")
    ('max', 'min', 'min')
    >>> infer_mode("val/mAP50"), infer_mode("top_k_categorical_accuracy"), infer_mode("lr")
    ('max', 'max', None)
    """
    words = set(_split_words(key)) | set(_split_words(_HUMP.sub("_", key)))
    words |= {w.rstrip("0123456789") for w in words}
    words.difference_update(_PREFIXES)
    is_max = not words.isdisjoint(MAX_WORDS)
    is_min = not words.isdisjoint(MIN_WORDS)
    if is_max == is_min:
        return None
    return "max" if is_max else "min"


def resolve_mode(key: str, mode: str) -> Mode:
    """The mode to use for the metric ``key``: ``mode`` itself, or the inferred one for ``"auto"``.

    ``"auto"`` takes :func:`infer_mode`'s answer (as Keras' ``mode="auto"`` does, with a larger,
    documented word list); a name it cannot classify is refused rather than guessed.

    >>> resolve_mode("val_acc", "auto"), resolve_mode("val_acc", "min")
    ('max', 'min')

    Raises:
        ConfigError: ``mode`` is not ``"min"``, ``"max"`` or ``"auto"``, or it is ``"auto"`` and
            the name does not say which direction is better.
    """
    if mode == "min":
        return "min"
    if mode == "max":
        return "max"
    if mode != "auto":
        raise ConfigError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    inferred = infer_mode(key)
    if inferred is None:
        raise ConfigError(
            f"mode='auto' cannot tell from the name {key!r} whether lower or higher is better; "
            "pass mode='min' (a loss or an error) or mode='max' (an accuracy or a score)"
        )
    return inferred


def _split_words(key: str) -> list[str]:
    out: list[str] = []
    word = ""
    for char in key.lower():
        if char.isascii() and char.isalnum():
            word += char
        elif word:
            out.append(word)
            word = ""
    if word:
        out.append(word)
    return out


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def as_monitor(
    monitor: str | Monitor | None,
    mode: str | None = None,
    min_delta: float = 0.0,
    min_delta_mode: str = "abs",
    smoothing: Smoothing | Mapping[str, Any] | None = None,
    default_key: str = "val_loss",
) -> Monitor:
    """Returns ``monitor`` as a :class:`Monitor`, building one from a key when given a str.

    ``mode`` None means ``"auto"``. When a Monitor object is given, ``"auto"`` takes its mode and
    the other arguments must be left at their defaults or agree with it (ConfigError otherwise),
    so two sources never disagree about the comparator.
    """
    if mode is not None and mode not in ("min", "max", "auto"):
        raise ConfigError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    if isinstance(monitor, Monitor):
        if mode not in (None, "auto") and mode != monitor.mode:
            raise ConfigError(f"mode={mode!r} conflicts with the given Monitor's {monitor.mode!r}")
        if min_delta and abs(min_delta) != monitor.min_delta:
            raise ConfigError(f"min_delta={min_delta!r} conflicts with the given Monitor's")
        if min_delta_mode != "abs" and min_delta_mode != monitor.min_delta_mode:
            raise ConfigError(
                f"min_delta_mode={min_delta_mode!r} conflicts with the given Monitor's"
            )
        if smoothing is not None:
            raise ConfigError("give smoothing to the Monitor, not next to a Monitor object")
        return monitor
    if monitor is not None and not isinstance(monitor, str):
        raise ConfigError(f"monitor must be a str or a Monitor, got {type(monitor).__name__}")
    return Monitor(
        monitor or default_key, mode or "auto", min_delta, min_delta_mode, smoothing=smoothing
    )


class Monitor:
    """The monitored metric and the rule saying when a value is an improvement.

    Improvement with ``min_delta_mode="abs"`` (as Keras and Lightning compute it):
    ``current + |min_delta| < best`` in min mode, ``current - |min_delta| > best`` in max mode.
    With ``"rel"``: ``current < best - |min_delta|*|best|`` (min) and
    ``current > best + |min_delta|*|best|`` (max), sign-safe for negative metrics. Ties are not
    improvements and NaN never is.

    Args:
        key: The metric name looked up in a metrics mapping.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the default): the direction :func:`infer_mode`
            reads from ``key``; a name it cannot classify raises ConfigError asking for ``mode``.
            :attr:`mode` and :meth:`config` hold the resolved ``"min"``/``"max"``, never
            ``"auto"``.
        min_delta: The smallest change that counts as an improvement (its absolute value is used).
        min_delta_mode: ``"abs"`` or ``"rel"`` (a fraction of ``|best|``).
        smoothing: An optional filter (:mod:`highmark.policy.smoothing`'s ``MovingAverage``,
            ``ExponentialMovingAverage`` or their config dict) applied by :meth:`observe`.

    >>> m = Monitor("val_loss", mode="min", min_delta=0.1)
    >>> m.is_improvement(0.85, 1.0), m.is_improvement(0.95, 1.0)
    (True, False)
    >>> m.value({"val_loss": 0.5, "acc": 0.9})
    0.5
    """

    def __init__(
        self,
        key: str = "val_loss",
        mode: str = "auto",
        min_delta: float = 0.0,
        min_delta_mode: str = "abs",
        smoothing: Smoothing | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"monitor key must be a non-empty str, got {key!r}")
        resolved = resolve_mode(key, mode)
        if min_delta_mode not in ("abs", "rel"):
            raise ConfigError(f"min_delta_mode must be 'abs' or 'rel', got {min_delta_mode!r}")
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, (int, float))
            or not math.isfinite(min_delta)
        ):
            raise ConfigError(f"min_delta must be a finite number, got {min_delta!r}")
        self.key = key
        self.mode: Mode = resolved
        self.min_delta = abs(float(min_delta))
        self.min_delta_mode = min_delta_mode
        self.smoothing = smoothing_from_config(smoothing)
        self._min = self.mode == "min"
        self._rel = min_delta_mode == "rel"
        self._last: tuple[int, float, float] | None = None

    @property
    def initial_best(self) -> float:
        """The best value before any evaluation: ``+inf`` (min) or ``-inf`` (max)."""
        return _INF if self._min else -_INF

    def value(self, metrics: Metrics) -> float:
        """Looks up the raw monitored value (no smoothing, no state change).

        A float (or anything with ``__float__``) passes through; a mapping gives ``metrics[key]``.

        Raises:
            MetricNotFoundError: the key is missing; lists the keys that were given.
            TypeError: the value is not a number.
        """
        kind = type(metrics)
        if kind is dict:  # the common case, without the (slow) ABC check below
            try:
                raw = metrics[self.key]  # type: ignore[index]
            except KeyError:
                raise MetricNotFoundError(self.key, metrics.keys()) from None  # type: ignore[union-attr]
            return raw if type(raw) is float else as_float(raw, self.key)
        if kind is float:
            return metrics  # type: ignore[return-value]
        if isinstance(metrics, Mapping):
            try:
                raw = metrics[self.key]
            except KeyError:
                raise MetricNotFoundError(self.key, metrics.keys()) from None
            if type(raw) is float:
                return raw
            return as_float(raw, self.key)
        return as_float(metrics, self.key)

    def observe(self, metrics: Metrics, step: int | None = None) -> float:
        """Looks up the monitored value and feeds it through the smoothing (stateful).

        Components sharing this Monitor may all call ``observe`` for the same evaluation: a
        repeated call with the same ``step`` and raw value returns the cached smoothed value
        instead of feeding the filter twice.
        """
        current = self.value(metrics)
        if self.smoothing is None:
            return current
        last = self._last
        if step is not None and last is not None and last[0] == step and _same(last[1], current):
            return last[2]
        smoothed = self.smoothing.update(current)
        self._last = None if step is None else (step, current, smoothed)
        return smoothed

    def is_improvement(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` by more than ``min_delta`` (ties are not)."""
        if self._rel:
            if best != best or best in (_INF, -_INF):
                return current < best if self._min else current > best
            d = self.min_delta
            if self._min:
                return current < (best * (1.0 - d) if best >= 0.0 else best * (1.0 + d))
            return current > (best * (1.0 + d) if best >= 0.0 else best * (1.0 - d))
        if self._min:
            return current + self.min_delta < best
        return current - self.min_delta > best

    def is_better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` (no ``min_delta``; NaN is never better)."""
        return a < b if self._min else a > b

    def sort_key(self, value: float | None) -> tuple[int, float]:
        """A key sorting values best first; ``None`` and NaN sort last."""
        if value is None or value != value:
            return (1, 0.0)
        return (0, value) if self._min else (0, -value)

    def reset(self) -> None:
        """Forgets the smoothing state."""
        self._last = None
        if self.smoothing is not None:
            self.smoothing.reset()

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state (the smoothing filter's)."""
        return {"smoothing": None if self.smoothing is None else self.smoothing.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; ConfigError names a bad key."""
        if not isinstance(state, Mapping) or "smoothing" not in state:
            raise ConfigError("monitor state misses key 'smoothing'")
        sm = state["smoothing"]
        if self.smoothing is None:
            if sm is not None:
                raise ConfigError("monitor state 'smoothing' given but the monitor has none")
            return
        if not isinstance(sm, Mapping):
            raise ConfigError("monitor state 'smoothing' must be a dict")
        self.smoothing.load_state_dict(sm)
        self._last = None

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {
            "key": self.key,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "min_delta_mode": self.min_delta_mode,
            "smoothing": None if self.smoothing is None else self.smoothing.config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Monitor:
        """Builds a Monitor from :meth:`config` output."""
        known = {"key", "mode", "min_delta", "min_delta_mode", "smoothing"}
        unknown = set(config) - known
        if unknown:
            raise ConfigError(f"unknown monitor config keys: {sorted(unknown)}")
        return cls(**config)

    def __repr__(self) -> str:
        extra = "" if self.smoothing is None else f", smoothing={self.smoothing.config()}"
        return (
            f"Monitor({self.key!r}, mode={self.mode!r}, min_delta={self.min_delta!r}, "
            f"min_delta_mode={self.min_delta_mode!r}{extra})"
        )
