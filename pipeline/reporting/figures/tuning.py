"""Figures of a tuning, read from its Optuna storage: optimization history, LR vs weight decay
coloured by Recall@1 (paper 003 Fig. 2) and parameter importances; one panel per optimizer.

`vpr report` writes them for every tuning file (`experiments/tune_*.yaml`) into
`<out>/<tuning id>/` (reports/figures/tuning/<id>/); the sweeps never draw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.reporting.figures.common import save_figure

log = logging.getLogger(__name__)

METRIC_LABEL = "val Recall@1 (%)"


def _last_value(trial: Any) -> float | None:
    """A complete trial's value, a pruned trial's last reported value (None if it reported none)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return float(trial.value)
    return float(trial.intermediate_values[max(trial.intermediate_values)]) if trial.intermediate_values else None


def _panels(studies: dict[str, Any], width: float, height: float) -> tuple[Figure, Sequence[Any]]:
    fig = Figure(figsize=(width * len(studies), height))
    return fig, fig.subplots(1, len(studies), squeeze=False)[0]


def _history(studies: dict[str, Any], out: Path) -> list[Path]:
    """Every finished trial's value, pruned trials' last report, and the best-so-far line."""
    from optuna.trial import TrialState

    fig, axes = _panels(studies, 5, 3.6)
    for ax, (opt, study) in zip(axes, studies.items()):
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
        ax.scatter([t.number for t in done], [t.value for t in done], label="complete", color="tab:blue")
        ax.scatter([t.number for t in pruned], [_last_value(t) for t in pruned], marker="x", color="tab:red",
                   label="pruned (last report)")
        best, line = float("-inf"), []
        for t in sorted(done, key=lambda t: t.number):
            best = max(best, t.value)
            line.append((t.number, best))
        if line:
            ax.step(*zip(*line), where="post", color="tab:green", label="best so far")
        ax.set(title=f"{opt}: optimization history", xlabel="trial", ylabel=METRIC_LABEL)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out / "optimization_history")


def _lr_wd(studies: dict[str, Any], out: Path) -> list[Path]:
    """LR vs weight decay on log axes, coloured by Recall@1 (o complete, x pruned)."""
    from optuna.trial import TrialState

    fig, axes = _panels(studies, 5, 4)
    for ax, (opt, study) in zip(axes, studies.items()):
        trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                  if "lr" in t.params and "weight_decay" in t.params]
        values = [_last_value(t) or 0.0 for t in trials]
        scale = {"vmin": min(values, default=0), "vmax": max(values, default=1)}
        if scale["vmax"] <= scale["vmin"]:
            scale["vmax"] = scale["vmin"] + 1
        drawn = None
        for marker, state in (("o", TrialState.COMPLETE), ("x", TrialState.PRUNED)):
            idx = [i for i, t in enumerate(trials) if t.state == state]
            if idx:
                drawn = ax.scatter([trials[i].params["lr"] for i in idx], [trials[i].params["weight_decay"] for i in idx],
                                   c=[values[i] for i in idx], cmap="viridis", marker=marker, s=60, **scale)
        ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="weight decay",
               title=f"{opt}: LR x WD (o complete, x pruned)")
        if drawn is not None:
            fig.colorbar(drawn, ax=ax, label=METRIC_LABEL)
    fig.tight_layout()
    return save_figure(fig, out / "lr_wd")


def ranked(importances: dict[str, float]) -> list[tuple[str, float]]:
    """Importances largest first, ties by name: Optuna orders ties as Python orders a set of
    names, which changes from one process to the next, and so would the report's bars."""
    return sorted(importances.items(), key=lambda item: (-item[1], item[0]))


def _importances(studies: dict[str, Any], out: Path) -> list[Path]:
    """fANOVA parameter importances (a note instead when there are too few complete trials)."""
    import optuna

    fig, axes = _panels(studies, 4.5, 3)
    for ax, (opt, study) in zip(axes, studies.items()):
        try:
            # fANOVA fits a random forest: seeded, so a rerun of the report draws the same bars.
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (RuntimeError, ValueError) as err:
            ax.text(0.5, 0.5, f"not enough complete trials\n({err})"[:120], ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            importances = {}
        if importances:
            names, values = zip(*ranked(importances))
            ax.barh(names, values, color="tab:purple")
        ax.set(title=f"{opt}: parameter importance", xlabel="importance (fANOVA)")
    fig.tight_layout()
    return save_figure(fig, out / "param_importances")


def write_tuning_figures(tuning: Any, storage: Any, out: str | Path) -> list[Path]:
    """The figures of every optimizer study of `tuning` found in `storage`, into `out`."""
    import optuna

    from pipeline.tuning.search import optuna_study_name

    studies = {}
    for opt in tuning.optimizers:
        try:
            studies[opt] = optuna.load_study(study_name=optuna_study_name(tuning, opt), storage=storage)
        except KeyError:
            continue
    if not studies:
        return []
    out = Path(out)
    return _history(studies, out) + _lr_wd(studies, out) + _importances(studies, out)


def write_all_tuning_figures(studies: Sequence[str | Path], out_root: str | Path, storage_url: str | None = None,
                             journal_dir: str | Path = "optuna") -> list[Path]:
    """Figures of every tuning file among `studies` (folders: their tune_*.yaml) into
    `<out_root>/<tuning id>/`.

    Storage: `storage_url` (an RDB URL shared by every tuning) or, by default, each tuning's
    journal file as `vpr tune run` names it (`journal_path`); a tuning without one (never run)
    is skipped.
    """
    from pipeline.tuning.storage import journal_path, open_storage
    from pipeline.tuning.tuning_file import find_tuning_files, load_tuning

    written: list[Path] = []
    for path in find_tuning_files(studies, required=False):
        tuning = load_tuning(path)
        if not storage_url and not journal_path(tuning.id, journal_dir).is_file():
            log.info("tuning %s: no journal under %s, no figures", tuning.id, journal_dir)
            continue
        storage, _ = open_storage(storage_url, tuning.id, journal_dir)
        written += write_tuning_figures(tuning, storage, Path(out_root) / tuning.id)
    return written
