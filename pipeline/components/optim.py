"""Optimizers and LR schedulers by name, and the `SchedulerDriver` that steps them (with warmup).

Each registry entry builds itself: an optimizer model's `build(params)` is the torch optimizer,
a scheduler model's `build(optimizer, steps_per_epoch, epochs)` is the torch LR scheduler (or
None). A name builds exactly its class (`adam` is `torch.optim.Adam`, never AdamW).

Schedulers step once per epoch (`interval: epoch`, PyTorch Lightning's default, as GSV-Cities
ran them) or after every optimizer step (`interval: step`); their units follow the interval:

    none       constant LR
    multistep  milestones (epochs or steps), LR *= gamma at each
    plateau    ReduceLROnPlateau on train_loss (mode min) or val_recall@1 (mode max); epoch only
    cosine     CosineAnnealingLR, T_max (None: the run's length in the interval's units)
    cyclic     CyclicLR, step_size_up (or step_size_up_epochs, converted); cycle_momentum off
               unless asked (only SGD with momentum)
    linear     LinearLR, start_factor -> end_factor over total_iters (SALAD: 1 -> 0.2 in 4000 steps)

Warmup, as GSV-Cities' `optimizer_step`: during the first `warmup_steps` optimizer steps every
parameter group's LR is SET to min(1, (k+1)/warmup_steps) x the optimizer's lr for step k,
overwriting whatever the scheduler set; after that the scheduler's values apply (chainable torch
schedulers continue from the LR warmup left, exactly as in Lightning).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BeforeValidator, Field, model_validator

from pipeline.components.base import ComponentConfig, coerce, tagged_union
from pipeline.errors import ConfigError

__all__ = [
    "OPTIMIZERS", "SCHEDULERS", "OptimizerConfig", "SchedulerConfig", "SchedulerDriver",
    "build_optimizer", "build_scheduler",
]

_LR = torch.optim.lr_scheduler


# Optimizers -----------------------------------------------------------------------------------

def _check_betas(betas: tuple[float, float]) -> None:
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas: each must be in [0, 1), got {list(betas)}")


class _OptimizerBase(ComponentConfig):
    def build(self, params: Iterable[torch.nn.Parameter] | Iterable[dict]) -> torch.optim.Optimizer:
        """The torch optimizer over `params` (parameters or parameter groups)."""
        kwargs = self.params()
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return self.target(params, **kwargs)


class AdamConfig(_OptimizerBase):
    """torch.optim.Adam with torch's defaults (L2 penalty added to the gradient)."""

    target: ClassVar[type] = torch.optim.Adam
    name: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)

    @model_validator(mode="after")
    def _betas(self) -> AdamConfig:
        _check_betas(self.betas)
        return self


class AdamWConfig(AdamConfig):
    """torch.optim.AdamW with torch's defaults (decoupled weight decay, 0.01)."""

    target: ClassVar[type] = torch.optim.AdamW
    name: Literal["adamw"] = "adamw"  # type: ignore[assignment]
    weight_decay: float = Field(0.01, ge=0)


