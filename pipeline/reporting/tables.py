"""`vpr report` tables: one LaTeX/Markdown table per study, laid out like the paper's table it
reproduces, plus a published-vs-reproduced table, with honest statistics (mean ± std over seeds,
bootstrap CIs over queries, ties with the column's best marked; see `statistics.METHOD`).

Layouts by study kind:
- `final`: one row per cell (labels split into their grid/variant parts), LR/WD columns when the
  cells' optimizers differ in them, dataset x R@1/R@5 columns; with `study.baseline`, a block of
  "<cell> Δ <baseline>" rows after the cells (as seed 003 Table 2 prints them).
- `per_epoch`: per cell an R@1 and an R@5 row, one column per epoch (SF-XS val) and a "test"
  column (SF-XS test of the best checkpoint), as seed 000 Tables 1-3.
- `top_k`: the cells ranked by the mean of their SF-XS test and Tokyo-XS R@1, the best TOP_K kept,
  with a rank and a score column (seed 004 Table VII).

A run that is not finished or lacks a value is an explicit missing cell (`--` / `—`) explained in
the caption; rows are never dropped (except the unranked tail of a top-k table, by definition).
The LaTeX preamble needs `booktabs` and `graphicx` (`LATEX_PACKAGES`): a table wider than the
line is scaled down to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from pipeline.reporting.statistics import METHOD, METHOD_CI, bootstrap_ci, mark_ties, mean_std

if TYPE_CHECKING:  # only for type hints: the tables read CellResult's attributes
    from pipeline.reporting.collect import CellResult
    from pipeline.sweeps.study import Study

LATEX_PACKAGES: Final = ("booktabs", "graphicx")   # graphicx: shrink a too-wide table to the line
METRICS: Final = (1, 5)                      # Recall@N columns, as the papers print them
TOP_K: Final = 3                             # seed 004 Table VII keeps the top three
RANK_DATASETS: Final = ("sf_xs_test", "tokyo_xs")   # "combined performance ... on the test datasets"
DATASET_NAMES: Final = {"sf_xs_val": "SF-XS val", "sf_xs_test": "SF-XS test", "tokyo_xs": "Tokyo-XS"}
MISSING_MD: Final = "—"
MISSING_TEX: Final = "--"
# Header of a label part by the grid key it comes from (`model.aggregator.name` -> Aggregator).
_COMPONENT_HEADERS: Final = {"model.aggregator.name": "Aggregator", "loss.name": "Loss", "miner.name": "Miner",
                             "optimizer.name": "Optimizer", "scheduler.name": "Scheduler",
                             "model.backbone.name": "Backbone"}

# ---------------------------------------------------------------------------------------------
# Table model and rendering


@dataclass(frozen=True)
class Entry:
    """One table cell: plain text (labels, LR), a number with its statistics, or a missing value."""

    text: str = ""
    value: float | None = None            # the number shown (mean over seeds)
    std: float | None = None              # shown as "± std" when several seeds are behind the value
    ci: tuple[float, float] | None = None  # 95% bootstrap interval in percent
    bold: bool = False
    tie: bool = False                     # not significantly worse than the bold cell (†)
    missing: bool = False
    signed: bool = False                  # differences: "+2.16"
    note: str = ""                        # e.g. "2/3" seeds finished

    def number_text(self) -> str:
        """The value (and std) as plain text with 2 decimals, no markup."""
        if self.value is None:
            return ""
        text = _fmt(self.value, self.signed)
        if self.std is not None:
            text += f" ± {self.std:.2f}"
        return text

    def markdown(self) -> str:
        """Markdown text: `**58.12**† [55.1, 61.0]`, `—` when missing."""
        if self.missing:
            return MISSING_MD
        if self.value is None:
            return self.text.replace("|", "\\|")   # a pipe would end the Markdown cell
        text = f"**{self.number_text()}**" if self.bold else self.number_text()
        if self.tie:
            text += "†"
        if self.note:
            text += f" ({self.note})"
        if self.ci is not None:
            text += f" [{self.ci[0]:.1f}, {self.ci[1]:.1f}]"
        return text

    def latex(self) -> str:
        """LaTeX text; a CI goes on a small second line (nested tabular: no extra package)."""
        if self.missing:
            return MISSING_TEX
        if self.value is None:
            return latex_escape(self.text)
        text = _fmt(self.value, self.signed)
        if self.std is not None:
            text += rf"\,$\pm$\,{self.std:.2f}"
        if self.bold:
            text = rf"\textbf{{{text}}}"
        if self.tie:
            text += r"$^\dagger$"
        if self.note:
            text += rf"\textsuperscript{{{latex_escape(self.note)}}}"
        if self.ci is not None:
            text = (rf"\begin{{tabular}}[c]{{@{{}}r@{{}}}}{text}\\"
                    rf"{{\scriptsize [{self.ci[0]:.1f}, {self.ci[1]:.1f}]}}\end{{tabular}}")
        return text


@dataclass
class Row:
    """A table row: stub entries then value entries. `kind` is "data" or "delta"."""

    entries: list[Entry]
    key: str = ""                         # what the row shows, for lookups: a cell label, "gem Δ avg",
    kind: str = "data"                    # "contrastive | R@1" (per epoch), "gem | SF-XS test"
    rule_above: bool = False              # a \midrule before this row (blocks, delta rows)


@dataclass
class Table:
    """A rendered-on-demand table: leading text columns (`stub`), value column groups, rows."""

    name: str                             # file stem
    caption: str                          # plain text; escaped for LaTeX
    stub: list[str]                       # headers of the text columns
    groups: list[tuple[str, list[str]]]   # value columns: (group title, sub-column headers)
    rows: list[Row] = field(default_factory=list)
    font_size: str = "small"

    @property
    def columns(self) -> list[str]:
        """Flat header of every column ("SF-XS val R@1")."""
        return [*self.stub, *(f"{g} {s}".strip() for g, subs in self.groups for s in subs)]

    def entry(self, row_key: str, column: str) -> Entry:
        """The entry at a row (by `Row.key`) and a column (by `columns` name): for tests and reports."""
        col = self.columns.index(column)
        for row in self.rows:
            if row.key == row_key:
                return row.entries[col]
        raise KeyError(f"no row {row_key!r} in table {self.name}; rows: {[r.key for r in self.rows]}")

    def latex(self) -> str:
        """A booktabs `table` float with caption and `tab:<name>` label."""
        n_stub = len(self.stub)
        spec = "l" * n_stub + "".join("r" * len(subs) for _, subs in self.groups)
        lines = [r"\begin{table}[htbp]", r"\centering", rf"\{self.font_size}",
                 r"\setlength{\tabcolsep}{4pt}",
                 rf"\caption{{{latex_escape(self.caption)}}}", rf"\label{{tab:{self.name}}}",
                 # Scaled down only when wider than the line (\width is the natural width).
                 r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
        if any(title for title, _ in self.groups):
            heads, rules, col = [""] * n_stub, [], n_stub + 1
            for title, subs in self.groups:
                heads.append(rf"\multicolumn{{{len(subs)}}}{{c}}{{{latex_escape(title)}}}")
                if title:
                    rules.append(rf"\cmidrule(lr){{{col}-{col + len(subs) - 1}}}")
                col += len(subs)
            lines.append(" & ".join(heads) + r" \\")
            lines.append(" ".join(rules))
        subs_row = [latex_escape(s) for s in self.stub] + [latex_escape(s) for _, subs in self.groups for s in subs]
        lines += [" & ".join(subs_row) + r" \\", r"\midrule"]
        for i, row in enumerate(self.rows):
            if row.rule_above and i > 0:
                lines.append(r"\midrule")
            lines.append(" & ".join(e.latex() for e in row.entries) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        """A caption line and a pipe table (one header row: "group sub")."""
        head = [c.replace("|", "\\|") for c in self.columns]
        align = ["---"] * len(self.stub) + ["---:"] * (len(head) - len(self.stub))
        lines = [f"**{self.name}**: {self.caption}", "", "| " + " | ".join(head) + " |",
                 "| " + " | ".join(align) + " |"]
        for row in self.rows:
            lines.append("| " + " | ".join(e.markdown() for e in row.entries) + " |")
        return "\n".join(lines) + "\n"


_LATEX_SPECIAL: Final = {
    "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    # Unicode used in labels/captions, spelled so pdflatex needs no extra package.
    "Δ": r"$\Delta$", "±": r"$\pm$", "†": r"$^\dagger$", "—": "--", "–": "--", "−": "-",
    "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX text: special characters escaped, the few Unicode symbols we use mapped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def standalone_document(tables: Iterable[Table]) -> str:
    """A minimal compilable document holding `tables` (for checks and previews)."""
    packages = "".join(rf"\usepackage{{{p}}}" + "\n" for p in LATEX_PACKAGES)
    body = "\\clearpage\n".join(t.latex() for t in tables)   # one page each: no float overflow
    return f"\\documentclass{{article}}\n{packages}\\begin{{document}}\n{body}\\end{{document}}\n"


def _fmt(value: float, signed: bool = False) -> str:
    """2 decimals; a difference carries its sign and never prints "-0.00"."""
    value = round(value, 2) + 0.0    # + 0.0 turns -0.0 into 0.0
    return f"{value:+.2f}" if signed else f"{value:.2f}"


# ---------------------------------------------------------------------------------------------
# Values of a cell (several seeds) and column marking


def _metric(mapping: Mapping[Any, float] | None, n: int) -> float | None:
    """Recall@n from {N: value} (int or str keys, as JSON may give)."""
    if not mapping:
        return None
    value = mapping.get(n, mapping.get(str(n)))
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _finished(results: Sequence[CellResult]) -> list[CellResult]:
    return [r for r in results if r.status == "finished"]


def _hits(results: Sequence[CellResult], dataset: str, n: int) -> np.ndarray | None:
    """Per-query hits at N averaged over the finished seeds that have them, or None.

    Seeds with a different query count are ignored rather than mixed (same queries are required).
    """
    columns = []
    for r in _finished(results):
        h = (r.hits or {}).get(dataset)
        if h is None or n not in list(r.ns or []):
            continue
        columns.append(np.asarray(h)[:, list(r.ns).index(n)].astype(np.float64))
    if not columns:
        return None
    q = columns[0].shape[0]
    columns = [c for c in columns if c.shape[0] == q]
    return np.mean(columns, axis=0) if q > 0 else None


def _value_entry(values: list[float], n_expected: int, hits: np.ndarray | None = None) -> Entry:
    """An entry from the values of one cell over its seeds (missing when empty)."""
    if not values:
        return Entry(missing=True)
    mean, std = mean_std(values)
    note = f"{len(values)}/{n_expected}" if len(values) < n_expected else ""
    ci = bootstrap_ci(hits) if hits is not None else None
    return Entry(value=mean, std=std if n_expected > 1 else None, ci=ci, note=note)


def _mark_column(rows: list[Row], col: int, hits: Mapping[int, np.ndarray]) -> None:
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


def _group(study: Study, cells: Iterable[CellResult]) -> dict[str, list[CellResult]]:
    """This study's results by cell label (other studies' results and unknown labels ignored)."""
    by_label: dict[str, list[CellResult]] = {label: [] for label in study.labels}
    for c in cells:
        if c.study == study.id and c.label in by_label:
            by_label[c.label].append(c)
    for results in by_label.values():
        results.sort(key=lambda r: r.seed)
    return by_label


def _part_headers(study: Study) -> list[str]:
    """Headers of the label parts: one per grid key, then one for the variants."""
    heads = [_COMPONENT_HEADERS.get(k, k.split(".")[-2 if k.endswith(".name") else -1].capitalize())
             for k in study.grid]
    if study.variants:
        # Variants that all change the same sections are named by them ("Loss", "Miner + loss").
        sections = [list(dict.fromkeys(k.split(".")[0] for k in v.set)) for v in study.variants]
        same = all(set(s) == set(sections[0]) for s in sections) and sections[0]
        heads.append(" + ".join(sections[0]).capitalize() if same else "Variant")
    return heads or ["Cell"]


def _label_parts(study: Study, label: str) -> list[str]:
    """A label split into its grid/variant parts (a variant label may itself contain " / ")."""
    n = len(_part_headers(study))
    parts = label.split(" / ", n - 1) if n > 1 else [label]
    return parts if len(parts) == n else [label] + [""] * (n - 1)


def _datasets(study: Study, by_label: Mapping[str, list[CellResult]]) -> list[str]:
    """Datasets the study's published numbers or results have: known ones in paper order first."""
    found: set[str] = set()
    for pub in study.published.values():
        found |= {k for k in pub if k != "per_epoch"}
    for results in by_label.values():
        for r in _finished(results):
            found |= {k for k, v in (r.final or {}).items() if v}
    if not found:   # nothing printed, nothing run yet: the papers' three datasets, all missing
        return list(DATASET_NAMES)
    known = [d for d in DATASET_NAMES if d in found]
    return known + sorted(found - set(known))


