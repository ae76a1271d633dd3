"""Gather every study cell's results from MLflow (any tracking URI) for tables and figures.

A cell is matched to its run by config hash, exactly as the planner assigns it, so a table never
shows a run that belongs to another config. Artifacts (history, per-query predictions) are
downloaded once per run into a local cache; the recorded runs are the only source of numbers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.data.benchmarks import benchmark_metric
from pipeline.data.catalog import EVAL_SPLITS, VALIDATION, recall_metric
from pipeline.runs.folder import RESULT_PREDICTIONS, RunFolder
from pipeline.studies.plan import Cell, expand_study, load_recorded_plan
from pipeline.studies.study import Study
from pipeline.tracking.store import STATUS_TAG, Tracker
from pipeline.training.cost import COST_PREFIX

log = logging.getLogger(__name__)


@dataclass
class CellResult:
    """One study cell at one seed, with whatever its run recorded (status 'missing' if no run)."""

    study: str
    label: str
    seed: int
    config_hash: str
    status: str
    config: dict | None = None
    final: dict[str, dict[int, float]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    hits: dict[str, np.ndarray] = field(default_factory=dict)
    ns: list[int] = field(default_factory=list)
    predictions: dict[str, Path] = field(default_factory=dict)
    lr_schedule: Path | None = None       # the run's recorded learning-rate log, if it has one
    # Standard benchmarks its study asks for: Recall@N, per-query hits and their N, per benchmark key.
    benchmark_recalls: dict[str, dict[int, float]] = field(default_factory=dict)
    benchmark_hits: dict[str, np.ndarray] = field(default_factory=dict)
    benchmark_ns: dict[str, list[int]] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)   # what the run cost (pipeline.training.cost)


@dataclass(frozen=True)
class PlanCell:
    """One study cell at one seed and the config hash of the run that serves it."""

    study: str
    label: str
    seed: int
    config_hash: str


def collect(studies: list[Study], tracker: Tracker, profile: Mapping[str, Any] | None,
            roots: Mapping[str, str] | None, cache_dir: str | Path = "data/report_cache",
            tuned_dir: str | Path | None = "reports/tuning",
            plan_path: str | Path | None = None) -> dict[str, list[CellResult]]:
    """{study id: [CellResult per cell and seed]} for every study, in the study's cell order.

    The cells come from the plan the train stage recorded (`plan_path`, when the file exists);
    a study that plan does not hold, or every study without one, is planned again here.
    """
    by_hash = tracker.runs_by_hash()
    cache = Path(cache_dir)
    recorded = recorded_plan_cells(plan_path) if plan_path and Path(plan_path).is_file() else {}
    out: dict[str, list[CellResult]] = {}
    for study in studies:
        cells = _in_study_order(study, recorded[study.id]) if study.id in recorded else \
            planned_cells(study, profile, roots, tuned_dir)
        if cells is None:
            out[study.id] = [CellResult(study.id, label, seed, "", "missing")
                             for label in study.labels for seed in study.seeds]
            continue
        out[study.id] = [_cell_result(c.study, c.label, c.seed, c.config_hash, by_hash.get(c.config_hash),
                                      tracker, cache, study.benchmarks) for c in cells]
    return out


def recorded_plan_cells(path: str | Path) -> dict[str, list[PlanCell]]:
    """{study id: its cells} from the plan the train stage recorded (`load_recorded_plan`)."""
    out: dict[str, list[PlanCell]] = {}
    for run in load_recorded_plan(path):
        for c in run.cells:
            out.setdefault(c.study, []).append(PlanCell(c.study, c.label, c.seed, run.config_hash))
    return out


def _in_study_order(study: Study, cells: list[PlanCell]) -> list[PlanCell]:
    order = {label: i for i, label in enumerate(study.labels)}
    return sorted(cells, key=lambda c: (order.get(c.label, len(order)), c.seed))


def planned_cells(study: Study, profile: Mapping[str, Any] | None, roots: Mapping[str, str] | None,
                  tuned_dir: str | Path | None) -> list[Cell] | None:
    """The study's cells with their config hashes, planned as the train stage plans them; None when
    they cannot be planned (e.g. tuned values not produced yet: the report shows them as missing)."""
    try:
        return expand_study(study, profile, roots, tuned_dir)
    except ValueError as err:   # ConfigError and friends (also a UserError) derive from ValueError
        log.warning("%s: cannot expand (%s); its cells are reported as missing", study.id, err)
        return None


def normalize_history(history: list[dict]) -> list[dict]:
    """Per-epoch records with MLflow-safe keys: old files spell `val_recall@1`, new `val_recall_at_1`."""
    return [{k.replace("@", "_at_"): v for k, v in record.items()} for record in history]


def _cell_result(study: str, label: str, seed: int, config_hash: str, run, tracker: Tracker,
                 cache: Path, benchmarks: Sequence[str] = ()) -> CellResult:
    if run is None:
        return CellResult(study, label, seed, config_hash, "missing")
    status = run.data.tags.get(STATUS_TAG, "unknown")
    result = CellResult(study, label, seed, config_hash, status)
    if status != "finished":
        return result
    recorded = RunFolder(_download(tracker, run.info.run_id, cache / run.info.run_id))
    result.config = recorded.read_config()
    result.history = normalize_history(recorded.read_history())
    result.lr_schedule = recorded.lr_schedule if recorded.lr_schedule.is_file() else None
    _final_metrics(result, recorded, run.data.metrics)
    result.cost = {k[len(COST_PREFIX):]: v for k, v in run.data.metrics.items() if k.startswith(COST_PREFIX)}
    _benchmark_metrics(result, recorded, run.data.metrics, benchmarks)
    return result


def _benchmark_metrics(result: CellResult, recorded: RunFolder, metrics: Mapping[str, float],
                       benchmarks: Sequence[str]) -> None:
    """Each benchmark's Recall@N from its saved predictions (hits kept), else the logged metrics."""
    for key in benchmarks:
        pred = recorded.recorded_predictions(key)
        if (pred / RESULT_PREDICTIONS).exists():
            data = np.load(pred / RESULT_PREDICTIONS, allow_pickle=False)
            ns = [int(n) for n in data["recall_at"]]
            hits = np.asarray(data["hits"], dtype=bool)
            result.benchmark_ns[key], result.benchmark_hits[key] = ns, hits
            result.benchmark_recalls[key] = {n: float(100.0 * hits[:, j].mean()) for j, n in enumerate(ns)}
        else:
            values = _recalls(metrics, lambda n: benchmark_metric(key, n))
            if values:
                result.benchmark_recalls[key] = values


