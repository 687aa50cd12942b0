"""The ``highmark`` command line: :func:`main` is the console script's entry point.

The commands (:mod:`.commands`) only delegate: :mod:`.queries` gathers plain data from runs,
:mod:`.views` prints it (rich tables), :mod:`.report` writes HTML/PNG reports and :mod:`.demo`
trains the digits demo. The command line needs the ``cli`` extra (typer, rich); without it
:func:`main` prints how to install it and exits 2.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

INSTALL_HINT = "the highmark command line needs its extra: pip install 'highmark[cli]'"


def main() -> None:
    """Entry point of the ``highmark`` console script."""
    from highmark.cli import commands

    if commands.MISSING is not None:
        print(f"{INSTALL_HINT} (missing: {commands.MISSING})", file=sys.stderr)
        raise SystemExit(2)
    commands.app()