def _dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def _missing_note(status: Mapping[str, str]) -> str:
    """Caption note for missing cells: which cell, and why (run status or no value)."""
    if not status:
        return ""
    by_why: dict[str, list[str]] = {}
    for label, why in status.items():
        by_why.setdefault(why, []).append(label)
    reasons = "; ".join(f"{why}: {', '.join(labels)}" for why, labels in by_why.items())
    return f" — : run missing ({reasons})."


def _why_missing(results: Sequence[CellResult]) -> str:
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


def _caption(study: Study, text: str, missing: Mapping[str, str], extra: str = "", method: str = METHOD) -> str:
    return (f"{text} (reproduces seed {study.paper} {study.reproduces}; study {study.id}).{extra}"
            f"{_seeds_note(study)} {method}{_missing_note(missing)}")


def _sig(value: Any) -> str:
    """Compact LR/WD text: 0.0002 -> 2e-4, 0.1 -> 0.1, 0 -> 0."""
    if value is None:
        return ""
    v = float(value)
    if v == 0 or 1e-2 <= abs(v) < 1e3:
        return f"{v:g}"
    mantissa, exp = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exp)}" if float(f"{v:.0e}") == v else f"{v:g}"


def _optimizer_value(results: Sequence[CellResult], key: str) -> Any:
    for r in results:
        if r.config and isinstance(r.config.get("optimizer"), Mapping) and key in r.config["optimizer"]:
            return r.config["optimizer"][key]
    return None


