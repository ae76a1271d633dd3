"""Figures of a tuning: optimization history, LR vs weight decay coloured by Recall@1 (seed 003
Fig. 2), and parameter importances; one set per optimizer, PNG and PDF."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, path: Path) -> list[Path]:
    fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return out


def write_tuning_figures(tuning, storage, out: str | Path) -> list[Path]:
    """Write the figures of every optimizer study of `tuning` into `out`; returns the files."""
    import optuna
    from optuna.trial import TrialState

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    studies = {}
    for opt in tuning.optimizers:
        try:
            studies[opt] = optuna.load_study(study_name=f"{tuning.id}/{opt}", storage=storage)
        except KeyError:
            continue
    if not studies:
        return written

    # Optimization history: every finished trial, best-so-far line, pruned trials marked.
    fig, axes = plt.subplots(1, len(studies), figsize=(5 * len(studies), 3.6), squeeze=False)
    for ax, (opt, study) in zip(axes[0], studies.items()):
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
        ax.scatter([t.number for t in done], [t.value for t in done], label="complete", color="tab:blue")
        ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   marker="x", color="tab:red", label="pruned (last report)")
        best, line = float("-inf"), []
        for t in sorted(done, key=lambda t: t.number):
            best = max(best, t.value)
            line.append((t.number, best))
        if line:
            ax.step(*zip(*line), where="post", color="tab:green", label="best so far")
        ax.set(title=f"{opt}: optimization history", xlabel="trial", ylabel="val Recall@1 (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    written += _save(fig, out / "optimization_history")

    # LR vs WD, coloured by Recall@1 (the paper's Fig. 2), log axes.
    fig, axes = plt.subplots(1, len(studies), figsize=(5 * len(studies), 4), squeeze=False)
    for ax, (opt, study) in zip(axes[0], studies.items()):
        trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                  if "lr" in t.params and "weight_decay" in t.params]
        values = [t.value if t.state == TrialState.COMPLETE else
                  (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else 0.0) for t in trials]
        markers = ["o" if t.state == TrialState.COMPLETE else "x" for t in trials]
        sc = None
        for marker in ("o", "x"):
            idx = [i for i, m in enumerate(markers) if m == marker]
            if idx:
                sc = ax.scatter([trials[i].params["lr"] for i in idx], [trials[i].params["weight_decay"] for i in idx],
                                c=[values[i] for i in idx], cmap="viridis", marker=marker, s=60,
                                vmin=min(values), vmax=max(values) if max(values) > min(values) else min(values) + 1)
        ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="weight decay",
               title=f"{opt}: LR x WD (o complete, x pruned)")
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="val Recall@1 (%)")
    written += _save(fig, out / "lr_wd")

    # Parameter importances (needs a few complete trials).
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 3), squeeze=False)
    for ax, (opt, study) in zip(axes[0], studies.items()):
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as err:
            ax.text(0.5, 0.5, f"not enough complete trials\n({err})"[:120], ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            importances = {}
        if importances:
            ax.barh(list(importances), list(importances.values()), color="tab:purple")
        ax.set(title=f"{opt}: parameter importance", xlabel="importance (fANOVA)")
    written += _save(fig, out / "param_importances")
    return written
