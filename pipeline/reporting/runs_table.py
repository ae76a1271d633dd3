"""`vpr report` (first part): every MLflow run as one row of `reports/runs.csv`, per-epoch curves
in `reports/curves.csv`, and headline numbers in `reports/metrics.json` for `dvc metrics show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.data.catalog import EVAL_SPLITS, VALIDATION, recall_metric
from pipeline.sweeps.tracking import STATUS_TAG, Tracker

RECALL_AT = (1, 5, 10)
CURVE_METRICS = ("train_loss", "lr", *(recall_metric(VALIDATION.key, n, per_epoch=True) for n in RECALL_AT))
# Headline numbers for `dvc metrics show`: each split's best Recall@1 over the finished runs.
HEADLINE_METRICS = tuple(recall_metric(s.key, 1) for s in EVAL_SPLITS)


def runs_frame(tracker: Tracker) -> pd.DataFrame:
    """One row per config hash (its latest/finished MLflow run): tags, every metric, key params."""
    rows: list[dict[str, Any]] = []
    for h, run in sorted(tracker.runs_by_hash().items()):
        tags, params = run.data.tags, run.data.params
        row = {"config_hash": h, "status": tags.get(STATUS_TAG, ""), "studies": tags.get("vpr.studies", ""),
               "labels": tags.get("vpr.labels", ""), "profile": tags.get("vpr.profile", ""),
               "git_commit": tags.get("vpr.git_commit", ""), "run_id": run.info.run_id,
               "error": tags.get("vpr.error", "")}
        for key in ("model.aggregator.name", "loss.name", "miner.name", "optimizer.name", "optimizer.lr",
                    "optimizer.weight_decay", "scheduler.name", "training.epochs", "seed"):
            row[key] = params.get(key, "")
        row.update(run.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def curves_frame(tracker: Tracker, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch metric history of every run, long format (config_hash, epoch, metric columns)."""
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for h, run_id in zip(runs.get("config_hash", []), runs.get("run_id", [])):
        for key in CURVE_METRICS:
            for m in tracker.metric_history(run_id, key):
                records.setdefault((h, m.step), {"config_hash": h, "epoch": m.step})[key] = m.value
    return pd.DataFrame(sorted(records.values(), key=lambda r: (r["config_hash"], r["epoch"])))


def write_runs_report(out: str | Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Write runs.csv, curves.csv and metrics.json under `out`; return the metrics dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(tracking_uri)
    runs = runs_frame(tracker)
    runs.to_csv(out / "runs.csv", index=False)
    curves = curves_frame(tracker, runs) if len(runs) else pd.DataFrame(columns=["config_hash", "epoch"])
    curves.to_csv(out / "curves.csv", index=False)
    finished = runs[runs["status"] == "finished"] if len(runs) else runs
    metrics: dict[str, Any] = {"runs": int(len(runs)), "finished": int(len(finished)),
                               "failed": int((runs["status"] == "failed").sum()) if len(runs) else 0}
    for key in HEADLINE_METRICS:
        if len(finished) and key in finished:
            metrics[f"max_{key}"] = float(finished[key].max())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
