"""A resumable wrapper around a DataLoader (or any re-iterable) for mid-epoch resume.

:class:`ResumableLoader` counts the batches consumed in the current pass and remembers the state
of the random generators that decide the pass's order (the loader's and its sampler's
``torch.Generator``, and the global RNGs) as they were when the pass began. A checkpoint taken in
the middle of a pass stores both; after a resume the next pass replays the same order and skips
the batches already consumed, so no sample is seen twice or missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from highmark.errors import ConfigError

__all__ = ["ResumableLoader"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _capture_rng() -> Any:
    from highmark.state.torch import capture_rng

    return capture_rng()


def _restore_rng(state: Any) -> None:
    from highmark.state.torch import restore_rng

    restore_rng(state)


class ResumableLoader(Generic[T]):
    """Wraps a re-iterable of batches so that a pass can be resumed where it was interrupted.

    Usually made by :meth:`highmark.Run.loader`, which stores its state in every checkpoint.
    Shuffling must come from a ``torch.Generator`` on the loader or its sampler (e.g.
    ``DataLoader(..., shuffle=True, generator=g)``) or from the global RNGs; both are captured.

    Args:
        iterable: a DataLoader or any object that can be iterated more than once.
        boundary: called before each batch is fetched (the run acts on a pending signal there).
    """

    def __init__(self, iterable: Iterable[T], boundary: Callable[[], None] | None = None) -> None:
        if iter(iterable) is iterable:
            raise ConfigError(
                "ResumableLoader needs a re-iterable (a DataLoader, a list, ...), "
                f"not a one-shot iterator ({type(iterable).__name__})"
            )
        self.iterable = iterable
        self.boundary = boundary
        self.consumed = 0
        self.active = False
        self._start: dict[str, Any] | None = None
        self._replay: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]

    def _generators(self) -> list[Any]:
        found: list[Any] = []
        candidates = [self.iterable, getattr(self.iterable, "sampler", None)]
        batch_sampler = getattr(self.iterable, "batch_sampler", None)
        candidates += [batch_sampler, getattr(batch_sampler, "sampler", None)]
        for obj in candidates:
            gen = getattr(obj, "generator", None)
            if gen is not None and hasattr(gen, "get_state") and all(gen is not g for g in found):
                found.append(gen)
        return found

    def _generator_states(self) -> list[Any]:
        return [g.get_state() for g in self._generators()]

    def _set_generator_states(self, states: list[Any]) -> None:
        gens = self._generators()
        if len(gens) != len(states):
            raise ConfigError(
                f"the loader has {len(gens)} random generator(s) but the checkpoint holds "
                f"{len(states)}: is this the same DataLoader setup as in the saved run?"
            )
        for gen, state in zip(gens, states, strict=True):
            gen.set_state(state)

    def state_dict(self) -> dict[str, Any]:
        """Returns the pass in progress (order state, batches consumed) or the generators' state."""
        if self.active and self._start is not None:
            return {"active": True, "consumed": self.consumed, "start": self._start}
        return {"active": False, "consumed": 0, "generators": self._generator_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`; an interrupted pass is replayed by the next iteration."""
        if state.get("active"):
            self._replay = {"consumed": int(state["consumed"]), "start": state["start"]}
        else:
            self._replay = None
            self._set_generator_states(list(state.get("generators", [])))
        self.active = False
        self.consumed = 0

    def end_pass(self) -> None:
        """Forgets an unfinished pass (called when a new epoch begins)."""
        self.active = False
        self._start = None
        self._replay = None

    def __iter__(self) -> Iterator[T]:
        """Starts a pass lazily: at the first batch, so ``iter()`` before a resume is fine."""
        yield from self._pass()

    def cycle(self) -> Iterator[T]:
        """Endless passes, for step loops: ``batches = run.loader(dl).cycle()``."""
        empty_passes = 0
        while empty_passes < 2:  # a resumed pass may have nothing left; two empty ones: stop
            empty_passes += 1
            for batch in self:
                empty_passes = 0
                yield batch

    def _pass(self) -> Iterator[T]:
        if self._replay is not None:
            replay, self._replay = self._replay, None
            start, skip = replay["start"], replay["consumed"]
            now = _capture_rng()
            self._set_generator_states(list(start["generators"]))
            _restore_rng(start["rng"])
            it = iter(self.iterable)
            self._skip(it, skip)
            _restore_rng(now)  # the global RNGs continue from the checkpoint, not from the replay
            logger.info("resuming a pass of %s: skipped %d consumed batches", self._name(), skip)
        else:
            start = {"generators": self._generator_states(), "rng": _capture_rng()}
            skip = 0
            it = iter(self.iterable)
        self._start, self.consumed, self.active = start, skip, True
        return self._batches(it)

    def _batches(self, it: Iterator[T]) -> Iterator[T]:
        while True:
            if self.boundary is not None:
                self.boundary()
            try:
                batch = next(it)
            except StopIteration:
                self.active = False
                self._start = None
                return
            self.consumed += 1
            yield batch

    def _skip(self, it: Iterator[T], count: int) -> None:
        # Fast path for a single-process torch DataLoader: advance the index sampler without
        # loading the skipped samples. It relies on private attributes, so it is guarded and
        # falls back to fetching (always exact) when they are not there.
        sampler_it = getattr(it, "_sampler_iter", None)
        map_style = getattr(self.iterable, "_dataset_kind", None) == 0  # _DatasetKind.Map
        if type(it).__name__ == "_SingleProcessDataLoaderIter" and map_style and sampler_it:
            for _ in range(count):
                next(sampler_it)
            it._num_yielded += count  # type: ignore[attr-defined]
            return
        for _ in range(count):
            next(it)

    def _name(self) -> str:
        return type(self.iterable).__name__
