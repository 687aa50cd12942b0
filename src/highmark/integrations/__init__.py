"""Framework integrations: one ``HighmarkCallback`` per framework, with the same constructor.

Each submodule imports its framework, so import the one you use::

    from highmark.integrations.lightning import HighmarkCallback
    from highmark.integrations.keras import HighmarkCallback
    from highmark.integrations.transformers import HighmarkCallback
    from highmark.integrations.optuna import HighmarkPruner

This package itself imports no framework.
"""

from __future__ import annotations

__all__: list[str] = []
