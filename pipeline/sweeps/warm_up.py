"""Worker-side warm-up: load what every run needs while the runner is still planning.

A cold worker's first run took ~8 s longer than the next (measured on the demo): importing
MLflow's model logging, pytorch-metric-learning, torchvision and the trainer, and opening the
MLflow store. Workers now start before the runner plans (`LocalExecutor.start`, `vpr tune run`)
and do that meanwhile, so the first run starts as fast as the later ones.
"""

from __future__ import annotations


def warm_up(tracking_uri: str | None = None) -> None:
    """Import the modules a run imports on first use and open the MLflow store at `tracking_uri`
    (MLflow keeps one store per URI in a process, so the runs reuse it)."""
    import mlflow.pytorch  # noqa: F401  the best model's logging
    import pytorch_metric_learning.losses  # noqa: F401
    import pytorch_metric_learning.miners  # noqa: F401
    import torchvision.models  # noqa: F401

    import pipeline.evaluation.from_checkpoint  # noqa: F401
    import pipeline.sweeps.execute  # noqa: F401
    import pipeline.training.trainer  # noqa: F401
    from pipeline.sweeps.tracking import Tracker

    if tracking_uri:
        Tracker(tracking_uri)  # under the store's init lock, like every other opening
