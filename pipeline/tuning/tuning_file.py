"""Tuning files (`experiments/tune_*.yaml`): the search of learning rate and weight decay per optimizer.

A tuning file gives a base run config, per optimizer a search space, the sampler, the pruner and
the budget (`pipeline.tuning.search` builds them). Each optimizer gets its own Optuna study
(`<tuning id>/<optimizer>`), so its space is exactly that optimizer's parameters. `load_tuning`
validates everything before any trial, including that every corner of every space is a valid
run config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from pipeline.components.base import StrictConfig
from pipeline.components.optim import OPTIMIZERS
from pipeline.config import RunConfig, nest_dotted
from pipeline.data.catalog import VAL_R1
from pipeline.errors import ConfigError, format_validation_error, read_yaml
from pipeline.profile import apply_profile

METRIC = VAL_R1  # the objective Optuna maximises, reported per epoch: val_recall_at_1


class TuningError(ConfigError):
    """A tuning file or storage is invalid; the message names the file and key."""


class RangeConfig(StrictConfig):
    """A float search range (`low`..`high`, optionally log-uniform) or explicit grid `values`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> "RangeConfig":
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


class SamplerConfig(StrictConfig):
    name: Literal["tpe", "grid", "random"] = "tpe"
    seed: int = 0


class PrunerConfig(StrictConfig):
    name: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0)
    n_warmup_steps: int = Field(1, ge=0)


class BudgetConfig(StrictConfig):
    trials: int = Field(20, ge=1)        # per optimizer: finished (complete or pruned) trials
    minutes: float | None = Field(None, gt=0)   # per `vpr tune run` invocation


class _TuningFileConfig(StrictConfig):
    tuning: str
    paper: str | None = None
    reproduces: str | None = None
    title: str = ""
    base: dict[str, Any] = {}
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    budget: BudgetConfig = BudgetConfig()
    optimizers: dict[str, dict[str, RangeConfig]]
    # Points tried first, per optimizer (e.g. the paper's best values), before the sampler's own.
    enqueue: dict[str, list[dict[str, float]]] = {}


# Section models by key path, so an unknown key lists the valid ones.
_TUNING_SECTIONS = {(): _TuningFileConfig, ("sampler",): SamplerConfig, ("pruner",): PrunerConfig, ("budget",): BudgetConfig}


@dataclass(frozen=True)
class Tuning:
    """A parsed tuning file."""

    path: Path
    id: str
    reproduces: str | None
    base: dict[str, Any]
    sampler: SamplerConfig
    pruner: PrunerConfig
    budget: BudgetConfig
    optimizers: dict[str, dict[str, RangeConfig]]
    enqueue: dict[str, list[dict[str, float]]]


def load_tuning(path: str | Path) -> Tuning:
    """Read and validate a tuning file; every problem names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise TuningError(f"tuning file not found: {path}")
    try:
        model = _TuningFileConfig.model_validate(read_yaml(path, "tuning file"))
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
                 profile: Mapping[str, Any] | None = None, roots: Mapping[str, str] | None = None) -> RunConfig:
    """The run config of one trial: base <- optimizer + params, under the profile (`apply_profile`)."""
    source = f"{tuning.path}: optimizer {optimizer} {dict(params)}"
    return apply_profile([tuning.base, {"optimizer": {"name": optimizer, **params}}], profile, roots, source)




def find_tuning_files(paths: Sequence[str | Path], required: bool = True) -> list[Path]:
    """The tuning files among `paths` (a folder means every tune_*.yaml in it, a file itself).

    With `required`, finding none is a TuningError naming the paths."""
    files: list[Path] = []
    for arg in paths:
        if Path(arg).is_dir():
            files += sorted(Path(arg).glob("tune_*.yaml"))
        elif Path(arg).name.startswith("tune_") or required:
            files.append(Path(arg))
    if required and not files:
        raise TuningError(f"no tuning file (tune_*.yaml) in {', '.join(map(str, paths))}")
    return files
