"""What every figure shares: cell styles, saving (PNG + reproducible PDF), notes under a figure,
why a cell is not drawn, image thumbnails.

Figures are built on `matplotlib.figure.Figure` objects rendered by Agg (PNG) and the PDF backend,
never through pyplot: no global figure registry to leak into, and importing this package does not
change the backend of an interactive session. PDFs carry no creation date so that reruns with the
same inputs give byte-identical files (DVC then sees no change).

Colours: within one figure set, a cell's colour is chosen from its label by `label_styles`, so a
variant (e.g. "MultiStepLR") has the same colour in the R@N curves and in the LR schedule plot.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:  # only for annotations: figures must not need MLflow to import
    from pipeline.reporting.collect import CellResult

log = logging.getLogger(__name__)

DPI = 150
THUMBNAIL_PX = 256  # longest side of images embedded in figures (keeps PDFs small)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", ":", "-.")
NOTE_STYLE = {"fontsize": 7.5, "color": "0.35"}



@dataclass(frozen=True)
class Style:
    """How one cell is drawn: colour and marker from its main variant, line style from the rest."""

    color: Any  # a matplotlib colour
    linestyle: str
    marker: str


def style_keys(labels: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Per label: the key that picks its colour and the key that picks its line style."""
    parts = [label.split(" / ") for label in labels]
    color_key = {label: label for label in labels}
    style_key = {label: "" for label in labels}
    if labels and len({len(p) for p in parts}) == 1 and len(parts[0]) > 1:
        values = [list(dict.fromkeys(p[i] for p in parts)) for i in range(len(parts[0]))]
        varying = [i for i, v in enumerate(values) if len(v) > 1]
        if varying:
            main = max(varying, key=lambda i: (len(values[i]), i))
            rest = [i for i in varying if i != main]
            for label, p in zip(labels, parts):
                color_key[label] = p[main]
                style_key[label] = " / ".join(p[i] for i in rest)
    return color_key, style_key


def label_styles(labels: Sequence[str]) -> dict[str, Style]:
    """A consistent style per cell label.

    Grid x variant labels ("gem / MultiStepLR") are split on " / ": the part with the most
    distinct values picks colour and marker, the other varying parts pick the line style, so
    e.g. the four schedulers of paper 003 Table 4 get four colours and GeM/MixVPR two line styles.
    Labels without parts get one colour each. Keys are coloured in order of first appearance.
    """
    from matplotlib import colormaps

    labels = list(dict.fromkeys(labels))
    color_key, style_key = style_keys(labels)
    colors = list(dict.fromkeys(color_key.values()))
    styles = list(dict.fromkeys(style_key.values()))
    # tab10 ("C0".."C9", the default cycle) while it suffices; tab20 beyond that.
    palette = [f"C{i}" for i in range(10)] if len(colors) <= 10 else list(colormaps["tab20"].colors)
    out = {}
    for label in labels:
        i = colors.index(color_key[label])
        out[label] = Style(palette[i % len(palette)],
                           LINESTYLES[styles.index(style_key[label]) % len(LINESTYLES)],
                           MARKERS[i % len(MARKERS)])
    return out


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf (tight bounding box, so notes and legends are kept)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(pdf, dpi=DPI, bbox_inches="tight", metadata={"CreationDate": None})
    return [png, pdf]


def cell_name(cell: CellResult) -> str:
    """How notes name a cell: its label and seed."""
    return f"{cell.label} (seed {cell.seed})"


def add_note(fig: Figure, lines: Sequence[str], y: float = -0.01) -> None:
    """Small grey text under the figure (skipped cells, assumptions); wrapped to the width."""
    if not lines:
        return
    width = max(60, int(fig.get_figwidth() * 14))
    text = "\n".join(textwrap.fill(line, width) for line in lines)
    fig.text(0.01, y, text, ha="left", va="top", **NOTE_STYLE)


def skipped_note(cells: Sequence[CellResult], reason: Mapping[int, str]) -> list[str]:
    """'Not shown: a (seed 0): failed; ...' from the reasons keyed by id(cell)."""
    items = [f"{cell_name(c)}: {reason[id(c)]}" for c in cells if id(c) in reason]
    return [f"Not shown: {'; '.join(items)}."] if items else []


def why_unusable(cell: CellResult) -> str | None:
    """Why a cell has no results (None when it finished)."""
    return None if cell.status == "finished" else (cell.status or "unknown status")



def thumbnail(path: Path) -> np.ndarray | None:
    """RGB array of an image shrunk to THUMBNAIL_PX, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            return np.asarray(img)
    except OSError as err:
        log.warning("qualitative figure: cannot read %s (%s)", path, err)
        return None


def show_image(ax: Any, image: np.ndarray | None, border: str | None = None) -> None:
    """An image without ticks, framed by a thick border of colour `border`."""
    if image is None:
        ax.set_facecolor("0.85")
        ax.text(0.5, 0.5, "image\nmissing", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(border or "0.6")
        spine.set_linewidth(3.5 if border else 0.8)
