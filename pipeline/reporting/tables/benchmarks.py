"""The benchmark table of a study with a `benchmarks:` key: one row per cell, per benchmark its
Recall@1/5/10, laid out as the field's papers print it (MixVPR Table 2, SALAD Table 1, BoQ
Table 1: methods down, benchmarks across, R@1 / R@5 / R@10 under each), with 95% bootstrap
CIs over queries, the best of a column in bold and ties with it marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final


from pipeline.data.benchmarks import BENCHMARKS
from pipeline.reporting.tables.cells import (caption, finished, group_by_label, label_parts, mark_column, mean_hits,
                                             part_headers, value_entry, why_missing)
from pipeline.reporting.tables.render import Entry, Row, Table

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

BENCHMARK_METRICS: Final = (1, 5, 10)
PER_TABLE: Final = 4   # benchmarks per table: 12 value columns still read at a page's width


def benchmark_tables(study: Study, cells: Sequence[CellResult]) -> list[Table]:
    """The study's benchmark tables, `PER_TABLE` benchmarks each (`<study>_benchmarks`, or
    `<study>_benchmarks_<i>` when there are several)."""
    keys = list(study.benchmarks)
    chunks = [keys[i:i + PER_TABLE] for i in range(0, len(keys), PER_TABLE)]
    names = [f"{study.id}_benchmarks"] if len(chunks) == 1 else \
        [f"{study.id}_benchmarks_{i + 1}" for i in range(len(chunks))]
    return [benchmark_table(study, cells, chunk, name) for chunk, name in zip(chunks, names)]


def benchmark_table(study: Study, cells: Sequence[CellResult], keys: Sequence[str], name: str) -> Table:
    """Rows = the study's cells, columns = the benchmarks `keys` x Recall@1/5/10."""
    by_label = group_by_label(study, cells)
    rows, col_hits = [], {}
    for i, (label, results) in enumerate(by_label.items()):
        entries = [Entry(text=part) for part in label_parts(study, label)]
        for key in keys:
            for n in BENCHMARK_METRICS:
                values = [r.benchmark_recalls[key][n] for r in finished(results)
                          if n in r.benchmark_recalls.get(key, {})]
                hits = mean_hits(results, key, n, benchmark=True)
                col_hits.setdefault(len(entries), {})
                if hits is not None:
                    col_hits[len(entries)][i] = hits
                entries.append(value_entry(values, len(study.seeds), hits))
        rows.append(Row(entries, key=label))
    for col, hits in col_hits.items():
        mark_column(rows, col, hits)
    missing = {label: why_missing(results).replace("no value", "not tested on the benchmarks yet")
               for label, results in by_label.items() if not any(r.benchmark_recalls for r in finished(results))}
    text = (f"{study.title}: Recall@N (%) on the standard benchmarks "
            f"({', '.join(BENCHMARKS[k].title for k in keys)})")
    return Table(name=name, caption=caption(study, text, missing, relation="the runs of"), stub=part_headers(study),
                 groups=[(BENCHMARKS[k].title, [f"R@{n}" for n in BENCHMARK_METRICS]) for k in keys], rows=rows)
