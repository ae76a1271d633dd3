"""The shared services the README recommends, for real: PostgreSQL + an MLflow server over HTTP.

A sweep, a tuning whose two workers share one Optuna study in PostgreSQL, and `vpr report` run
through the `vpr` command with MLFLOW_TRACKING_URI=http://..., as worker machines would; then
every planned run and every trial is finished exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import optuna
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from services import vpr_on
from test_sweeps import make_project
from test_tuning import tuning_file

from pipeline.models.checkpoints import load_checkpoint
from pipeline.tracking.records import checkpoint_from_run


def test_sweep_tuning_and_report_on_postgres_and_mlflow_server(embedded_root, tmp_path, postgres, mlflow_server):
    project = make_project(tmp_path, embedded_root, ["avg", "gem"])
    tuning = tuning_file("tune_shared", budget={"trials": 3}, base={"model.aggregator.name": "avg",
                                                                    "scheduler": "none", "training.epochs": 2})
    (project / "experiments" / "tune_shared.yaml").write_text(yaml.safe_dump(tuning, sort_keys=False))
    uri, optuna_url = mlflow_server.uri, postgres.url("optuna")

    sweep = vpr_on(project, uri, "sweep", "run", "--jobs", "2")
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    tune = vpr_on(project, uri, "tune", "run", "experiments/tune_shared.yaml", "--jobs", "2",
                  "--tuning-storage", optuna_url)
    assert tune.returncode == 0, tune.stdout + tune.stderr
    report = vpr_on(project, uri, "report", "--out", "reports")
    assert report.returncode == 0, report.stdout + report.stderr
    assert not (project / "mlflow.db").exists()  # everything went to the server

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("vpr-sweep")
    runs = client.search_runs([exp.experiment_id], "tags.`vpr.kind` = 'run'")
    finished = Counter(r.data.tags["vpr.config_hash"] for r in runs if r.info.status == "FINISHED")
    planned = vpr_on(project, uri, "sweep", "plan")
    hashes = [line.split()[0] for line in planned.stdout.splitlines()[1:-1]]
    assert len(hashes) == 2 and all(" finished " in line for line in planned.stdout.splitlines()[1:-1])
    assert {h: finished[h] for h in hashes} == {h: 1 for h in hashes}  # 0 lost, 0 duplicates
    assert len([r for r in runs if r.data.tags["vpr.config_hash"] in hashes]) == 2  # the server is shared by tests
    runs = [r for r in runs if r.data.tags["vpr.config_hash"] in hashes]
    # Artifacts went through the server into its artifact folder, and come back through it.
    run_id = runs[0].info.run_id
    assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}
    assert any(mlflow_server.artifacts.rglob("model.pth"))  # the best weights, as the run's MLflow model
    checkpoint = load_checkpoint(checkpoint_from_run(run_id, tmp_path / "best.pt", uri))
    assert checkpoint["config"]["seed"] == 0 and checkpoint["model"]

    # Tuning: both workers drew trials from the one PostgreSQL study, each trial ran once.
    study = optuna.load_study(study_name="tune_shared/adamw", storage=optuna_url)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) >= 3 and all(t.state != TrialState.RUNNING for t in study.trials)
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    trials = client.search_runs([exp.experiment_id], "tags.`vpr.kind` = 'trial' and tags.`vpr.tuning` = 'tune_shared'")
    per_trial = Counter(r.data.tags["vpr.trial"] for r in trials if r.info.status == "FINISHED")
    assert per_trial == {str(t.number): 1 for t in study.trials}

    table = (project / "reports" / "runs.csv").read_text()
    assert table.count("finished") >= 2 and (project / "reports" / "README.md").exists()


def test_unreachable_tracking_server_is_one_line_error(tmp_path, embedded_root):
    project = make_project(tmp_path, embedded_root, ["avg"])
    env = dict(os.environ, MLFLOW_TRACKING_URI="http://127.0.0.1:9", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "sweep", "plan"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "MLflow store http://127.0.0.1:9 unreachable" in result.stderr
    assert "Traceback" not in result.stderr
