"""The table of known evaluation datasets, and the one function that names their metrics.

Every module that needs a split's title, its root in `data/prepared/datasets.json`, its artifact
folder or the MLflow key of its Recall@N reads it from here, so a split has one name everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.errors import UserError


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation split the papers report."""

    key: str        # identity in study files (`published:`), reports and code: "sf_xs_val"
    title: str      # as printed in tables and figures: "SF-XS val"
    root_key: str   # key of its root in datasets.json "roots" (and in data.test_roots for tests)
    folder: str     # artifact folder of its per-query results and infix of its metric names
    role: Literal["validation", "test"]


EVAL_SPLITS: tuple[EvalSplit, ...] = (
    EvalSplit("sf_xs_val", "SF-XS val", "val", "val", "validation"),
    EvalSplit("sf_xs_test", "SF-XS test", "sf_xs_test", "sf_xs_test", "test"),
    EvalSplit("tokyo_xs", "Tokyo-XS", "tokyo_xs", "tokyo_xs", "test"),
)
SPLITS: dict[str, EvalSplit] = {s.key: s for s in EVAL_SPLITS}
VALIDATION: EvalSplit = SPLITS["sf_xs_val"]


def split(key: str) -> EvalSplit:
    """The split called `key`; an unknown key lists the known ones."""
    try:
        return SPLITS[key]
    except KeyError:
        raise UserError(f"unknown evaluation split {key!r} (valid: {', '.join(SPLITS)})") from None


def recall_metric(key: str, n: int, *, per_epoch: bool = False) -> str:
    """The MLflow metric key of Recall@n on split `key`.

    Validation: the best epoch's value `best_val_recall_at_<n>`, or with `per_epoch=True` the
    per-epoch series `val_recall_at_<n>`. Test splits: `test_<folder>_recall_at_<n>`.
    """
    s = split(key)
    if s.role == "validation":
        return f"{'' if per_epoch else 'best_'}{s.folder}_recall_at_{n}"
    if per_epoch:
        raise UserError(f"{key} is a test split: it has no per-epoch Recall@{n}")
    return f"test_{s.folder}_recall_at_{n}"


def recall_metric_for_test_set(test_name: str, n: int) -> str:
    """MLflow key of Recall@n on test set `test_name`: a catalog split's, or a user-added test set's
    (`test_<name>_recall_at_<n>`)."""
    return recall_metric(test_name, n) if test_name in SPLITS else f"test_{test_name}_recall_at_{n}"


# The validation metrics training selects on: per epoch (history, model selection, tuning
# objective) and the best epoch's (a run's summary).
VAL_R1 = recall_metric(VALIDATION.key, 1, per_epoch=True)    # val_recall_at_1
BEST_VAL_R1 = recall_metric(VALIDATION.key, 1)               # best_val_recall_at_1
