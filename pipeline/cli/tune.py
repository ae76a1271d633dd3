"""`vpr tune run` and `vpr tune dashboard`: Optuna tuning and its dashboard."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.arguments import (add_jobs, add_project, add_quiet, add_studies, add_tuned_dir, add_tuning_storage,
                                    deprecated, positive_int, studies_of)
from pipeline.cli.sweep import add_ray


def _tune_run(args: argparse.Namespace) -> int:
    from pipeline.execution.tune import TuningWorkersFailed, run_tunings

    executor = None
    if args.ray:
        from pipeline.execution.ray_executor import RayExecutor

        executor = RayExecutor(args.ray, cpus=args.cpus_per_run, gpus=args.gpus_per_run)
    try:
        run_tunings(studies_of(args), jobs=args.jobs, storage_url=args.tuning_storage, params=args.params,
                    prepared=args.prepared, runs_dir=args.runs_dir, tuned_dir=args.tuned_dir,
                    journal_dir=args.journal_dir, executor=executor, quiet=args.quiet)
    except TuningWorkersFailed as err:  # trials failed (like a failed run of a sweep): exit 1
        print(f"vpr: error: {err}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    tune = sub.add_parser("tune", help="Optuna tuning of learning rate and weight decay per optimizer",
                          description="Tune with Optuna: one Optuna study per optimizer, pruned on per-epoch val "
                          "Recall@1, resumable, every trial an MLflow run.")
    tune_sub = tune.add_subparsers(dest="tune_command", required=True)
    tune_run = tune_sub.add_parser("run", help="run tuning files to their budget",
                                   description="Run each tuning file (tune_*.yaml) with N workers; a rerun "
                                   "continues to the budget. Writes project_files.TUNED_VALUES_DIR/<id>/best_params.json (the tuning's "
                                   "figures are written by `vpr report`). Exit 1 if a worker's trials failed.")
    add_studies(tune_run, "tuning files (tune_*.yaml)")
    add_jobs(tune_run, "worker processes (or Ray tasks), each running one trial at a time,")
    add_ray(tune_run, "the workers (use a --tuning-storage every node reaches)")
    add_tuning_storage(tune_run)
    add_project(tune_run)
    add_tuned_dir(tune_run)
    add_quiet(tune_run)
    deprecated(tune_run, "--workers", "--jobs", "jobs", type=positive_int)
    deprecated(tune_run, "--storage", "--tuning-storage", "tuning_storage")
    deprecated(tune_run, "--out", "--tuned-dir", "tuned_dir")
    tune_run.set_defaults(func=_tune_run)
    _register_dashboard(tune_sub)


def _tune_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on one tuning's storage (its journal file, or the storage URL) until Ctrl-C."""
    from pathlib import Path

    from pipeline.errors import UserError
    from pipeline.tuning.storage import journal_path, open_storage
    from pipeline.tuning.tuning_file import TuningError

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install -e '.[services]'") from None
    if args.tuning_storage is None:
        if not args.tuning:
            raise UserError("vpr tune dashboard: give a tuning (file or id, e.g. tune_s003_fig2) or --tuning-storage URL")
        tuning_id = Path(args.tuning).name.removesuffix(".yaml")
        journal = journal_path(tuning_id, args.journal_dir)
        if not journal.is_file():  # open_storage would create an empty one
            raise TuningError(f"no tuning storage {journal}: run `vpr tune run` on {tuning_id} first, "
                              "or pass --tuning-storage URL")
    else:
        tuning_id = "-"
    storage, label = open_storage(args.tuning_storage, tuning_id, args.journal_dir)
    print(f"optuna-dashboard for {label} on http://{args.host}:{args.port}", flush=True)
    run_server(storage, host=args.host, port=args.port)
    return 0


def _register_dashboard(tune_sub: argparse._SubParsersAction) -> None:
    dash = tune_sub.add_parser("dashboard", help="optuna-dashboard on a tuning's storage",
                               description="Serve Optuna's own dashboard (optuna-dashboard, extra `services`) "
                               "on the journal file of a tuning (optuna/<id>.journal) or on an RDB URL.")
    dash.add_argument("tuning", nargs="?", help="tuning file or id (its storage is project_files.JOURNALS_DIR/<id>.journal)")
    add_tuning_storage(dash)
    dash.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    deprecated(dash, "--storage", "--tuning-storage", "tuning_storage")
    dash.set_defaults(func=_tune_dashboard)
