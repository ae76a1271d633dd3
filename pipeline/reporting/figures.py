"""Figures of `vpr report`: Recall@N per epoch, LR schedules, qualitative retrievals, training places.

Every figure is written as PNG (150 dpi) and PDF next to each other and every public function
returns the files it wrote. A figure without data writes nothing and returns `[]`; cells that are
missing, failed or lack the data a figure needs are skipped and listed in a note on the figure.

Which seed figure each function reproduces:

    recall_curves            seed 000 Figs. 2-4 (R@N per epoch per loss/optimizer/pooling),
                             seed 003 Fig. 3 (R@1 per epoch of the Table 4 schedulers)
    lr_schedules             seed 003 Fig. 1 (LR per epoch of each scheduler)
    qualitative_retrievals   seed 003 Fig. 4, seed 004 Fig. 4 (top-k of hard queries per method)
    training_places_sample   seed 004 Fig. 2 (a place seen at different times)

Figures are built on `matplotlib.figure.Figure` objects rendered by Agg (PNG) and the PDF backend,
never through pyplot: no global figure registry to leak into, and importing this module does not
change the backend of an interactive session. PDFs carry no creation date so that reruns with the
same inputs give byte-identical files (DVC then sees no change).

Colours: within one figure set, a cell's colour is chosen from its label by `label_styles`, so a
variant (e.g. "MultiStepLR") has the same colour in the R@N curves and in the LR schedule plot.
"""

from __future__ import annotations

import functools
import json
import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # only for annotations: figures must not need MLflow to import
    from pipeline.evaluation.results import EvaluationResult
    from pipeline.reporting.collect import CellResult
    from pipeline.sweeps.study import Study

log = logging.getLogger(__name__)

__all__ = [
    "DPI", "LRSchedule", "QUALITATIVE", "Style", "label_styles", "lr_schedule", "lr_schedules",
    "qualitative_retrievals", "recall_curves", "select_hard_queries", "training_places_sample",
    "write_figures",
]

DPI = 150
# Report dataset name -> how figures call it.
DATASET_TITLES = {"sf_xs_val": "SF-XS val", "sf_xs_test": "SF-XS test", "tokyo_xs": "Tokyo-XS"}
# Report dataset name -> key of the prepare stage's roots (data/prepared/datasets.json).
ROOT_KEYS = {"sf_xs_val": "val", "sf_xs_test": "sf_xs_test", "tokyo_xs": "tokyo_xs"}
# Qualitative retrievals prefer Tokyo-XS: its queries include night views (as in the real set).
QUALITATIVE_DATASETS = ("tokyo_xs", "sf_xs_test", "sf_xs_val")
# Studies whose cells `write_figures` draws as qualitative retrievals: id -> labels (None = all).
# Seed 003 Fig. 4 shows the Table 2 poolings; seed 004 Fig. 4 the Table VII CosPlace models (its
# extra ConvAP and GeM rows live in other studies: the report passes those cells explicitly).
QUALITATIVE: dict[str, list[str] | None] = {"s003_table2_poolings": None, "s004_table7_top3": None}
# Steps per epoch assumed by `lr_schedule` when neither the caller, the config nor the data say.
DEFAULT_STEPS_PER_EPOCH = 100
# The LR plot uses a log y-axis when the largest LR exceeds the smallest positive one this many times.
LOG_RANGE = 100.0
THUMBNAIL_PX = 256  # longest side of images embedded in figures (keeps PDFs small)

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
_LINESTYLES = ("-", "--", ":", "-.")
_NOTE_STYLE = {"fontsize": 7.5, "color": "0.35"}


# ---------------------------------------------------------------------------------------------
# Shared helpers


@dataclass(frozen=True)
class Style:
    """How one cell is drawn: colour and marker from its main variant, line style from the rest."""

    color: Any  # a matplotlib colour
    linestyle: str
    marker: str


