"""Numbers for people: byte counts and durations as the CLI and the reports print them."""

from __future__ import annotations

__all__ = ["size"]


def size(n: float) -> str:
    """A byte count for people: ``5.7 KiB``.

    >>> size(5800), size(3), size(2 * 1024**3)
    ('5.7 KiB', '3 B', '2.0 GiB')
    """
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
