"""Table layouts, each laid out like the paper table it reproduces:

- `final`: one row per cell (labels split into their grid/variant parts), LR/WD columns when the
  cells' optimizers differ in them, dataset x R@1/R@5 columns; with `study.baseline`, a block of
  "<cell> Δ <baseline>" rows after the cells (as paper 003 Table 2 prints them).
- `per_epoch`: per cell an R@1 and an R@5 row, one column per epoch (SF-XS val) and a "test"
  column (SF-XS test of the best checkpoint), as paper 000 Tables 1-3.
- `top_k`: the cells ranked by the mean of their SF-XS test and Tokyo-XS R@1, the best TOP_K kept,
  with a rank and a score column (paper 004 Table VII).
- published vs reproduced: paper, ours and Δ per cell with printed numbers.

A run that is not finished or lacks a value is an explicit missing cell (`--` / `—`) explained in
the caption; rows are never dropped (except the unranked tail of a top-k table, by definition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from pipeline.data.catalog import EVAL_SPLITS, VALIDATION, recall_metric
from pipeline.reporting.statistics import METHOD_CI
from pipeline.reporting.tables.cells import (caption, compact_number, dataset_title, datasets_of, finished,
                                             group_by_label, has_lr_wd_columns, label_parts, mark_column,
                                             mean_hits, metric_value, optimizer_value, part_headers,
                                             value_entry, why_missing)
from pipeline.reporting.tables.render import Entry, Row, Table

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

METRICS: Final = (1, 5)                      # Recall@N columns, as the papers print them
TOP_K: Final = 3                             # paper 004 Table VII keeps the top three
RANK_DATASETS: Final = ("sf_xs_test", "tokyo_xs")   # "combined performance ... on the test datasets"
PER_EPOCH_TEST: Final = "sf_xs_test"         # the "test" column of paper 000's per-epoch tables


def final_table(study: Study, by_label: dict[str, list[CellResult]], deltas: bool = True) -> Table:
    """One row per cell of `by_label` (in its order); Δ rows when the study has a baseline and `deltas`."""
    datasets = datasets_of(study, by_label)
    parts = part_headers(study)
    lr_wd = has_lr_wd_columns(study, by_label)
    stub = parts + (["LR", "WD"] if lr_wd else [])
    groups = [(dataset_title(d), [f"R@{n}" for n in METRICS]) for d in datasets]
    columns = [(d, n) for d in datasets for n in METRICS]
    rows: list[Row] = []
    hits: dict[int, dict[int, np.ndarray]] = {}     # column -> row -> hits
    missing: dict[str, str] = {}
    for label, results in by_label.items():
        entries = [Entry(text=p) for p in label_parts(study, label)]
        if lr_wd:
            entries += [Entry(text=compact_number(optimizer_value(results, k))) if optimizer_value(results, k) is not None
                        else Entry(missing=True) for k in ("lr", "weight_decay")]
        for j, (d, n) in enumerate(columns):
            values = [v for r in finished(results) if (v := metric_value((r.final or {}).get(d), n)) is not None]
            h = mean_hits(results, d, n) if values else None
            entries.append(value_entry(values, len(study.seeds), h))
            if h is not None:
                hits.setdefault(len(stub) + j, {})[len(rows)] = h
            if not values:
                missing.setdefault(label, why_missing(results))
        rows.append(Row(entries, key=label))
    for col in range(len(stub), len(stub) + len(columns)):
        mark_column(rows, col, hits.get(col, {}))
    extra = ""
    if study.baseline and deltas and study.baseline in by_label:
        rows += _delta_rows(study.baseline, list(by_label), rows, len(stub))
        extra = f" Δ rows: difference to {study.baseline} in points (of the means)."
    return Table(study.id, caption(study, study.title, missing, extra), stub, groups, rows)


def _delta_rows(baseline: str, labels: list[str], rows: list[Row], n_stub: int) -> list[Row]:
    """"<cell> Δ <baseline>" rows after the cells (paper 003 Table 2's layout): differences of the
    shown means, missing where either side is."""
    base = rows[labels.index(baseline)]
    out = []
    for label, row in zip(labels, rows):
        if label == baseline:
            continue
        key = f"{label} Δ {baseline}"
        entries = [Entry(text=key)] + [Entry() for _ in range(n_stub - 1)]
        for e, b in zip(row.entries[n_stub:], base.entries[n_stub:]):
            if e.value is None or b.value is None:
                entries.append(Entry(missing=True))
            else:
                entries.append(Entry(value=e.value - b.value, signed=True))
        out.append(Row(entries, key=key, kind="delta", rule_above=not out))
    return out


def _history_value(result: CellResult, epoch: int, n: int) -> float | None:
    for h in result.history or []:
        if int(h.get("epoch", -1)) == epoch:
            v = h.get(recall_metric(VALIDATION.key, n, per_epoch=True))
            return None if v is None else float(v)
    return None


def _epochs(study: Study, by_label: Mapping[str, list[CellResult]]) -> list[int]:
    """Epoch columns: those the finished runs logged, else the paper's (so a table exists before runs)."""
    ran = {int(h["epoch"]) for rs in by_label.values() for r in finished(rs) for h in (r.history or [])
           if "epoch" in h}
    if ran:
        return sorted(ran)
    return sorted({int(e) for pub in study.published.values() for e in pub.get("per_epoch", {})})


def per_epoch_table(study: Study, by_label: dict[str, list[CellResult]]) -> Table:
    """Per cell an R@1 and an R@5 row: the validation split after each epoch, then the test column."""
    epochs = _epochs(study, by_label)
    parts = part_headers(study)
    stub = parts + ["Metric"]
    groups = [(f"{VALIDATION.title}, epoch", [f"{e:02d}" for e in epochs]), ("SF-XS", ["test"])]   # the paper's "test" column
    rows: list[Row] = []
    hits: dict[tuple[int, int], np.ndarray] = {}    # (metric, row) -> test hits
    missing: dict[str, str] = {}
    for label, results in by_label.items():
        for k, n in enumerate(METRICS):
            entries = [Entry(text=p if k == 0 else "") for p in label_parts(study, label)] + [Entry(text=f"R@{n}")]
            for e in epochs:
                values = [v for r in finished(results) if (v := _history_value(r, e, n)) is not None]
                entries.append(value_entry(values, len(study.seeds)))
                if not values:
                    missing.setdefault(label, why_missing(results))
            values = [v for r in finished(results) if (v := metric_value((r.final or {}).get(PER_EPOCH_TEST), n)) is not None]
            h = mean_hits(results, PER_EPOCH_TEST, n) if values else None
            entries.append(value_entry(values, len(study.seeds), h))
            if not values:
                missing.setdefault(label, why_missing(results))
            if h is not None:
                hits[(n, len(rows))] = h
            rows.append(Row(entries, key=f"{label} | R@{n}", rule_above=(k == 0)))
    # Compare like with like: R@1 rows among themselves, R@5 rows among themselves.
    for k, n in enumerate(METRICS):
        idx = [i for i in range(len(rows)) if i % len(METRICS) == k]
        sub = [rows[i] for i in idx]
        for col in range(len(stub), len(stub) + len(epochs) + 1):
            sub_hits = {j: hits[(n, i)] for j, i in enumerate(idx) if (n, i) in hits}
            mark_column(sub, col, sub_hits if col == len(stub) + len(epochs) else {})
    text = (f"{study.title}: Recall@N on {VALIDATION.title} after each epoch and on {dataset_title(PER_EPOCH_TEST)} "
            f"(best checkpoint)")
    return Table(study.id, caption(study, text, missing), stub, groups, rows, font_size="footnotesize")


def _mean_final(results: Sequence[CellResult], dataset: str, n: int) -> float | None:
    values = [v for r in finished(results) if (v := metric_value((r.final or {}).get(dataset), n)) is not None]
    return float(np.mean(values)) if values else None


def top_k_table(study: Study, by_label: dict[str, list[CellResult]]) -> Table:
    """The TOP_K cells by the mean R@1 of RANK_DATASETS, best first; unrankable (missing) cells
    follow without a rank, so a missing run is visible rather than silently out of the ranking."""
    scores = {}
    for label, results in by_label.items():
        vals = [_mean_final(results, d, 1) for d in RANK_DATASETS]
        scores[label] = None if any(v is None for v in vals) else float(np.mean(vals))
    ranked = sorted((lab for lab, s in scores.items() if s is not None),
                    key=lambda lab: -scores[lab])[:TOP_K]        # stable: study order on equal scores
    unranked = [lab for lab, s in scores.items() if s is None]
    shown = {lab: by_label[lab] for lab in ranked + unranked}
    body = final_table(study, shown, deltas=False)             # marks best/ties among the shown cells
    rows = []
    for i, (label, row) in enumerate(zip(shown, body.rows)):
        rank = Entry(text=str(i + 1)) if scores[label] is not None else Entry(missing=True)
        score = Entry(value=scores[label]) if scores[label] is not None else Entry(missing=True)
        rows.append(Row([rank, *row.entries, score], key=label))
    table = Table(study.id, "", ["Rank", *body.stub], [*body.groups, ("", ["Score"])], rows)
    mark_column(table.rows, len(table.columns) - 1, {})
    text = (f"{study.title}: the top {len(ranked)} of {len(by_label)} cells, ranked by their score, the mean "
            f"of {' and '.join(dataset_title(d) for d in RANK_DATASETS)} R@1 (each a mean over seeds)")
    missing = {lab: why_missing(by_label[lab]) for lab, row in zip(shown, body.rows)
               if any(e.missing for e in row.entries[len(body.stub):])}
    table.caption = caption(study, text, missing)
    return table


def published_vs_reproduced(study: Study, cells: Sequence[CellResult]) -> Table:
    """Paper vs ours per cell with published numbers, dataset and metric; Δ = ours − paper.

    per_epoch studies compare the last epoch on SF-XS val (the paper's last and ours, named in the
    row when they differ) and the test column. No rows when the paper printed nothing.
    """
    by_label = group_by_label(study, cells)
    parts = part_headers(study)
    groups = [(f"R@{n}", ["paper", "ours", "Δ"]) for n in METRICS]
    rows: list[Row] = []
    missing: dict[str, str] = {}
    for label, results in by_label.items():
        pub = study.published.get(label)
        if not pub:
            continue
        for k, comp in enumerate(_comparisons(pub, results)):
            entries = [Entry(text=p if k == 0 else "") for p in label_parts(study, label)] + [Entry(text=comp.what)]
            for n in METRICS:
                p = comp.paper.get(f"R@{n}")
                mine = value_entry(comp.ours[n], len(study.seeds), comp.hits[n])
                if mine.missing:
                    missing.setdefault(label, why_missing(results))
                entries += [Entry(value=float(p)) if p is not None else Entry(missing=True), mine,
                            Entry(value=mine.value - float(p), signed=True)
                            if p is not None and mine.value is not None else Entry(missing=True)]
            rows.append(Row(entries, key=f"{label} | {comp.what}", rule_above=(k == 0)))
    text = f"Published vs reproduced: {study.title}. Δ = ours − paper, in points"
    cap = caption(study, text, missing, method=METHOD_CI)     # nothing is bolded here
    return Table(f"{study.id}_published", cap, [*parts, "Dataset"], groups, rows)


@dataclass
class _Comparison:
    """One published-vs-reproduced row of a cell: what is compared, the paper's metrics, ours."""

    what: str
    paper: Mapping[str, float]
    ours: dict[int, list[float]]              # N -> our values over seeds
    hits: dict[int, np.ndarray | None]        # N -> per-query hits (None: no interval)


def _comparisons(pub: Mapping[str, Any], results: Sequence[CellResult]) -> list[_Comparison]:
    """The rows compared for one cell: the last epoch (per_epoch studies), then each printed dataset."""
    done = finished(results)
    out = []
    per_epoch = {int(e): m for e, m in (pub.get("per_epoch") or {}).items()}
    if per_epoch:
        last_paper = max(per_epoch)
        ran = [e for r in done for e in [max((int(h["epoch"]) for h in r.history or [] if "epoch" in h),
                                             default=None)] if e is not None]
        last_ours = max(ran, default=None)
        # A capped (demo) run is compared at its own last epoch, and the row says so.
        what = (f"{VALIDATION.title}, epoch {last_paper:02d}" if last_ours in (None, last_paper)
                else f"{VALIDATION.title}, last epoch (paper {last_paper:02d}, ours {last_ours:02d})")
        epoch = last_paper if last_ours is None else last_ours
        ours = {n: [v for r in done if (v := _history_value(r, epoch, n)) is not None] for n in METRICS}
        out.append(_Comparison(what, per_epoch[last_paper], ours, {n: None for n in METRICS}))
    for d in (s.key for s in EVAL_SPLITS):
        if d in pub:
            ours = {n: [v for r in done if (v := metric_value((r.final or {}).get(d), n)) is not None] for n in METRICS}
            hits = {n: mean_hits(results, d, n) if ours[n] else None for n in METRICS}
            out.append(_Comparison(dataset_title(d), pub[d], ours, hits))
    return out


