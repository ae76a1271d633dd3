"""The flags that several commands share: one name, one meaning, one help text each.

| flag | meaning |
| --- | --- |
| `STUDIES...` | study files or folders of them (default `experiments`); tuning files for `vpr tune run` |
| `--jobs N` | how many runs, trials or figure processes go side by side |
| `--params`, `--prepared`, `--runs-dir` | the profile file, the prepare stage's output, the run folders |
| `--tuned-dir` | where tuned values live (`<dir>/<tuning id>/best_params.json`) |
| `--tuning-storage`, `--journal-dir` | where the tunings' Optuna studies live |
| `--quiet` | no progress bars or per-item lines; errors and the result still print |

Renamed flags stay one release as deprecated aliases (`deprecated`): they work and say the new name.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pipeline import project_files


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type): a wrong value is a usage error (exit 2) naming it."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _DeprecatedAlias(argparse.Action):
    """An old flag: stores into the new flag's destination and says the new name on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"vpr: warning: {option_string} is deprecated and will be removed; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Keep `old` working as an alias of `new` (stored in `dest`) for one release."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, default=argparse.SUPPRESS,
                        help=f"deprecated alias of {new}", **kwargs)


def add_studies(parser: argparse.ArgumentParser, what: str = "study files") -> None:
    """Positional STUDIES: files or folders (default experiments)."""
    parser.add_argument("studies", nargs="*", metavar="STUDIES",
                        help=f"{what} or folders of them (default: {project_files.STUDIES_DIR}/)")


def studies_of(args: argparse.Namespace) -> list[str]:
    """The STUDIES given, or the default folder."""
    return list(args.studies) or [project_files.STUDIES_DIR]


def add_jobs(parser: argparse.ArgumentParser, what: str, default: int | None = 1) -> None:
    """--jobs N: how many of `what` go side by side."""
    shown = "every core" if default is None else str(default)
    parser.add_argument("--jobs", type=positive_int, default=default, metavar="N",
                        help=f"{what} side by side (default {shown})")


def add_project(parser: argparse.ArgumentParser, runs_dir: bool = True) -> None:
    """--params, --prepared (and --runs-dir): the profile, the prepare stage's output, the run folders."""
    parser.add_argument("--params", default=project_files.PARAMS_FILE, help=f"params file selecting the profile (default {project_files.PARAMS_FILE})")
    parser.add_argument("--prepared", default=project_files.PREPARED_DIR,
                        help=f"output of the prepare stage: dataset roots (default {project_files.PREPARED_DIR})")
    if runs_dir:
        parser.add_argument("--runs-dir", default=project_files.RUNS_DIR, help=f"folder of run folders <dir>/<hash>/ (default {project_files.RUNS_DIR})")


def add_tuned_dir(parser: argparse.ArgumentParser) -> None:
    """--tuned-dir: where tuned values are written and read."""
    parser.add_argument("--tuned-dir", default=project_files.TUNED_VALUES_DIR,
                        help=f"folder of tuned values, <dir>/<tuning id>/best_params.json (default {project_files.TUNED_VALUES_DIR})")


def add_tuning_storage(parser: argparse.ArgumentParser) -> None:
    """--tuning-storage and --journal-dir: where the tunings' Optuna studies live."""
    parser.add_argument("--tuning-storage", default=os.environ.get("VPR_TUNING_STORAGE"), metavar="URL",
                        help="Optuna storage URL shared by machines (e.g. postgresql://host/optuna; default "
                        "$VPR_TUNING_STORAGE, else a journal file per tuning in --journal-dir)")
    parser.add_argument("--journal-dir", default=project_files.JOURNALS_DIR,
                        help=f"folder of the tunings' journal files <id>.journal (default {project_files.JOURNALS_DIR})")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """--quiet: no progress bars or per-item lines."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-item lines")
