"""The format of a run's learning-rate log: `step,epoch,lr`, one row per optimizer step.

`lr` is parameter group 0's learning rate when that step ran; `step` counts optimizer steps
over the whole run from 0. The trainer writes it (`pipeline.training.lr_log`), the report plots
it (`pipeline.reporting.figures.lr`); both read and write it here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import UserError

HEADER = ("step", "epoch", "lr")

Row = tuple[int, int, float]


class LRScheduleFileError(UserError):
    """A recorded learning-rate log cannot be read; the message names the file and what is wrong."""


def read_lr_rows(path: str | Path) -> list[Row]:
    """(step, epoch, lr) rows sorted by step; a wrong header or value raises LRScheduleFileError."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(c.strip() for c in rows[0]) != HEADER:
        raise LRScheduleFileError(f"{path}: header must be {','.join(HEADER)}, got {rows[0] if rows else 'nothing'}")
    try:
        return sorted((int(s), int(e), float(v)) for s, e, v in rows[1:])
    except ValueError as err:
        raise LRScheduleFileError(f"{path}: every row must be step (int), epoch (int), lr (float): {err}") from None


def write_lr_rows(path: str | Path, rows: Iterable[Row]) -> Path:
    """Write the rows atomically (a process killed meanwhile leaves the previous file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows((s, e, repr(lr)) for s, e, lr in rows)
    os.replace(tmp, path)
    return path
