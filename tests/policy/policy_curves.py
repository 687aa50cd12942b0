"""Generated metric curves for the differential tests (deterministic, seeded).

Values lie on a grid of eighths, so they are exact in float32 and float64 and the references'
arithmetic (``current - min_delta``, float32 tensors in Keras) matches ours bit for bit. Random
walks on the grid give many ties and steps of exactly ``min_delta``.
"""

from __future__ import annotations

import math
import random

NAN = math.nan
INF = math.inf
GRID = [k / 8 for k in range(-16, 17)]


def walk(rng: random.Random, n: int, special: float = 0.08) -> list[float]:
    """A random walk on the grid with occasional NaN/+inf/-inf values."""
    value = rng.choice(GRID)
    out = []
    for _ in range(n):
        value = max(-4.0, min(4.0, value + rng.choice([-2, -1, -1, 0, 0, 1, 1, 2]) / 8))
        out.append(rng.choice([NAN, INF, -INF]) if rng.random() < special else value)
    return out


def first_is_no_improvement(values: list[float], start_from: int, mode: str) -> bool:
    """The documented corner: the first counted value cannot improve on the initial best."""
    if start_from >= len(values):
        return False
    first = values[start_from]
    return math.isnan(first) or first == (INF if mode == "min" else -INF)


def same(a: float, b: float) -> bool:
    """Equal, or both NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))
