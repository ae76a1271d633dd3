"""Figures of `vpr report`, one module per kind; `write_figures` picks those that apply to a study.

Every figure is written as PNG (150 dpi) and PDF next to each other and every public function
returns the files it wrote. A figure without data writes nothing and returns `[]`; cells that are
missing, failed or lack the data a figure needs are skipped and listed in a note on the figure.

    curves.recall_curves              paper 000 Figs. 2-4, paper 003 Fig. 3 (R@N per epoch)
    lr.lr_schedules                   paper 003 Fig. 1 (the LR each run recorded, per step)
    qualitative.qualitative_retrievals paper 003 Fig. 4, paper 004 Fig. 4 (top-k of hard queries)
    places.training_places_sample     paper 004 Fig. 2 (a place seen at different times)
    tuning.write_tuning_figures       paper 003 Fig. 2 (Optuna: history, LR x WD, importances)
    cost.recall_vs_cost               beyond the papers: Recall@1 against cost, Pareto front marked

A new figure is one module here and one line in `write_figures`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.reporting.figures.common import DPI, Style, label_styles
from pipeline.reporting.figures.cost import recall_vs_cost
from pipeline.reporting.figures.curves import recall_curves
from pipeline.reporting.figures.lr import LRSchedule, describe_scheduler, lr_schedules, read_lr_schedule
from pipeline.reporting.figures.places import training_places_sample
from pipeline.reporting.figures.qualitative import qualitative_retrievals, select_hard_queries

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

__all__ = [
    "DPI", "LRSchedule", "Style", "describe_scheduler", "label_styles", "lr_schedules", "qualitative_retrievals",
    "read_lr_schedule", "recall_curves", "select_hard_queries", "training_places_sample", "write_figures",
]


def write_figures(study: Study, cells: Sequence[CellResult], out_dir: str | Path,
                  roots: Mapping[str, str | Path] | None = None) -> list[Path]:
    """The figures that apply to `study`: R@N curves when any cell has a per-epoch history (or
    the study is per_epoch), LR schedules when its cells differ in schedule, qualitative
    retrievals of the cells its study file lists under `qualitative:` when `roots` (prepare-stage
    keys) is given.
    """
    written: list[Path] = []
    if study.kind == "per_epoch" or any(c.history for c in cells):
        written += recall_curves(study, cells, out_dir)
    if _differ_in_scheduler(cells):
        written += lr_schedules(cells, out_dir, name=f"{study.id}_lr_schedules")
    if study.cost:
        written += recall_vs_cost(cells, out_dir, name=f"{study.id}_recall_vs_cost")
    if study.qualitative and roots:
        order = {label: i for i, label in enumerate(study.qualitative)}
        chosen = sorted((c for c in cells if c.label in order), key=lambda c: order[c.label])
        written += qualitative_retrievals(chosen, roots, out_dir, name=f"{study.id}_qualitative")
    return written


def _differ_in_scheduler(cells: Sequence[CellResult]) -> bool:
    """Whether the cells' scheduler sections differ (not only their optimizer or length)."""
    return len({json.dumps(c.config.get("scheduler"), sort_keys=True, default=str)
                for c in cells if c.config is not None}) > 1
