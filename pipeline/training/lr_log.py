"""`lr_schedule.csv`: the learning rate every optimizer step actually used.

One row per optimizer step, `step,epoch,lr` (lr of parameter group 0 when that step ran),
rewritten atomically at each epoch end. On resume the rows of the epochs the checkpoint holds
are kept and the rest dropped, so the file has no gaps and no duplicates. The report plots
learning-rate schedules from this file instead of re-simulating optimizers.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

FILENAME = "lr_schedule.csv"
HEADER = ("step", "epoch", "lr")


class LRLog:
    """Rows of (step, epoch, lr) for one run folder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / FILENAME
        self.rows: list[tuple[int, int, float]] = []

    def restore(self, epochs_done: int) -> None:
        """Keep the recorded rows of epochs < `epochs_done` (those the resumed checkpoint covers)."""
        self.rows = []
        if epochs_done and self.path.is_file():
            with self.path.open(newline="") as f:
                self.rows = [(int(r["step"]), int(r["epoch"]), float(r["lr"])) for r in csv.DictReader(f)
                             if int(r["epoch"]) < epochs_done]

    def record(self, step: int, epoch: int, lr: float) -> None:
        """Note that optimizer step `step` (0-based, over the whole run) of `epoch` used `lr`."""
        self.rows.append((step, epoch, lr))

    def write(self) -> Path:
        """Write every row so far, atomically (a killed process leaves the previous file)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows((s, e, repr(lr)) for s, e, lr in self.rows)
        os.replace(tmp, self.path)
        return self.path
