"""Execute one planned run inside a worker process: train (or resume), test, record in MLflow.

The run's identity is its config hash: its folder is `runs/<hash>/`, its MLflow run carries the
tag `vpr.config_hash`. A file lock on the folder makes sure two workers (two sweeps on one machine,
or a rerun while the first is alive) never execute the same hash at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import traceback
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.config import config_from_dict
from pipeline.data.catalog import SPLITS, VALIDATION, recall_metric
from pipeline.sweeps.lease import Lease
from pipeline.sweeps.mlflow_records import model_from_run, run_records
from pipeline.sweeps.tracking import HASH_TAG, KIND_TAG, STATUS_TAG, Tracker, flatten, git_commit, metric_key

log = logging.getLogger(__name__)

# Files of a trained run folder logged as MLflow artifacts (lr_schedule.csv: the learning rate of
# every optimizer step, written by the trainer; absent for runs trained before it existed). The
# best weights are not among them: MLflow keeps them once, as the run's MLflow model
# (`mlflow_records.log_best_model`), which a later stage loads when it needs them.
RUN_ARTIFACTS = ("config.yaml", "history.json", "summary.json", "lr_schedule.csv")
BEST_VAL_R1 = recall_metric(VALIDATION.key, 1)            # best_val_recall_at_1
VAL_R1 = recall_metric(VALIDATION.key, 1, per_epoch=True)  # val_recall_at_1 (per epoch)

EpochCallback = Callable[[int, dict[str, float]], None]


class RunBusy(RuntimeError):
    """Another process holds this run's lock."""


