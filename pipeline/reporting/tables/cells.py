"""What the layouts share: a cell's values over its seeds (mean ± std, bootstrap CI), bold/tie
marking of a column, a study's labels split into headers, its datasets, captions and notes on
missing runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from pipeline.data.catalog import EVAL_SPLITS, SPLITS
from pipeline.reporting.statistics import METHOD, bootstrap_ci, mark_ties, mean_std
from pipeline.reporting.tables.render import Entry, Row

if TYPE_CHECKING:  # only for type hints: the tables read CellResult's attributes
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

# Header of a label part by the grid key it comes from (`model.aggregator.name` -> Aggregator).
COMPONENT_HEADERS: Final = {"model.aggregator.name": "Aggregator", "loss.name": "Loss", "miner.name": "Miner",
                             "optimizer.name": "Optimizer", "scheduler.name": "Scheduler",
                             "model.backbone.name": "Backbone"}


def metric_value(mapping: Mapping[Any, float] | None, n: int) -> float | None:
    """Recall@n from {N: value} (int or str keys, as JSON may give)."""
    if not mapping:
        return None
    value = mapping.get(n, mapping.get(str(n)))
    return None if value is None or not math.isfinite(float(value)) else float(value)


def finished(results: Sequence[CellResult]) -> list[CellResult]:
    """The results whose run finished."""
    return [r for r in results if r.status == "finished"]


def mean_hits(results: Sequence[CellResult], dataset: str, n: int, benchmark: bool = False) -> np.ndarray | None:
    """Per-query hits at N averaged over the finished seeds that have them, or None; of an
    evaluation split, or with `benchmark` of a standard benchmark.

    Seeds with a different query count are ignored rather than mixed (same queries are required).
    """
    columns = []
    for r in finished(results):
        h = (r.benchmark_hits if benchmark else r.hits or {}).get(dataset)
        ns = list(r.benchmark_ns.get(dataset, []) if benchmark else r.ns or [])
        if h is None or n not in ns:
            continue
        columns.append(np.asarray(h)[:, ns.index(n)].astype(np.float64))
    if not columns:
        return None
    q = columns[0].shape[0]
    columns = [c for c in columns if c.shape[0] == q]
    return np.mean(columns, axis=0) if q > 0 else None


def value_entry(values: list[float], n_expected: int, hits: np.ndarray | None = None) -> Entry:
    """An entry from the values of one cell over its seeds (missing when empty)."""
    if not values:
        return Entry(missing=True)
    mean, std = mean_std(values)
    note = f"{len(values)}/{n_expected}" if len(values) < n_expected else ""
    ci = bootstrap_ci(hits) if hits is not None else None
    return Entry(value=mean, std=std if n_expected > 1 else None, ci=ci, note=note)


def mark_column(rows: list[Row], col: int, hits: Mapping[int, np.ndarray]) -> None:
    """Bold the best value of column `col` among `rows`' data entries; dagger the ties.

    `hits` maps a row index (in `rows`) to its per-query hits for this column: ties are tested
    only where the best row and the other row both have hits on the same queries.
    """
    values = {i: row.entries[col].value for i, row in enumerate(rows)
              if row.kind == "data" and row.entries[col].value is not None}
    if len(values) < 2:          # a single number is not "best" of anything
        return
    top = max(round(v, 2) for v in values.values())
    bold = [i for i, v in values.items() if round(v, 2) == top]   # equal as printed: all bold
    for i in bold:
        rows[i].entries[col] = replace(rows[i].entries[col], bold=True)
    best = bold[0]
    if best not in hits:
        return
    q = len(hits[best])
    candidates = {i: h for i, h in hits.items() if i in values and len(h) == q}
    _, ties = mark_ties({str(i): h for i, h in candidates.items()}, best=str(best))
    for i in (int(t) for t in ties):
        if i not in bold:
            rows[i].entries[col] = replace(rows[i].entries[col], tie=True)


# ---------------------------------------------------------------------------------------------
# Study structure: labels, their parts and headers, datasets


def group_by_label(study: Study, cells: Iterable[CellResult]) -> dict[str, list[CellResult]]:
    """This study's results by cell label (other studies' results and unknown labels ignored)."""
    by_label: dict[str, list[CellResult]] = {label: [] for label in study.labels}
    for c in cells:
        if c.study == study.id and c.label in by_label:
            by_label[c.label].append(c)
    for results in by_label.values():
        results.sort(key=lambda r: r.seed)
    return by_label


def part_headers(study: Study) -> list[str]:
    """Headers of the label parts: one per grid key, then one for the variants."""
    heads = [COMPONENT_HEADERS.get(k, k.split(".")[-2 if k.endswith(".name") else -1].capitalize())
             for k in study.grid]
    if study.variants:
        # Variants that all change the same sections are named by them ("Loss", "Miner + loss").
        sections = [list(dict.fromkeys(k.split(".")[0] for k in v.set)) for v in study.variants]
        same = all(set(s) == set(sections[0]) for s in sections) and sections[0]
        heads.append(" + ".join(sections[0]).capitalize() if same else "Variant")
    return heads or ["Cell"]


def label_parts(study: Study, label: str) -> list[str]:
    """A label split into its grid/variant parts (a variant label may itself contain " / ")."""
    n = len(part_headers(study))
    parts = label.split(" / ", n - 1) if n > 1 else [label]
    return parts if len(parts) == n else [label] + [""] * (n - 1)


def datasets_of(study: Study, by_label: Mapping[str, list[CellResult]]) -> list[str]:
    """Datasets the study's published numbers or results have: known ones in paper order first."""
    found: set[str] = set()
    for pub in study.published.values():
        found |= {k for k in pub if k != "per_epoch"}
    for results in by_label.values():
        for r in finished(results):
            found |= {k for k, v in (r.final or {}).items() if v}
    if not found:   # nothing printed, nothing run yet: the papers' three datasets, all missing
        return [s.key for s in EVAL_SPLITS]
    known = [s.key for s in EVAL_SPLITS if s.key in found]
    return known + sorted(found - set(known))