def _final_metrics(result: CellResult, recorded: RunFolder, metrics: Mapping[str, float]) -> None:
    """Each split's Recall@N from its saved predictions (per-query hits kept), else the logged metrics."""
    for s in EVAL_SPLITS:
        dataset, pred = s.key, recorded.recorded_predictions(s.folder)
        if (pred / RESULT_PREDICTIONS).exists():
            data = np.load(pred / RESULT_PREDICTIONS, allow_pickle=False)
            ns = [int(n) for n in data["recall_at"]]
            hits = np.asarray(data["hits"], dtype=bool)
            result.ns = ns
            result.hits[dataset] = hits
            result.final[dataset] = {n: float(100.0 * hits[:, j].mean()) for j, n in enumerate(ns)}
            result.predictions[dataset] = pred
        else:  # fall back on the logged metrics (e.g. predictions not uploaded)
            values = _recalls(metrics, lambda n: recall_metric(dataset, n))
            if s is VALIDATION and not values and result.history:    # the best epoch of the history
                def per_epoch(n: int) -> str:
                    return recall_metric(dataset, n, per_epoch=True)
                best = max(result.history, key=lambda h: h.get(per_epoch(1), -1))
                values = _recalls(best, per_epoch)
            if values:
                result.final[dataset] = values


def _recalls(values: Mapping[str, float], key_of: Callable[[int], str]) -> dict[int, float]:
    """{N: value} of the entries whose key is `key_of(N)` (N read from the key's last number)."""
    out = {}
    for key, value in values.items():
        n = key.rsplit("_", 1)[-1]
        if n.isdigit() and key_of(int(n)) == key:
            out[int(n)] = float(value)
    return out


def _download(tracker: Tracker, run_id: str, dst: Path) -> Path:
    """Artifacts of a run into `dst`, once."""
    marker = dst / ".complete"
    if marker.exists():
        return dst
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise
    dst.mkdir(parents=True, exist_ok=True)
    for item in tracker.client.list_artifacts(run_id):
        tracker.client.download_artifacts(run_id, item.path, str(dst))
    marker.write_text("ok")
    return dst

