"""The commands of the ``highmark`` command line (typer). Commands only delegate to the library.

RUN is a local path or an fsspec URL (``s3://bucket/run``). Options for the filesystem are given
with ``--storage-option KEY=VALUE`` (repeatable; dotted keys nest, values are parsed as JSON when
they can be, e.g. ``--storage-option client_kwargs.endpoint_url=http://127.0.0.1:8333``); s3fs
also reads the usual ``AWS_*`` environment variables (``AWS_ENDPOINT_URL``, keys, region).

Exit codes: 0 done (also when ``prune`` is declined at its prompt); 1 an error, printed as one
line ``highmark: error: MESSAGE`` on stderr (``--debug`` shows the traceback), or ``verify``
found damage (printed on stdout); 2 a usage error (unknown option, missing argument).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, TypeVar

from highmark.__about__ import __version__

#: The missing package of the cli extra (then there is no :data:`app`), or None.
MISSING: str | None = None
try:
    import click
    import typer
except ImportError as _err:  # pragma: no cover - exercised only without the cli extra
    typer = None  # type: ignore[assignment]
    MISSING = _err.name
_STATE = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _typer_exits() -> tuple[type[BaseException], ...]:
    """The exceptions typer turns into exit codes itself: its own and, before typer 0.29
    (which vendors click), click's."""
    own = (typer.Exit, typer.Abort, getattr(typer, "TyperException", typer.Exit))
    return (*own, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit)


def _fail(message: str) -> None:
    print(f"highmark: error: {message}", file=sys.stderr)