class SGDConfig(_OptimizerBase):
    """torch.optim.SGD; defaults are the GSV-Cities recipe (lr 0.05, wd 0.001, momentum 0.9)."""

    target: ClassVar[type] = torch.optim.SGD
    name: Literal["sgd"] = "sgd"
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(0.001, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov(self) -> SGDConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0 (got momentum 0)")
        return self


class ASGDConfig(_OptimizerBase):
    """torch.optim.ASGD with torch's defaults."""

    target: ClassVar[type] = torch.optim.ASGD
    name: Literal["asgd"] = "asgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lambd: float = Field(1e-4, ge=0)
    alpha: float = Field(0.75, ge=0)
    t0: float = Field(1e6, ge=0)


OPTIMIZERS: dict[str, type[_OptimizerBase]] = {
    "adam": AdamConfig,
    "adamw": AdamWConfig,
    "sgd": SGDConfig,
    "asgd": ASGDConfig,
}


# Schedulers -----------------------------------------------------------------------------------

class _SchedulerBase(ComponentConfig):
    warmup_steps: int = Field(0, ge=0)
    interval: Literal["epoch", "step"] = "epoch"  # when the scheduler steps (Lightning's default: epoch)

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        """The torch LR scheduler on `optimizer` (None: constant LR)."""
        return None

    def units_per_epoch(self, steps_per_epoch: int) -> int:
        """Scheduler steps per epoch: 1, or the optimizer steps of an epoch with `interval: step`."""
        return steps_per_epoch if self.interval == "step" else 1

    def monitored(self) -> str | None:
        """The per-epoch metric the scheduler reads (None: it reads none)."""
        return None


class NoSchedulerConfig(_SchedulerBase):
    """Constant learning rate (warmup still applies)."""

    name: Literal["none"] = "none"


class MultiStepConfig(_SchedulerBase):
    """torch MultiStepLR; milestones in the interval's units. Defaults: the GSV-Cities recipe."""

    target: ClassVar[type] = _LR.MultiStepLR
    name: Literal["multistep"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [5, 10, 15, 25, 45])
    gamma: float = Field(0.3, gt=0)

    @model_validator(mode="after")
    def _milestones(self) -> MultiStepConfig:
        ms = self.milestones
        if any(m < 1 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones: must be strictly increasing and >= 1, got {ms}")
        return self

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        return _LR.MultiStepLR(optimizer, milestones=list(self.milestones), gamma=self.gamma)


# The monitor values as written in configs (kept as they are: they are part of run identities)
# -> the per-epoch metric keys the trainer records (pipeline.data.catalog.recall_metric).
MONITORED_METRICS = {"train_loss": "train_loss", "val_recall@1": "val_recall_at_1"}


def _monitor_alias(value: Any) -> Any:
    # The metric key itself is accepted as the same value (and so the same run hash).
    return "val_recall@1" if value == MONITORED_METRICS["val_recall@1"] else value


class PlateauConfig(_SchedulerBase):
    """torch ReduceLROnPlateau; the mode follows the monitored metric (torch's factor/patience defaults)."""

    target: ClassVar[type] = _LR.ReduceLROnPlateau
    name: Literal["plateau"] = "plateau"
    monitor: Annotated[Literal["train_loss", "val_recall@1"], BeforeValidator(_monitor_alias)] = "train_loss"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    min_lr: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _per_epoch(self) -> PlateauConfig:
        if self.interval != "epoch":
            raise ValueError("interval: plateau reads a per-epoch metric; only interval: epoch is possible")
        return self

    @property
    def mode(self) -> str:
        """'min' for a loss, 'max' for a recall."""
        return "min" if self.monitor == "train_loss" else "max"

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        return _LR.ReduceLROnPlateau(optimizer, mode=self.mode, factor=self.factor, patience=self.patience,
                                     min_lr=self.min_lr)

    def monitored(self) -> str | None:
        return MONITORED_METRICS[self.monitor]


class CosineConfig(_SchedulerBase):
    """torch CosineAnnealingLR; T_max in the interval's units, None = the whole run."""

    target: ClassVar[type] = _LR.CosineAnnealingLR
    name: Literal["cosine"] = "cosine"
    T_max: int | None = Field(None, ge=1)
    eta_min: float = Field(0.0, ge=0)

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        t_max = self.T_max or epochs * self.units_per_epoch(steps_per_epoch)
        return _LR.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=self.eta_min)


class CyclicConfig(_SchedulerBase):
    """torch CyclicLR. base_lr None = the optimizer's lr.

    The half-cycle `step_size_up` counts scheduler steps (epochs with `interval: epoch`, optimizer
    steps with `interval: step`; torch default 2000), or give `step_size_up_epochs`, converted
    with the interval. Paper 003 (base_lr 1e-3, max_lr 0.1, step_size_up 1, stepped per epoch by
    Lightning) is a triangle over epochs: 1e-3, 0.1, 1e-3, 0.0505, ...
    """

    target: ClassVar[type] = _LR.CyclicLR
    name: Literal["cyclic"] = "cyclic"
    base_lr: float | None = Field(None, gt=0)
    max_lr: float = Field(gt=0)
    step_size_up: int | None = Field(None, ge=1)
    step_size_up_epochs: float | None = Field(None, gt=0)
    mode: Literal["triangular", "triangular2"] = "triangular2"
    cycle_momentum: bool = False

    @model_validator(mode="after")
    def _cycle(self) -> CyclicConfig:
        if self.step_size_up is not None and self.step_size_up_epochs is not None:
            raise ValueError("step_size_up: give step_size_up (steps) or step_size_up_epochs, not both")
        if self.step_size_up is None and self.step_size_up_epochs is None:
            self.__dict__["step_size_up"] = 2000  # torch's default; explicit so hashes agree
        if self.base_lr is not None and not self.base_lr < self.max_lr:
            raise ValueError(f"base_lr: must be below max_lr (got base_lr {self.base_lr}, max_lr {self.max_lr})")
        return self

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        base_lr = self.base_lr if self.base_lr is not None else float(optimizer.param_groups[0]["lr"])
        if not base_lr < self.max_lr:
            raise ConfigError(f"scheduler.base_lr: the cyclic base LR ({base_lr}, the optimizer's lr when "
                              f"unset) must be below scheduler.max_lr ({self.max_lr})")
        if self.cycle_momentum and "momentum" not in optimizer.defaults:
            raise ConfigError(f"scheduler.cycle_momentum: needs an optimizer with momentum (sgd), "
                              f"got {type(optimizer).__name__}")
        step_size_up = self.step_size_up or max(1, round(self.step_size_up_epochs
                                                          * self.units_per_epoch(steps_per_epoch)))
        return _LR.CyclicLR(optimizer, base_lr=base_lr, max_lr=self.max_lr, step_size_up=step_size_up,
                            mode=self.mode, cycle_momentum=self.cycle_momentum)


class LinearConfig(_SchedulerBase):
    """torch LinearLR: the LR goes from start_factor to end_factor x lr over total_iters scheduler
    steps, then stays. SALAD's recipe: 1 -> 0.2 over 4000 optimizer steps (serizba/salad main.py)."""

    target: ClassVar[type] = _LR.LinearLR
    name: Literal["linear"] = "linear"
    start_factor: float = Field(1.0, gt=0, le=1)
    end_factor: float = Field(0.2, ge=0, le=1)
    total_iters: int = Field(4000, ge=1)

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        return _LR.LinearLR(optimizer, start_factor=self.start_factor, end_factor=self.end_factor,
                            total_iters=self.total_iters)


SCHEDULERS: dict[str, type[_SchedulerBase]] = {
    "none": NoSchedulerConfig,
    "multistep": MultiStepConfig,
    "plateau": PlateauConfig,
    "cosine": CosineConfig,
    "cyclic": CyclicConfig,
    "linear": LinearConfig,
}

OptimizerConfig = tagged_union(OPTIMIZERS)
SchedulerConfig = tagged_union(SCHEDULERS)


def build_optimizer(cfg: Any, params: Iterable[torch.nn.Parameter] | Iterable[dict]) -> torch.optim.Optimizer:
    """The torch optimizer named by `cfg` (a model, a dict or a name) over `params`."""
    return coerce("optimizer", OPTIMIZERS, OptimizerConfig, cfg).build(params)


class SchedulerDriver:
    """One object the trainer steps without branching on the scheduler kind.

    Call `step_batch()` after every optimizer step and `step_epoch(metrics)` after every epoch
    (metrics: e.g. {"train_loss": 0.3, "val_recall_at_1": 61.2}; only `plateau` reads one). The
    torch scheduler steps in the one matching its interval. Warmup (see the module docstring) is
    applied after each of them, so the LR in the optimizer is always the one the next optimizer
    step uses: `current_lr()`.

    Resume: build the driver on a freshly built optimizer, then load the optimizer's and the
    driver's state dicts (either order).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any, *, name: str,
                 interval: str = "epoch", warmup_steps: int = 0, monitor: str | None = None,
                 base_lrs: list[float] | None = None) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.name = name
        self.interval = interval
        self.warmup_steps = int(warmup_steps)
        self.monitor = monitor
        # Warmup ramps to the optimizer's own lr (GSV-Cities: `self.lr`), not a scheduler's base.
        self.base_lrs = list(base_lrs) if base_lrs is not None else [float(g["lr"]) for g in optimizer.param_groups]
        self.batch_steps = 0
        self.epochs_done = 0
        self._warmup()

    def __repr__(self) -> str:
        return (f"SchedulerDriver({self.name}, per {self.interval}, warmup_steps={self.warmup_steps}, "
                f"steps={self.batch_steps}, epochs={self.epochs_done}, lr={self.current_lr():.3g})")

    def _warmup(self) -> None:
        """During warmup, SET every group's LR for the next optimizer step (k = batch_steps)."""
        if self.batch_steps < self.warmup_steps:
            factor = min(1.0, (self.batch_steps + 1) / self.warmup_steps)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = factor * base

    def step_batch(self) -> None:
        """After each optimizer step: step-interval schedulers, then warmup."""
        self.batch_steps += 1
        if self.interval == "step" and self.scheduler is not None:
            self.scheduler.step()
        self._warmup()

    def step_epoch(self, metrics: Mapping[str, float] | None = None) -> None:
        """After each epoch: epoch-interval schedulers (plateau reads `metrics[monitor]`), then warmup."""
        self.epochs_done += 1
        if self.interval == "epoch" and self.scheduler is not None:
            if self.monitor is not None:
                if not metrics or self.monitor not in metrics:
                    raise ValueError(f"scheduler {self.name!r} monitors {self.monitor!r} but step_epoch got "
                                     f"{sorted(metrics or {})}")
                self.scheduler.step(float(metrics[self.monitor]))
            else:
                self.scheduler.step()
        self._warmup()

    def current_lr(self) -> float:
        """The LR of the first parameter group, as the next optimizer step will use it."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same LR trajectory."""
        return {
            "name": self.name,
            "interval": self.interval,
            "warmup_steps": self.warmup_steps,
            "batch_steps": self.batch_steps,
            "epochs_done": self.epochs_done,
            "base_lrs": list(self.base_lrs),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; refuses a state saved for another scheduler, interval or warmup."""
        mine = (self.name, self.interval, self.warmup_steps)
        theirs = (state["name"], state.get("interval"), state["warmup_steps"])
        if theirs != mine:
            raise ValueError(f"scheduler state is for {theirs[0]!r} (interval {theirs[1]}, warmup_steps "
                             f"{theirs[2]}), this driver is {mine[0]!r} (interval {mine[1]}, warmup_steps {mine[2]})")
        if self.scheduler is not None:
            # CyclicLR.load_state_dict pops keys from its argument: give it a copy.
            self.scheduler.load_state_dict(copy.deepcopy(state["scheduler"]))
        self.batch_steps = int(state["batch_steps"])
        self.epochs_done = int(state["epochs_done"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._warmup()


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    epochs: int) -> SchedulerDriver:
    """A SchedulerDriver for the scheduler named by `cfg`, on a freshly built `optimizer`.

    `steps_per_epoch` (optimizer steps) converts epoch units to steps; `epochs` sizes the
    default cosine T_max.
    """
    cfg = coerce("scheduler", SCHEDULERS, SchedulerConfig, cfg)
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch}, {epochs}")
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]  # before a scheduler changes them
    return SchedulerDriver(optimizer, cfg.build(optimizer, steps_per_epoch, epochs), name=cfg.name,
                           interval=cfg.interval, warmup_steps=cfg.warmup_steps, monitor=cfg.monitored(),
                           base_lrs=base_lrs)