def _lr_wd_columns(study: Study, by_label: Mapping[str, list[CellResult]]) -> bool:
    """LR/WD columns are shown when the cells' optimizers differ in learning rate or weight decay."""
    for key in ("lr", "weight_decay"):
        seen = {_optimizer_value(rs, key) for rs in by_label.values()} - {None}
        if len(seen) > 1:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Layouts


def _final_table(study: Study, by_label: dict[str, list[CellResult]], deltas: bool = True) -> Table:
    """One row per cell of `by_label` (in its order); Δ rows when the study has a baseline and `deltas`."""
    datasets = _datasets(study, by_label)
    parts = _part_headers(study)
    lr_wd = _lr_wd_columns(study, by_label)
    stub = parts + (["LR", "WD"] if lr_wd else [])
    groups = [(_dataset_name(d), [f"R@{n}" for n in METRICS]) for d in datasets]
    columns = [(d, n) for d in datasets for n in METRICS]
    rows: list[Row] = []
    hits: dict[int, dict[int, np.ndarray]] = {}     # column -> row -> hits
    missing: dict[str, str] = {}
    for label, results in by_label.items():
        entries = [Entry(text=p) for p in _label_parts(study, label)]
        if lr_wd:
            entries += [Entry(text=_sig(_optimizer_value(results, k))) if _optimizer_value(results, k) is not None
                        else Entry(missing=True) for k in ("lr", "weight_decay")]
        for j, (d, n) in enumerate(columns):
            values = [v for r in _finished(results) if (v := _metric((r.final or {}).get(d), n)) is not None]
            h = _hits(results, d, n) if values else None
            entries.append(_value_entry(values, len(study.seeds), h))
            if h is not None:
                hits.setdefault(len(stub) + j, {})[len(rows)] = h
            if not values:
                missing.setdefault(label, _why_missing(results))
        rows.append(Row(entries, key=label))
    for col in range(len(stub), len(stub) + len(columns)):
        _mark_column(rows, col, hits.get(col, {}))
    extra = ""
    if study.baseline and deltas and study.baseline in by_label:
        rows += _delta_rows(study.baseline, list(by_label), rows, len(stub))
        extra = f" Δ rows: difference to {study.baseline} in points (of the means)."
    return Table(study.id, _caption(study, study.title, missing, extra), stub, groups, rows)


