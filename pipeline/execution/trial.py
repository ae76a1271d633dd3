"""A worker's share of a tuning (`TuningSpec`): trials, one at a time, until every budget is met.

For each optimizer of the tuning in order, the worker runs one trial at a time until the
optimizer's budget of claimed (complete, pruned or running) trials is reached; the tuning's time
budget counts from when the worker reaches it. Every trial trains a real run with the trainer,
reports val Recall@1 per epoch (logged in MLflow by the sweep's epoch logger), may be pruned, and
is an MLflow run (child of the tuning's parent run). Three failed trials in a row mean something
systematic (data, config): the worker leaves the tuning with the outcome `failed`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.data.catalog import BEST_VAL_R1
from pipeline.execution.protocol import FAILED, FINISHED, Outcome, TuningSpec
from pipeline.runs.folder import RunFolder
from pipeline.tracking.parent_runs import TUNING_TAG
from pipeline.tracking.store import KIND_TAG, STATUS_TAG, Tracker, epoch_logger, flatten, safe_metrics
from pipeline.tuning.search import (claimed_count, elapsed_ok, make_pruner, make_sampler, optuna_study_name, suggest,
                                    trial_budget)
from pipeline.tuning.storage import open_storage
from pipeline.tuning.tuning_file import METRIC, RangeConfig, Tuning, load_tuning, trial_config

MAX_CONSECUTIVE_FAILURES = 3


def run_tuning_share(spec: TuningSpec) -> Outcome:
    """Trials of every optimizer of the spec's tuning until each budget is met (module docstring).

    Worker i samples with seed + i: workers sharing one seed would propose the same first points.
    """
    import optuna

    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning = load_tuning(spec.tuning)
    storage, _ = open_storage(spec.storage, tuning.id, spec.journal_dir)
    tracker = Tracker(spec.tracking_uri)
    # The time budget counts from when this worker reaches the tuning (not from when the runner
    # prepared it: with several tuning files the later ones wait for the earlier).
    start = time.time()
    finished = all(_run_optimizer(opt, space, tuning, spec, storage, tracker, start)  # stops at a failure
                   for opt, space in tuning.optimizers.items())
    return FINISHED if finished else FAILED


def _run_optimizer(opt: str, space: dict[str, RangeConfig], tuning: Tuning, spec: TuningSpec, storage,
                   tracker: Tracker, start: float) -> bool:
    """Trials of one optimizer's study until its budget is met; False when they fail systematically."""
    import optuna

    study = optuna.load_study(study_name=optuna_study_name(tuning, opt), storage=storage,
                              sampler=make_sampler(tuning.sampler, space, offset=spec.worker_index),
                              pruner=make_pruner(tuning.pruner))
    budget = trial_budget(tuning, opt, spec.profile)
    failures = 0
    while claimed_count(study) < budget and elapsed_ok(start, tuning.budget.minutes):
        mine: list = []  # the state of the trial this worker just ran
        study.optimize(lambda trial: objective(trial, tuning, opt, spec, tracker), n_trials=1,
                       catch=(Exception,), callbacks=[lambda _study, trial: mine.append(trial.state)])
        failures = failures + 1 if mine and mine[-1] == optuna.trial.TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            print(f"{study.study_name}: {failures} trials failed in a row; this worker leaves "
                  f"{tuning.id} (errors in MLflow, tag vpr.error)", file=sys.stderr, flush=True)
            return False
    return True


def objective(trial, tuning: Tuning, optimizer: str, spec: TuningSpec, tracker: Tracker) -> float:
    """Train one trial's run; its best val Recall@1 is the value Optuna maximises."""
    import optuna

    from pipeline.training.trainer import train

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    params = suggest(trial, tuning.optimizers[optimizer])
    cfg = trial_config(tuning, optimizer, params, spec.profile, spec.roots)
    folder = RunFolder(Path(spec.runs_dir) / "tune" / tuning.id / optimizer / f"trial_{trial.number:04d}")
    run_id = tracker.create_run(f"{tuning.id} {optimizer} trial {trial.number}", {
        KIND_TAG: "trial", STATUS_TAG: "running", TUNING_TAG: tuning.id, "vpr.optimizer": optimizer,
        "vpr.trial": str(trial.number), "vpr.profile": spec.profile_name,
        "mlflow.parentRunId": spec.parent_run_id, **spec.tags})
    trial.set_user_attr("mlflow_run_id", run_id)
    tracker.log(run_id, params=flatten(cfg.to_dict()))

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        value = safe_metrics(metrics)[METRIC]
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({METRIC} {value:.2f})")

    try:
        summary = train(cfg, out_dir=folder.path, resume=folder.last_checkpoint.exists(), progress=False,
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
        folder.release()
    best = safe_metrics(summary)[BEST_VAL_R1]
    tracker.log(run_id, metrics={BEST_VAL_R1: best}, tags={"vpr.trial_state": "complete"})
    tracker.set_status(run_id, "finished")
    return best
