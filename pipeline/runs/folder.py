"""The run folder, `runs/<config hash>/`: every file a run writes, what it holds, how it is read.

This module is the one place that names them; the trainer writes them, the executing worker
logs some to MLflow and releases the rest, and the report reads the logged copies.

    config.yaml        the resolved run config (`pipeline.config.dump_config`)
    history.json       one record per finished epoch: epoch, train_loss, lr, val_recall_at_N, ...
    summary.json       the finished training: epochs, best_epoch, best_val_recall_at_1, precision, ...
    lr_schedule.csv    the learning rate of every optimizer step (`pipeline.runs.lr_schedule`)
    last.pt, best.pt   full-state checkpoints: the latest epoch (resume) and the best one (testing)
    val_predictions/   the best epoch's evaluation result on the validation split
    test/<split>/      one evaluation result per test set
    error.txt          the traceback of a failed run
    worker.log         everything the worker process printed while executing the run
    spec.json          what the worker was asked to do (`pipeline.execution.spec`)
    .lock              held (flock) by the process executing the run

An evaluation result folder (`val_predictions/`, `test/<split>/`, `vpr evaluate --out`) holds
`summary.json` (recalls, sizes, precision) and `predictions.npz` (per-query top-K and hits).

In MLflow a run's artifacts are `ARTIFACT_FILES` at the top and each evaluation result under
`predictions/<split folder>/`; the best weights are the run's MLflow model.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


__all__ = [
    "ARTIFACT_FILES", "BEST_CHECKPOINT", "CONFIG", "ERROR", "HISTORY", "LAST_CHECKPOINT", "LR_SCHEDULE",
    "PREDICTIONS_ARTIFACT", "RESULT_PREDICTIONS", "RESULT_SUMMARY", "RunBusy", "RunFolder", "SPEC", "SUMMARY",
    "WORKER_LOG", "predictions_artifact",
]

CONFIG = "config.yaml"
HISTORY = "history.json"
SUMMARY = "summary.json"
LR_SCHEDULE = "lr_schedule.csv"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
VAL_PREDICTIONS = "val_predictions"
TESTS = "test"
ERROR = "error.txt"
WORKER_LOG = "worker.log"
SPEC = "spec.json"
LOCK = ".lock"

# Files of an evaluation result folder.
RESULT_SUMMARY = "summary.json"
RESULT_PREDICTIONS = "predictions.npz"

# What a run logs to MLflow as files (lr_schedule.csv is absent for runs trained before it existed),
# and the artifact folder of its evaluation results.
ARTIFACT_FILES = (CONFIG, HISTORY, SUMMARY, LR_SCHEDULE)
PREDICTIONS_ARTIFACT = "predictions"

# What a finished run's folder drops: MLflow holds the weights (as the run's model) and the
# predictions once, and the resume checkpoint is useless once the run finished. The small files
# stay (config, history, summary, lr schedule, spec, log).
_RELEASED = (LAST_CHECKPOINT, BEST_CHECKPOINT, VAL_PREDICTIONS, TESTS)


class RunBusy(RuntimeError):
    """Another process holds this run's lock."""


def predictions_artifact(split_folder: str) -> str:
    """MLflow artifact path of a run's evaluation result on one split: `predictions/<folder>`."""
    return f"{PREDICTIONS_ARTIFACT}/{split_folder}"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder; the same layout serves a run's downloaded MLflow artifacts."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- files -----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def lr_schedule(self) -> Path:
        return self.path / LR_SCHEDULE

    @property
    def last_checkpoint(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        return self.path / BEST_CHECKPOINT

    @property
    def validation_result(self) -> Path:
        return self.path / VAL_PREDICTIONS

    def test_result(self, split: str) -> Path:
        """The evaluation result folder of test set `split`."""
        return self.path / TESTS / split

    def recorded_predictions(self, split_folder: str) -> Path:
        """In a downloaded artifact folder: the evaluation result of one split."""
        return self.path / predictions_artifact(split_folder)

    @property
    def error(self) -> Path:
        return self.path / ERROR

    @property
    def worker_log(self) -> Path:
        return self.path / WORKER_LOG

    @property
    def spec(self) -> Path:
        return self.path / SPEC

    # -- reading -------------------------------------------------------------------------------
    def read_history(self) -> list[dict[str, Any]]:
        """Per-epoch records written so far ([] before the first epoch ends)."""
        return json.loads(self.history.read_text()) if self.history.is_file() else []

    def read_config(self) -> dict[str, Any] | None:
        """The run config as a plain dict, or None when absent."""
        import yaml

        return yaml.safe_load(self.config.read_text()) if self.config.is_file() else None

    def read_summary(self) -> dict[str, Any] | None:
        """The finished training's summary, or None when training has not finished."""
        return json.loads(self.summary.read_text()) if self.summary.is_file() else None

    def validation_summary(self) -> dict[str, Any] | None:
        """The best epoch's validation result summary (recalls, sizes, images/s), or None."""
        path = self.validation_result / RESULT_SUMMARY
        return json.loads(path.read_text()) if path.is_file() else None

    def trained(self, epochs: int) -> bool:
        """True when training to `epochs` finished (only testing may be left)."""
        summary = self.read_summary()
        return summary is not None and summary.get("epochs") == epochs

    def evaluation_summaries(self) -> list[dict[str, Any]]:
        """Every evaluation summary the run recorded: training's, validation's and each test's."""
        paths = [self.summary, self.validation_result / RESULT_SUMMARY,
                 *sorted((self.path / TESTS).glob(f"*/{RESULT_SUMMARY}"))]
        return [json.loads(p.read_text()) for p in paths if p.is_file()]

    # -- who executes it -------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, non-blocking lock on `.lock`; released when the process dies (RunBusy if held)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusy(f"{self.path} is being executed by another process") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_locked(self) -> bool:
        """True when a live process holds the run's lock."""
        if not (self.path / LOCK).exists():
            return False
        with open(self.path / LOCK, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def release(self) -> None:
        """Delete what a finished run keeps in MLflow (weights, predictions) and its resume checkpoint."""
        for name in _RELEASED:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def __repr__(self) -> str:
        return f"RunFolder({self.path}, trained={self.summary.is_file()}, resumable={self.last_checkpoint.is_file()})"
