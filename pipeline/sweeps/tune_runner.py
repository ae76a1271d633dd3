"""`vpr tune run`: prepare the Optuna studies, start N worker processes, write best params and figures.

Worker processes (`python -m pipeline.sweeps.tune_runner SPEC.json`) each loop over the optimizers,
running one trial at a time until the optimizer's budget of finished (complete or pruned) trials
is reached. Every trial trains a real run with the trainer, reports val Recall@1 per epoch, may be
pruned, and is recorded as an MLflow run (child of the tuning's parent run).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.prepare import load_profile
from pipeline.sweeps.runner import _die_with_parent, load_roots
from pipeline.sweeps.tracking import (KIND_TAG, STATUS_TAG, Tracker, default_tracking_uri, end_parent_run, flatten,
                                      study_parent_runs)
from pipeline.sweeps.tuning import (METRIC, best_params, elapsed_ok, fail_dead_trials, finished_count,
                                    load_tuning, make_pruner, make_sampler, open_storage, study_name, suggest,
                                    trial_budget, trial_config, write_json)

log = logging.getLogger(__name__)


MAX_CONSECUTIVE_FAILURES = 3


class TuningWorkersFailed(RuntimeError):
    """A worker process exited with an error (its traceback is in the output)."""


def run_tuning(path: str | Path, workers: int = 1, storage_url: str | None = None,
               params: str = "params.yaml", prepared: str = "data/prepared", runs_dir: str = "runs",
               out_root: str = "reports/tuning", progress: bool = True) -> dict[str, Any]:
    """Run a tuning file to its budget with `workers` processes; return the best params."""
    import optuna

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    tuning = load_tuning(path)                      # every config error before any trial
    profile_name, profile = load_profile(params)
    roots = load_roots(prepared)
    if roots is None:
        raise FileNotFoundError(f"{Path(prepared) / 'datasets.json'} not found: run `vpr prepare` first")
    storage, storage_label = open_storage(storage_url, tuning.id)
    tracker = Tracker(default_tracking_uri())
    for opt, space in tuning.optimizers.items():
        study = optuna.create_study(study_name=study_name(tuning, opt), storage=storage, direction="maximize",
                                    sampler=make_sampler(tuning.sampler, space), load_if_exists=True)
        if not study.trials:  # a fresh study: the file's starting points go first, once
            for point in tuning.enqueue.get(opt, []):
                study.enqueue_trial(point)
        dead = fail_dead_trials(study)
        for trial in dead:  # their MLflow runs say so too
            if trial.user_attrs.get("mlflow_run_id"):
                tracker.set_status(trial.user_attrs["mlflow_run_id"], "failed", error="worker process died")
                tracker.log(trial.user_attrs["mlflow_run_id"], tags={"vpr.trial_state": "failed"})
        if dead:
            print(f"{study.study_name}: {len(dead)} trial(s) of a dead worker marked failed", flush=True)
    parent = study_parent_runs(tracker, [f"tune:{tuning.id}"])[f"tune:{tuning.id}"]
    spec = {"tuning": str(tuning.path), "storage": storage_url, "profile_name": profile_name,
            "profile": profile, "roots": roots, "runs_dir": runs_dir, "tracking_uri": tracker.tracking_uri,
            "parent_run_id": parent, "start": time.time()}
    spec_path = Path(runs_dir) / "tune" / tuning.id / "spec.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.sweeps.tune_runner", str(spec_path), str(i)],
                              env=env, preexec_fn=_die_with_parent) for i in range(workers)]
    codes = [p.wait() for p in procs]
    end_parent_run(tracker, parent, "FAILED" if any(codes) else "FINISHED")
    best = best_params(tuning, storage)
    out = Path(out_root) / tuning.id
    write_json(out / "best_params.json", best)
    from pipeline.reporting.tuning_figures import write_tuning_figures

    write_tuning_figures(tuning, storage, out)
    for opt, b in best.items():
        print(f"{study_name(tuning, opt)}: best {METRIC} {b[METRIC]:.2f} with "
              + ", ".join(f"{k}={v:.3g}" for k, v in b.items() if k in tuning.optimizers[opt])
              + f" (trials {b['trials']})", flush=True)
    if any(codes):
        raise TuningWorkersFailed(f"{sum(1 for c in codes if c)} tuning worker(s) of {tuning.id} failed "
                                  f"(storage {storage_label}); see the output above")
    return best


def _worker(spec_path: str, index: int = 0) -> int:
    """One worker: trials one at a time, optimizer by optimizer, until every budget is met.

    Worker i samples with seed + i: workers sharing one seed would propose the same first points.
    """
    import optuna

    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())
    tuning = load_tuning(spec["tuning"])
    storage, _ = open_storage(spec["storage"], tuning.id)
    tracker = Tracker(spec["tracking_uri"])
    for opt, space in tuning.optimizers.items():
        study = optuna.load_study(study_name=study_name(tuning, opt), storage=storage,
                                  sampler=make_sampler(tuning.sampler, space, offset=index),
                                  pruner=make_pruner(tuning.pruner))
        budget = trial_budget(tuning, opt, spec["profile"])
        failures = 0
        while finished_count(study) < budget and elapsed_ok(spec["start"], tuning.budget.minutes):
            mine: list = []  # the state of the trial this worker just ran
            study.optimize(lambda trial: _objective(trial, tuning, opt, space, spec, tracker), n_trials=1,
                           catch=(Exception,), callbacks=[lambda _study, trial: mine.append(trial.state)])
            failures = failures + 1 if mine and mine[-1] == optuna.trial.TrialState.FAIL else 0
            if failures >= MAX_CONSECUTIVE_FAILURES:  # something systematic (data, config): stop, don't spin
                print(f"{study.study_name}: {failures} trials failed in a row; stopping this worker "
                      "(errors in MLflow, tag vpr.error)", file=sys.stderr, flush=True)
                return 1
    return 0


def _objective(trial, tuning, optimizer: str, space, spec: dict, tracker: Tracker) -> float:
    import optuna

    from pipeline.training.trainer import train

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    params = suggest(trial, space)
    cfg = trial_config(tuning, optimizer, params, spec["profile"], spec["roots"])
    run_dir = Path(spec["runs_dir"]) / "tune" / tuning.id / optimizer / f"trial_{trial.number:04d}"
    run_id = tracker.create_run(f"{tuning.id} {optimizer} trial {trial.number}", {
        KIND_TAG: "trial", STATUS_TAG: "running", "vpr.tuning": tuning.id, "vpr.optimizer": optimizer,
        "vpr.trial": str(trial.number), "vpr.profile": spec["profile_name"],
        "mlflow.parentRunId": spec["parent_run_id"]})
    trial.set_user_attr("mlflow_run_id", run_id)
    tracker.log(run_id, params=flatten(cfg.to_dict()))

    def report(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log(run_id, metrics={k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        trial.report(metrics[METRIC], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({METRIC} {metrics[METRIC]:.2f})")

    try:
        summary = train(cfg, out_dir=run_dir, resume=(run_dir / "last.pt").exists(), progress=False,
                        callbacks=[report])
    except optuna.TrialPruned:
        tracker.log(run_id, tags={"vpr.trial_state": "pruned", STATUS_TAG: "pruned"})
        tracker.client.set_terminated(run_id, "FINISHED")
        raise
    except Exception as err:
        tracker.set_status(run_id, "failed", error=f"{type(err).__name__}: {err}")
        tracker.log(run_id, tags={"vpr.trial_state": "failed"})
        raise
    tracker.log(run_id, metrics={"best_val_recall@1": summary["best_val_recall@1"]},
                tags={"vpr.trial_state": "complete"})
    tracker.set_status(run_id, "finished")
    return summary["best_val_recall@1"]


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
