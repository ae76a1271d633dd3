"""`vpr ui`: the MLflow UI on this project's store."""

from __future__ import annotations

import argparse
import subprocess
import sys


def _ui(args: argparse.Namespace) -> int:
    from pipeline.tracking.store import Tracker, default_tracking_uri

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
    ui = sub.add_parser("ui", help="open the MLflow UI on this project's store",
                        description="Start `mlflow ui` on the project's store (or $MLFLOW_TRACKING_URI).")
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    ui.set_defaults(func=_ui)