def safe_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric entries of a trainer's metrics or summary under MLflow-safe keys (`val_recall_at_1`)."""
    return {metric_key(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def epoch_logger(tracker: Tracker, run_id: str) -> EpochCallback:
    """The trainer callback of sweep runs and tuning trials: log an epoch's metrics at step=epoch."""
    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log(run_id, metrics={k: v for k, v in safe_metrics(metrics).items() if k != "epoch"}, step=epoch)
    return log_epoch


def test_metric(test_name: str, n: int) -> str:
    """MLflow key of Recall@n on the test set `test_name` (a catalog split, or a user-added one)."""
    return recall_metric(test_name, n) if test_name in SPLITS else f"test_{test_name}_recall_at_{n}"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `run_dir/.lock`; released when the process dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir} is being executed by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(run_dir: Path) -> bool:
    """True when a live process holds the run's lock."""
    if not (run_dir / ".lock").exists():
        return False
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def execute_run(spec: Mapping[str, Any], progress: bool = False) -> dict[str, Any]:
    """Train and test one run described by `spec` (written by the runner); return its outcome.

    spec keys: config (dict), config_hash, run_dir, tracking_uri, experiment, studies, labels,
    parent_run_id, profile, test (bool).
    """
    run_dir = Path(spec["run_dir"])
    with run_lock(run_dir):
        tracker = Tracker(spec["tracking_uri"], spec["experiment"])
        run_id, finished = _mlflow_run(tracker, spec)
        if finished:  # another worker finished it while this one waited in the queue
            return {"run_id": run_id, "skipped": True}
        with Lease(tracker, run_id):  # the claim other machines see (LeaseHeld if alive elsewhere)
            if spec.get("tags"):
                tracker.log(run_id, tags=spec["tags"])
            try:
                with run_records(tracker, run_id, spec["config"], run_dir):  # datasets, system metrics, model
                    outcome = _train_and_test(tracker, run_id, spec, run_dir, progress)
            except BaseException as err:  # record every failure, then let the runner see it
                message = f"{type(err).__name__}: {err}"
                (run_dir / "error.txt").write_text(traceback.format_exc())
                tracker.set_status(run_id, "failed", error=message)
                tracker.log_artifact(run_id, run_dir / "error.txt")
                raise
            tracker.set_status(run_id, "finished")
        release_run_folder(run_dir)
        return {"run_id": run_id, **outcome}


# What a finished run's folder drops. MLflow is the run's store (a tracking server serves it to
# every machine and the report reads it there), so the weights (as the run's MLflow model) and
# the per-query predictions live there once; the resume checkpoint is useless once the run
# finished. The folder keeps its small files (config, history, summary, lr schedule, spec, log);
# a later stage that tests the run loads the MLflow model (`vpr sweep evaluate`).
RELEASED = ("last.pt", "best.pt", "val_predictions", "test")


def release_run_folder(run_dir: Path) -> None:
    """Delete what a finished run keeps in MLflow (and its resume checkpoint) from its folder."""
    for name in RELEASED:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _mlflow_run(tracker: Tracker, spec: Mapping[str, Any]) -> tuple[str, bool]:
    """(run id, finished?): this hash's finished run, its unfinished run (to resume), or a new one."""
    h = spec["config_hash"]
    runs = tracker.search(f"tags.`{HASH_TAG}` = '{h}' and tags.`{KIND_TAG}` = 'run'")
    finished = [r for r in runs if r.data.tags.get(STATUS_TAG) == "finished"]
    if finished:
        return finished[0].info.run_id, True
    if runs:
        run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[-1].info.run_id
        tracker.set_status(run_id, "running")
        return run_id, False
    tags = {HASH_TAG: h, KIND_TAG: "run", STATUS_TAG: "running",
            "vpr.studies": ",".join(spec["studies"]), "vpr.labels": " | ".join(spec["labels"]),
            "vpr.profile": spec.get("profile") or "", "vpr.git_commit": git_commit(),
            "vpr.run_dir": str(Path(spec["run_dir"]).resolve())}
    if spec.get("parent_run_id"):
        tags["mlflow.parentRunId"] = spec["parent_run_id"]
    run_id = tracker.create_run(spec["labels"][0] if spec["labels"] else h, tags)
    tracker.log(run_id, params=flatten(spec["config"]))
    return run_id, False


def _train_and_test(tracker: Tracker, run_id: str, spec: Mapping[str, Any], run_dir: Path,
                    progress: bool) -> dict[str, Any]:
    from pipeline.training.trainer import train

    cfg = config_from_dict(spec["config"])
    summary_path = run_dir / "summary.json"
    if summary_path.exists() and json.loads(summary_path.read_text()).get("epochs") == cfg.training.epochs:
        summary = json.loads(summary_path.read_text())  # trained already; only testing was left
    else:
        resume = (run_dir / "last.pt").exists()
        if resume:
            _log_missing_epochs(tracker, run_id, run_dir)
        summary = train(cfg, out_dir=run_dir, resume=resume, progress=progress,
                        callbacks=[epoch_logger(tracker, run_id)])
    best = safe_metrics(summary)
    tracker.log(run_id, metrics={BEST_VAL_R1: best[BEST_VAL_R1], "best_epoch": best["best_epoch"]})
    for name in RUN_ARTIFACTS:
        if (run_dir / name).exists():
            tracker.log_artifact(run_id, run_dir / name)
    tracker.log_artifact(run_id, run_dir / "val_predictions", f"predictions/{VALIDATION.folder}")
    tests = test_run(tracker, run_id, cfg, run_dir) if spec.get("test", True) else {}
    return {"summary": summary, "tests": tests}


def _log_missing_epochs(tracker: Tracker, run_id: str, run_dir: Path) -> None:
    """Log the checkpointed epochs MLflow lacks: the trainer saves an epoch (checkpoint, history)
    before its callbacks run, so a worker killed in between resumes after an unlogged epoch."""
    history_path = run_dir / "history.json"
    if not history_path.exists():
        return
    logged = {m.step for m in tracker.metric_history(run_id, VAL_R1)}
    log_epoch = epoch_logger(tracker, run_id)
    for record in json.loads(history_path.read_text()):
        if int(record["epoch"]) not in logged:
            log_epoch(int(record["epoch"]), record)


def evaluate_run(spec: Mapping[str, Any]) -> dict[str, dict]:
    """Test an already trained run (the `evaluate` stage): best checkpoint on every test set."""
    run_dir = Path(spec["run_dir"])
    with run_lock(run_dir):
        tracker = Tracker(spec["tracking_uri"], spec["experiment"])
        run_id, _ = _mlflow_run(tracker, spec)
        try:
            return test_run(tracker, run_id, config_from_dict(spec["config"]), run_dir)
        finally:
            release_run_folder(run_dir)


def test_run(tracker: Tracker, run_id: str, cfg, run_dir: Path) -> dict[str, dict]:
    """Evaluate the best checkpoint on every test set of the config; log metrics and predictions."""
    from pipeline.evaluation.from_checkpoint import evaluate_model, model_from_checkpoint

    results = {}
    if (run_dir / "best.pt").exists():
        model, _, _ = model_from_checkpoint(run_dir / "best.pt")
    else:  # released after training: the run's MLflow model holds the weights
        model, _ = model_from_run(run_id, tracker.tracking_uri, run_dir)
    for name, root in cfg.data.test_roots.items():
        out = run_dir / "test" / name
        result = evaluate_model(model, cfg, root, out_dir=out, device=cfg.training.device,
                                num_workers=cfg.data.num_workers, progress=False)
        results[name] = result["recalls"]
        tracker.log(run_id, metrics={test_metric(name, int(n)): r for n, r in result["recalls"].items()})
        tracker.log_artifact(run_id, out, f"predictions/{SPLITS[name].folder if name in SPLITS else name}")
    tracker.log(run_id, tags={"vpr.tested": "1"})
    return results
