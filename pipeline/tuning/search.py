"""Optuna's side of a tuning: samplers, pruners, each optimizer's study, budgets and best values."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.profile import capped_budget, trial_cap
from pipeline.tuning.tuning_file import METRIC, PrunerConfig, RangeConfig, SamplerConfig, Tuning


def make_sampler(spec: SamplerConfig, space: Mapping[str, RangeConfig], offset: int = 0):
    """The file's sampler; `offset` (the worker index) shifts the seed so workers differ."""
    import optuna

    if spec.name == "grid":
        grid = {p: (r.values or [r.low, r.high]) for p, r in space.items()}
        return optuna.samplers.GridSampler(grid, seed=spec.seed + offset)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed + offset)
    return optuna.samplers.TPESampler(seed=spec.seed + offset)


def make_pruner(spec: PrunerConfig):
    """The file's pruner (pruning on per-epoch val Recall@1)."""
    import optuna

    if spec.name == "none":
        return optuna.pruners.NopPruner()
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)


def optuna_study_name(tuning: Tuning, optimizer: str) -> str:
    """The Optuna study of one optimizer of a tuning: `<tuning id>/<optimizer>`."""
    return f"{tuning.id}/{optimizer}"


def claimed_count(study) -> int:
    """Trials finished or being run by some worker: a worker starts a trial only while this is below
    the budget, so parallel workers do not all start one when the budget is one trial away (the
    demo's 4-trial budget used to get 5). A trial that then fails frees its place again."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                        TrialState.RUNNING)))


def trial_budget(tuning: Tuning, optimizer: str, profile: Mapping[str, Any] | None) -> int:
    """Trials to finish for one optimizer: the file's budget, capped by the profile's
    `tune.max_trials` (demo scale) and, for a grid sampler, by the grid's size."""
    grid = ([len(r.values or [r.low, r.high]) for r in tuning.optimizers[optimizer].values()]
            if tuning.sampler.name == "grid" else None)
    return capped_budget(tuning.budget.trials, trial_cap(profile), grid)


def suggest(trial, space: Mapping[str, RangeConfig]) -> dict[str, float]:
    """One value per parameter (a grid sampler picks among `values`, which lie within the bounds)."""
    return {param: trial.suggest_float(param, *r.bounds(), log=r.log) for param, r in space.items()}


def best_params(tuning: Tuning, storage) -> dict[str, Any]:
    """{optimizer: {lr, weight_decay, ..., value, trial, trials}} from the finished trials."""
    import optuna
    from optuna.trial import TrialState

    out: dict[str, Any] = {}
    for opt in tuning.optimizers:
        try:
            study = optuna.load_study(study_name=optuna_study_name(tuning, opt), storage=storage)
        except KeyError:
            continue
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            continue
        best = max(complete, key=lambda t: t.value)
        counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
        out[opt] = {**best.params, METRIC: best.value, "trial": best.number, "trials": counts}
    return out


def write_best_params(path: Path, data: Any) -> None:
    """A tuning's best values as sorted, indented JSON at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def elapsed_ok(start: float, minutes: float | None) -> bool:
    """True while the time budget (if any) since `start` is not spent."""
    return minutes is None or (time.time() - start) < minutes * 60
