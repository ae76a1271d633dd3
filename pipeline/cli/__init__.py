"""The `vpr` command: argument parsing only; the work is done by the modules it calls.

One module per command (group) registers its subcommands and is named after it; flags that
several commands share are defined once (`pipeline.cli.arguments`). Heavy imports (torch,
mlflow) happen inside the handlers so that `vpr --help` stays instant.

Exit status, for every command: 0 done; 1 the work ran and found failures (a run or a tuning
worker failed, `vpr data check` found errors); 2 a usage or input error stopped it before or
while working (one line naming the file, key or value, and what would be right).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli import config, data, evaluate, prepare, report, sweep, train, tune, ui
from pipeline.errors import UserError

_GROUPS = (data, prepare, config, train, evaluate, sweep, tune, report, ui)


def build_parser() -> argparse.ArgumentParser:
    """The full `vpr` argument parser (every subcommand has --help)."""
    parser = argparse.ArgumentParser(prog="vpr", description="VPR Sweep: reproducible experiment "
                                     "sweeps for visual place recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vpr` command: a user error is one line (exit 2); a bug keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"vpr: error: {user_message(err)}", file=sys.stderr)
        return 2


def user_message(err: BaseException) -> str:
    """The error's own message. An error raised in a DataLoader worker comes back with the worker's
    traceback prepended ("Caught ... in DataLoader worker process 0. Original Traceback ..."):
    keep only what the original exception said."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    start = text.rfind("\n" + prefix)
    return text[start + 1 + len(prefix):].strip() if start >= 0 else text


def entry_point() -> None:
    """The `vpr` script: `main`, then a quick exit (`pipeline.process_exit`)."""
    from pipeline.process_exit import run_entry_point

    run_entry_point(main)
