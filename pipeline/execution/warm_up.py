"""Worker-side warm-up: load what every run needs while the runner is still planning.

A cold worker's first run took ~8 s longer than the next (measured on the demo): importing
MLflow's model logging, pytorch-metric-learning, torchvision and the trainer, and opening the
MLflow store. Workers now start before the runner plans (`LocalExecutor.start`, `vpr tune run`)
and do that meanwhile, so the first run starts as fast as the later ones.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# What a run imports on first use (the best model's logging, losses and miners, backbones, the
# trainer and its evaluation), loaded here once so that the first run finds them in sys.modules.
WARM_MODULES = ("mlflow.pytorch", "pytorch_metric_learning.losses", "pytorch_metric_learning.miners",
                "torchvision.models", "timm.models", "pipeline.evaluation.from_checkpoint", "pipeline.execution.run",
                "pipeline.training.trainer")


def warm_up(tracking_uri: str | None = None) -> None:
    """Import the modules a run imports on first use and open the MLflow store at `tracking_uri`
    (MLflow keeps one store per URI in a process, so the runs reuse it)."""
    for module in WARM_MODULES:
        importlib.import_module(module)
    from pipeline.tracking.store import Tracker

    if tracking_uri and _store_exists(tracking_uri):
        Tracker(tracking_uri)  # under the store's init lock, like every other opening


def _store_exists(tracking_uri: str) -> bool:
    """False for a SQLite store not created yet: a worker killed while warming up must never be
    the one half-way through creating its schema (the runner creates it)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).is_file()
    return True
