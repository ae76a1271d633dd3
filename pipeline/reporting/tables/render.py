"""The table model and its rendering: entries (a number with its statistics, text, or missing),
rows, tables, and their LaTeX (booktabs) and Markdown text. Knows nothing of studies or runs.

The LaTeX preamble needs `booktabs` and `graphicx` (`LATEX_PACKAGES`): a table wider than the
line is scaled down to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

LATEX_PACKAGES: Final = ("booktabs", "graphicx")   # graphicx: shrink a too-wide table to the line
MISSING_MD: Final = "—"
MISSING_TEX: Final = "--"


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


