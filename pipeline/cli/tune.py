"""`vpr tune run` and `vpr tune dashboard`: Optuna tuning and its dashboard."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _tune_run(args: argparse.Namespace) -> int:
    from pipeline.sweeps.tune_runner import TuningWorkersFailed, run_tunings, tuning_files

    try:
        run_tunings(tuning_files(args.studies), workers=args.workers, storage_url=args.storage, params=args.params,
                    prepared=args.prepared, runs_dir=args.runs_dir, out_root=args.out, ray_address=args.ray)
    except TuningWorkersFailed as err:
        print(f"vpr: error: {err}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    tune = sub.add_parser("tune", help="Optuna tuning of learning rate and weight decay per optimizer",
                          description="Tune with Optuna: one study per optimizer, pruned on per-epoch val "
                          "Recall@1, resumable, every trial an MLflow run.")
    tune_sub = tune.add_subparsers(dest="tune_command", required=True)
    tune_run = tune_sub.add_parser("run", help="run tuning files to their budget",
                                   description="Run each tuning file (experiments/tune_*.yaml) with N worker "
                                   "processes; a rerun continues to the budget. Writes OUT/<id>/best_params.json "
                                   "(the tuning's figures are written by `vpr report`).")
    tune_run.add_argument("studies", nargs="+", help="tuning files, or folders of tune_*.yaml (e.g. experiments)")
    tune_run.add_argument("--workers", type=int, default=1, help="worker processes on this machine (or Ray tasks)")
    tune_run.add_argument("--ray", default=os.environ.get("VPR_RAY_ADDRESS"), metavar="ADDRESS",
                          help="run the workers as tasks on this Ray cluster (default $VPR_RAY_ADDRESS; use an RDB --storage every node reaches)")
    tune_run.add_argument("--storage", default=None,
                          help="Optuna storage URL (e.g. postgresql://...) shared by machines; default: a "
                          "JournalStorage file optuna/<id>.journal")
    tune_run.add_argument("--params", default="params.yaml")
    tune_run.add_argument("--prepared", default="data/prepared")
    tune_run.add_argument("--runs-dir", default="runs")
    tune_run.add_argument("--out", default="reports/tuning", help="output folder (default reports/tuning)")
    tune_run.set_defaults(func=_tune_run)
    _register_dashboard(tune_sub)


def _tune_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on one tuning's storage (its journal file, or --storage URL) until Ctrl-C."""
    from pipeline.errors import UserError
    from pipeline.sweeps.tuning import TuningError, open_storage

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install -e '.[services]'") from None
    if args.storage is None:
        if not args.tuning:
            raise UserError("vpr tune dashboard: give a tuning (file or id, e.g. tune_s003_fig2) or --storage URL")
        tuning_id = Path(args.tuning).name.removesuffix(".yaml")
        journal = Path(args.journal_dir) / f"{tuning_id}.journal"
        if not journal.is_file():  # open_storage would create an empty one
            raise TuningError(f"no tuning storage {journal}: run `vpr tune run` on {tuning_id} first, "
                              "or pass --storage URL")
    else:
        tuning_id = "-"
    storage, label = open_storage(args.storage, tuning_id, root=args.journal_dir)
    print(f"optuna-dashboard for {label} on http://{args.host}:{args.port}", flush=True)
    run_server(storage, host=args.host, port=args.port)
    return 0


def _register_dashboard(tune_sub: argparse._SubParsersAction) -> None:
    dash = tune_sub.add_parser("dashboard", help="optuna-dashboard on a tuning's storage",
                               description="Serve Optuna's own dashboard (optuna-dashboard, extra `services`) "
                               "on the JournalStorage file of a tuning (optuna/<id>.journal) or on an RDB URL.")
    dash.add_argument("tuning", nargs="?", help="tuning file or id (its storage is optuna/<id>.journal)")
    dash.add_argument("--storage", default=None, help="Optuna storage URL instead (e.g. postgresql://...)")
    dash.add_argument("--journal-dir", default="optuna", help="folder of the journal files (default optuna)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(func=_tune_dashboard)