def _errors(func: F) -> F:
    """Turns any exception of a command into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _typer_exits():
            raise
        except BrokenPipeError:  # e.g. `highmark ls --json RUN | head`
            sys.stderr.close()
            raise typer.Exit(0) from None
        except Exception as exc:
            if _STATE["debug"] or os.environ.get("HIGHMARK_DEBUG"):
                raise
            text = str(exc).strip().splitlines()
            _fail(text[0] if text else type(exc).__name__)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as nested fsspec storage options (dotted keys nest; JSON values)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option wants KEY=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = options
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return options


def _json(data: Any) -> None:
    """Prints strict JSON (non-finite numbers become null) for scripts."""
    from highmark.cli.queries import strict

    print(json.dumps(strict(data), indent=2, allow_nan=False))


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of bytes on a terminal's stderr (nothing elsewhere); yields
    ``advance(bytes_done, total_bytes)``."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    console = views.console(stderr=True)
    if not console.is_terminal:
        yield lambda n, total: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n, total: bar.update(task, advance=n, total=total)


if typer is not None:
    from typing import Annotated

    from highmark.cli import views

    app = typer.Typer(
        name="highmark",
        help=(
            "Early stopping and model saving: inspect, compare, verify and prune training runs.\n\n"
            "RUN is a local path or an fsspec URL (s3://bucket/run); pass filesystem options with "
            "-S KEY=VALUE (dotted keys nest: -S client_kwargs.endpoint_url=http://host:8333), or "
            "the AWS_* environment variables s3fs reads. Errors exit 1 (--debug: traceback)."
        ),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    StorageOpt = Annotated[
        list[str] | None,
        typer.Option("--storage-option", "-S", metavar="KEY=VALUE", help="fsspec option."),
    ]
    JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
    RunsArg = Annotated[list[str], typer.Argument(help="Runs, or folders of runs.")]

    class Mode(str, Enum):
        """A metric's direction; ``auto``: the run's recorded mode, else the metric's name's."""

        auto = "auto"
        min = "min"
        max = "max"

    ModeOpt = Annotated[
        Mode, typer.Option(help="auto: the run's recorded mode, else the one the name implies.")
    ]

    def _version(value: bool) -> None:
        if value:
            print(f"highmark {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    ) -> None:
        """highmark: stop training at the right time and keep the right models."""
        _STATE["debug"] = debug

    @app.command("ls")
    @_errors
    def ls_cmd(run: str, as_json: JsonOpt = False, storage_option: StorageOpt = None) -> None:
        """List the checkpoints of RUN (or of each run in a folder): step, metrics, size, flags."""
        from highmark.cli.queries import list_runs

        data = list_runs(run, storage_options(storage_option))
        if as_json:
            return _json(data)
        views.ls_table(data)

    @app.command("show")
    @_errors
    def show_cmd(
        spec: Annotated[str, typer.Argument(metavar="RUN[:STEP|:best|:latest]")],
        diff: Annotated[str | None, typer.Option(help="Compare with OTHER[:STEP].")] = None,
        rng: Annotated[bool, typer.Option(help="Also diff the saved RNG state.")] = False,
        as_json: JsonOpt = False,
        storage_option: StorageOpt = None,
    ) -> None:
        """Show one checkpoint: metadata, tensors with shapes and dtypes, checksums; or --diff."""
        from highmark.cli.queries import checkpoint_dir, open_run, parse_spec, show_checkpoint
        from highmark.store.tensors import diff_tensors

        opts = storage_options(storage_option)
        url, which = parse_spec(spec)
        with open_run(url, opts) as manager:
            if diff is None:
                data = show_checkpoint(manager, which)
            else:
                other_url, other_which = parse_spec(diff)
                with open_run(other_url, opts) as other:
                    a, b = manager.info(which), other.info(other_which)
                    dirs = (checkpoint_dir(a), checkpoint_dir(b))
                    with _progress("comparing") as advance:
                        data = diff_tensors(manager.storage, dirs[0], other.storage, dirs[1],
                                            progress=advance, rng=rng)  # fmt: skip
                    data = {"a": f"{url}:{a.step}", "b": f"{other_url}:{b.step}", **data}
        if as_json:
            return _json(data)
        views.diff_table(data) if diff is not None else views.show_tables(data)
        return None

    @app.command("compare")
    @_errors
    def compare_cmd(
        runs: RunsArg, as_json: JsonOpt = False, storage_option: StorageOpt = None
    ) -> None:
        """Compare runs side by side: best metric and step, stop reason, budget, time, bytes."""
        from highmark.cli.queries import compare_runs, find_runs

        opts = storage_options(storage_option)
        data = compare_runs(find_runs(runs, opts), opts)
        if as_json:
            return _json(data)
        views.compare_table(data)
        return None

    @app.command("verify")
    @_errors
    def verify_cmd(run: str, as_json: JsonOpt = False, storage_option: StorageOpt = None) -> None:
        """Recheck every checksum of RUN: exit 0 when all intact, 1 naming the damaged files."""
        from highmark.cli.queries import open_run, verify_run

        status = views.console(stderr=True).status("verifying")
        with open_run(run, storage_options(storage_option)) as manager, status:
            data = verify_run(manager)
        _json(data) if as_json else views.verify_lines(data)
        if not data["ok"]:
            raise typer.Exit(1)

    @app.command("prune")
    @_errors
    def prune_cmd(
        run: str,
        keep_best: Annotated[int | None, typer.Option(help="Keep the K best.")] = None,
        keep_last: Annotated[int | None, typer.Option(help="Keep the N latest.")] = None,
        keep_every: Annotated[int | None, typer.Option(help="Keep every S-th step.")] = None,
        monitor: Annotated[
            str | None, typer.Option(help="Metric --keep-best ranks by (default: the run's).")
        ] = None,
        mode: ModeOpt = Mode.auto,
        dry_run: Annotated[bool, typer.Option(help="Only show what would go.")] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        as_json: JsonOpt = False,
        storage_option: StorageOpt = None,
    ) -> None:
        """Delete checkpoints by the library's retention rules (best, last, milestones kept)."""
        from highmark.cli.queries import open_run, prune_run

        opts = storage_options(storage_option)
        flags = (keep_best, keep_last, keep_every)
        if not dry_run and not yes:
            if not sys.stdin.isatty():
                raise ValueError("refusing to delete without confirmation: pass --yes")
            with open_run(run, opts) as manager:
                plan = prune_run(manager, *flags, dry_run=True, monitor=monitor, mode=mode.value)
            views.prune_lines(plan)
            if not plan["delete"] or not typer.confirm("Delete these checkpoints?"):
                print("nothing deleted")
                raise typer.Exit(0)
        status = views.console(stderr=True).status("pruning")
        with open_run(run, opts, read_only=dry_run) as manager, status:
            data = prune_run(manager, *flags, dry_run=dry_run, monitor=monitor, mode=mode.value)
        return _json(data) if as_json else views.prune_lines(data)

    @app.command("export")
    @_errors
    def export_cmd(
        spec: Annotated[str, typer.Argument(metavar="RUN[:STEP|:best]")],
        out: Annotated[str, typer.Option("-o", "--out", help="FILE, or DIR/ for a folder.")],
        key: Annotated[str, typer.Option(help="Top-level key to export ('' = all).")] = "model",
        force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
        storage_option: StorageOpt = None,
    ) -> None:
        """Write one standalone safetensors file that load_file/load_state_dict read."""
        from highmark.cli.queries import open_run, parse_spec
        from highmark.store.tensors import export_checkpoint

        url, which = parse_spec(spec, default="best")
        opts = storage_options(storage_option)
        with open_run(url, opts) as manager, _progress("exporting") as advance:
            done = export_checkpoint(manager, which, out, key, url, force, advance)
        print(f"exported {done['tensors']} tensor(s), {views.size(done['bytes'])} "
              f"of step {done['step']} to {done['path']}")  # fmt: skip

    @app.command("report")
    @_errors
    def report_cmd(
        runs: RunsArg,
        out: Annotated[str, typer.Option("-o", "--out", help="HTML file.")] = "report.html",
        png: Annotated[str | None, typer.Option(help="Also write the plot as PNG.")] = None,
        storage_option: StorageOpt = None,
    ) -> None:
        """Write one self-contained HTML report: curves, best/stop steps, checkpoints."""
        from highmark.cli.queries import find_runs
        from highmark.cli.report import write_report

        opts = storage_options(storage_option)
        write_report(find_runs(runs, opts), out, png=png, storage_options=opts)
        print(f"wrote {out}" + (f" and {png}" if png else ""))

    @app.command("serve")
    @_errors
    def serve_cmd(
        root: Annotated[str, typer.Argument(metavar="RUNS_DIR_OR_URL")],
        port: Annotated[int, typer.Option(help="TCP port (0: a free one).")] = 8765,
        host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
        allow_remote: Annotated[bool, typer.Option(help="Allow a non-loopback --host.")] = False,
        storage_option: StorageOpt = None,
    ) -> None:
        """Serve a live, read-only dashboard of a run or a folder of runs (Ctrl-C stops)."""
        from highmark.serve import start

        start(root, host, port, allow_remote, storage_options(storage_option),
              say=functools.partial(print, flush=True))  # fmt: skip

    @app.command("watch")
    @_errors
    def watch_cmd(
        run: Annotated[str, typer.Argument(metavar="RUN")],
        once: Annotated[bool, typer.Option(help="Render once and exit.")] = False,
        storage_option: StorageOpt = None,
    ) -> None:
        """Watch a run live in the terminal: metrics, best, patience, checkpoints, stop ETA."""
        from highmark.cli.watch import watch

        watch(run, storage_options(storage_option), once=once)

    @app.command("replay")
    @_errors
    def replay_cmd(
        curves: Annotated[
            list[str], typer.Argument(help="Runs, folders of runs, CSV, Keras JSON, metrics.csv.")
        ],
        monitor: Annotated[
            str | None, typer.Option(help="Default: the run's, else val_loss.")
        ] = None,
        patience: str | None = "0..30",
        min_delta: str | None = None,
        min_delta_mode: str | None = None,
        mode: ModeOpt = Mode.auto,
        baseline: str | None = None,
        start_from: str | None = None,
        criteria: Annotated[
            str | None, typer.Option(help="e.g. none,gl:5,up:3+threshold:0.1")
        ] = None,
        smoothing: Annotated[str | None, typer.Option(help="e.g. none,ema:0.3,ma:5")] = None,
        score: Annotated[str | None, typer.Option(help="Also report regret on this.")] = None,
        score_mode: ModeOpt = Mode.auto,
        tolerance: float = 0.01,
        train_monitor: str = "train_loss",
        as_json: JsonOpt = False,
        plot: Annotated[str | None, typer.Option(help="Trade-off plot file.")] = None,
        storage_option: StorageOpt = None,
    ) -> None:
        """What-if: replay stopping policies on recorded curves; recommend the cheapest one.

        Each policy option takes a value, a list (2,5,10) or a range (0..30, 0..0.01:0.002).
        """
        from highmark.replay import replay
        from highmark.replay.curves import load_curves
        from highmark.replay.grid import parse_grid

        grid = parse_grid({"patience": patience, "min_delta": min_delta,
                           "min_delta_mode": min_delta_mode, "baseline": baseline,
                           "start_from": start_from, "criteria": criteria,
                           "smoothing": smoothing})  # fmt: skip
        loaded = load_curves(curves, storage_options(storage_option))
        result = replay(
            loaded, grid, monitor=monitor, mode=mode.value, score=score,
            score_mode=score_mode.value, tolerance=tolerance, train_monitor=train_monitor,
        )  # fmt: skip
        if plot:
            from highmark.cli.report import replay_plot

            replay_plot(result, plot)
        views.warn(result.warnings)
        if as_json:
            return _json(result.to_dict())
        views.replay_table(result, len(grid), len(result.curves))
        return None

    @app.command("demo")
    @_errors
    def demo_cmd(
        out: Annotated[str, typer.Option(help="Run directory.")] = "highmark-demo",
        max_epochs: Annotated[int, typer.Option(help="Epoch budget.")] = 100,
        seed: Annotated[int, typer.Option(help="Seed of split, weights, shuffling.")] = 0,
    ) -> None:
        """Train a small MLP on scikit-learn's digits with early stopping and checkpoints."""
        from highmark.cli.demo import main as demo

        code = demo(out, max_epochs=max_epochs, seed=seed)
        if code:
            raise typer.Exit(int(code))
