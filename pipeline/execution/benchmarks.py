"""Test a finished run on standard benchmarks, never retraining it: its MLflow model (or best
checkpoint) on each benchmark folder, Recall@N logged as `test_<benchmark>_recall_at_<n>`, the
protocol as the tag `vpr.protocol.<benchmark>`, the per-query predictions as the artifact
`predictions/<benchmark>`.

Used by `vpr evaluate --run RUN_ID --benchmark NAME[,NAME]` and by the evaluate stage
(`vpr sweep evaluate`), which tests the runs of every study with a `benchmarks:` key on the
profile's benchmarks it has not tested them on yet.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import RunConfig, config_from_dict
from pipeline.data.benchmarks import benchmark_metric
from pipeline.data.benchmarks.protocol import ProtocolConfig
from pipeline.runs.folder import RunFolder, predictions_artifact
from pipeline.tracking.records import model_from_run
from pipeline.tracking.store import Tracker

PROTOCOL_TAG = "vpr.protocol.{}"


def untested(run: Any, keys: list[str]) -> list[str]:
    """The benchmarks among `keys` that the MLflow `run` has no Recall@1 of yet."""
    return [k for k in keys if benchmark_metric(k, 1) not in run.data.metrics]


def evaluate_run_on_benchmarks(tracker: Tracker, run_id: str, roots: Mapping[str, str], protocol: ProtocolConfig,
                           cfg: RunConfig | None = None, model=None, folder: RunFolder | None = None,
                           device: str | None = None, num_workers: int = 0,
                           progress: bool = False) -> dict[str, dict[int, float]]:
    """Evaluate run `run_id` on every benchmark of `roots` ({key: folder}); log and return its recalls.

    The network is `model` when given, else the run folder's best checkpoint, else the run's
    MLflow model; `cfg` likewise defaults to the run's recorded config."""
    from pipeline.evaluation.from_checkpoint import evaluate_on_benchmark, model_from_checkpoint

    scratch = None
    if folder is None:
        scratch = tempfile.TemporaryDirectory(prefix="vpr-benchmarks-")
        folder = RunFolder(Path(scratch.name))
    try:
        if model is None:
            if folder.best_checkpoint.exists():
                model, cfg_loaded, _ = model_from_checkpoint(folder.best_checkpoint)
            else:
                model, config = model_from_run(run_id, tracker.tracking_uri, folder.path)
                cfg_loaded = config_from_dict(config)
            cfg = cfg or cfg_loaded
        results = {}
        for key, root in roots.items():
            out = folder.test_result(key)
            summary = evaluate_on_benchmark(model, cfg, root, protocol, out_dir=out,
                                            device=device or cfg.training.device, num_workers=num_workers,
                                            progress=progress)
            recalls = {int(n): float(r) for n, r in summary["recalls"].items()}
            tracker.log(run_id, metrics={benchmark_metric(key, n): r for n, r in recalls.items()},
                        tags={PROTOCOL_TAG.format(key): json.dumps(summary["protocol"], sort_keys=True)})
            tracker.log_artifact(run_id, out, predictions_artifact(key))
            results[key] = recalls
        return results
    finally:
        if scratch is not None:
            scratch.cleanup()