def _delta_rows(baseline: str, labels: list[str], rows: list[Row], n_stub: int) -> list[Row]:
    """"<cell> Δ <baseline>" rows after the cells (seed 003 Table 2's layout): differences of the
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
            v = h.get(f"val_recall@{n}")
            return None if v is None else float(v)
    return None


def _epochs(study: Study, by_label: Mapping[str, list[CellResult]]) -> list[int]:
    """Epoch columns: those the finished runs logged, else the paper's (so a table exists before runs)."""
    ran = {int(h["epoch"]) for rs in by_label.values() for r in _finished(rs) for h in (r.history or [])
           if "epoch" in h}
    if ran:
        return sorted(ran)
    return sorted({int(e) for pub in study.published.values() for e in pub.get("per_epoch", {})})


def _per_epoch_table(study: Study, by_label: dict[str, list[CellResult]]) -> Table:
    epochs = _epochs(study, by_label)
    parts = _part_headers(study)
    stub = parts + ["Metric"]
    groups = [("SF-XS val, epoch", [f"{e:02d}" for e in epochs]), ("SF-XS", ["test"])]   # the paper's "test" column
    rows: list[Row] = []
    hits: dict[tuple[int, int], np.ndarray] = {}    # (metric, row) -> test hits
    missing: dict[str, str] = {}
    for label, results in by_label.items():
        for k, n in enumerate(METRICS):
            entries = [Entry(text=p if k == 0 else "") for p in _label_parts(study, label)] + [Entry(text=f"R@{n}")]
            for e in epochs:
                values = [v for r in _finished(results) if (v := _history_value(r, e, n)) is not None]
                entries.append(_value_entry(values, len(study.seeds)))
                if not values:
                    missing.setdefault(label, _why_missing(results))
            values = [v for r in _finished(results) if (v := _metric((r.final or {}).get("sf_xs_test"), n)) is not None]
            h = _hits(results, "sf_xs_test", n) if values else None
            entries.append(_value_entry(values, len(study.seeds), h))
            if not values:
                missing.setdefault(label, _why_missing(results))
            if h is not None:
                hits[(n, len(rows))] = h
            rows.append(Row(entries, key=f"{label} | R@{n}", rule_above=(k == 0)))
    # Compare like with like: R@1 rows among themselves, R@5 rows among themselves.
    for k, n in enumerate(METRICS):
        idx = [i for i in range(len(rows)) if i % len(METRICS) == k]
        sub = [rows[i] for i in idx]
        for col in range(len(stub), len(stub) + len(epochs) + 1):
            sub_hits = {j: hits[(n, i)] for j, i in enumerate(idx) if (n, i) in hits}
            _mark_column(sub, col, sub_hits if col == len(stub) + len(epochs) else {})
    text = f"{study.title}: Recall@N on SF-XS val after each epoch and on SF-XS test (best checkpoint)"
    return Table(study.id, _caption(study, text, missing), stub, groups, rows, font_size="footnotesize")


