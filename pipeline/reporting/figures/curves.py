"""Recall@N per epoch on the validation split, one line per cell (paper 000 Figs. 2-4, paper 003
Fig. 3), with the paper's printed per-epoch numbers as hollow markers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pipeline.data.catalog import VALIDATION, recall_metric
from pipeline.reporting.figures.common import add_note, label_styles, save_figure, skipped_note, why_unusable

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

log = logging.getLogger(__name__)


def _per_epoch_series(cells: Sequence[CellResult], ns: Sequence[int]
                      ) -> tuple[dict[str, list[dict[int, dict[int, float]]]], dict[int, str]]:
    """{label: per seed {N: {epoch: R@N}}} of the cells with a history, and why the others lack one."""
    key = {n: recall_metric(VALIDATION.key, n, per_epoch=True) for n in ns}  # history keys
    reasons: dict[int, str] = {}
    series: dict[str, list[dict[int, dict[int, float]]]] = {}  # label -> per seed: {N: {epoch: R}}
    for cell in cells:
        why = why_unusable(cell)
        if why is None and not any(key[n] in h for h in cell.history for n in ns):
            why = "no per-epoch history"
        if why is not None:
            reasons[id(cell)] = why
            continue
        per_n = {n: {int(h["epoch"]): float(h[key[n]]) for h in cell.history
                     if key[n] in h and "epoch" in h} for n in ns}
        series.setdefault(cell.label, []).append(per_n)
    return series, reasons


def _draw_panel(ax: Any, n: int, order: Sequence[str], series: Mapping[str, list[dict[int, dict[int, float]]]],
                styles: Mapping[str, Any], published: Mapping[str, Any]) -> tuple[bool, bool]:
    """Recall@n per epoch of each label (mean over seeds, a ±1 std band with several) and the
    paper's printed values; returns whether paper values and bands were drawn."""
    drew_paper = drew_band = False
    for label in order:
        style = styles[label]
        runs = series[label]
        epochs = sorted({e for run in runs for e in run[n]})
        if not epochs:
            continue
        values = np.array([[run[n].get(e, np.nan) for e in epochs] for run in runs])
        mean = np.nanmean(values, axis=0)
        seeds = len(runs)
        text = label if seeds == 1 else f"{label} (mean of {seeds} seeds)"
        ax.plot(epochs, mean, color=style.color, ls=style.linestyle, marker=style.marker,
                ms=4, lw=1.6, label=text)
        if seeds > 1:
            counts = np.sum(~np.isnan(values), axis=0)
            std = np.where(counts > 1, np.nanstd(values, axis=0, ddof=min(1, seeds - 1)), 0.0)
            ax.fill_between(epochs, mean - std, mean + std, color=style.color, alpha=0.18, lw=0)
            drew_band = True
        paper = published.get(label, {}).get("per_epoch") or {}
        points = sorted((int(e), m[f"R@{n}"]) for e, m in paper.items() if m.get(f"R@{n}") is not None)
        if points:
            ax.plot(*zip(*points), color=style.color, ls=":", lw=1.0, marker=style.marker,
                    mfc="none", ms=5)
            drew_paper = True
    return drew_paper, drew_band


def recall_curves(study: Study, cells: Sequence[CellResult], out_dir: str | Path, *,
                  ns: Sequence[int] = (1, 5), show_published: bool = True,
                  name: str | None = None) -> list[Path]:
    """Validation (SF-XS val) Recall@N after each epoch, one line per cell label (one panel per N).

    Seeds of one label are averaged; with several seeds a band shows ± one (sample) standard
    deviation. With `show_published`, the paper's per-epoch numbers (study kind `per_epoch`) are
    drawn as hollow markers on a dotted line of the same colour. Writes `<study>_recall_curves`.
    """
    series, reasons = _per_epoch_series(cells, ns)
    if not series:
        log.info("%s: no per-epoch history to plot", study.id)
        return []

    order = [label for label in study.labels if label in series] + [
        label for label in series if label not in study.labels]
    styles = label_styles(order)
    fig = Figure(figsize=(5.2 * len(ns) + 2.6, 4.2))
    axes = fig.subplots(1, len(ns), squeeze=False)[0]
    published = study.published if show_published else {}
    drew_paper = drew_band = False
    for ax, n in zip(axes, ns):
        paper, band = _draw_panel(ax, n, order, series, styles, published)
        drew_paper, drew_band = drew_paper or paper, drew_band or band
        ax.set_title(f"Recall@{n}")
        ax.set_xlabel("epoch (0 = first)")
        ax.set_ylabel(f"{VALIDATION.title} Recall@{n} (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, texts = axes[0].get_legend_handles_labels()
    if drew_paper:
        handles.append(Line2D([], [], color="0.3", ls=":", marker="o", mfc="none"))
        texts.append("paper (printed values)")
    fig.legend(handles, texts, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="cell", title_fontsize=8, frameon=False)
    fig.suptitle(f"{study.title}\n{VALIDATION.title} Recall@N per epoch ({study.origin})",
                 fontsize=10)
    fig.tight_layout()
    notes = skipped_note(cells, reasons)
    if drew_band:
        notes.insert(0, "Bands: mean ± 1 standard deviation over seeds.")
    add_note(fig, notes)
    return save_figure(fig, Path(out_dir) / (name or f"{study.id}_recall_curves"))

