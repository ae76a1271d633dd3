"""`vpr tune run`: open the tunings' Optuna studies, run each worker's share, write the best values.

The workers are the sweep's (`pipeline.execution.worker`, placed by the same executors: local
processes that die with this one and split the cores, or Ray tasks). Every worker takes a share
of every tuning, in file order: a job is one tuning x one worker index (`TuningSpec`), so a worker
that finishes its share of one tuning starts on the next while the others finish theirs. The
tuning's figures are the report's (`vpr report` reads the Optuna storage); this stage writes
`<tuned dir>/<tuning id>/best_params.json`, which studies using `optimizer: tuned` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import project_files
from pipeline.errors import UserError
from pipeline.execution.executors import Executor, LocalExecutor, drain
from pipeline.execution.protocol import FINISHED, Outcome, TuningSpec, write_spec
from pipeline.profile import check_roots, load_profile
from pipeline.studies.study import tuned_values_path
from pipeline.tracking.parent_runs import end_parent_run, tuning_parent_run
from pipeline.tracking.store import Tracker, default_tracking_uri
from pipeline.tuning.search import best_params, make_sampler, optuna_study_name, write_best_params
from pipeline.tuning.storage import fail_dead_trials, open_storage
from pipeline.tuning.tuning_file import METRIC, Tuning, find_tuning_files, load_tuning


class TuningWorkersFailed(RuntimeError):
    """A worker could not run its share of a tuning (its trials failed, or it died)."""


class TuningArgumentError(UserError):
    """A `vpr tune` command-line value is invalid (`--jobs`)."""


def _open_studies(tuning: Tuning, storage, tracker: Tracker, quiet: bool) -> None:
    """Create (or load) each optimizer's Optuna study, enqueue the file's first points once, and
    mark trials of dead workers on this host failed (in Optuna and in MLflow)."""
    import optuna

    for opt, space in tuning.optimizers.items():
        study = optuna.create_study(study_name=optuna_study_name(tuning, opt), storage=storage,
                                    direction="maximize", sampler=make_sampler(tuning.sampler, space),
                                    load_if_exists=True)
        if not study.trials:  # a fresh study: the file's starting points go first, once
            for point in tuning.enqueue.get(opt, []):
                study.enqueue_trial(point)
        dead = fail_dead_trials(study)
        for trial in dead:  # their MLflow runs say so too
            if trial.user_attrs.get("mlflow_run_id"):
                tracker.set_status(trial.user_attrs["mlflow_run_id"], "failed", error="worker process died")
                tracker.log(trial.user_attrs["mlflow_run_id"], tags={"vpr.trial_state": "failed"})
        if dead and not quiet:
            print(f"{study.study_name}: {len(dead)} trial(s) of a dead worker marked failed", flush=True)


def run_tunings(paths: list[str | Path], jobs: int = 1, storage_url: str | None = None,
                params: str = "params.yaml", prepared: str = "data/prepared", runs_dir: str = "runs",
                tuned_dir: str = project_files.TUNED_VALUES_DIR, journal_dir: str = project_files.JOURNALS_DIR, executor: Executor | None = None,
                quiet: bool = False) -> dict[str, dict[str, Any]]:
    """Run tuning files to their budgets with `jobs` workers (local processes, or `executor`);
    return each tuning's best values by tuning id.

    Raises TuningWorkersFailed naming the tunings whose share a worker could not run, after every
    tuning's best values are written."""
    if jobs < 1:
        raise TuningArgumentError(f"--jobs must be >= 1, got {jobs}")
    tunings = [load_tuning(path) for path in find_tuning_files(paths)]   # every config error before any trial
    profile_name, profile = load_profile(params)
    roots = check_roots(prepared, params)
    tracking_uri = default_tracking_uri()
    local = executor is None
    executor = executor or LocalExecutor(jobs, tracking_uri)
    outcomes: dict[str, Outcome] = {}
    try:
        if local:  # the workers warm up while the studies are prepared
            executor.start()
        opened = {t.id: open_storage(storage_url, t.id, journal_dir) for t in tunings}  # unreachable: fail now
        tracker = Tracker(tracking_uri)
        parents = {}
        for tuning in tunings:
            _open_studies(tuning, opened[tuning.id][0], tracker, quiet)
            parents[tuning.id] = tuning_parent_run(tracker, tuning.id)
        specs = []
        for tuning in tunings:
            for index in range(jobs):
                spec = TuningSpec(tuning=str(tuning.path), storage=storage_url, journal_dir=str(journal_dir),
                                  profile_name=profile_name, profile=profile, roots=roots, runs_dir=runs_dir,
                                  tracking_uri=tracker.tracking_uri, parent_run_id=parents[tuning.id],
                                  worker_index=index)
                path = write_spec(spec, Path(runs_dir) / "tune" / tuning.id / f"spec_{index}.json")
                specs.append((f"{tuning.id}#{index}", path))
        print(f"{len(tunings)} tuning(s), {jobs} worker(s) each, {executor.describe()}", flush=True)
        drain(executor, specs, outcomes.__setitem__)
    finally:
        executor.close()
    return _write_best_values(tunings, opened, tracker, parents, outcomes, jobs, tuned_dir)


def _write_best_values(tunings: list[Tuning], opened: dict, tracker: Tracker, parents: dict[str, str],
            outcomes: dict[str, Outcome], jobs: int, tuned_dir: str) -> dict[str, dict[str, Any]]:
    """End each tuning's parent run, write and print its best values; raise if a share failed."""
    results, failed = {}, []
    for tuning in tunings:
        # A worker that died, or left this tuning after repeated failures, did not finish its share.
        lacking = [i for i in range(jobs) if outcomes.get(f"{tuning.id}#{i}") != FINISHED]
        end_parent_run(tracker, parents[tuning.id], "FAILED" if lacking else "FINISHED")
        results[tuning.id] = best = best_params(tuning, opened[tuning.id][0])
        write_best_params(tuned_values_path(tuned_dir, tuning.id), best)
        for opt, b in best.items():
            print(f"{optuna_study_name(tuning, opt)}: best {METRIC} {b[METRIC]:.2f} with "
                  + ", ".join(f"{k}={v:.3g}" for k, v in b.items() if k in tuning.optimizers[opt])
                  + f" (trials {b['trials']})", flush=True)
        if lacking:
            failed.append(f"{len(lacking)} tuning worker(s) of {tuning.id} failed (storage "
                          f"{opened[tuning.id][1]})")
    if failed:
        raise TuningWorkersFailed("; ".join(failed) + "; see the output above")
    return results
