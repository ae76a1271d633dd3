"""The cost table of a study with `cost: true`: per cell its Recall@1 and what it costs
(descriptor size, parameters, extraction time, peak memory, training speed), as the runs recorded
them (`pipeline.training.cost`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from pipeline.reporting.tables.cells import (caption, finished, group_by_label, label_parts, mean_hits, part_headers,
                                             value_entry, why_missing)
from pipeline.reporting.tables.render import Entry, Row, Table

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult
    from pipeline.studies.study import Study

# (cost key, column header, scale): values are divided by scale and printed with 2 decimals.
COST_COLUMNS: Final = (("descriptor_dim", "dim", 1.0), ("params_total", "params (M)", 1e6),
                       ("params_trainable", "trained (M)", 1e6), ("extraction_ms_per_image", "ms/img", 1.0),
                       ("peak_memory_mb", "peak MB", 1.0), ("train_images_per_second", "train img/s", 1.0))
RECALL_SPLIT: Final = "sf_xs_test"


def _cost_entry(results: Sequence[CellResult], key: str, scale: float) -> Entry:
    values = [r.cost[key] / scale for r in finished(results) if key in r.cost]
    if not values:
        return Entry(missing=True)
    mean = sum(values) / len(values)
    return Entry(text=f"{mean:,.0f}" if mean >= 100 or key == "descriptor_dim" else f"{mean:.2f}")


def cost_table(study: Study, cells: Sequence[CellResult]) -> Table:
    """Rows = the study's cells; SF-XS test Recall@1 (mean, CI), then the cost columns."""
    by_label = group_by_label(study, cells)
    rows = []
    for label, results in by_label.items():
        recall = [r.final[RECALL_SPLIT][1] for r in finished(results) if 1 in r.final.get(RECALL_SPLIT, {})]
        entries = [Entry(text=part) for part in label_parts(study, label)]
        entries.append(value_entry(recall, len(study.seeds), mean_hits(results, RECALL_SPLIT, 1)))
        entries += [_cost_entry(results, key, scale) for key, _, scale in COST_COLUMNS]
        rows.append(Row(entries, key=label))
    missing = {label: why_missing(results) for label, results in by_label.items()
               if not any(r.cost for r in finished(results))}
    text = (f"{study.title}: SF-XS test Recall@1 (%) and cost: descriptor dimension, parameters (total, "
            f"trained), descriptor extraction ms per image at the evaluation size, peak memory during "
            f"training (CUDA allocations, or the process's resident set on a CPU), training images/s")
    return Table(name=f"{study.id}_cost", caption=caption(study, text, missing, relation="the runs of"),
                 stub=part_headers(study), groups=[("SF-XS test", ["R@1"]), ("cost", [h for _, h, _ in COST_COLUMNS])],
                 rows=rows)
