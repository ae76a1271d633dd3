"""Execute one planned run inside a worker: train (or resume), test, record in MLflow.

The run's identity is its config hash: its folder is `runs/<hash>/` (`pipeline.runs.folder`), its
MLflow run carries the tag `vpr.config_hash`. The folder's lock makes sure two workers (two
sweeps on one machine, or a rerun while the first is alive) never execute the same hash at once;
the run's claim in the store (`pipeline.tracking.lease`) does the same across machines.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from pipeline.config import RunConfig, config_from_dict
from pipeline.data.catalog import BEST_VAL_R1, SPLITS, VAL_R1, VALIDATION, recall_metric_for_test_set
from pipeline.execution.protocol import RunSpec
from pipeline.runs.folder import ARTIFACT_FILES, RunFolder, predictions_artifact
from pipeline.training.cost import COST_PREFIX
from pipeline.tracking.lease import Lease
from pipeline.tracking.records import model_from_run, run_records
from pipeline.tracking.store import (HASH_TAG, KIND_TAG, STATUS_TAG, Tracker, epoch_logger, flatten, git_commit,
                                     safe_metrics)

log = logging.getLogger(__name__)


def execute_run(spec: RunSpec, progress: bool = False) -> dict[str, Any]:
    """Train and test the run of `spec` (or find it finished); return its outcome."""
    folder = RunFolder(Path(spec.run_dir))
    with folder.lock():
        tracker = Tracker(spec.tracking_uri, spec.experiment)
        run_id, finished = _mlflow_run(tracker, spec)
        if finished:  # another worker finished it while this one waited in the queue
            return {"run_id": run_id, "skipped": True}
        with Lease(tracker, run_id):  # the claim other machines see (LeaseHeld if alive elsewhere)
            if spec.tags:
                tracker.log(run_id, tags=spec.tags)
            try:
                with run_records(tracker, run_id, spec.config, folder):  # datasets, system metrics, model
                    outcome = _train_and_test(tracker, run_id, spec, folder, progress)
            except BaseException as err:  # record every failure, then let the worker see it
                message = f"{type(err).__name__}: {err}"
                folder.error.write_text(traceback.format_exc())
                tracker.set_status(run_id, "failed", error=message)
                tracker.log_artifact(run_id, folder.error)
                raise
            tracker.set_status(run_id, "finished")
        folder.release()
        return {"run_id": run_id, **outcome}


def evaluate_run(spec: RunSpec) -> dict[str, dict]:
    """Test an already trained run (the `evaluate` stage): its best model on every test set (when
    `spec.test`) and on the spec's benchmarks; never retrains it."""
    from pipeline.data.benchmarks.protocol import ProtocolConfig
    from pipeline.execution.benchmarks import evaluate_run_on_benchmarks

    folder = RunFolder(Path(spec.run_dir))
    with folder.lock():
        tracker = Tracker(spec.tracking_uri, spec.experiment)
        run_id, _ = _mlflow_run(tracker, spec)
        cfg = config_from_dict(spec.config)
        try:
            results = evaluate_on_test_sets(tracker, run_id, cfg, folder) if spec.test else {}
            if spec.benchmarks:
                results.update(evaluate_run_on_benchmarks(tracker, run_id, spec.benchmarks,
                                                          ProtocolConfig.model_validate(spec.protocol), cfg=cfg,
                                                          folder=folder, num_workers=cfg.data.num_workers))
            return results
        finally:
            folder.release()


def _mlflow_run(tracker: Tracker, spec: RunSpec) -> tuple[str, bool]:
    """(run id, finished?): this hash's finished run, its unfinished run (to resume), or a new one."""
    h = spec.config_hash
    runs = tracker.search(f"tags.`{HASH_TAG}` = '{h}' and tags.`{KIND_TAG}` = 'run'")
    finished = [r for r in runs if r.data.tags.get(STATUS_TAG) == "finished"]
    if finished:
        return finished[0].info.run_id, True
    if runs:
        run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[-1].info.run_id
        tracker.set_status(run_id, "running")
        return run_id, False
    tags = {HASH_TAG: h, KIND_TAG: "run", STATUS_TAG: "running",
            "vpr.studies": ",".join(spec.studies), "vpr.labels": " | ".join(spec.labels),
            "vpr.profile": spec.profile or "", "vpr.git_commit": git_commit(),
            "vpr.run_dir": str(Path(spec.run_dir).resolve())}
    if spec.parent_run_id:
        tags["mlflow.parentRunId"] = spec.parent_run_id
    run_id = tracker.create_run(spec.labels[0] if spec.labels else h, tags)
    tracker.log(run_id, params=flatten(spec.config))
    return run_id, False


