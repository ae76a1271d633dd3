"""Sweeps end to end with real processes and a real MLflow SQLite store: run, rerun, kill, concurrency."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from cli_helpers import vpr

TINY_PROFILE = {
    "data": {"source": "embedded"},
    "run": {"set": {"data.image_size": [32, 32], "evaluation.resize": [32, 32], "model.pretrained": "none",
                    "training.places_per_batch": 8, "training.batches_per_epoch": 2, "data.num_workers": 0,
                    "training.device": "cpu", "scheduler.warmup_steps": 0}},
}


def make_project(tmp_path: Path, embedded_root: Path, cells: list[str], epochs: int = 2) -> Path:
    """A project folder with params.yaml, a prepared-datasets file and one study of `cells` aggregators."""
    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump({"profile": "tiny", "jobs": 1, "profiles": {"tiny": TINY_PROFILE}}))
    prepared = project / "data" / "prepared"
    prepared.mkdir(parents=True)
    roots = {"train": str(embedded_root / "gsv_xs"), "val": str(embedded_root / "sf_xs" / "val"),
             "sf_xs_test": str(embedded_root / "sf_xs" / "test"), "tokyo_xs": str(embedded_root / "tokyo_xs" / "test")}
    (prepared / "datasets.json").write_text(json.dumps({"profile": "tiny", "roots": roots}))
    study = {"study": "t_aggregators", "paper": "003", "reproduces": "Table 2", "title": "test", "kind": "final",
             "base": {"optimizer": {"name": "adam", "lr": 1e-3}, "scheduler": {"name": "none"},
                      "training.epochs": epochs},
             "seeds": [0], "grid": {"model.aggregator.name": cells}}
    (project / "experiments" / "t_aggregators.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return project


def finished_runs(project: Path) -> dict[str, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vpr-sweep")
    runs = client.search_runs([exp.experiment_id], "tags.`vpr.kind` = 'run'")
    out: dict[str, list] = {}
    for r in runs:
        if r.data.tags.get("vpr.status") == "finished":
            out.setdefault(r.data.tags["vpr.config_hash"], []).append(r)
    return out


def test_sweep_runs_records_and_skips_on_rerun(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg", "gem"])
    plan = vpr(project, "sweep", "plan")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count(" new ") == 2 and "t_aggregators: avg" in plan.stdout

    run = vpr(project, "sweep", "run", "--jobs", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    runs = finished_runs(project)
    assert len(runs) == 2 and all(len(v) == 1 for v in runs.values())
    for (r,) in runs.values():
        m = r.data.metrics
        assert {"val_recall_at_1", "test_sf_xs_test_recall_at_1", "test_tokyo_xs_recall_at_1",
                "train_loss", "lr"} <= set(m)
        assert r.data.params["model.aggregator.name"] in ("avg", "gem")
        assert r.data.tags["vpr.studies"] == "t_aggregators"
        assert r.data.tags.get("mlflow.parentRunId")
        client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
        history = client.get_metric_history(r.info.run_id, "val_recall_at_1")
        assert [h.step for h in history] == [0, 1]
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "history.json", "predictions"} <= artifacts
        # The best weights are stored once, as the run's MLflow model, not also as a best.pt artifact.
        assert "best.pt" not in artifacts
        models = client.search_logged_models([r.info.experiment_id],
                                             filter_string=f"source_run_id = '{r.info.run_id}'")
        assert [m.name for m in models] == ["model"]
        # The trainer's per-step learning rates travel with the run's other small files.
        run_dir = project / "runs" / r.data.tags["vpr.config_hash"]
        assert ("lr_schedule.csv" in artifacts) == (run_dir / "lr_schedule.csv").exists()
        assert not (run_dir / "last.pt").exists() and (run_dir / "history.json").exists()

    again = vpr(project, "sweep", "run")
    assert again.returncode == 0 and "0 to execute" in again.stdout
    assert "finished" in vpr(project, "sweep", "plan").stdout

    report = vpr(project, "report", "--out", "reports")
    assert report.returncode == 0, report.stderr
    import pandas as pd

    table = pd.read_csv(project / "reports" / "runs.csv")
    assert len(table) == 2 and set(table["status"]) == {"finished"}
    assert table["test_tokyo_xs_recall_at_1"].notna().all()
    # Tables and figures come from the recorded runs; a cell whose run is absent is marked missing.
    tex = (project / "reports" / "tables" / "t_aggregators.tex").read_text()
    assert "\\toprule" in tex and "avg" in tex and "gem" in tex
    readme = (project / "reports" / "README.md").read_text()
    assert "t_aggregators" in readme and "figures/t_aggregators/" in readme
    study = project / "experiments" / "t_aggregators.yaml"
    study.write_text(study.read_text().replace("- gem", "- gem\n  - convap"))
    assert vpr(project, "report", "--out", "reports").returncode == 0
    readme = (project / "reports" / "README.md").read_text()
    assert "convap" in readme and "missing" in readme


def test_failed_run_is_recorded_and_does_not_stop_the_others(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg", "gem"])
    study_path = project / "experiments" / "t_aggregators.yaml"
    study = yaml.safe_load(study_path.read_text())
    study["variants"] = [{"label": "ok", "set": {}}, {"label": "explodes", "set": {"optimizer.lr": 1e30,
                          "loss": {"name": "contrastive"}, "miner": "none", "training.batches_per_epoch": 6}}]
    study["grid"] = {"model.aggregator.name": ["cosplace"]}
    study_path.write_text(yaml.safe_dump(study))
    run = vpr(project, "sweep", "run")
    assert run.returncode == 1
    assert "1 run(s) failed" in run.stdout
    assert len(finished_runs(project)) == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vpr-sweep")
    failed = client.search_runs([exp.experiment_id], "tags.`vpr.status` = 'failed'")
    assert len(failed) == 1 and "NonFiniteLossError" in failed[0].data.tags["vpr.error"]


def test_killed_sweep_resumes_without_losing_or_duplicating(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg", "gem", "cosplace"], epochs=3)
    sweep = vpr(project, "sweep", "run", "--jobs", "1", wait=False)
    runs_dir = project / "runs"
    deadline = time.time() + 600
    victim = None
    while time.time() < deadline:
        done = [d for d in runs_dir.glob("*") if (d / "summary.json").exists()]
        started = [d for d in runs_dir.glob("*") if d not in done and (d / "history.json").exists()]
        if done and started:
            victim = started[0]
            break
        time.sleep(0.1)
    assert victim is not None, "sweep never reached the second run"
    # One long-lived worker per slot: the finished run and the next one ran in the same process.
    worker_pids = {d.name: re.findall(r"^worker (\d+):", (d / "worker.log").read_text(), re.M) for d in done + [victim]}
    assert len({pid for pids in worker_pids.values() for pid in pids}) == 1, worker_pids
    assert not (done[0] / "last.pt").exists() and not (done[0] / "best.pt").exists()  # released: MLflow has it
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    epochs_before = len(json.loads((victim / "history.json").read_text()))
    assert 1 <= epochs_before < 3
    time.sleep(0.5)  # let the killed worker's lock go
    plan = vpr(project, "sweep", "plan")
    assert "interrupted" in plan.stdout

    rerun = vpr(project, "sweep", "run", "--jobs", "1")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = finished_runs(project)
    assert len(runs) == 3 and all(len(v) == 1 for v in runs.values())
    assert "resumed" in (victim / "worker.log").read_text()
    history = json.loads((victim / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (killed_run,) = runs[victim.name]
    steps = [m.step for m in client.get_metric_history(killed_run.info.run_id, "val_recall_at_1")]
    assert sorted(steps) == [0, 1, 2]  # the same MLflow run continued, no epoch lost or repeated


def test_two_concurrent_sweeps_share_one_store(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg", "gem", "cosplace", "convap"])
    first = vpr(project, "sweep", "run", "--jobs", "1", wait=False)
    second = vpr(project, "sweep", "run", "--jobs", "1", wait=False)
    out1, _ = first.communicate(timeout=900)
    out2, _ = second.communicate(timeout=900)
    assert "locked" not in (out1 + out2).lower()
    runs = finished_runs(project)
    # Each sweep skips what the other holds; together they finish every hash exactly once.
    assert len(runs) == 4 and all(len(v) == 1 for v in runs.values()), out1 + out2
    if first.returncode or second.returncode:
        pytest.fail(out1 + out2)


def test_plan_fails_early_on_a_missing_root_or_bad_study(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg"])
    datasets = project / "data" / "prepared" / "datasets.json"
    good = datasets.read_text()
    datasets.write_text(good.replace(str(embedded_root / "tokyo_xs"), "/nowhere/tokyo_xs"))
    result = vpr(project, "sweep", "run")
    assert result.returncode == 2 and "roots.tokyo_xs = '/nowhere/tokyo_xs/test'" in result.stderr
    datasets.write_text(good)
    study = project / "experiments" / "t_aggregators.yaml"
    study.write_text(study.read_text().replace("- avg", "- avgg"))
    result = vpr(project, "sweep", "plan")
    assert result.returncode == 2 and "t_aggregators.yaml" in result.stderr and "avgg" in result.stderr
    assert not (project / "runs").exists()


def test_evaluate_stage_tests_runs_trained_with_skip_test(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg"], epochs=1)
    trained = vpr(project, "sweep", "run", "--skip-test")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    ((run,),) = finished_runs(project).values()
    assert "test_tokyo_xs_recall_at_1" not in run.data.metrics
    evaluated = vpr(project, "sweep", "evaluate")
    assert evaluated.returncode == 0 and "1 to test" in evaluated.stdout, evaluated.stdout + evaluated.stderr
    ((run,),) = finished_runs(project).values()
    assert {"test_sf_xs_test_recall_at_1", "test_tokyo_xs_recall_at_1"} <= set(run.data.metrics)
    assert "0 to test" in vpr(project, "sweep", "evaluate").stdout


def test_plan_json_and_config_show_give_the_configs_the_trainer_receives(embedded_root, tmp_path):
    from pipeline.config import config_from_dict, config_hash

    project = make_project(tmp_path, embedded_root, ["avg", "gem"], epochs=5)
    result = vpr(project, "sweep", "plan", "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["state"] for r in runs] == ["new", "new"]
    by_label = {r["cells"][0]["label"]: r for r in runs}
    assert set(by_label) == {"avg", "gem"} and by_label["gem"]["cells"][0]["study"] == "t_aggregators"
    for run in runs:  # the printed config is the hashed one, with the profile's scale and the roots
        assert config_hash(config_from_dict(run["config"])) == run["config_hash"]
        assert run["config"]["data"]["image_size"] == [32, 32] and run["config"]["training"]["epochs"] == 5
        assert run["config"]["data"]["test_roots"]["tokyo_xs"] == str(embedded_root / "tokyo_xs" / "test")

    shown = vpr(project, "config", "show", "t_aggregators", "gem")
    assert shown.returncode == 0, shown.stderr
    assert by_label["gem"]["config_hash"] in shown.stdout.splitlines()[0]
    assert yaml.safe_load(shown.stdout) == by_label["gem"]["config"]
    wrong = vpr(project, "config", "show", "t_aggregators", "mixvpr")
    assert wrong.returncode == 2 and "no cell 'mixvpr' (cells: 'avg', 'gem')" in wrong.stderr


def test_bad_jobs_and_shard_values_are_one_line_errors(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg"])
    jobs = vpr(project, "sweep", "run", "--jobs", "0")
    assert jobs.returncode == 2 and jobs.stderr.strip().endswith("error: argument --jobs: must be >= 1, got 0")
    shard = vpr(project, "sweep", "plan", "--shard", "3/2")
    assert shard.returncode == 2 and "--shard 3/2: need N >= 1 and 0 <= I < N" in shard.stderr
    tune = vpr(project, "tune", "run", "experiments")
    assert tune.returncode == 2 and "no tuning file (tune_*.yaml) in experiments" in tune.stderr


def test_a_dead_worker_fails_only_its_run_and_its_slot_gets_a_fresh_one(tmp_path):
    from pipeline.execution.executors import LocalExecutor

    executor = LocalExecutor(1)
    try:
        pids = []
        for key in ("first", "second"):  # a spec the worker cannot read kills it mid-run
            executor.submit(key, tmp_path / f"{key}.json")
            pids.append(executor._slots[0].proc.pid)
            done: list = []
            deadline = time.time() + 120
            while not done and time.time() < deadline:
                done = executor.completed(timeout=1.0)
            assert done == [(key, "failed")]
        assert pids[0] != pids[1]
    finally:
        executor.close()


def test_weights_are_stored_in_bf16_only_when_every_evaluation_ran_in_bf16(tmp_path):
    from pipeline.runs.folder import RunFolder
    from pipeline.tracking.records import evaluated_precision

    def record(path, precision):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"precision": precision}))

    assert evaluated_precision(RunFolder(tmp_path)) == "fp32"  # nothing recorded: kept as it is
    record(tmp_path / "summary.json", "bf16")
    record(tmp_path / "val_predictions" / "summary.json", "bf16")
    record(tmp_path / "test" / "tokyo_xs" / "summary.json", "bf16")
    assert evaluated_precision(RunFolder(tmp_path)) == "bf16"
    record(tmp_path / "test" / "sf_xs_test" / "summary.json", "fp32")  # tested on a CPU without bf16
    assert evaluated_precision(RunFolder(tmp_path)) == "fp32"


def test_prestarted_workers_never_handed_a_run_are_stopped_at_close(tmp_path):
    # `vpr sweep run` starts its workers before planning; with nothing to run, closing must not
    # wait for their warm-up (or leave them behind).
    from pipeline.execution.executors import LocalExecutor

    executor = LocalExecutor(2, f"sqlite:///{tmp_path / 'mlflow.db'}")
    executor.start()
    procs = [slot.proc for slot in executor._slots]
    assert all(p is not None and p.poll() is None for p in procs)  # warming up
    executor.close()
    assert all(p.returncode is not None for p in procs)
    assert all(p.returncode < 0 for p in procs)  # killed during warm-up, not left to finish it


def test_workers_split_the_cores_or_take_one_gpu_each(monkeypatch):
    from pipeline.execution.processes import worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert worker_env(0, 2, devices=0)["OMP_NUM_THREADS"] == "4"
    assert worker_env(3, 4, devices=2)["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_env(0, 2, devices=0)["OMP_NUM_THREADS"] == "3"  # the user's setting wins


def test_an_epoch_checkpointed_but_not_yet_recorded_is_not_lost(embedded_root, tmp_path):
    """A worker killed right after saving an epoch's checkpoint (before the history file and the
    MLflow record) resumes without losing that epoch's metrics: they come from the checkpoint."""
    from pipeline.config import config_from_dict
    from pipeline.runs.folder import RunFolder
    from pipeline.training.trainer import train

    project = make_project(tmp_path, embedded_root, ["avg"], epochs=2)
    planned = json.loads(vpr(project, "sweep", "plan", "--json").stdout)["runs"][0]
    folder = RunFolder(project / "runs" / planned["config_hash"])

    class Killed(Exception):
        pass

    def killed(epoch: int, metrics: dict) -> None:  # stands in for SIGKILL after epoch 0's checkpoint
        raise Killed

    with pytest.raises(Killed):
        train(config_from_dict(planned["config"]), out_dir=folder.path, progress=False, callbacks=[killed])
    folder.history.unlink()  # written after the checkpoint: absent at such a kill
    resumed = vpr(project, "sweep", "run")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (run,) = finished_runs(project)[planned["config_hash"]]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_recall_at_1"))
    assert steps == [0, 1]
