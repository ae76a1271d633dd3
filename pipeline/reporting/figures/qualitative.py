"""Qualitative retrievals: the hardest queries and each method's top-k (paper 003 Fig. 4, paper 004
Fig. 4). Which cells a study shows is declared in its study file (`qualitative:`)."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from pipeline.data.catalog import SPLITS
from pipeline.reporting.figures.common import (add_note, save_figure, show_image, skipped_note, thumbnail,
                                               why_unusable)

if TYPE_CHECKING:
    from pipeline.evaluation.results import EvaluationResult
    from pipeline.reporting.collect import CellResult

log = logging.getLogger(__name__)

# Preferred split, in order: Tokyo-XS queries include night views (as in the real set).
QUALITATIVE_DATASETS = ("tokyo_xs", "sf_xs_test", "sf_xs_val")



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


def _split_root(dataset_root: str | Path | Mapping[str, str | Path], dataset: str) -> Path | None:
    """The split folder of `dataset` from a path or a roots mapping (report or prepare keys)."""
    if isinstance(dataset_root, Mapping):
        root = dataset_root.get(dataset) or dataset_root.get(SPLITS[dataset].root_key if dataset in SPLITS else dataset)
        return None if root is None else Path(root)
    return Path(dataset_root)


def methods_of(cells: Sequence[CellResult]) -> tuple[dict[str, CellResult], dict[int, str]]:
    """One cell per label (its first finished seed with predictions), and why the others are unused."""
    reasons: dict[int, str] = {}
    methods: dict[str, CellResult] = {}
    for cell in sorted(cells, key=lambda c: c.seed):
        why = why_unusable(cell)
        if why is None and not cell.predictions:
            why = "no saved predictions"
        if why is not None:
            reasons[id(cell)] = why
        elif cell.label not in methods:
            methods[cell.label] = cell
    return methods, reasons


def _draw_block(fig: Figure, slot: Any, block: int, q: int, results: Mapping[str, EvaluationResult],
                root: Path, k: int) -> None:
    """One query's block: the query, a true match, then per method its name and top-k retrievals."""
    labels = list(results)
    first = results[labels[0]]
    rows = len(labels)
    inner = slot.subgridspec(rows, k + 3, width_ratios=[1.1, 1.1, 0.8] + [1] * k, wspace=0.08, hspace=0.22)
    path = first.query_paths[q]
    ax_q = fig.add_subplot(inner[:, 0])
    show_image(ax_q, thumbnail(root / path))
    # One true match (the positive nearest to the query), for comparison.
    ax_gt = fig.add_subplot(inner[:, 1])
    show_image(ax_gt, thumbnail(root / first.database_paths[_nearest_positive(first, q)]), "tab:green")
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
            show_image(ax, thumbnail(root / result.database_paths[db]), "tab:green" if hit else "tab:red")
            if block == 0 and r == 0:
                ax.set_title(f"top-{j + 1}", fontsize=8.5)
            ax.set_xlabel("✓ correct" if hit else "✗ wrong", fontsize=7, labelpad=1.5,
                          color="tab:green" if hit else "tab:red")
    ax_q.set_title("query" if block == 0 else "", fontsize=8.5)
    ax_gt.set_title("a true match" if block == 0 else "", fontsize=8.5)
    ax_q.set_xlabel(f"query #{q}: R@1 missed\nby {misses} of {len(labels)} methods", fontsize=7.5)
    ax_gt.set_xlabel("database, within\nthe positive radius", fontsize=7.5)


def qualitative_retrievals(cells: Sequence[CellResult], dataset_root: str | Path | Mapping[str, str | Path],
                           out_dir: str | Path, n_queries: int = 4, top_k: int = 5, *,
                           dataset: str | None = None, name: str = "qualitative_retrievals") -> list[Path]:
    """A grid of the hardest queries and each method's top-k retrievals (papers 003/004 Fig. 4).

    Each cell is a method (the first finished seed of a label is used). For each chosen query a
    block of rows, one per method: the query image (left, spanning the block), the method name,
    then its top-k database images framed green (a positive: within the positive radius) or red,
    with ✓/✗ for readers who cannot tell the colours apart. `dataset` defaults to the first of
    Tokyo-XS, SF-XS test, SF-XS val that every method has predictions for. `dataset_root` is the
    split folder holding `database/` and `queries/`, or a mapping from dataset names (report or
    prepare-stage keys) to split folders.
    """
    from pipeline.evaluation.results import EvaluationResult

    methods, reasons = methods_of(cells)
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
        _draw_block(fig, outer[block], block, q, results, root, k)
    title = SPLITS[dataset].title if dataset in SPLITS else dataset
    fig.suptitle(f"Hardest {title} queries: top-{k} retrievals per method\n"
                 f"(green ✓: the query's place, within the positive radius; red ✗: another place)",
                 fontsize=10, y=1 - 0.1 / height, va="top")
    seeds = sorted({c.seed for c in methods.values()})
    notes = [f"One model per method (seed {', '.join(map(str, seeds))}). Queries ordered by how many "
             f"methods miss them at R@1; queries without any positive are never chosen."]
    add_note(fig, notes + skipped_note(cells, reasons), y=0.45 / height)
    return save_figure(fig, Path(out_dir) / name)
