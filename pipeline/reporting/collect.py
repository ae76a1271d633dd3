"""Gather every study cell's results from MLflow (any tracking URI) for tables and figures.

A cell is matched to its run by config hash, exactly as the planner assigns it, so a table never
shows a run that belongs to another config. Artifacts (history, per-query predictions) are
downloaded once per run into a local cache; the recorded runs are the only source of numbers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from pipeline.sweeps.plan import expand_study
from pipeline.sweeps.study import Study
from pipeline.sweeps.tracking import STATUS_TAG, Tracker, metric_key

log = logging.getLogger(__name__)

# Report dataset name -> (test-set name in run configs / artifact folder under predictions/).
DATASETS = {"sf_xs_val": "val", "sf_xs_test": "sf_xs_test", "tokyo_xs": "tokyo_xs"}


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


def collect(studies: list[Study], tracker: Tracker, profile: Mapping[str, Any] | None,
            roots: Mapping[str, str] | None, cache_dir: str | Path = "data/report_cache",
            tuned_dir: str | Path | None = "reports/tuning") -> dict[str, list[CellResult]]:
    """{study id: [CellResult per cell and seed]} for every study, in the study's cell order."""
    by_hash = tracker.runs_by_hash()
    cache = Path(cache_dir)
    out: dict[str, list[CellResult]] = {}
    for study in studies:
        try:
            cells = expand_study(study, profile, roots, tuned_dir)
        except ValueError as err:  # e.g. tuned values not produced yet: the cells are missing
            log.warning("%s: cannot expand (%s); its cells are reported as missing", study.id, err)
            out[study.id] = [CellResult(study.id, label, seed, "", "missing")
                             for label in study.labels for seed in study.seeds]
            continue
        out[study.id] = [_cell_result(c.study, c.label, c.seed, c.config_hash, by_hash.get(c.config_hash),
                                      tracker, cache) for c in cells]
    return out


def _cell_result(study: str, label: str, seed: int, config_hash: str, run, tracker: Tracker,
                 cache: Path) -> CellResult:
    if run is None:
        return CellResult(study, label, seed, config_hash, "missing")
    status = run.data.tags.get(STATUS_TAG, "unknown")
    result = CellResult(study, label, seed, config_hash, status)
    if status != "finished":
        return result
    local = _download(tracker, run.info.run_id, cache / run.info.run_id)
    if (local / "config.yaml").exists():
        result.config = yaml.safe_load((local / "config.yaml").read_text())
    if (local / "history.json").exists():
        result.history = json.loads((local / "history.json").read_text())
    for dataset, folder in DATASETS.items():
        pred = local / "predictions" / folder
        if (pred / "predictions.npz").exists():
            data = np.load(pred / "predictions.npz", allow_pickle=False)
            ns = [int(n) for n in data["recall_at"]]
            hits = np.asarray(data["hits"], dtype=bool)
            result.ns = ns
            result.hits[dataset] = hits
            result.final[dataset] = {n: float(100.0 * hits[:, j].mean()) for j, n in enumerate(ns)}
            result.predictions[dataset] = pred
        else:  # fall back on the logged metrics (e.g. predictions not uploaded)
            prefix = "best_val_recall_at_" if dataset == "sf_xs_val" else f"test_{folder}_recall_at_"
            values = {int(k[len(prefix):]): v for k, v in run.data.metrics.items() if k.startswith(prefix)}
            if dataset == "sf_xs_val" and not values and result.history:
                best = max(result.history, key=lambda h: h.get("val_recall@1", -1))
                values = {int(k.split("@")[1]): v for k, v in best.items() if k.startswith("val_recall@")}
            if values:
                result.final[dataset] = values
    return result


def _download(tracker: Tracker, run_id: str, dst: Path) -> Path:
    """Artifacts of a run (except checkpoints) into `dst`, once."""
    marker = dst / ".complete"
    if marker.exists():
        return dst
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise
    dst.mkdir(parents=True, exist_ok=True)
    for item in tracker.client.list_artifacts(run_id):
        if item.path.endswith(".pt"):
            continue  # checkpoints are not needed for reports
        tracker.client.download_artifacts(run_id, item.path, str(dst))
    marker.write_text("ok")
    return dst


def metric_name(dataset: str, n: int) -> str:
    """The MLflow metric key of a dataset's Recall@N."""
    return metric_key(f"best_val_recall@{n}" if dataset == "sf_xs_val" else f"test_{DATASETS[dataset]}_recall@{n}")
