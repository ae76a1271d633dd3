"""`vpr report` (first part): every MLflow run as one row of `reports/runs.csv`, headline numbers
in `reports/metrics.json` for `dvc metrics show`, and the per-epoch curves of every study cell
for `reports/curves.csv` (`dvc plots show`: dvc.yaml's top-level `plots:`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.data.catalog import EVAL_SPLITS, VALIDATION, recall_metric
from pipeline.tracking.store import STATUS_TAG, Tracker

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult

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


CURVE_COLUMNS = ("study", "cell", "config_hash", "epoch", *CURVE_METRICS)


def curves_frame(results: Mapping[str, Sequence[CellResult]]) -> pd.DataFrame:
    """Per-epoch history of every finished study cell, long format, for `dvc plots`: one row per
    (study, cell, epoch) with CURVE_COLUMNS, so a plot can draw one line per cell in one panel
    per study. A cell repeated over seeds is named "<label> (seed s)"; a run serving several
    studies appears under each."""
    rows = []
    for study, cells in results.items():
        seeded = len({c.seed for c in cells}) > 1
        for c in cells:
            if c.status != "finished":
                continue
            name = f"{c.label} (seed {c.seed})" if seeded else c.label
            for h in c.history:
                if "epoch" in h:
                    rows.append({"study": study, "cell": name, "config_hash": c.config_hash, "epoch": int(h["epoch"]),
                                 **{k: h.get(k) for k in CURVE_METRICS}})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def write_runs_report(out: str | Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Write runs.csv and metrics.json under `out`; return the metrics dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(tracking_uri)
    runs = runs_frame(tracker)
    runs.to_csv(out / "runs.csv", index=False)
    finished = runs[runs["status"] == "finished"] if len(runs) else runs
    metrics: dict[str, Any] = {"runs": int(len(runs)), "finished": int(len(finished)),
                               "failed": int((runs["status"] == "failed").sum()) if len(runs) else 0}
    for key in HEADLINE_METRICS:
        if len(finished) and key in finished:
            metrics[f"max_{key}"] = float(finished[key].max())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