def _style_keys(labels: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
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
    e.g. the four schedulers of seed 003 Table 4 get four colours and GeM/MixVPR two line styles.
    Labels without parts get one colour each. Keys are coloured in order of first appearance.
    """
    from matplotlib import colormaps

    labels = list(dict.fromkeys(labels))
    color_key, style_key = _style_keys(labels)
    colors = list(dict.fromkeys(color_key.values()))
    styles = list(dict.fromkeys(style_key.values()))
    # tab10 ("C0".."C9", the default cycle) while it suffices; tab20 beyond that.
    palette = [f"C{i}" for i in range(10)] if len(colors) <= 10 else list(colormaps["tab20"].colors)
    out = {}
    for label in labels:
        i = colors.index(color_key[label])
        out[label] = Style(palette[i % len(palette)],
                           _LINESTYLES[styles.index(style_key[label]) % len(_LINESTYLES)],
                           _MARKERS[i % len(_MARKERS)])
    return out


def _save(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf (tight bounding box, so notes and legends are kept)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(pdf, dpi=DPI, bbox_inches="tight", metadata={"CreationDate": None})
    return [png, pdf]


def _cell_name(cell: CellResult) -> str:
    return f"{cell.label} (seed {cell.seed})"


def _add_note(fig: Figure, lines: Sequence[str], y: float = -0.01) -> None:
    """Small grey text under the figure (skipped cells, assumptions); wrapped to the width."""
    if not lines:
        return
    width = max(60, int(fig.get_figwidth() * 14))
    text = "\n".join(textwrap.fill(line, width) for line in lines)
    fig.text(0.01, y, text, ha="left", va="top", **_NOTE_STYLE)


def _skipped(cells: Sequence[CellResult], reason: Mapping[int, str]) -> list[str]:
    """'Not shown: a (seed 0): failed; ...' from the reasons keyed by id(cell)."""
    items = [f"{_cell_name(c)}: {reason[id(c)]}" for c in cells if id(c) in reason]
    return [f"Not shown: {'; '.join(items)}."] if items else []


def _why_unusable(cell: CellResult) -> str | None:
    """Why a cell has no results (None when it finished)."""
    return None if cell.status == "finished" else (cell.status or "unknown status")


# ---------------------------------------------------------------------------------------------
# 1. Recall@N per epoch


def recall_curves(study: Study, cells: Sequence[CellResult], out_dir: str | Path, *,
                  ns: Sequence[int] = (1, 5), show_published: bool = True,
                  name: str | None = None) -> list[Path]:
    """SF-XS val Recall@N after each epoch, one line per cell label (one panel per N).

    Seeds of one label are averaged; with several seeds a band shows ± one (sample) standard
    deviation. With `show_published`, the paper's per-epoch numbers (study kind `per_epoch`) are
    drawn as hollow markers on a dotted line of the same colour. Writes `<study>_recall_curves`.
    """
    reasons: dict[int, str] = {}
    series: dict[str, list[dict[int, dict[int, float]]]] = {}  # label -> per seed: {N: {epoch: R}}
    for cell in cells:
        why = _why_unusable(cell)
        if why is None and not any(f"val_recall@{n}" in h for h in cell.history for n in ns):
            why = "no per-epoch history"
        if why is not None:
            reasons[id(cell)] = why
            continue
        per_n = {n: {int(h["epoch"]): float(h[f"val_recall@{n}"]) for h in cell.history
                     if f"val_recall@{n}" in h and "epoch" in h} for n in ns}
        series.setdefault(cell.label, []).append(per_n)
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
        ax.set_title(f"Recall@{n}")
        ax.set_xlabel("epoch (0 = first)")
        ax.set_ylabel(f"SF-XS val Recall@{n} (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, texts = axes[0].get_legend_handles_labels()
    if drew_paper:
        handles.append(Line2D([], [], color="0.3", ls=":", marker="o", mfc="none"))
        texts.append("paper (printed values)")
    fig.legend(handles, texts, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="cell", title_fontsize=8, frameon=False)
    fig.suptitle(f"{study.title}\nSF-XS val Recall@N per epoch (seed {study.paper} {study.reproduces})",
                 fontsize=10)
    fig.tight_layout()
    notes = _skipped(cells, reasons)
    if drew_band:
        notes.insert(0, "Bands: mean ± 1 standard deviation over seeds.")
    _add_note(fig, notes)
    return _save(fig, Path(out_dir) / (name or f"{study.id}_recall_curves"))


# ---------------------------------------------------------------------------------------------
# 2. LR schedules


@dataclass
class LRSchedule:
    """The LR of every optimizer step of one run config, as the trainer's SchedulerDriver sets it.

    `epoch[k] = k / steps_per_epoch` is where step k starts (fractional epochs) and `lr[k]` is the
    LR step k uses. `steps_source` says where steps_per_epoch came from.
    """

    epoch: np.ndarray
    lr: np.ndarray
    steps_per_epoch: int
    epochs: int
    steps_source: str
    description: str

    def at(self, epoch: int, batch: int = 0) -> float:
        """LR of batch `batch` of epoch `epoch` (both from 0)."""
        return float(self.lr[epoch * self.steps_per_epoch + batch])


@functools.lru_cache(maxsize=32)
def _places(root: str, images_per_place: int, min_images: int, cities: tuple[str, ...] | None) -> int:
    """Number of training places the trainer would sample from (cached: indexing reads a folder)."""
    from pipeline.data.datasets import TrainPlacesDataset

    return len(TrainPlacesDataset(root, images_per_place, min_images, cities, (1, 1)))


def _steps_per_epoch(cfg: Any) -> tuple[int, str]:
    """Optimizer steps per epoch of a run config, as the trainer's PlaceBatchSampler counts them."""
    if cfg.training.batches_per_epoch:
        return int(cfg.training.batches_per_epoch), "training.batches_per_epoch"
    root = Path(cfg.data.train_root)
    if root.is_dir():
        try:
            places = _places(str(root), cfg.training.images_per_place, cfg.data.min_images_per_place,
                             tuple(cfg.data.cities) if cfg.data.cities else None)
            return max(1, places // cfg.training.places_per_batch), f"{places} places in {root}"
        except (OSError, ValueError) as err:  # unreadable layout: fall back, and say so on the figure
            log.warning("cannot count training places under %s: %s", root, err)
    return DEFAULT_STEPS_PER_EPOCH, "assumed"


def _describe_scheduler(cfg: Any, epochs: int) -> str:
    """Readable one-line description of a run config's scheduler (and base LR)."""
    s = cfg.scheduler
    if s.name == "multistep":
        text = f"multistep at epochs {list(s.milestones)}, ×{s.gamma:g}"
    elif s.name == "plateau":
        text = f"plateau on {s.monitor}, ×{s.factor:g} after {s.patience} bad epochs"
    elif s.name == "cosine":
        text = f"cosine, T_max {s.T_max or epochs} epochs"
    elif s.name == "cyclic":
        half = (f"{s.step_size_up_epochs:g} epochs" if s.step_size_up_epochs is not None
                else f"{s.step_size_up} steps")
        base = f"{s.base_lr:g}" if s.base_lr is not None else f"{cfg.optimizer.lr:g}"
        text = f"cyclic {s.mode}, {base}–{s.max_lr:g}, half-cycle {half}"
    else:
        text = "constant"
    if s.warmup_steps:
        text += f", warmup {s.warmup_steps} steps"
    return f"{text} ({cfg.optimizer.name} lr {cfg.optimizer.lr:g})"


def lr_schedule(config: Mapping[str, Any], steps_per_epoch: int | None = None,
                metrics: Sequence[Mapping[str, float]] | None = None) -> LRSchedule:
    """Compute the LR of every optimizer step of a run config by running its real scheduler.

    Builds `config`'s optimizer over one dummy parameter and its scheduler with
    `build_scheduler`, then steps it like the trainer: `step_batch()` after each batch and
    `step_epoch(...)` after each epoch. `metrics[e]` (e.g. a run's history) feeds epoch e's
    `step_epoch`; without it a flat training loss of 1.0 and val R@1 of 50 % are used, so
    ReduceLROnPlateau shows its earliest possible reductions. `steps_per_epoch` defaults to the
    config's `training.batches_per_epoch`, else the places of its training root, else 100.
    """
    import torch

    from pipeline.config import config_from_dict
    from pipeline.components.optim import build_optimizer, build_scheduler

    cfg = config_from_dict(dict(config))
    if steps_per_epoch is not None:
        spe, source = int(steps_per_epoch), "given"
    else:
        spe, source = _steps_per_epoch(cfg)
    epochs = cfg.training.epochs
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(cfg.optimizer, [param])
    driver = build_scheduler(cfg.scheduler, optimizer, spe, epochs)
    lrs = np.empty(epochs * spe)
    for epoch in range(epochs):
        for batch in range(spe):
            lrs[epoch * spe + batch] = driver.current_lr()
            optimizer.step()  # a no-op (no gradient), in the trainer's order: torch warns otherwise
            driver.step_batch()
        given = metrics[epoch] if metrics is not None and epoch < len(metrics) else {}
        driver.step_epoch({"train_loss": float(given.get("train_loss", 1.0)),
                           "val_recall_at_1": float(given.get("val_recall_at_1", given.get("val_recall@1", 50.0)))})
    return LRSchedule(np.arange(epochs * spe) / spe, lrs, spe, epochs, source,
                      _describe_scheduler(cfg, epochs))


def _schedule_key(config: Mapping[str, Any]) -> str:
    """What makes two configs' LR trajectories equal: scheduler, optimizer name/lr, epochs, batches."""
    keep = {"scheduler": config.get("scheduler"),
            "optimizer": {k: (config.get("optimizer") or {}).get(k) for k in ("name", "lr")},
            "epochs": (config.get("training") or {}).get("epochs"),
            "batches": (config.get("training") or {}).get("batches_per_epoch")}
    return json.dumps(keep, sort_keys=True, default=str)


def lr_schedules(cells: Sequence[CellResult], out_dir: str | Path, steps_per_epoch: int | None = None,
                 *, name: str = "lr_schedules") -> list[Path]:
    """The LR over the epochs of each distinct scheduler among `cells` (seed 003 Fig. 1).

    One line per distinct schedule (cells sharing scheduler, base LR and length share a line),
    computed with `lr_schedule`; the LR each run recorded at the end of each epoch (history
    `lr`) is overlaid as hollow markers. Log y-axis when the LRs span more than two decades.
    """
    reasons: dict[int, str] = {}
    groups: dict[str, list[CellResult]] = {}
    for cell in cells:
        if cell.config is None:
            reasons[id(cell)] = f"{cell.status or 'unknown status'}, no config"
            continue
        groups.setdefault(_schedule_key(cell.config), []).append(cell)
    if not groups:
        return []

    all_labels = list(dict.fromkeys(c.label for g in groups.values() for c in g))
    styles = label_styles(all_labels)
    color_keys, _ = _style_keys(all_labels)
    color_of = {key: styles[g[0].label] for key, g in groups.items()}
    shared = {key: len({styles[c.label].color for c in g}) == 1 for key, g in groups.items()}
    if len({s.color for s in color_of.values()}) < len(groups) or not all(shared.values()):
        # Cells' colours do not tell the schedules apart: colour the schedules themselves.
        color_of = {key: Style(f"C{i % 10}", "-", _MARKERS[i % len(_MARKERS)])
                    for i, key in enumerate(groups)}
        variant_names = {key: None for key in groups}
    else:
        variant_names = {key: color_keys[g[0].label] for key, g in groups.items()}

    fig = Figure(figsize=(9.5, 4.6))
    ax = fig.subplots()
    notes: list[str] = []
    positive: list[float] = []
    sources = set()
    zero = False
    for i, (key, group) in enumerate(groups.items()):
        sched = lr_schedule(group[0].config, steps_per_epoch)
        zero |= bool(np.any(sched.lr <= 0))
        sources.add((sched.steps_per_epoch, sched.steps_source))
        style = color_of[key]
        text = sched.description if not variant_names[key] else f"{variant_names[key]}: {sched.description}"
        # Close the last step at the end of training so the final epoch is drawn in full.
        x = np.append(sched.epoch, sched.epochs)
        y = np.append(sched.lr, sched.lr[-1])
        # Earlier lines wider: schedules that coincide for a while (e.g. during warmup) stay visible
        # as nested bands instead of the last one hiding the others.
        width = 1.4 + 2.0 * (len(groups) - 1 - i) / max(1, len(groups) - 1)
        ax.plot(x, y, drawstyle="steps-post", color=style.color, lw=width, label=textwrap.fill(text, 58),
                zorder=2 + i)
        positive += [v for v in sched.lr if v > 0]
        for cell in group:
            recorded = [(int(h["epoch"]) + 1, float(h["lr"])) for h in cell.history
                        if "lr" in h and "epoch" in h]
            if recorded:
                ax.plot(*zip(*recorded), ls="none", marker=style.marker, mfc="none", ms=6,
                        mew=1.2, color=style.color, zorder=3 + len(groups))
                positive += [v for _, v in recorded if v > 0]
        if any(c.config["scheduler"].get("name") == "plateau" for c in group):
            notes.append("ReduceLROnPlateau line: a flat training loss (its earliest reductions); "
                         "markers show what each run recorded.")
    log_y = bool(positive) and max(positive) / min(positive) > LOG_RANGE
    if log_y:
        ax.set_yscale("log", nonpositive="clip")
        ax.set_ylim(bottom=min(positive) / 2)
        if zero:
            notes.append("LR 0 is drawn at the bottom edge (log scale).")
    if any(c.history for g in groups.values() for c in g):
        ax.plot([], [], ls="none", marker="o", mfc="none", color="0.3",
                label="LR recorded by the run at the end of each epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate" + (" (log scale)" if log_y else ""))
    ax.set_title("Learning-rate schedules (computed from the run configs)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    spe_text = ", ".join(f"{spe} ({src})" for spe, src in sorted(sources))
    notes.insert(0, f"Optimizer steps per epoch: {spe_text}.")
    _add_note(fig, notes + _skipped(cells, reasons))
    return _save(fig, Path(out_dir) / name)


# ---------------------------------------------------------------------------------------------
# 3. Qualitative retrievals


def select_hard_queries(results: Sequence[EvaluationResult], n_queries: int,
                        top_k: int | None = None) -> list[int]:
    """Indices (into `results[0]`'s queries) of the hardest queries for these methods.

    Ordered by: missed at R@1 by the most methods; then, among equally missed queries, those
    where some method still retrieves a correct image within the shown `top_k` (None: every
    saved prediction), so the figure shows what the right place looks like; then the latest
    first correct match averaged over methods (none saved counts as saved top-k + 1); then query
    order. Queries without any positive cannot be answered and are left out, as are queries
    absent from some result.
    """
    if not results:
        return []
    first = results[0]
    index_of = [{p: i for i, p in enumerate(r.query_paths)} for r in results]
    scored = []
    for q, path in enumerate(first.query_paths):
        rows = [ix.get(path) for ix in index_of]
        if any(r is None for r in rows) or len(first.positives[q]) == 0:
            continue
        ranks = []
        for result, row in zip(results, rows):
            found = np.flatnonzero(np.isin(result.predictions[row], result.positives[row]))
            ranks.append(int(found[0]) + 1 if len(found) else result.predictions.shape[1] + 1)
        misses = sum(rank != 1 for rank in ranks)
        shown = min(ranks) <= (top_k or first.predictions.shape[1])
        scored.append((-misses, not shown, -float(np.mean(ranks)), q))
    return [item[-1] for item in sorted(scored)[:n_queries]]


def _nearest_positive(result: EvaluationResult, q: int) -> int:
    """Database index of query q's positive nearest to it (UTM from the file names)."""
    from pipeline.data.formats import FormatError
    from pipeline.data.index import utm_of

    positives = result.positives[q]
    try:
        query = utm_of([result.query_paths[q]])[0]
        database = utm_of([result.database_paths[i] for i in positives])
    except FormatError:  # names without coordinates: any positive will do
        return int(positives[0])
    return int(positives[np.argmin(np.linalg.norm(database - query, axis=1))])


def _thumbnail(path: Path) -> np.ndarray | None:
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


def _show(ax: Any, image: np.ndarray | None, border: str | None = None) -> None:
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


def _split_root(dataset_root: str | Path | Mapping[str, str | Path], dataset: str) -> Path | None:
    """The split folder of `dataset` from a path or a roots mapping (report or prepare keys)."""
    if isinstance(dataset_root, Mapping):
        root = dataset_root.get(dataset) or dataset_root.get(ROOT_KEYS.get(dataset, dataset))
        return None if root is None else Path(root)
    return Path(dataset_root)


def qualitative_retrievals(cells: Sequence[CellResult], dataset_root: str | Path | Mapping[str, str | Path],
                           out_dir: str | Path, n_queries: int = 4, top_k: int = 5, *,
                           dataset: str | None = None, name: str = "qualitative_retrievals") -> list[Path]:
    """A grid of the hardest queries and each method's top-k retrievals (seeds 003/004 Fig. 4).

    Each cell is a method (the first finished seed of a label is used). For each chosen query a
    block of rows, one per method: the query image (left, spanning the block), the method name,
    then its top-k database images framed green (a positive: within the positive radius) or red,
    with ✓/✗ for readers who cannot tell the colours apart. `dataset` defaults to the first of
    Tokyo-XS, SF-XS test, SF-XS val that every method has predictions for. `dataset_root` is the
    split folder holding `database/` and `queries/`, or a mapping from dataset names (report or
    prepare-stage keys) to split folders.
    """
    from pipeline.evaluation.results import EvaluationResult

    reasons: dict[int, str] = {}
    methods: dict[str, CellResult] = {}
    for cell in sorted(cells, key=lambda c: c.seed):
        why = _why_unusable(cell)
        if why is None and not cell.predictions:
            why = "no saved predictions"
        if why is not None:
            reasons[id(cell)] = why
        elif cell.label not in methods:
            methods[cell.label] = cell
    if not methods:
        return []
    available = set.intersection(*(set(c.predictions) for c in methods.values()))
    if dataset is None:
        dataset = next((d for d in QUALITATIVE_DATASETS if d in available), min(available, default=None))
    if dataset is None or dataset not in available:
        log.info("qualitative figure: no dataset with predictions of every method (%s)", sorted(methods))
        return []
    root = _split_root(dataset_root, dataset)
    if root is None:
        log.info("qualitative figure: no root for %s", dataset)
        return []
    results = {label: EvaluationResult.load(cell.predictions[dataset]) for label, cell in methods.items()}

    labels = list(results)
    first = results[labels[0]]
    k = min(top_k, *(r.predictions.shape[1] for r in results.values()))
    chosen = select_hard_queries(list(results.values()), n_queries, k)
    if not chosen:
        return []
    rows = len(labels)
    gap = 0.7  # inches between query blocks, so each block reads as one unit
    width, height = 1.3 * (k + 2) + 1.3, 1.3 * rows * len(chosen) + gap * (len(chosen) - 1) + 1.7
    fig = Figure(figsize=(width, height))
    # Margins in inches: room for the title above and the note below, not a fraction of the height.
    outer = fig.add_gridspec(len(chosen), 1, hspace=gap / (1.3 * rows), left=0.02, right=0.98,
                             top=1 - 0.75 / height, bottom=0.8 / height)
    for block, q in enumerate(chosen):
        inner = outer[block].subgridspec(rows, k + 3, width_ratios=[1.1, 1.1, 0.8] + [1] * k,
                                         wspace=0.08, hspace=0.22)
        path = first.query_paths[q]
        ax_q = fig.add_subplot(inner[:, 0])
        _show(ax_q, _thumbnail(root / path))
        # One true match (the positive nearest to the query), for comparison.
        ax_gt = fig.add_subplot(inner[:, 1])
        _show(ax_gt, _thumbnail(root / first.database_paths[_nearest_positive(first, q)]), "tab:green")
        misses = 0
        for r, label in enumerate(labels):
            result = results[label]
            row = result.query_paths.index(path)
            positives = set(result.positives[row].tolist())
            misses += int(result.predictions[row, 0]) not in positives
            ax_name = fig.add_subplot(inner[r, 2])
            ax_name.axis("off")
            ax_name.text(0.95, 0.5, textwrap.fill(label, 12), ha="right", va="center", fontsize=8.5,
                         transform=ax_name.transAxes)
            for j in range(k):
                db = int(result.predictions[row, j])
                hit = db in positives
                ax = fig.add_subplot(inner[r, 3 + j])
                _show(ax, _thumbnail(root / result.database_paths[db]), "tab:green" if hit else "tab:red")
                if block == 0 and r == 0:
                    ax.set_title(f"top-{j + 1}", fontsize=8.5)
                ax.set_xlabel("✓ correct" if hit else "✗ wrong", fontsize=7, labelpad=1.5,
                              color="tab:green" if hit else "tab:red")
        ax_q.set_title("query" if block == 0 else "", fontsize=8.5)
        ax_gt.set_title("a true match" if block == 0 else "", fontsize=8.5)
        ax_q.set_xlabel(f"query #{q}: R@1 missed\nby {misses} of {len(labels)} methods", fontsize=7.5)
        ax_gt.set_xlabel("database, within\nthe positive radius", fontsize=7.5)
    title = DATASET_TITLES.get(dataset, dataset)
    fig.suptitle(f"Hardest {title} queries: top-{k} retrievals per method\n"
                 f"(green ✓: the query's place, within the positive radius; red ✗: another place)",
                 fontsize=10, y=1 - 0.1 / height, va="top")
    seeds = sorted({c.seed for c in methods.values()})
    notes = [f"One model per method (seed {', '.join(map(str, seeds))}). Queries ordered by how many "
             f"methods miss them at R@1; queries without any positive are never chosen."]
    _add_note(fig, notes + _skipped(cells, reasons), y=0.45 / height)
    return _save(fig, Path(out_dir) / name)


# ---------------------------------------------------------------------------------------------
# 4. Training places


def _date_text(path: str) -> str:
    """'2014-01' from a GSV image name's date field, '' when it has none."""
    from pipeline.data.formats import FormatError, parse_image_name

    try:
        date = parse_image_name(path).date
    except FormatError:
        return ""
    return f"{date[:4]}-{date[4:6]}" if len(date) >= 6 and date[:6].isdigit() else date


def training_places_sample(train_root: str | Path, out_dir: str | Path, n_places: int = 6, per_place: int = 4,
                           seed: int = 0, *, name: str = "training_places") -> list[Path]:
    """A grid of `n_places` training places (rows), each with `per_place` of its images (seed 004 Fig. 2).

    Places are drawn with a seeded RNG, spread over the cities in turn; a place's images are
    ordered by capture date, shown under each image, so a row reads as the place over time.
    Only places with at least `per_place` images are eligible (as in training).
    """
    from pipeline.data.datasets import TrainPlacesDataset
    from pipeline.data.index import DatasetLayoutError

    try:
        dataset = TrainPlacesDataset(train_root, per_place, per_place, image_size=(1, 1))
    except (DatasetLayoutError, ValueError, OSError) as err:
        log.info("training places figure: %s", err)
        return []
    rng = np.random.default_rng(seed)
    by_city: dict[str, list[int]] = {}
    for i, (city, _) in enumerate(dataset.place_keys):
        by_city.setdefault(city, []).append(i)
    queues = {city: list(rng.permutation(idx)) for city, idx in sorted(by_city.items())}
    cities = [sorted(queues)[i] for i in rng.permutation(len(queues))]
    picked: list[int] = []
    while len(picked) < n_places and any(queues.values()):
        for city in cities:  # round robin: one place per city before a second from any
            if queues[city] and len(picked) < n_places:
                picked.append(int(queues[city].pop(0)))
    height = 1.6 * len(picked) + 0.8
    fig = Figure(figsize=(1.6 * per_place + 1.4, height))
    grid = fig.add_gridspec(len(picked), per_place + 1, width_ratios=[0.8] + [1] * per_place,
                            wspace=0.05, hspace=0.25, top=1 - 0.7 / height, bottom=0.25 / height)
    for r, place in enumerate(picked):
        city, place_id = dataset.place_keys[place]
        paths = dataset.place_images[place]
        chosen = sorted((paths[i] for i in rng.choice(len(paths), per_place, replace=False)),
                        key=lambda p: (_date_text(p), p))
        ax_name = fig.add_subplot(grid[r, 0])
        ax_name.axis("off")
        ax_name.text(0.95, 0.5, f"{city}\nplace {place_id}\n({len(paths)} images)", ha="right",
                     va="center", fontsize=8, transform=ax_name.transAxes)
        for j, path in enumerate(chosen):
            ax = fig.add_subplot(grid[r, j + 1])
            _show(ax, _thumbnail(Path(path)))
            ax.set_xlabel(_date_text(path) or Path(path).name[:18], fontsize=7, labelpad=1)
    fig.suptitle(f"Training places: {len(picked)} places of {len(dataset)} ({dataset.num_images} images), "
                 f"each row one place at different times\n(capture year-month under each image)", fontsize=10,
                 y=1 - 0.08 / height, va="top")
    return _save(fig, Path(out_dir) / name)


# ---------------------------------------------------------------------------------------------
# 5. Everything that applies to one study


def write_figures(study: Study, cells: Sequence[CellResult], out_dir: str | Path,
                  roots: Mapping[str, str | Path] | None = None) -> list[Path]:
    """The figures that apply to `study`: R@N curves when any cell has a per-epoch history (or
    the study is per_epoch), LR schedules when its cells differ in schedule, qualitative
    retrievals when the study is listed in `QUALITATIVE` and `roots` (prepare-stage keys) is given.
    """
    written: list[Path] = []
    if study.kind == "per_epoch" or any(c.history for c in cells):
        written += recall_curves(study, cells, out_dir)
    if _differ_in_scheduler(cells):
        written += lr_schedules(cells, out_dir, name=f"{study.id}_lr_schedules")
    if study.id in QUALITATIVE and roots:
        wanted = QUALITATIVE[study.id]
        chosen = [c for c in cells if wanted is None or c.label in wanted]
        written += qualitative_retrievals(chosen, roots, out_dir, name=f"{study.id}_qualitative")
    return written


def _differ_in_scheduler(cells: Sequence[CellResult]) -> bool:
    """Whether the cells' scheduler sections differ (not only their optimizer or length)."""
    return len({json.dumps(c.config.get("scheduler"), sort_keys=True, default=str)
                for c in cells if c.config is not None}) > 1
