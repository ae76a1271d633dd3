"""Optuna tuning with real worker processes, a real JournalStorage and a real MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from cli_helpers import vpr

from pipeline.tuning.storage import open_storage
from pipeline.tuning.tuning_file import TuningError, load_tuning

TINY = {"data": {"source": "embedded"},
        "run": {"set": {"data.image_size": [32, 32], "evaluation.resize": [32, 32], "model.pretrained": "none",
                        "training.places_per_batch": 16, "training.batches_per_epoch": 4,
                        "data.num_workers": 0, "training.device": "cpu", "scheduler.warmup_steps": 0}}}


def project_with(tmp_path: Path, embedded_root: Path, tuning: dict) -> Path:
    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump({"profile": "tiny", "profiles": {"tiny": TINY}}))
    (project / "data" / "prepared").mkdir(parents=True)
    roots = {"train": str(embedded_root / "gsv_xs"), "val": str(embedded_root / "sf_xs" / "val")}
    (project / "data" / "prepared" / "datasets.json").write_text(json.dumps({"roots": roots}))
    (project / "experiments" / f"{tuning['tuning']}.yaml").write_text(yaml.safe_dump(tuning, sort_keys=False))
    return project


def tuning_file(name: str, **over) -> dict:
    spec = {"tuning": name, "base": {"model.aggregator.name": "avg", "scheduler": "none", "training.epochs": 3},
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
            "budget": {"trials": 4},
            "optimizers": {"adamw": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                     "weight_decay": {"low": 1e-4, "high": 1e-1, "log": True}}}}
    spec.update(over)
    return spec


def journal(project: Path, name: str) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(project / "optuna" / f"{name}.journal")))


@pytest.mark.parametrize("space,needle", [
    ({"lr": {"low": 1e-2, "high": 1e-4}}, "optimizers.adamw.lr: empty or inverted range"),
    ({"lr": {"low": 1e-3, "high": 1e-3}}, "optimizers.adamw.lr: empty or inverted range"),
    ({"lr": {"values": []}}, "optimizers.adamw.lr: values: empty list"),
    ({"momentum": {"low": 0.1, "high": 0.9}}, "optimizers.adamw.momentum: not accepted by optimizer 'adamw'"),
    ({"lr": {"low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
])
def test_bad_search_spaces_fail_naming_the_key(tmp_path, space, needle):
    path = tmp_path / "tune_bad.yaml"
    path.write_text(yaml.safe_dump(tuning_file("tune_bad", optimizers={"adamw": space})))
    with pytest.raises(TuningError) as err:
        load_tuning(path)
    assert needle in str(err.value) and "tune_bad.yaml" in str(err.value)


def test_unknown_optimizer_lists_the_valid_ones(tmp_path):
    path = tmp_path / "tune_x.yaml"
    path.write_text(yaml.safe_dump(tuning_file("tune_x", optimizers={"adamm": {"lr": {"low": 1e-4, "high": 1e-2}}})))
    with pytest.raises(TuningError, match=r"optimizers.adamm: unknown optimizer \(valid: adam, adamw, sgd, asgd\)"):
        load_tuning(path)


def test_unreachable_storage_fails_before_any_trial(embedded_root, tmp_path):
    project = project_with(tmp_path, embedded_root, tuning_file("tune_t"))
    with pytest.raises(TuningError, match="--tuning-storage 'sqlite:////nonexistent/dir/x.db': cannot connect"):
        open_storage("sqlite:////nonexistent/dir/x.db", "tune_t")
    result = vpr(project, "tune", "run", "experiments/tune_t.yaml", "--tuning-storage", "sqlite:////nonexistent/dir/x.db")
    assert result.returncode == 2 and "cannot connect" in result.stderr
    assert not (project / "runs").exists() and not (project / "mlflow.db").exists()


def test_median_pruner_prunes_a_collapsing_learning_rate(embedded_root, tmp_path):
    # Enqueued points run first, in order (one worker): two sane learning rates complete, then
    # lr 0.5 collapses the embedding and falls below their median at epoch 0: pruned.
    spec = tuning_file("tune_prune", budget={"trials": 3},
                       pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
                       enqueue={"adamw": [{"lr": 1e-3, "weight_decay": 1e-4}, {"lr": 2e-3, "weight_decay": 1e-4},
                                          {"lr": 0.5, "weight_decay": 1e-4}]},
                       optimizers={"adamw": {"lr": {"low": 1e-4, "high": 1.0, "log": True},
                                             "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True}}})
    project = project_with(tmp_path, embedded_root, spec)
    result = vpr(project, "tune", "run", "experiments/tune_prune.yaml", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="tune_prune/adamw", storage=journal(project, "tune_prune"))
    assert [(t.params["lr"], t.state) for t in study.trials] == [
        (1e-3, TrialState.COMPLETE), (2e-3, TrialState.COMPLETE), (0.5, TrialState.PRUNED), ]
    assert len(study.trials[2].intermediate_values) < 3  # stopped early, not trained to the end
    best = json.loads((project / "reports" / "tuning" / "tune_prune" / "best_params.json").read_text())
    assert best["adamw"]["lr"] in (1e-3, 2e-3)


def test_grid_sampler_covers_the_grid_and_stops(embedded_root, tmp_path):
    spec = tuning_file("tune_grid", sampler={"name": "grid", "seed": 0}, budget={"trials": 10},
                       optimizers={"adamw": {"lr": {"values": [1e-3, 3e-3], "log": True},
                                             "weight_decay": {"values": [1e-4]}}})
    project = project_with(tmp_path, embedded_root, spec)
    result = vpr(project, "tune", "run", "experiments/tune_grid.yaml", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="tune_grid/adamw", storage=journal(project, "tune_grid"))
    assert sorted(t.params["lr"] for t in study.trials) == [1e-3, 3e-3]  # the grid caps the budget


def test_two_workers_survive_a_killed_worker_and_a_rerun(embedded_root, tmp_path):
    # Two sane starting points, then two collapsing ones that the median pruner must stop.
    spec = tuning_file("tune_kill", pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                       enqueue={"adamw": [{"lr": 1e-3, "weight_decay": 1e-4}, {"lr": 2e-3, "weight_decay": 1e-4},
                                          {"lr": 0.5, "weight_decay": 1e-4}, {"lr": 0.6, "weight_decay": 1e-4}]},
                       optimizers={"adamw": {"lr": {"low": 1e-4, "high": 1.0, "log": True},
                                             "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True}}})
    project = project_with(tmp_path, embedded_root, spec)
    sweep = vpr(project, "tune", "run", "experiments/tune_kill.yaml", "--jobs", "2", wait=False)
    storage_path = project / "optuna" / "tune_kill.journal"
    victim_pid, deadline = None, time.time() + 300
    while victim_pid is None and time.time() < deadline:
        time.sleep(0.5)
        if not storage_path.exists():
            continue
        try:
            study = optuna.load_study(study_name="tune_kill/adamw", storage=journal(project, "tune_kill"))
        except KeyError:
            continue
        # kill once the trial is training (its MLflow run exists), not while it is being set up
        running = [t for t in study.trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        if running:
            victim_pid, victim_trial = running[0].user_attrs["pid"], running[0].number
    assert victim_pid is not None, "no trial started"
    os.kill(victim_pid, signal.SIGKILL)  # one worker dies mid-trial; the other carries on
    out, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 1 and "1 tuning worker(s)" in out  # the dead worker is reported

    rerun = vpr(project, "tune", "run", "experiments/tune_kill.yaml", "--jobs", "2")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "marked failed" in rerun.stdout or "marked failed" in rerun.stderr
    study = optuna.load_study(study_name="tune_kill/adamw", storage=journal(project, "tune_kill"))
    by_number = {t.number: t.state for t in study.trials}
    assert by_number[victim_trial] == TrialState.FAIL  # not RUNNING forever
    assert TrialState.RUNNING not in by_number.values()
    finished = [s for s in by_number.values() if s in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4  # the budget, exactly: a worker starts a trial only while one is left
    assert TrialState.PRUNED in by_number.values()  # the collapsing learning rates were pruned

    out_dir = project / "reports" / "tuning" / "tune_kill"
    best = json.loads((out_dir / "best_params.json").read_text())
    assert {"lr", "weight_decay", "val_recall_at_1"} <= set(best["adamw"])
    assert not list(out_dir.glob("*.png"))  # the tuning's figures are the report's, not the tune stage's
    # Trials never resume: an ended trial keeps its history, not its checkpoints (only the killed one has any).
    trial_dirs = sorted((project / "runs" / "tune" / "tune_kill" / "adamw").glob("trial_*"))
    assert len(trial_dirs) >= 4 and all((d / "config.yaml").exists() for d in trial_dirs)
    assert {p.parent.name for p in trial_dirs[0].parent.rglob("*.pt")} <= {f"trial_{victim_trial:04d}"}
    from pipeline.reporting.figures.tuning import write_all_tuning_figures  # `vpr report` draws them

    figures = project / "reports" / "figures" / "tuning"
    write_all_tuning_figures([project / "experiments"], figures, journal_dir=project / "optuna")
    for name in ("optimization_history", "lr_wd", "param_importances"):
        png = figures / "tune_kill" / f"{name}.png"
        assert png.stat().st_size > 5000 and png.with_suffix(".pdf").exists()

    cli = subprocess.run([str(Path(sys.executable).parent / "optuna"), "trials", "--study-name", "tune_kill/adamw",
                          "--storage", str(storage_path), "--storage-class", "JournalFileBackend", "-f", "json"],
                         capture_output=True, text=True, cwd=project)
    assert cli.returncode == 0, cli.stderr
    assert len(json.loads(cli.stdout)) == len(by_number)

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vpr-sweep")
    trials = client.search_runs([exp.experiment_id], "tags.`vpr.kind` = 'trial'")
    states = {r.data.tags.get("vpr.trial_state") for r in trials}
    assert "complete" in states
    killed = [r for r in trials if r.data.tags.get("vpr.trial") == str(victim_trial)]
    assert [r.data.tags["vpr.trial_state"] for r in killed] == ["failed"]
    assert killed[0].info.status == "FAILED"
    complete = [r for r in trials if r.data.tags.get("vpr.trial_state") == "complete"]
    assert all("val_recall_at_1" in r.data.metrics and r.data.params["optimizer.name"] == "adamw" for r in complete)
    assert all(r.data.tags.get("mlflow.parentRunId") for r in trials)


def test_rdb_storage_url_is_shared_and_readable_by_optuna_cli(embedded_root, tmp_path):
    project = project_with(tmp_path, embedded_root, tuning_file("tune_rdb", budget={"trials": 2},
                                                                base={"training.epochs": 1, "scheduler": "none"}))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = vpr(project, "tune", "run", "experiments/tune_rdb.yaml", "--jobs", "2", "--tuning-storage", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (project / "optuna").exists()  # nothing written to the default journal
    cli = subprocess.run([str(Path(sys.executable).parent / "optuna"), "studies", "--storage", url, "-f", "json"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    (study,) = json.loads(cli.stdout)
    assert study["name"] == "tune_rdb/adamw" and study["n_trials"] >= 2


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_shipped_tuning_files_load_and_resolve(profile):
    from pipeline.tuning.search import trial_budget
    from pipeline.tuning.tuning_file import trial_config

    repo = Path(__file__).resolve().parents[1]
    profiles = yaml.safe_load((repo / "params.yaml").read_text())["profiles"]
    files = sorted((repo / "experiments").glob("tune_*.yaml"))
    assert files
    for path in files:
        tuning = load_tuning(path)
        for opt, space in tuning.optimizers.items():
            params = {p: r.bounds()[0] for p, r in space.items()}
            cfg = trial_config(tuning, opt, params, profiles[profile])
            assert cfg.optimizer.name == opt and cfg.optimizer.lr == params["lr"]
            budget = trial_budget(tuning, opt, profiles[profile])
            assert budget <= (profiles[profile].get("tune") or {}).get("max_trials", budget)


def test_systematically_failing_trials_stop_the_workers(embedded_root, tmp_path):
    # lr up to 1e30 with SGD diverges in every trial: the workers give up instead of spinning.
    spec = tuning_file("tune_nan", base={"training.epochs": 1, "scheduler": "none", "loss": "contrastive",
                                         "miner": "none", "model.aggregator.name": "cosplace",
                                         "training.batches_per_epoch": 6},
                       optimizers={"sgd": {"lr": {"low": 1e29, "high": 1e30, "log": True}}})
    project = project_with(tmp_path, embedded_root, spec)
    result = vpr(project, "tune", "run", "experiments/tune_nan.yaml", "--jobs", "1")
    assert result.returncode == 1
    assert "3 trials failed in a row" in result.stdout + result.stderr
    study = optuna.load_study(study_name="tune_nan/sgd", storage=journal(project, "tune_nan"))
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3


def test_a_lock_left_by_a_killed_worker_is_reclaimed(embedded_root, tmp_path):
    # A worker SIGKILLed while appending to the journal leaves `<journal>.lock` behind.
    project = project_with(tmp_path, embedded_root, tuning_file("tune_lock", budget={"trials": 1},
                                                                base={"training.epochs": 1, "scheduler": "none"}))
    lock = project / "optuna" / "tune_lock.journal.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    stale = time.time() - 120
    os.utime(lock, (stale, stale))
    result = vpr(project, "tune", "run", "experiments/tune_lock.yaml", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="tune_lock/adamw", storage=journal(project, "tune_lock"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