def dataset_title(dataset: str) -> str:
    """A split's title as tables print it ("SF-XS val"); an unknown key as it is."""
    return SPLITS[dataset].title if dataset in SPLITS else dataset


def _missing_note(status: Mapping[str, str]) -> str:
    """Caption note for missing cells: which cell, and why (run status or no value)."""
    if not status:
        return ""
    by_why: dict[str, list[str]] = {}
    for label, why in status.items():
        by_why.setdefault(why, []).append(label)
    reasons = "; ".join(f"{why}: {', '.join(labels)}" for why, labels in by_why.items())
    return f" — : run missing ({reasons})."


def why_missing(results: Sequence[CellResult]) -> str:
    """Why a cell has no value: its runs' statuses, or "no value" for a finished run without it."""
    if not results:
        return "missing"
    statuses = sorted({r.status for r in results if r.status != "finished"})
    return "/".join(statuses) if statuses else "no value"


def _seeds_note(study: Study) -> str:
    if len(study.seeds) < 2:
        return ""
    return (f" Values: mean ± std (ddof=1) over {len(study.seeds)} seeds; a superscript k/n means only k "
            f"of n seeds finished; intervals use per-query hits averaged over seeds.")


def caption(study: Study, text: str, missing: Mapping[str, str], extra: str = "", method: str = METHOD,
            relation: str = "reproduces") -> str:
    """A table caption: what it shows, how it relates to the paper table (`relation`), statistics
    and missing runs."""
    origin = f"{relation} {study.origin}" if study.paper else study.origin
    return (f"{text} ({origin}; study {study.id}).{extra}"
            f"{_seeds_note(study)} {method}{_missing_note(missing)}")


def compact_number(value: Any) -> str:
    """Compact LR/WD text: 0.0002 -> 2e-4, 0.1 -> 0.1, 0 -> 0."""
    if value is None:
        return ""
    v = float(value)
    if v == 0 or 1e-2 <= abs(v) < 1e3:
        return f"{v:g}"
    mantissa, exp = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exp)}" if float(f"{v:.0e}") == v else f"{v:g}"


def optimizer_value(results: Sequence[CellResult], key: str) -> Any:
    """A key of the optimizer section of the first result whose config has it (None otherwise)."""
    for r in results:
        if r.config and isinstance(r.config.get("optimizer"), Mapping) and key in r.config["optimizer"]:
            return r.config["optimizer"][key]
    return None


def has_lr_wd_columns(study: Study, by_label: Mapping[str, list[CellResult]]) -> bool:
    """LR/WD columns are shown when the cells' optimizers differ in learning rate or weight decay."""
    for key in ("lr", "weight_decay"):
        seen = {optimizer_value(rs, key) for rs in by_label.values()} - {None}
        if len(seen) > 1:
            return True
    return False

