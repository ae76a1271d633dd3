"""`vpr tune run`: prepare the Optuna studies, start N worker processes, write the best params.

The workers (`pipeline.sweeps.tune_worker`) are started like a sweep's
(`pipeline.sweeps.processes`: they die with this process, split the cores, one GPU slot each).
The tuning's figures are the report's (`vpr report` reads the Optuna storage); this stage writes
`<out>/<tuning id>/best_params.json`, which studies using `optimizer: tuned` read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.profile import check_roots, load_profile
from pipeline.sweeps.processes import cuda_device_count, spawn_worker
from pipeline.sweeps.tracking import Tracker, default_tracking_uri, end_parent_run, study_parent_runs
from pipeline.sweeps.tune_worker import OK, clear_outcomes, read_outcome
from pipeline.sweeps.tuning import (METRIC, Tuning, best_params, fail_dead_trials, load_tuning, make_sampler,
                                    open_storage, study_name, write_json)


class TuningWorkersFailed(RuntimeError):
    """A worker process exited with an error (its traceback is in the output)."""


class TuningArgumentError(UserError):
    """A `vpr tune` command-line value is invalid (`--workers`, no tuning file)."""


def tuning_files(args: list[str]) -> list[Path]:
    """The tuning files named (a folder means every tune_*.yaml in it); none is an error."""
    files: list[Path] = []
    for arg in args:
        files += sorted(Path(arg).glob("tune_*.yaml")) if Path(arg).is_dir() else [Path(arg)]
    if not files:
        raise TuningArgumentError(f"no tuning file (tune_*.yaml) in {', '.join(args)}")
    return files


def _open_studies(tuning: Tuning, storage, tracker: Tracker) -> None:
    """Create (or load) each optimizer's study, enqueue the file's first points once, and mark
    trials of dead workers on this host failed (in Optuna and in MLflow)."""
    import optuna

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


def run_tunings(paths: list[str | Path], workers: int = 1, storage_url: str | None = None,
                params: str = "params.yaml", prepared: str = "data/prepared", runs_dir: str = "runs",
                out_root: str = "reports/tuning", ray_address: str | None = None) -> dict[str, dict[str, Any]]:
    """Run tuning files to their budgets with `workers` processes (or Ray tasks on the cluster at
    `ray_address`); return each tuning's best params by tuning id.

    One set of workers serves every file, in order: a worker that finishes its share of one
    tuning starts on the next while the others finish theirs, and starts (imports, first-step
    set-up) once rather than once per file. Raises TuningWorkersFailed naming the tunings whose
    trials a worker could not run, after every tuning's best params are written."""
    if workers < 1:
        raise TuningArgumentError(f"--workers must be >= 1, got {workers}")
    tunings = [load_tuning(path) for path in paths]   # every config error before any trial
    profile_name, profile = load_profile(params)
    roots = check_roots(prepared, params)
    tracking_uri = default_tracking_uri()
    # Local workers start now and warm up while the studies are prepared; they read the specs
    # once they are written (and are killed if preparing fails).
    procs = [] if ray_address else [
        spawn_worker("pipeline.sweeps.tune_worker", [str(i), "--stdin", tracking_uri], i, workers,
                     cuda_device_count(), stdin=subprocess.PIPE) for i in range(workers)]
    try:
        opened = {t.id: open_storage(storage_url, t.id) for t in tunings}  # unreachable: fail before any record
        tracker = Tracker(tracking_uri)
        parents = {}
        for tuning in tunings:
            _open_studies(tuning, opened[tuning.id][0], tracker)
            parents[tuning.id] = study_parent_runs(tracker, [f"tune:{tuning.id}"])[f"tune:{tuning.id}"]
        common = {"storage": storage_url, "profile_name": profile_name, "profile": profile, "roots": roots,
                  "runs_dir": runs_dir, "tracking_uri": tracker.tracking_uri}
        specs = [_write_spec(Path(runs_dir) / "tune" / t.id / "spec.json",
                             {"tuning": str(t.path), **common, "parent_run_id": parents[t.id]})
                 for t in tunings]
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    if ray_address:
        from pipeline.sweeps.ray_executor import run_tuning_workers_on_ray

        outcomes = run_tuning_workers_on_ray(ray_address, specs, workers)
    else:
        for proc in procs:  # every worker gets the specs before any is waited for
            try:
                proc.stdin.write("".join(f"{spec}\n" for spec in specs).encode())
                proc.stdin.close()
            except BrokenPipeError:  # it died warming up: no outcome, reported as a failed worker below
                pass
        for proc in procs:
            proc.wait()
        outcomes = [[read_outcome(spec_path, i) for spec_path in specs] for i in range(workers)]
    results, failed = {}, []
    for tuning, per_worker in zip(tunings, zip(*outcomes)):
        # A worker that died, or left this tuning after repeated failures, has no "ok" for it.
        lacking = [i for i, outcome in enumerate(per_worker) if outcome != OK]
        end_parent_run(tracker, parents[tuning.id], "FAILED" if lacking else "FINISHED")
        results[tuning.id] = best = best_params(tuning, opened[tuning.id][0])
        write_json(Path(out_root) / tuning.id / "best_params.json", best)
        for opt, b in best.items():
            print(f"{study_name(tuning, opt)}: best {METRIC} {b[METRIC]:.2f} with "
                  + ", ".join(f"{k}={v:.3g}" for k, v in b.items() if k in tuning.optimizers[opt])
                  + f" (trials {b['trials']})", flush=True)
        if lacking:
            failed.append(f"{len(lacking)} tuning worker(s) of {tuning.id} failed (storage "
                          f"{opened[tuning.id][1]})")
    if failed:
        raise TuningWorkersFailed("; ".join(failed) + "; see the output above")
    return results


def _write_spec(path: Path, spec: dict[str, Any]) -> Path:
    """The spec file tuning workers read; outcomes of an earlier run of it are forgotten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2))
    clear_outcomes(path)
    return path
