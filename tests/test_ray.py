"""Sweeps on a real Ray cluster: a head and two worker nodes started with `ray start` on this machine.

Runs are recorded on the PostgreSQL-backed MLflow tracking server of tests/services.py, as on a
real cluster. One worker node is killed (SIGKILL of its raylet) while it trains a run: Ray retries
that run on the other node, which resumes it from its last epoch checkpoint (the run folder is on
storage both nodes see), and the sweep ends with every run finished exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from services import vpr_on
from test_sweeps import make_project

ray = pytest.importorskip("ray") if os.environ.get("VPR_REQUIRE_RAY") != "1" else __import__("ray")

LEASE_S = 15  # a dead attempt's claim goes stale this fast here (default 120 s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def ray_cluster(tmp_path):
    """Head (no CPUs: it only schedules) + two 1-CPU worker nodes; yields the address."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", VPR_LEASE_SECONDS=str(LEASE_S),
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])))
    env.pop("MLFLOW_TRACKING_URI", None)
    temp = Path("/tmp") / f"vprray{port}"  # Ray's socket paths must stay short
    start = [_ray_cli(), "start", "--disable-usage-stats"]
    subprocess.run([*start, "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                    f"--temp-dir={temp}"], env=env, check=True, capture_output=True, timeout=120)
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(2):
            subprocess.run([*start, f"--address={address}", "--num-cpus=1"], env=env, check=True,
                           capture_output=True, timeout=120)
        yield address
    finally:
        subprocess.run([_ray_cli(), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _raylet_pid(node_id: str) -> int | None:
    """The raylet process of node `node_id` (its command line carries --node_id=<id>)."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/raylet") and f"--node_id={node_id}".encode() in args:
            return int(proc.name)
    return None


def _runs(client: MlflowClient, hashes: set[str]) -> list:
    """This project's runs (the tracking server is shared by other tests)."""
    exp = client.get_experiment_by_name("vpr-sweep")
    runs = client.search_runs([exp.experiment_id], "tags.`vpr.kind` = 'run'") if exp else []
    return [r for r in runs if r.data.tags.get("vpr.config_hash") in hashes]


@pytest.mark.slow
def test_sweep_on_ray_survives_a_killed_node(embedded_root, tmp_path, ray_cluster, mlflow_server):
    epochs = 6
    project = make_project(tmp_path, embedded_root, ["avg", "gem", "mixvpr"], epochs=epochs)
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    planned = vpr_on(project, mlflow_server.uri, "sweep", "plan", "--json")
    assert planned.returncode == 0, planned.stderr
    hashes = {r["config_hash"] for r in json.loads(planned.stdout)["runs"]}
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=mlflow_server.uri,
               VPR_LEASE_SECONDS=str(LEASE_S))
    sweep = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "sweep", "run", "--ray", ray_cluster],
                             cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    # Wait until a run has finished at least one epoch on a worker node, then kill that node.
    victim, killed_at, deadline = None, None, time.time() + 300
    while victim is None and time.time() < deadline and sweep.poll() is None:
        for r in _runs(client, hashes):
            node = r.data.tags.get("vpr.ray_node")
            if node and r.data.tags.get("vpr.status") == "running" and \
                    len(client.get_metric_history(r.info.run_id, "val_recall_at_1")) >= 1:
                victim = (r.info.run_id, node)
                break
        time.sleep(0.5)
    assert victim is not None, f"no run reached epoch 1 on a Ray node: {sweep.stdout.read() if sweep.poll() is not None else ''}"
    run_id, node = victim
    pid = _raylet_pid(node)
    assert pid is not None, f"raylet of node {node} not found"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()

    out, _ = sweep.communicate(timeout=600)
    finished_after = time.time() - killed_at
    assert sweep.returncode == 0, out
    runs = _runs(client, hashes)
    by_hash: dict[str, list] = {}
    for r in runs:
        by_hash.setdefault(r.data.tags["vpr.config_hash"], []).append(r)
    assert len(by_hash) == 3, out
    assert all(len(v) == 1 for v in by_hash.values()), f"duplicate MLflow runs for a hash: {by_hash}"
    assert all(v[0].data.tags["vpr.status"] == "finished" and v[0].info.status == "FINISHED"
               for v in by_hash.values()), out
    moved = client.get_run(run_id)
    assert moved.data.tags["vpr.ray_node"] != node, "the killed node's run was not retried on another node"
    steps = [m.step for m in client.get_metric_history(run_id, "val_recall_at_1")]
    assert sorted(set(steps)) == list(range(epochs)), steps
    # Resumed, not restarted: epoch 0 was logged once (before the kill), not again after it.
    assert steps.count(0) == 1, f"the retried run started over instead of resuming: steps {steps}"
    print(f"Ray failover: 3 runs, node {node[:8]} killed, 0 duplicates, sweep ended {finished_after:.0f} s "
          f"after the kill")


@pytest.mark.slow
def test_tuning_workers_run_as_ray_tasks(embedded_root, tmp_path, ray_cluster, postgres, mlflow_server):
    """`vpr tune run --ray`: the two workers are Ray tasks sharing one Optuna study in PostgreSQL."""
    import optuna
    import yaml
    from optuna.trial import TrialState

    from test_tuning import tuning_file

    project = make_project(tmp_path, embedded_root, ["avg"])
    spec = tuning_file("tune_ray", budget={"trials": 3}, base={"model.aggregator.name": "avg",
                                                               "scheduler": "none", "training.epochs": 2})
    (project / "experiments" / "tune_ray.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    storage = postgres.url("optuna")
    tune = vpr_on(project, mlflow_server.uri, "tune", "run", "experiments/tune_ray.yaml", "--jobs", "2",
                  "--ray", ray_cluster, "--tuning-storage", storage)
    assert tune.returncode == 0, tune.stdout + tune.stderr
    assert f"2 worker(s) each, as Ray tasks on {ray_cluster}" in tune.stdout
    study = optuna.load_study(study_name="tune_ray/adamw", storage=storage)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) >= 3
    assert (project / "reports" / "tuning" / "tune_ray" / "best_params.json").is_file()
