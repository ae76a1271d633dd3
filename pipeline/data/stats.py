"""Dataset statistics per split (paper 004 Table I), computed from the dataset index.

A training split counts its images, places (city, place id) and cities; an evaluation split its
queries, database images and the queries with no database image within the positive radius
(they stay in Recall@N's denominator, so they cap the reachable recall). `vpr data stats ROOTS`
prints them; the report puts them beside the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.data.benchmarks.formats import read_split
from pipeline.data.index import discover, index_training_set, is_training_split

# Columns of the printed table: (field, header).
COLUMNS = (("images", "images"), ("places", "places"), ("cities", "cities"), ("queries", "queries"),
           ("database", "database"), ("queries_without_positives", "no positive"))


@dataclass(frozen=True)
class SplitStats:
    """Counts of one split; fields that do not apply to its kind are None."""

    split: str                  # as `discover` names it: "sf_xs/val", "gsv_xs/train"
    path: str
    kind: str                   # "train" or "eval"
    images: int
    places: int | None = None
    cities: int | None = None
    queries: int | None = None
    database: int | None = None
    queries_without_positives: int | None = None
    radius: float | None = None  # metres, for queries_without_positives

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (None where a count does not apply)."""
        return asdict(self)


def split_stats(split: str, folder: str | Path, radius: float = 25.0, training: bool | None = None) -> SplitStats:
    """The counts of one split folder; `training` says which kind it is (None: from its layout)."""
    folder = Path(folder)
    if training if training is not None else is_training_split(folder):
        manifest = index_training_set(folder)
        places = manifest[["city", "place_id"]].drop_duplicates()
        return SplitStats(split, str(folder), "train", len(manifest), places=len(places),
                          cities=int(manifest["city"].nunique()))
    index = read_split(folder, radius, parameter=split)
    queries, database = len(index.query_paths), len(index.database_paths)
    return SplitStats(split, str(folder), "eval", queries + database, queries=queries, database=database,
                      queries_without_positives=sum(len(p) == 0 for p in index.positives), radius=radius)


def dataset_stats(roots: Iterable[str | Path], radius: float = 25.0) -> list[SplitStats]:
    """Every split found under each root (as `vpr data index` finds them), in discovery order."""
    out: list[SplitStats] = []
    for root in roots:
        out += [split_stats(name, folder, radius) for name, folder in discover(root, "ROOT").items()]
    return out


def format_table(stats: Sequence[SplitStats]) -> str:
    """A plain-text table, one row per split; '-' where a count does not apply."""
    head = ["split"] + [h for _, h in COLUMNS]
    rows = [[s.split] + ["-" if getattr(s, f) is None else f"{getattr(s, f):,}" for f, _ in COLUMNS] for s in stats]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    return "\n".join(lines)