def _mean_final(results: Sequence[CellResult], dataset: str, n: int) -> float | None:
    values = [v for r in _finished(results) if (v := _metric((r.final or {}).get(dataset), n)) is not None]
    return float(np.mean(values)) if values else None


def _top_k_table(study: Study, by_label: dict[str, list[CellResult]]) -> Table:
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
    body = _final_table(study, shown, deltas=False)             # marks best/ties among the shown cells
    rows = []
    for i, (label, row) in enumerate(zip(shown, body.rows)):
        rank = Entry(text=str(i + 1)) if scores[label] is not None else Entry(missing=True)
        score = Entry(value=scores[label]) if scores[label] is not None else Entry(missing=True)
        rows.append(Row([rank, *row.entries, score], key=label))
    table = Table(study.id, "", ["Rank", *body.stub], [*body.groups, ("", ["Score"])], rows)
    _mark_column(table.rows, len(table.columns) - 1, {})
    text = (f"{study.title}: the top {len(ranked)} of {len(by_label)} cells, ranked by their score, the mean "
            f"of {' and '.join(_dataset_name(d) for d in RANK_DATASETS)} R@1 (each a mean over seeds)")
    missing = {lab: _why_missing(by_label[lab]) for lab, row in zip(shown, body.rows)
               if any(e.missing for e in row.entries[len(body.stub):])}
    table.caption = _caption(study, text, missing)
    return table


# ---------------------------------------------------------------------------------------------
# Public API


