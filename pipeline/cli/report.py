"""`vpr report` and `vpr ui`: what was recorded."""

from __future__ import annotations

import argparse
import json
import sys


def _report(args: argparse.Namespace) -> int:
    from pipeline.reporting.report import write_report
    from pipeline.sweeps.runner import check_jobs

    if args.jobs is not None:
        check_jobs(args.jobs)  # before reading any run: a wrong flag fails at once
    metrics = write_report(args.out, params=args.params, prepared=args.prepared, experiments=args.experiments,
                           tuning_storage=args.tuning_storage, plan=args.plan, jobs=args.jobs)
    print(json.dumps(metrics, indent=2))
    return 0


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from pipeline.sweeps.tracking import Tracker, default_tracking_uri

    uri = default_tracking_uri()
    # MLflow 3.17's UI starts in its GenAI mode (traces) whatever the experiment's kind tag says;
    # the `workflowType` query switches it to model training, on the experiment's runs table.
    experiment = Tracker(uri).experiment_id
    print(f"MLflow UI for {uri}: open http://{args.host}:{args.port}/#/experiments/{experiment}"
          "?workflowType=machine_learning", flush=True)
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                            "--host", args.host, "--port", str(args.port)])


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    report = sub.add_parser("report", help="write reports/ from the MLflow runs",
                            description="Write every study's LaTeX tables (with bootstrap CIs and ties), "
                            "published-vs-reproduced tables, figures, reports/README.md (Markdown), runs.csv, "
                            "curves.csv and metrics.json, all from the runs recorded in MLflow.")
    report.add_argument("--out", default="reports", help="output folder (default reports)")
    report.add_argument("--params", default="params.yaml", help="params file selecting the profile")
    report.add_argument("--prepared", default="data/prepared", help="output of the prepare stage (dataset roots)")
    report.add_argument("--experiments", default="experiments", help="folder of study files")
    report.add_argument("--tuning-storage", default=None,
                        help="Optuna storage URL of the tunings (as given to `vpr tune run --storage`); default: "
                        "each tuning's journal optuna/<id>.journal. Tuning figures go to OUT/figures/tuning/<id>/")
    report.add_argument("--plan", default="data/sweep/plan.json",
                        help="the plan the train stage recorded (cells and config hashes); without the file the "
                        "studies are planned again from experiments/ and params.yaml")
    report.add_argument("--jobs", type=int, default=None,
                        help="processes drawing the figures (default: every core; 1 draws them in order)")
    report.set_defaults(func=_report)

    ui = sub.add_parser("ui", help="open the MLflow UI on this project's store",
                        description="Start `mlflow ui` on the project's store (or $MLFLOW_TRACKING_URI).")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_ui)
