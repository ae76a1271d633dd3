"""Optuna tuning of learning rate and weight decay per optimizer (`vpr tune run`).

A tuning file (`experiments/tune_*.yaml`) gives a base run config, per optimizer a search space,
the sampler, the pruner and the budget. Each optimizer gets its own Optuna study
(`<tuning id>/<optimizer>`), so its space is exactly that optimizer's parameters. Trials report
val Recall@1 after every epoch (`trial.report`) and are pruned by the pruner; every trial is an
MLflow run under one parent run per tuning file.

Storage: a JournalStorage file by default (`optuna/<tuning id>.journal`, safe for several worker
processes on one machine); any RDB URL (PostgreSQL) shares a study between machines. A worker
records its host and pid on each trial; trials left RUNNING by a dead worker are marked FAIL when
the study is next opened (RDB storages also get Optuna's heartbeat), so a rerun continues to the
budget instead of waiting forever.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import config_from_layers, nest_dotted
from pipeline.data.catalog import VALIDATION, recall_metric
from pipeline.errors import ConfigError, format_validation_error, read_yaml
from pipeline.profile import capped_budget, roots_layer, run_scale, trial_cap
from pipeline.components.optim import OPTIMIZERS

log = logging.getLogger(__name__)

METRIC = recall_metric(VALIDATION.key, 1, per_epoch=True)  # val_recall_at_1: the objective, per epoch
JOURNAL_LOCK_GRACE_S = 10


class TuningError(ConfigError):
    """A tuning file or storage is invalid; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamRange(_Strict):
    """A float search range (`low`..`high`, optionally log-uniform) or explicit grid `values`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> "ParamRange":
        if self.values is not None:
            if not self.values:
                raise ValueError("values: empty list; give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or values (a grid)")
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low={self.low} must be < high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log range needs low > 0, got {self.low}")
        return self

    def bounds(self) -> tuple[float, float]:
        vals = self.values or [self.low, self.high]
        return min(vals), max(vals)


class SamplerSpec(_Strict):
    name: Literal["tpe", "grid", "random"] = "tpe"
    seed: int = 0


class PrunerSpec(_Strict):
    name: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0)
    n_warmup_steps: int = Field(1, ge=0)


class BudgetSpec(_Strict):
    trials: int = Field(20, ge=1)        # per optimizer: finished (complete or pruned) trials
    minutes: float | None = Field(None, gt=0)   # per `vpr tune run` invocation


class _TuningModel(_Strict):
    tuning: str
    paper: str | None = None
    reproduces: str | None = None
    title: str = ""
    base: dict[str, Any] = {}
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    budget: BudgetSpec = BudgetSpec()
    optimizers: dict[str, dict[str, ParamRange]]
    # Points tried first, per optimizer (e.g. the paper's best values), before the sampler's own.
    enqueue: dict[str, list[dict[str, float]]] = {}


# Section models by key path, so an unknown key lists the valid ones.
_TUNING_SECTIONS = {(): _TuningModel, ("sampler",): SamplerSpec, ("pruner",): PrunerSpec, ("budget",): BudgetSpec}


@dataclass(frozen=True)
class Tuning:
    """A parsed tuning file."""

    path: Path
    id: str
    reproduces: str | None
    base: dict[str, Any]
    sampler: SamplerSpec
    pruner: PrunerSpec
    budget: BudgetSpec
    optimizers: dict[str, dict[str, ParamRange]]
    enqueue: dict[str, list[dict[str, float]]]


def load_tuning(path: str | Path) -> Tuning:
    """Read and validate a tuning file; every problem names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise TuningError(f"tuning file not found: {path}")
    try:
        model = _TuningModel.model_validate(read_yaml(path, "tuning file"))
    except ValidationError as err:
        raise TuningError(format_validation_error(err, {}, _TUNING_SECTIONS), str(path)) from None
    problems = []
    if model.tuning != path.stem:
        problems.append(f"tuning: '{model.tuning}' must equal the file name '{path.stem}'")
    for opt, space in model.optimizers.items():
        if opt not in OPTIMIZERS:
            problems.append(f"optimizers.{opt}: unknown optimizer (valid: {', '.join(OPTIMIZERS)})")
            continue
        accepted = [f for f in OPTIMIZERS[opt].model_fields if f != "name"]
        for param in space:
            if param not in accepted:
                problems.append(f"optimizers.{opt}.{param}: not accepted by optimizer '{opt}' "
                                f"(valid: {', '.join(accepted)})")
        if not space:
            problems.append(f"optimizers.{opt}: empty search space")
    for opt, points in model.enqueue.items():
        space = model.optimizers.get(opt)
        if space is None:
            problems.append(f"enqueue.{opt}: not among the tuned optimizers ({', '.join(model.optimizers)})")
            continue
        for i, point in enumerate(points):
            if set(point) != set(space):
                problems.append(f"enqueue.{opt}[{i}]: give exactly the tuned parameters {sorted(space)}")
            for param, value in point.items():
                if param in space and not space[param].bounds()[0] <= value <= space[param].bounds()[1]:
                    problems.append(f"enqueue.{opt}[{i}].{param}: {value} is outside the search range "
                                    f"{space[param].bounds()}")
    if problems:
        raise TuningError(problems, str(path))
    base = nest_dotted(model.base, str(path))
    tuning = Tuning(path, model.tuning, model.reproduces, base, model.sampler, model.pruner, model.budget,
                    model.optimizers, model.enqueue)
    for opt, space in tuning.optimizers.items():  # every corner of the space must be a valid config
        for corner in (0, 1):
            params = {p: r.bounds()[corner] for p, r in space.items()}
            trial_config(tuning, opt, params)
    return tuning