def study_tables(study: Study, cells: Sequence[CellResult]) -> list[Table]:
    """The study's results table, laid out like the paper's (see the module docstring)."""
    by_label = _group(study, cells)
    if study.kind == "per_epoch":
        return [_per_epoch_table(study, by_label)]
    if study.kind == "top_k":
        return [_top_k_table(study, by_label)]
    if study.kind == "final":
        return [_final_table(study, by_label)]
    raise ValueError(f"study {study.id}: unknown kind {study.kind!r} (valid: final, per_epoch, top_k)")


def published_vs_reproduced(study: Study, cells: Sequence[CellResult]) -> Table:
    """Paper vs ours per cell with published numbers, dataset and metric; Δ = ours − paper.

    per_epoch studies compare the last epoch on SF-XS val (the paper's last and ours, named in the
    row when they differ) and the test column. No rows when the paper printed nothing.
    """
    by_label = _group(study, cells)
    parts = _part_headers(study)
    groups = [(f"R@{n}", ["paper", "ours", "Δ"]) for n in METRICS]
    rows: list[Row] = []
    missing: dict[str, str] = {}
    for label, results in by_label.items():
        pub = study.published.get(label)
        if not pub:
            continue
        for k, comp in enumerate(_comparisons(pub, results)):
            entries = [Entry(text=p if k == 0 else "") for p in _label_parts(study, label)] + [Entry(text=comp.what)]
            for n in METRICS:
                p = comp.paper.get(f"R@{n}")
                mine = _value_entry(comp.ours[n], len(study.seeds), comp.hits[n])
                if mine.missing:
                    missing.setdefault(label, _why_missing(results))
                entries += [Entry(value=float(p)) if p is not None else Entry(missing=True), mine,
                            Entry(value=mine.value - float(p), signed=True)
                            if p is not None and mine.value is not None else Entry(missing=True)]
            rows.append(Row(entries, key=f"{label} | {comp.what}", rule_above=(k == 0)))
    text = f"Published vs reproduced: {study.title}. Δ = ours − paper, in points"
    caption = _caption(study, text, missing, method=METHOD_CI)     # nothing is bolded here
    return Table(f"{study.id}_published", caption, [*parts, "Dataset"], groups, rows)


@dataclass
class _Comparison:
    """One published-vs-reproduced row of a cell: what is compared, the paper's metrics, ours."""

    what: str
    paper: Mapping[str, float]
    ours: dict[int, list[float]]              # N -> our values over seeds
    hits: dict[int, np.ndarray | None]        # N -> per-query hits (None: no interval)


def _comparisons(pub: Mapping[str, Any], results: Sequence[CellResult]) -> list[_Comparison]:
    """The rows compared for one cell: the last epoch (per_epoch studies), then each printed dataset."""
    done = _finished(results)
    out = []
    per_epoch = {int(e): m for e, m in (pub.get("per_epoch") or {}).items()}
    if per_epoch:
        last_paper = max(per_epoch)
        ran = [e for r in done for e in [max((int(h["epoch"]) for h in r.history or [] if "epoch" in h),
                                             default=None)] if e is not None]
        last_ours = max(ran, default=None)
        # A capped (demo) run is compared at its own last epoch, and the row says so.
        what = (f"SF-XS val, epoch {last_paper:02d}" if last_ours in (None, last_paper)
                else f"SF-XS val, last epoch (paper {last_paper:02d}, ours {last_ours:02d})")
        epoch = last_paper if last_ours is None else last_ours
        ours = {n: [v for r in done if (v := _history_value(r, epoch, n)) is not None] for n in METRICS}
        out.append(_Comparison(what, per_epoch[last_paper], ours, {n: None for n in METRICS}))
    for d in DATASET_NAMES:
        if d in pub:
            ours = {n: [v for r in done if (v := _metric((r.final or {}).get(d), n)) is not None] for n in METRICS}
            hits = {n: _hits(results, d, n) if ours[n] else None for n in METRICS}
            out.append(_Comparison(_dataset_name(d), pub[d], ours, hits))
    return out


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
    head = f"### {study.id}: {study.title} (seed {study.paper}, {study.reproduces})\n"
    return "\n".join([head, *(t.markdown() for t in _all_tables(study, cells))])


def _all_tables(study: Study, cells: Sequence[CellResult]) -> list[Table]:
    tables = study_tables(study, cells)
    if study.published:
        tables.append(published_vs_reproduced(study, cells))
    return tables
