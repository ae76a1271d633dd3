"""Dataset tables (paper 004 Table I): the paper's counts beside ours, per split.

The printed numbers live in `experiments/datasets/<table>.yaml` (not a study: no runs); ours are
counted from the prepared dataset roots by `pipeline.data.stats`, as `vpr data stats` prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.data.catalog import SPLITS
from pipeline.data.stats import SplitStats, split_stats
from pipeline.errors import ConfigError, format_validation_error, read_yaml
from pipeline.reporting.tables.render import Entry, Row, Table

TRAIN = "train"   # the training set's key, in dataset tables and in the prepared roots
_Count = Annotated[int, Field(ge=0)]


class _RowModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str
    name: Annotated[str, Field(min_length=1)]
    queries: _Count | None = None
    database: _Count | None = None

    @field_validator("split")
    @classmethod
    def _known_split(cls, value: str) -> str:
        if value != TRAIN and value not in SPLITS:
            raise ValueError(f"unknown split {value!r} (valid: {TRAIN}, {', '.join(SPLITS)})")
        return value


class _TableModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
    paper: Annotated[str, Field(pattern=r"^\d{3}$")]
    reproduces: Annotated[str, Field(min_length=1)]
    title: Annotated[str, Field(min_length=1)]
    rows: Annotated[list[_RowModel], Field(min_length=1)]


@dataclass(frozen=True)
class DatasetTable:
    """A published dataset table: one row per split with the paper's queries and database counts."""

    path: Path
    id: str
    paper: str
    reproduces: str
    title: str
    rows: tuple[dict[str, Any], ...]


def load_dataset_table(path: str | Path) -> DatasetTable:
    """Parse one dataset-table file; a wrong key or value raises ConfigError naming file and key."""
    path = Path(path)
    try:
        m = _TableModel.model_validate(read_yaml(path, "dataset table"))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, {}, {(): _TableModel, ("rows",): _RowModel}),
                          str(path)) from None
    if m.table != path.stem:
        raise ConfigError([f"table: {m.table!r} must equal the file name {path.stem!r}"], str(path))
    return DatasetTable(path, m.table, m.paper, m.reproduces, m.title, tuple(r.model_dump() for r in m.rows))


def load_dataset_tables(folder: str | Path) -> list[DatasetTable]:
    """Every `*.yaml` of `folder` (none when it does not exist), sorted by name."""
    folder = Path(folder)
    return [load_dataset_table(p) for p in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []


def stats_of_roots(roots: Mapping[str, str], radius: float = 25.0) -> dict[str, SplitStats]:
    """Our counts per table split key, from the prepared roots (datasets.json `roots`)."""
    out = {}
    if roots.get(TRAIN):
        out[TRAIN] = split_stats(TRAIN, roots[TRAIN], radius, training=True)
    for key, s in SPLITS.items():
        if roots.get(s.root_key):
            out[key] = split_stats(key, roots[s.root_key], radius, training=False)
    return out


def _count(value: int | None, missing_text: str = "–") -> Entry:
    return Entry(text=missing_text) if value is None else Entry(text=f"{value:,}")


def dataset_table(spec: DatasetTable, stats: Mapping[str, SplitStats]) -> Table:
    """Paper vs ours per row: queries and database (a training set's database is its images),
    then our places, cities and queries without a positive. Ours is `--` where no root was given."""
    rows = []
    for r in spec.rows:
        ours = stats.get(r["split"])
        entries = [Entry(text=r["name"]), _count(r["queries"]), _count(r["database"])]
        if ours is None:
            entries += [Entry(missing=True)] * 5
        else:
            database = ours.images if ours.kind == "train" else ours.database
            entries += [_count(ours.queries), _count(database), _count(ours.places), _count(ours.cities),
                        _count(ours.queries_without_positives)]
        rows.append(Row(entries, key=r["split"]))
    missing = [r["name"] for r in spec.rows if r["split"] not in stats]
    radius = next((s.radius for s in stats.values() if s.radius is not None), 25.0)
    caption = (f"{spec.title} (reproduces seed {spec.paper} {spec.reproduces}; {spec.path.name}). Paper: as "
               f"printed; ours: counted from the prepared datasets (vpr data stats), a training set's "
               f"database is its images, no positive: queries without a database image within {radius:g} m."
               + (f" -- : no dataset root for {', '.join(missing)}." if missing else ""))
    groups = [("Paper", ["queries", "database"]), ("Ours", ["queries", "database", "places", "cities", "no positive"])]
    return Table(spec.id, caption, ["Dataset"], groups, rows)


def write_dataset_tables(folder: str | Path, roots: Mapping[str, str], out_dir: str | Path) -> list[str]:
    """Write `<table>.tex` for every dataset table of `folder` into `out_dir`; return their Markdown
    sections for the report README (nothing when there are no dataset tables)."""
    specs = load_dataset_tables(folder)
    if not specs:
        return []
    stats = stats_of_roots(roots)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for spec in specs:
        table = dataset_table(spec, stats)
        (out / f"{spec.id}.tex").write_text(table.latex(), encoding="utf-8")
        sections += [f"### {spec.id}: {spec.title} (paper {spec.paper}, {spec.reproduces})\n", table.markdown()]
    return sections
