"""Recall against cost (issue: what each method costs next to its recall): one point per cell,
Recall@1 against descriptor extraction time per image and against descriptor size, with the
Pareto front (no other cell is both cheaper and better) drawn and its cells marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from pipeline.data.catalog import SPLITS
from pipeline.reporting.figures.common import add_note, label_styles, save_figure, skipped_note

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult

COSTS = (("extraction_ms_per_image", "descriptor extraction (ms / image)"),
         ("descriptor_dim", "descriptor dimension"))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower cost x, higher recall y),
    ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def recall_of(cell: CellResult) -> tuple[str, float] | None:
    """(split title, Recall@1) the figure plots: SF-XS test when recorded, else the best validation."""
    for key in ("sf_xs_test", "sf_xs_val"):
        value = cell.final.get(key, {}).get(1)
        if value is not None:
            return SPLITS[key].title, value
    return None


def recall_vs_cost(cells: Sequence[CellResult], out_dir: str | Path, *, name: str) -> list[Path]:
    """The figure for the finished cells that recorded a cost; [] when none did."""
    reasons, usable = {}, []
    for c in cells:
        if c.status != "finished":
            reasons[id(c)] = c.status
        elif not c.cost or recall_of(c) is None:
            reasons[id(c)] = "no cost or recall recorded"
        else:
            usable.append(c)
    if not usable:
        return []
    styles = label_styles([c.label for c in usable])
    split = recall_of(usable[0])[0]
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, len(COSTS))
    for ax, (key, title) in zip(axes, COSTS):
        shown = [c for c in usable if c.cost.get(key)]
        points = [(c.cost[key], recall_of(c)[1]) for c in shown]
        front = pareto_front(points)
        for i, (c, (x, y)) in enumerate(zip(shown, points)):
            style = styles[c.label]
            # The label's secondary part (e.g. the backbone of "DINOv2-B / BoQ") is the fill: solid
            # for the first value, hollow for the others, as it is the line style elsewhere.
            hollow = style.linestyle != "-"
            if i in front:  # a black ring around the cells of the front
                ax.scatter([x], [y], marker="o", s=220, facecolors="none", edgecolors="black", linewidths=1, zorder=2)
            ax.scatter([x], [y], marker=style.marker, s=45, facecolors="none" if hollow else style.color,
                       edgecolors=style.color, linewidths=1.5 if hollow else 1, zorder=3, label=c.label)
        if len(front) > 1:
            ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="0.4", linestyle="--",
                    linewidth=1, zorder=2, label="Pareto front")
        xs = [x for x, _ in points]
        wide = min(xs) > 0 and max(xs) / min(xs) >= 10          # a log axis only across decades
        ax.set(xscale="log" if wide else "linear", xlabel=f"{title}{' (log)' if wide else ''}",
               ylabel=f"{split} Recall@1 (%)", title=f"Recall@1 vs {title}")
        if wide:
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))   # plain numbers, no 10^k labels
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), fontsize=8,
               bbox_to_anchor=(0.5, 1.12))
    add_note(fig, ["Ringed: on the Pareto front (no other cell is both cheaper and better). Extraction "
                   "time at the evaluation size on the machine that trained the run."]
             + skipped_note(cells, reasons))
    return save_figure(fig, Path(out_dir) / name)
