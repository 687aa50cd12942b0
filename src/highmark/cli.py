"""The ``highmark`` command line. Commands only delegate to the library."""

from __future__ import annotations

import sys

from highmark.__about__ import __version__

try:
    import typer
except ImportError:  # pragma: no cover - exercised only without the cli extra
    typer = None  # type: ignore[assignment]

_INSTALL_HINT = "the highmark command line needs its extra: pip install 'highmark[cli]'"

if typer is not None:
    app = typer.Typer(
        name="highmark",
        help="Early stopping and model saving: inspect, compare, verify and prune training runs.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    def _version(value: bool) -> None:
        if value:
            print(f"highmark {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """highmark: stop training at the right time and keep the right models."""


def main() -> None:
    """Entry point of the ``highmark`` console script."""
    if typer is None:
        print(_INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
