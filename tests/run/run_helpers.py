"""Real child training processes for the Run tests (forked, so torch is imported only once)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import child_train
import torch

from highmark.cli.demo import build_data

# Warm what the children would otherwise each import on first use: building the first torch
# optimizer imports torch._dynamo (seconds on a busy machine), and the digits load sklearn.
torch.optim.Adam([torch.zeros(1, requires_grad=True)])
build_data(0)


class Child:
    """A running ``child_train.py`` whose merged stdout/stderr is read line by line."""

    def __init__(
        self,
        run_dir: Path | None,
        out: Path | None,
        *extra: str,
        main: Callable[[list[str]], int] = child_train.main,
    ) -> None:
        where = [] if run_dir is None else ["--dir", str(run_dir)]
        argv = [*where, *([] if out is None else ["--out", str(out)]), *extra]
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run the training script's main() and never return
            code = 1
            try:
                os.close(out_r)
                os.close(in_w)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                os.dup2(in_r, 0)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = sys.stdout
                logging.root.handlers.clear()  # pytest's capture handlers live in the parent
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except KeyboardInterrupt:
                traceback.print_exc()
                code = 130
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.close(out_w)
        os.close(in_r)
        self.pid = pid
        self.stdout = os.fdopen(out_r)
        self.stdin = os.fdopen(in_w, "w")
        self.lines: list[str] = []
        self.returncode: int | None = None

    def read_until(self, predicate: Callable[[str], bool]) -> str | None:
        """Reads lines until one satisfies ``predicate`` (returned) or the output ends (None)."""
        for raw in self.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            if predicate(line):
                return line
        return None

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def write(self, text: str) -> None:
        self.stdin.write(text)
        self.stdin.flush()

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            self.stdout.close()
            self.stdin.close()
        return self.returncode

    def finish(self) -> int:
        """Reads the rest of the output and waits for the exit code."""
        self.read_until(lambda _line: False)
        return self.wait()

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def run_child(run_dir: Path, out: Path, *extra: str) -> tuple[int, Child]:
    """Runs a child to completion; returns its exit code and the finished Child."""
    child = Child(run_dir, out, *extra)
    code = child.finish()
    return code, child


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


class TinyModel(torch.nn.Module):
    """A 4->3->1 linear model with a buffer, cheap to save."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.out = torch.nn.Linear(3, 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)))


def nudge(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One real optimizer step on random data, so the weights change every epoch."""
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
