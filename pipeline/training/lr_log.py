"""The learning rate every optimizer step actually used, logged into the run folder.

Rewritten atomically at each epoch end (format: `pipeline.runs.lr_schedule`). On resume the
rows of the epochs the checkpoint holds are kept and the rest dropped, so the file has no gaps
and no duplicates. The report plots learning-rate schedules from this file instead of
re-simulating optimizers.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.runs.folder import RunFolder
from pipeline.runs.lr_schedule import Row, read_lr_rows, write_lr_rows


class LRLog:
    """Rows of (step, epoch, lr) for one run folder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunFolder(Path(run_dir)).lr_schedule
        self.rows: list[Row] = []

    def restore(self, epochs_done: int) -> None:
        """Keep the recorded rows of epochs < `epochs_done` (those the resumed checkpoint covers)."""
        self.rows = []
        if epochs_done and self.path.is_file():
            self.rows = [row for row in read_lr_rows(self.path) if row[1] < epochs_done]

    def record(self, step: int, epoch: int, lr: float) -> None:
        """Note that optimizer step `step` (0-based, over the whole run) of `epoch` used `lr`."""
        self.rows.append((step, epoch, lr))

    def write(self) -> Path:
        """Write every row so far, atomically."""
        return write_lr_rows(self.path, self.rows)