def trial_config(tuning: Tuning, optimizer: str, params: Mapping[str, float],
                 profile: Mapping[str, Any] | None = None, roots: Mapping[str, str] | None = None):
    """The run config of one trial: base <- optimizer + params <- profile scale <- roots."""
    scale = run_scale(profile)
    source = f"{tuning.path}: optimizer {optimizer} {dict(params)}"
    stack = [tuning.base, {"optimizer": {"name": optimizer, **params}}, scale.layer]
    cfg = config_from_layers([*stack, roots_layer(roots)], source)
    if scale.max_epochs is not None and cfg.training.epochs > scale.max_epochs:
        cfg = config_from_layers([*stack, {"training": {"epochs": scale.max_epochs}}, roots_layer(roots)], source)
    return cfg


# --- storage -------------------------------------------------------------------------------------

def open_storage(url: str | None, tuning_id: str, root: str | Path = "optuna"):
    """JournalStorage file (default) or an RDB URL; unreachable storage fails here, naming the URL."""
    import optuna

    if not url:
        Path(root).mkdir(parents=True, exist_ok=True)
        path = (Path(root) / f"{tuning_id}.journal").resolve()
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        # A worker killed while appending leaves its lock behind. The default symlink lock points at
        # a relative path and was never reclaimed (a test's surviving worker spun for minutes); an
        # open-file lock older than the grace period is broken, and appends take milliseconds.
        lock = JournalFileOpenLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock)), str(path)
    try:
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30,
                                             engine_kwargs={"pool_pre_ping": True})
        storage.get_all_studies()
    except Exception as err:  # SQLAlchemy/driver errors vary by backend
        raise TuningError(f"--storage {url!r}: cannot connect ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]})") from None
    return storage, url


def fail_dead_trials(study) -> list:
    """Mark RUNNING trials of dead workers on this host as FAIL; returns those trials."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") != host:
            continue  # another machine's worker: its heartbeat (RDB) or its own rerun handles it
        pid = trial.user_attrs.get("pid")
        if pid is None or not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_sampler(spec: SamplerSpec, space: Mapping[str, ParamRange], offset: int = 0):
    """The file's sampler; `offset` (the worker index) shifts the seed so workers differ."""
    import optuna

    if spec.name == "grid":
        grid = {p: (r.values or [r.low, r.high]) for p, r in space.items()}
        return optuna.samplers.GridSampler(grid, seed=spec.seed + offset)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed + offset)
    return optuna.samplers.TPESampler(seed=spec.seed + offset)


def make_pruner(spec: PrunerSpec):
    """The file's pruner (pruning on per-epoch val Recall@1)."""
    import optuna

    if spec.name == "none":
        return optuna.pruners.NopPruner()
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)


def study_name(tuning: Tuning, optimizer: str) -> str:
    """The Optuna study of one optimizer of a tuning: `<tuning id>/<optimizer>`."""
    return f"{tuning.id}/{optimizer}"


def finished_count(study) -> int:
    """Trials of `study` that count toward the budget: complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


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


def suggest(trial, space: Mapping[str, ParamRange]) -> dict[str, float]:
    """One value per parameter (a grid sampler picks among `values`, which lie within the bounds)."""
    return {param: trial.suggest_float(param, *r.bounds(), log=r.log) for param, r in space.items()}


def best_params(tuning: Tuning, storage) -> dict[str, Any]:
    """{optimizer: {lr, weight_decay, ..., value, trial, trials}} from the finished trials."""
    import optuna
    from optuna.trial import TrialState

    out: dict[str, Any] = {}
    for opt in tuning.optimizers:
        try:
            study = optuna.load_study(study_name=study_name(tuning, opt), storage=storage)
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


def write_json(path: Path, data: Any) -> None:
    """`data` as sorted, indented JSON at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def elapsed_ok(start: float, minutes: float | None) -> bool:
    """True while the time budget (if any) since `start` is not spent."""
    return minutes is None or (time.time() - start) < minutes * 60