def _train_and_test(tracker: Tracker, run_id: str, spec: RunSpec, folder: RunFolder,
                    progress: bool) -> dict[str, Any]:
    from pipeline.training.trainer import train

    cfg = config_from_dict(spec.config)
    if folder.trained(cfg.training.epochs):
        summary = folder.read_summary() or {}  # trained already; only testing was left
    else:
        resume = folder.last_checkpoint.exists()
        if resume:
            _log_missing_epochs(tracker, run_id, folder)
        summary = train(cfg, out_dir=folder.path, resume=resume, progress=progress,
                        callbacks=[epoch_logger(tracker, run_id)])
    best = safe_metrics(summary)
    cost = {f"{COST_PREFIX}{k}": v for k, v in summary.get("cost", {}).items()}  # training.cost
    tracker.log(run_id, metrics={BEST_VAL_R1: best[BEST_VAL_R1], "best_epoch": best["best_epoch"], **cost},
                # what "auto" resolved to, and on which hardware: runs of one config may differ there
                tags={"vpr.precision": summary.get("precision", ""), "vpr.device": summary.get("device", "")})
    for name in ARTIFACT_FILES:
        tracker.log_artifact(run_id, folder.path / name)  # absent files are skipped
    tracker.log_artifact(run_id, folder.validation_result, predictions_artifact(VALIDATION.folder))
    tests = evaluate_on_test_sets(tracker, run_id, cfg, folder) if spec.test else {}
    return {"summary": summary, "tests": tests}


def _log_missing_epochs(tracker: Tracker, run_id: str, folder: RunFolder) -> None:
    """Log the checkpointed epochs MLflow lacks. The trainer saves an epoch's checkpoint, then its
    history file, then runs its callbacks (the MLflow logger): a worker killed in between resumes
    after an epoch MLflow never saw. The epoch records are read from the checkpoint itself, which
    holds them (its `history`), so even a kill before the history file was written loses none."""
    from pipeline.models.checkpoints import load_checkpoint

    logged = {m.step for m in tracker.metric_history(run_id, VAL_R1)}
    log_epoch = epoch_logger(tracker, run_id)
    for record in load_checkpoint(folder.last_checkpoint, map_location="cpu").get("history", []):
        if int(record["epoch"]) not in logged:
            log_epoch(int(record["epoch"]), record)


def evaluate_on_test_sets(tracker: Tracker, run_id: str, cfg: RunConfig, folder: RunFolder) -> dict[str, dict]:
    """Evaluate the best checkpoint on every test set of the config; log metrics and predictions."""
    from pipeline.evaluation.from_checkpoint import evaluate_model, model_from_checkpoint

    results = {}
    if folder.best_checkpoint.exists():
        model, _, _ = model_from_checkpoint(folder.best_checkpoint)
    else:  # released after training: the run's MLflow model holds the weights
        model, _ = model_from_run(run_id, tracker.tracking_uri, folder.path)
    for name, root in cfg.data.test_roots.items():
        out = folder.test_result(name)
        result = evaluate_model(model, cfg, root, out_dir=out, device=cfg.training.device,
                                num_workers=cfg.data.num_workers, progress=False)
        results[name] = result["recalls"]
        tracker.log(run_id, metrics={recall_metric_for_test_set(name, int(n)): r
                                     for n, r in result["recalls"].items()})
        tracker.log_artifact(run_id, out, predictions_artifact(SPLITS[name].folder if name in SPLITS else name))
    tracker.log(run_id, tags={"vpr.tested": "1"})
    return results
