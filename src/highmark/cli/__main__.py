"""``python -m highmark.cli``: the ``highmark`` command line."""

from __future__ import annotations

from highmark.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
