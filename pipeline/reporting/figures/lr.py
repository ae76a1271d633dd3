"""Learning-rate schedules as the runs recorded them (paper 003 Fig. 1).

The trainer logs the LR of every optimizer step into its run folder (`pipeline.runs.lr_schedule`)
and the sweep logs that file as an MLflow artifact; this module plots it. Nothing is re-simulated: a run without the file is named in a "not recorded" note.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.runs.folder import LR_SCHEDULE
from pipeline.runs.lr_schedule import LRScheduleFileError, read_lr_rows
from pipeline.reporting.figures.common import (MARKERS, Style, add_note, label_styles, save_figure,
                                               skipped_note, style_keys)

if TYPE_CHECKING:
    from pipeline.reporting.collect import CellResult

log = logging.getLogger(__name__)

# The LR plot uses a log y-axis when the largest LR exceeds the smallest positive one this many times.
LOG_RANGE = 100.0


@dataclass(frozen=True)
class LRSchedule:
    """The LR of every optimizer step of one run, as recorded.

    `x[k]` is where step k starts in epochs (epoch + its index within the epoch / the epoch's
    step count), `lr[k]` the LR step k used, `epochs` the number of epochs recorded.
    """

    x: np.ndarray
    lr: np.ndarray
    epochs: int

    def key(self) -> str:
        """What makes two recorded trajectories the same line (values to 10 significant digits)."""
        return json.dumps([f"{v:.10g}" for v in self.lr] + [f"{v:.6f}" for v in self.x])


def read_lr_schedule(path: str | Path) -> LRSchedule:
    """A run's recorded learning-rate log (`pipeline.runs.lr_schedule`) as a plottable schedule;
    a wrong header or value, or no step at all, raises LRScheduleFileError naming the file."""
    records = read_lr_rows(path)
    if not records:
        raise LRScheduleFileError(f"{path}: no optimizer step recorded")
    epochs = np.array([e for _, e, _ in records])
    counts = {e: int(np.sum(epochs == e)) for e in set(epochs.tolist())}
    seen: dict[int, int] = {}
    x = []
    for e in epochs.tolist():
        x.append(e + seen.get(e, 0) / counts[e])
        seen[e] = seen.get(e, 0) + 1
    return LRSchedule(np.array(x), np.array([v for _, _, v in records]), int(epochs.max()) + 1)


def describe_scheduler(config: Mapping[str, Any] | None) -> str:
    """A one-line description of a run config's scheduler and base LR (from its recorded config)."""
    if not config:
        return "config not recorded"
    s, opt = config.get("scheduler") or {}, config.get("optimizer") or {}
    name = s.get("name", "none")
    if name == "multistep":
        text = f"multistep at epochs {list(s.get('milestones') or [])}, ×{s.get('gamma')}"
    elif name == "plateau":
        text = f"plateau on {s.get('monitor')}, ×{s.get('factor')} after {s.get('patience')} bad epochs"
    elif name == "cosine":
        text = f"cosine, T_max {s.get('T_max')}"
    elif name == "cyclic":
        text = f"cyclic {s.get('mode')}, {s.get('base_lr')}–{s.get('max_lr')}"
    else:
        text = "constant"
    if s.get("interval"):
        text += f", stepped per {s['interval']}"
    if s.get("warmup_steps"):
        text += f", warmup {s['warmup_steps']} steps"
    return f"{text} ({opt.get('name')} lr {opt.get('lr')})"


def recorded_schedules(cells: Sequence[CellResult]) -> tuple[dict[str, tuple[LRSchedule, list[CellResult]]], dict[int, str]]:
    """Cells grouped by identical recorded trajectory, and why the others are not drawn."""
    groups: dict[str, tuple[LRSchedule, list[CellResult]]] = {}
    reasons: dict[int, str] = {}
    for cell in cells:
        if cell.status != "finished":
            reasons[id(cell)] = cell.status or "unknown status"
        elif cell.lr_schedule is None:
            reasons[id(cell)] = f"LR not recorded (no {LR_SCHEDULE})"
        else:
            sched = read_lr_schedule(cell.lr_schedule)
            groups.setdefault(sched.key(), (sched, []))[1].append(cell)
    return groups, reasons


def _colours(groups: Mapping[str, tuple[LRSchedule, list[CellResult]]]) -> tuple[dict[str, Style], dict[str, str | None]]:
    """A style per line: the cells' own colour when it tells the lines apart, else one per line;
    and the variant name a line is labelled with (None when the colours are the lines')."""
    labels = list(dict.fromkeys(c.label for _, g in groups.values() for c in g))
    styles = label_styles(labels)
    color_keys, _ = style_keys(labels)
    colour_of = {key: styles[g[0].label] for key, (_, g) in groups.items()}
    shared = all(len({styles[c.label].color for c in g}) == 1 for _, g in groups.values())
    if len({s.color for s in colour_of.values()}) < len(groups) or not shared:
        return ({key: Style(f"C{i % 10}", "-", MARKERS[i % len(MARKERS)]) for i, key in enumerate(groups)},
                {key: None for key in groups})
    return colour_of, {key: color_keys[g[0].label] for key, (_, g) in groups.items()}


def lr_schedules(cells: Sequence[CellResult], out_dir: str | Path, *, name: str = "lr_schedules") -> list[Path]:
    """The recorded LR of every optimizer step, one line per distinct trajectory among `cells`.

    Cells whose runs recorded the same trajectory share a line (e.g. GeM and MixVPR under one
    scheduler). Log y-axis when the LRs span more than two decades. Writes nothing without any
    finished run (an empty figure whose note says which runs did not record it when some finished).
    """
    groups, reasons = recorded_schedules(cells)
    if not groups and not any(c.status == "finished" for c in cells):
        return []
    colour_of, variant = _colours(groups)
    fig = Figure(figsize=(9.5, 4.6))
    ax = fig.subplots()
    positive: list[float] = []
    for i, (key, (sched, group)) in enumerate(groups.items()):
        text = describe_scheduler(group[0].config)
        text = f"{variant[key]}: {text}" if variant[key] else text
        # Earlier lines wider: schedules that coincide for a while (e.g. during warmup) stay visible.
        width = 1.4 + 2.0 * (len(groups) - 1 - i) / max(1, len(groups) - 1)
        ax.plot(np.append(sched.x, sched.epochs), np.append(sched.lr, sched.lr[-1]), drawstyle="steps-post",
                color=colour_of[key].color, lw=width, label=textwrap.fill(text, 58), zorder=2 + i)
        positive += [float(v) for v in sched.lr if v > 0]
    notes = []
    if positive and max(positive) / min(positive) > LOG_RANGE:
        ax.set_yscale("log", nonpositive="clip")
        ax.set_ylim(bottom=min(positive) / 2)
        notes.append("Log scale; an LR of 0 is drawn at the bottom edge.")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate of every optimizer step, as recorded by the runs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if not groups:
        ax.text(0.5, 0.5, "no run recorded its learning rate", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    add_note(fig, notes + skipped_note(cells, reasons))
    return save_figure(fig, Path(out_dir) / name)
