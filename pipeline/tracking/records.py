"""What MLflow's own UI and APIs expect of a training run, beyond params and metrics.

- its datasets as MLflow dataset inputs (name, source path, digest of the file list, context
  train / validation / test), which fill the runs table's Dataset column;
- its best model as an MLflow model (`runs:/<run id>/model`, loadable with
  `mlflow.pytorch.load_model`), with an input example and signature, stored at the precision
  the run evaluated in (`models.storage`);
- system metrics (CPU, memory, disk, network; GPU where `nvidia-ml-py` finds one) sampled while it
  trains, by MLflow's own monitor. Switch: `VPR_SYSTEM_METRICS=0` turns it off;
  `VPR_SYSTEM_METRICS_INTERVAL` sets the sampling period in seconds (default 10).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.data.catalog import SPLITS, VALIDATION
from pipeline.data.index import IMAGE_SUFFIXES
from pipeline.errors import UserError
from pipeline.runs.folder import CONFIG, RunFolder
from pipeline.tracking.store import Tracker, retry

log = logging.getLogger(__name__)

MODEL_NAME = "model"                      # runs:/<run id>/model


class RunModelError(UserError):
    """A run id that has no MLflow model (or no config) to evaluate."""


def file_list_digest(root: str | Path) -> str:
    """Digest of a dataset folder: its image files' relative paths and sizes (not their bytes, so
    it is cheap on the real datasets and still changes when a file is added, removed or replaced)."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        h.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def dataset_roles(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, root, context) of every dataset a run config reads: train, validation, tests."""
    data = config["data"]
    out = [(Path(data["train_root"]).name, data["train_root"], "train"),
           (VALIDATION.key, data["val_root"], "validation")]
    for key, root in data.get("test_roots", {}).items():
        out.append((SPLITS[key].key if key in SPLITS else key, root, "test"))
    return out


def log_datasets(tracker: Tracker, run_id: str, config: Mapping[str, Any]) -> None:
    """Record the run's datasets as MLflow dataset inputs (missing folders are skipped)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for name, root, context in dataset_roles(config):
        if not Path(root).is_dir():
            continue
        source = resolve_dataset_source(str(Path(root).resolve()))
        dataset = MetaDataset(source, name=name, digest=file_list_digest(root))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    for attempt in range(5 if inputs else 0):
        try:
            retry(lambda: tracker.client.log_inputs(run_id, datasets=inputs), "log datasets")
            return
        except Exception as err:
            # Two workers logging the same new dataset at once: one insert wins, the other violates
            # the (experiment, name, digest) key; a retry then finds the row and links it.
            if attempt == 4 or not any(s in str(err).lower() for s in ("unique", "duplicate", "integrity")):
                raise
            time.sleep(0.2 + random.random())


def log_best_model(tracker: Tracker, run_id: str, checkpoint: str | Path, precision: str = "fp32") -> None:
    """Log the checkpoint's network as the run's MLflow model `model` (input: a float32 batch of
    N x 3 x H x W images at the evaluation size; output: N x D descriptors), stored at the
    `precision` the run evaluated in (models.storage: bf16 halves it and keeps every recall)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from pipeline.evaluation.from_checkpoint import model_from_checkpoint
    from pipeline.models.storage import storage_copy

    model, cfg, _ = model_from_checkpoint(checkpoint)
    h, w = cfg.evaluation.resize
    example = np.zeros((1, 3, h, w), dtype=np.float32)
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    mlflow.set_tracking_uri(tracker.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        # Pickled module: the `pt2` (torch.export) format fixes the batch size to the example's.
        mlflow.pytorch.log_model(storage_copy(model, precision), name=MODEL_NAME, input_example=example,
                                 signature=signature, serialization_format="pickle", pip_requirements=[],
                                 metadata={"vpr.stored_precision": precision})
        mlflow.end_run("RUNNING")  # leaving the block would mark the run FINISHED; the sweep decides


def evaluated_precision(folder: RunFolder) -> str:
    """bf16 when every evaluation the run recorded computed in bf16 (training's summary,
    validation's and each test's), else fp32, which stores the weights as they are (e.g. a run
    trained in bf16 and tested on a machine without it)."""
    found = [summary.get("precision") for summary in folder.evaluation_summaries()]
    return "bf16" if found and all(p == "bf16" for p in found) else "fp32"


def model_from_run(run_id: str, tracking_uri: str | None = None, config_dir: str | Path | None = None):
    """(network, config dict) of run `run_id`: its MLflow model and its config artifact
    (downloaded into `config_dir`, default a temporary folder)."""
    import mlflow
    import mlflow.pytorch
    import yaml

    tracker = Tracker(tracking_uri)
    mlflow.set_tracking_uri(tracker.tracking_uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_NAME}", map_location="cpu")
        config_file = tracker.client.download_artifacts(run_id, CONFIG,
                                                        str(config_dir) if config_dir else None)
    except Exception as err:  # MlflowException for unknown runs and models, OSError for missing files
        raise RunModelError(f"--run {run_id}: no MLflow model or {CONFIG} in store {tracker.tracking_uri} "
                            f"({str(err).splitlines()[0]}); runs trained by `vpr sweep run` have them") from None
    return model.eval(), yaml.safe_load(Path(config_file).read_text())


def checkpoint_from_run(run_id: str, out: str | Path, tracking_uri: str | None = None) -> Path:
    """Write a checkpoint file (config + weights) for `vpr evaluate` from run `run_id`'s MLflow model."""
    import torch

    model, config = model_from_run(run_id, tracking_uri, Path(out).parent)
    torch.save({"config": config, "model": model.state_dict(), "epoch": None}, out)
    return Path(out)


@contextmanager
def system_metrics(tracker: Tracker, run_id: str) -> Iterator[None]:
    """MLflow's system-metrics monitor on `run_id` for the duration of the block (unless switched off)."""
    if os.environ.get("VPR_SYSTEM_METRICS", "1") == "0":
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    interval = float(os.environ.get("VPR_SYSTEM_METRICS_INTERVAL", "10"))
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=tracker.tracking_uri,
                                   resume_logging=True)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


@contextmanager
def run_records(tracker: Tracker, run_id: str, config: Mapping[str, Any], folder: RunFolder) -> Iterator[None]:
    """Around a sweep run's training and testing: datasets first, system metrics throughout, and the
    best model once it succeeded."""
    log_datasets(tracker, run_id, config)
    with system_metrics(tracker, run_id):
        yield
    if folder.best_checkpoint.exists():
        log_best_model(tracker, run_id, folder.best_checkpoint, evaluated_precision(folder))
