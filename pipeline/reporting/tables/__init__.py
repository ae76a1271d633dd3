"""`vpr report` tables: one LaTeX/Markdown table per study, laid out like the paper's table it
reproduces (`layouts`), plus a published-vs-reproduced table, with honest statistics (mean ± std
over seeds, bootstrap CIs over queries, ties with the column's best marked; see
`statistics.METHOD`), and for a study with `benchmarks:` its benchmark table (`benchmarks`).
`render` holds the table model and its LaTeX/Markdown text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.reporting.tables.benchmarks import benchmark_tables
from pipeline.reporting.tables.cells import group_by_label
from pipeline.reporting.tables.cost import cost_table
from pipeline.reporting.tables.layouts import (METRICS, RANK_DATASETS, TOP_K, final_table, per_epoch_table,
                                               published_vs_reproduced, top_k_table)
from pipeline.reporting.tables.render import (LATEX_PACKAGES, MISSING_MD, MISSING_TEX, Entry, Row, Table,
                                              latex_escape, standalone_document)

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

__all__ = [
    "LATEX_PACKAGES", "METRICS", "MISSING_MD", "MISSING_TEX", "RANK_DATASETS", "TOP_K", "Entry", "Row", "Table",
    "latex_escape", "markdown_section", "published_vs_reproduced", "standalone_document", "study_tables",
    "write_tables",
]

def study_tables(study: Study, cells: Sequence[CellResult]) -> list[Table]:
    """The study's results table, laid out like the paper's (see the module docstring)."""
    by_label = group_by_label(study, cells)
    if study.kind == "per_epoch":
        return [per_epoch_table(study, by_label)]
    if study.kind == "top_k":
        return [top_k_table(study, by_label)]
    if study.kind == "final":
        return [final_table(study, by_label)]
    raise ValueError(f"study {study.id}: unknown kind {study.kind!r} (valid: final, per_epoch, top_k)")


def write_tables(study: Study, cells: Sequence[CellResult], out_dir: str | Path) -> list[Path]:
    """Write `<name>.tex` for the study's table(s) and its published-vs-reproduced table (when the
    paper printed numbers) into `out_dir`; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in _all_tables(study, cells):
        path = out / f"{table.name}.tex"
        path.write_text(table.latex(), encoding="utf-8")
        paths.append(path)
    return paths


def markdown_section(study: Study, cells: Sequence[CellResult]) -> str:
    """The study's tables in Markdown under a heading, for the report README."""
    head = f"### {study.id}: {study.title} ({study.origin})\n"
    return "\n".join([head, *(t.markdown() for t in _all_tables(study, cells))])


def _all_tables(study: Study, cells: Sequence[CellResult]) -> list[Table]:
    tables = study_tables(study, cells)
    if study.published:
        tables.append(published_vs_reproduced(study, cells))
    if study.benchmarks:
        tables += benchmark_tables(study, cells)
    if study.cost:
        tables.append(cost_table(study, cells))
    return tables
