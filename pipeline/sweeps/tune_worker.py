"""Worker process of tunings:

    python -m pipeline.sweeps.tune_worker INDEX SPEC.json [SPEC.json ...]
    python -m pipeline.sweeps.tune_worker INDEX --stdin [TRACKING_URI]  # what `vpr tune run` starts

With `--stdin` it warms up (imports, the MLflow store) while the runner prepares the tunings, then
reads the spec paths from stdin.

For each tuning (spec) in order it loops over the tuning's optimizers, running one trial at a
time until the optimizer's budget of finished (complete or pruned) trials is reached; a tuning's
time budget counts from when the worker reaches it. Every trial trains a real run with the
trainer, reports val Recall@1 per epoch (the sweep's epoch logger records it in MLflow), may be
pruned, and is an MLflow run (child of the tuning's parent run).

Exit status: 0 every budget met (or the time budget spent), 1 trials of some tuning failed
systematically (that tuning is left, the next one started). Per tuning, the worker writes its
outcome next to the spec (`worker_<INDEX>.outcome`: ok or failed); a worker that died wrote none.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.sweeps.execute import BEST_VAL_R1, epoch_logger, release_run_folder, safe_metrics
from pipeline.sweeps.tracking import KIND_TAG, STATUS_TAG, Tracker, flatten
from pipeline.sweeps.tuning import (METRIC, Tuning, claimed_count, elapsed_ok, load_tuning, make_pruner,
                                    make_sampler, open_storage, study_name, suggest, trial_budget, trial_config)

MAX_CONSECUTIVE_FAILURES = 3


OK, FAILED = "ok", "failed"


def _outcome_path(spec_path: str | Path, index: int) -> Path:
    return Path(spec_path).parent / f"worker_{index}.outcome"


def clear_outcomes(spec_path: str | Path) -> None:
    """Forget the outcomes of an earlier `vpr tune run` of this spec (before starting workers)."""
    for path in Path(spec_path).parent.glob("worker_*.outcome"):
        path.unlink()


def read_outcome(spec_path: str | Path, index: int) -> str | None:
    """What worker `index` wrote for this tuning: OK, FAILED, or None (it died before the end)."""
    path = _outcome_path(spec_path, index)
    return path.read_text().strip() if path.exists() else None


def run_specs(spec_paths: list[str], index: int = 0) -> list[str]:
    """One worker: every tuning of `spec_paths` in order; the outcome of each (OK or FAILED)."""
    return [run_spec(spec_path, index) for spec_path in spec_paths]


def main(spec_paths: list[str], index: int = 0) -> int:
    """The worker process: `run_specs`, then its exit status (module docstring)."""
    return 0 if all(r == OK for r in run_specs(spec_paths, index)) else 1


def run_spec(spec_path: str, index: int = 0) -> str:
    """One tuning: trials one at a time, optimizer by optimizer, until every budget is met.

    Worker i samples with seed + i: workers sharing one seed would propose the same first points.
    """
    import optuna

    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())
    tuning = load_tuning(spec["tuning"])
    storage, _ = open_storage(spec["storage"], tuning.id)
    tracker = Tracker(spec["tracking_uri"])
    # A tuning's time budget counts from when this worker reaches it (not from when the runner
    # prepared it: with several tuning files the later ones wait for the earlier).
    spec["start"] = time.time()
    finished = all(_run_optimizer(opt, space, tuning, spec, storage, tracker, index)  # stops at a failure
                   for opt, space in tuning.optimizers.items())
    outcome = OK if finished else FAILED
    _outcome_path(spec_path, index).write_text(outcome)
    return outcome


def _run_optimizer(opt: str, space: dict, tuning: Tuning, spec: dict, storage, tracker: Tracker, index: int) -> bool:
    """Trials of one optimizer's study until its budget is met; False when they fail systematically."""
    import optuna

    study = optuna.load_study(study_name=study_name(tuning, opt), storage=storage,
                              sampler=make_sampler(tuning.sampler, space, offset=index),
                              pruner=make_pruner(tuning.pruner))
    budget = trial_budget(tuning, opt, spec["profile"])
    failures = 0
    while claimed_count(study) < budget and elapsed_ok(spec["start"], tuning.budget.minutes):
        mine: list = []  # the state of the trial this worker just ran
        study.optimize(lambda trial: objective(trial, tuning, opt, spec, tracker), n_trials=1,
                       catch=(Exception,), callbacks=[lambda _study, trial: mine.append(trial.state)])
        failures = failures + 1 if mine and mine[-1] == optuna.trial.TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:  # something systematic (data, config): stop, don't spin
            print(f"{study.study_name}: {failures} trials failed in a row; this worker leaves "
                  f"{tuning.id} (errors in MLflow, tag vpr.error)", file=sys.stderr, flush=True)
            return False
    return True


def objective(trial, tuning: Tuning, optimizer: str, spec: dict, tracker: Tracker) -> float:
    """Train one trial's run; its best val Recall@1 is the value Optuna maximises."""
    import optuna

    from pipeline.training.trainer import train

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    params = suggest(trial, tuning.optimizers[optimizer])
    cfg = trial_config(tuning, optimizer, params, spec["profile"], spec["roots"])
    run_dir = Path(spec["runs_dir"]) / "tune" / tuning.id / optimizer / f"trial_{trial.number:04d}"
    run_id = tracker.create_run(f"{tuning.id} {optimizer} trial {trial.number}", {
        KIND_TAG: "trial", STATUS_TAG: "running", "vpr.tuning": tuning.id, "vpr.optimizer": optimizer,
        "vpr.trial": str(trial.number), "vpr.profile": spec["profile_name"],
        "mlflow.parentRunId": spec["parent_run_id"]})
    trial.set_user_attr("mlflow_run_id", run_id)
    tracker.log(run_id, params=flatten(cfg.to_dict()))

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        value = safe_metrics(metrics)[METRIC]
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({METRIC} {value:.2f})")

    try:
        summary = train(cfg, out_dir=run_dir, resume=(run_dir / "last.pt").exists(), progress=False,
                        callbacks=[epoch_logger(tracker, run_id), prune])
    except optuna.TrialPruned:
        tracker.log(run_id, tags={"vpr.trial_state": "pruned", STATUS_TAG: "pruned"})
        tracker.client.set_terminated(run_id, "FINISHED")
        raise
    except Exception as err:
        tracker.set_status(run_id, "failed", error=f"{type(err).__name__}: {err}")
        tracker.log(run_id, tags={"vpr.trial_state": "failed"})
        raise
    finally:  # a trial never resumes (a new trial gets a new number): its checkpoints are dead weight
        release_run_folder(run_dir)
    best = safe_metrics(summary)[BEST_VAL_R1]
    tracker.log(run_id, metrics={BEST_VAL_R1: best}, tags={"vpr.trial_state": "complete"})
    tracker.set_status(run_id, "finished")
    return best


def serve(index: int, tracking_uri: str | None = None) -> int:
    """`--stdin`: warm up (`warm_up`) while the runner prepares the tunings, then run the spec
    paths it writes to stdin (one per line, until it closes stdin)."""
    from pipeline.sweeps.warm_up import warm_up

    warm_up(tracking_uri)
    return main([line.strip() for line in sys.stdin if line.strip()], index)


if __name__ == "__main__":
    from pipeline.process_exit import run_entry_point

    if sys.argv[2:3] == ["--stdin"]:
        run_entry_point(serve, int(sys.argv[1]), *sys.argv[3:4])
    else:
        run_entry_point(main, sys.argv[2:], int(sys.argv[1]))
