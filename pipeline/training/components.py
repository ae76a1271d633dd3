"""Training components by name: losses, miners, distances, optimizers and LR schedulers.

Every kind has a registry, a plain dict from the name users write in YAML to a small pydantic
model of that component's parameters; the model's `target` is the class it builds, and a name
builds exactly that class (`adam` is `torch.optim.Adam`, never AdamW). Parameter names are the
constructor's keyword names, so `{name: sgd, momentum: 0.9}` is `torch.optim.SGD(momentum=0.9)`.

Distances (`distance:` on every loss and miner), as pytorch-metric-learning (PML) objects:

    dot                DotProductSimilarity(normalize_embeddings=False)  raw inner product
    cosine             CosineSimilarity()          inner product of L2-normalised embeddings
    euclidean          LpDistance(p=2, power=1)    on L2-normalised embeddings (PML default)
    squared_euclidean  LpDistance(p=2, power=2)    on L2-normalised embeddings

`dot` is the only one that does not normalise. GSV-Cities builds `DotProductSimilarity()`, whose
PML default normalises the embeddings first: numerically that is `cosine`, the default here for
`multisimilarity`. On L2-normalised descriptors all four rank pairs identically
(|a-b|^2 = 2 - 2 a.b), which is why a miner and a loss may use different normalised distances.

Default distance per component (the one PML or the recipe uses) and what PML accepts:

    loss contrastive       euclidean          any (margins must point the distance's way, below)
    loss triplet           euclidean          any
    loss multisimilarity   cosine             any (GSV-Cities recipe: alpha 1, beta 50, base 0)
    loss angular           euclidean          only euclidean: AngularLoss asserts
                                              LpDistance(p=2, power=1, normalize_embeddings=True)
    loss fastap            squared_euclidean  euclidean or squared_euclidean: FastAPLoss asserts
                                              LpDistance(p=2, normalize_embeddings=True)
    loss ntxent            cosine             any
    miner multisimilarity  cosine             any (GSV-Cities: CosineSimilarity)
    miner angular          euclidean          only euclidean (AngularMiner asserts as AngularLoss)
    miner batchhard        euclidean          any
    miner batcheasyhard    euclidean          any
    miner uniformhistogram euclidean          any

Rules checked before any compute (`check_compatibility` and the models' validators):
- a distance a component does not accept (the PML assertions above);
- contrastive margins must match the distance's direction: PML's ContrastiveLoss computes
  relu(pos_margin - s) and relu(s - neg_margin) for a similarity s, so with `dot`/`cosine` and
  the distance defaults (0, 1) the negative term is always 0; similarities need
  pos_margin > neg_margin (e.g. 1 and 0), distances pos_margin < neg_margin;
- a miner and a loss must share a geometry: both `dot`, or both normalised. Mixing `dot` with a
  normalised distance means the miner ranks hardness by a different order than the loss optimises.
- batcheasyhard strategy pairs PML refuses (semihard+semihard, semihard with all).
Triplet-returning miners (angular, batchhard) with pair losses, and pair miners with triplet
losses, work: PML converts the indices. `fastap` uses a miner's output only as per-sample weights.

Schedulers, and when the `SchedulerDriver` steps them (`warmup_steps` composes with all):

    none       -                     constant LR
    multistep  per epoch             milestones in epochs, LR *= gamma at each
    plateau    per epoch (metric)    ReduceLROnPlateau on train_loss (mode min) or
                                     val_recall@1 (mode max); factor, patience, min_lr
    cosine     per epoch             CosineAnnealingLR, T_max in epochs (None: the run's epochs)
    cyclic     per optimizer step    CyclicLR, step_size_up in steps (or step_size_up_epochs);
                                     cycle_momentum off unless asked (only SGD with momentum)
    warmup     per optimizer step    LR x min(1, (k+1)/warmup_steps) for step k = 0, 1, ...
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

import torch
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pytorch_metric_learning import distances, losses, miners

from pipeline.errors import ConfigError, format_validation_error

__all__ = [
    "ConfigError", "ComponentConfig", "DISTANCES", "LOSSES", "MINERS", "OPTIMIZERS", "SCHEDULERS",
    "LossConfig", "MinerConfig", "OptimizerConfig", "SchedulerConfig", "SchedulerDriver",
    "build_distance", "build_loss", "build_miner", "build_optimizer", "build_scheduler",
    "check_compatibility",
]


# ---------------------------------------------------------------------------------------------
# Distances

DistanceName = Literal["dot", "cosine", "euclidean", "squared_euclidean"]

DISTANCES: dict[str, Callable[[], distances.BaseDistance]] = {
    "dot": functools.partial(distances.DotProductSimilarity, normalize_embeddings=False),
    "cosine": distances.CosineSimilarity,
    "euclidean": functools.partial(distances.LpDistance, p=2, power=1, normalize_embeddings=True),
    "squared_euclidean": functools.partial(distances.LpDistance, p=2, power=2, normalize_embeddings=True),
}
_SIMILARITIES = ("dot", "cosine")  # larger = closer (PML `is_inverted`)


def build_distance(name: str) -> distances.BaseDistance:
    """A fresh PML distance object for one of `DISTANCES`."""
    if name not in DISTANCES:
        raise ConfigError(f"unknown distance {name!r} (valid: {', '.join(DISTANCES)})")
    return DISTANCES[name]()


# ---------------------------------------------------------------------------------------------
# Parameter models


class ComponentConfig(BaseModel):
    """Base of every component's parameter model: `name` plus the constructor's keywords."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    target: ClassVar[type | None] = None  # the class this name builds
    name: str

    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments (everything but `name` and `distance`)."""
        return self.model_dump(exclude={"name", "distance"})


class _MetricComponent(ComponentConfig):
    """A loss or miner: has a PML distance; `accepted_distances` mirrors PML's assertions."""

    accepted_distances: ClassVar[tuple[str, ...]] = tuple(DISTANCES)
    distance_reason: ClassVar[str] = ""
    distance: DistanceName

    @model_validator(mode="after")
    def _check_distance(self) -> _MetricComponent:
        if self.distance not in self.accepted_distances:
            raise ValueError(f"distance: {self.name} accepts only {' or '.join(self.accepted_distances)}"
                             f" ({self.distance_reason}), got {self.distance!r}")
        return self


_LP_UNIT = "PML asserts LpDistance(p=2, power=1, normalize_embeddings=True)"


# Losses ---------------------------------------------------------------------------------------

class ContrastiveLossConfig(_MetricComponent):
    """PML ContrastiveLoss; margins are in the units of `distance`."""

    target: ClassVar[type] = losses.ContrastiveLoss
    name: Literal["contrastive"] = "contrastive"
    pos_margin: float = 0.0
    neg_margin: float = 1.0
    distance: DistanceName = "euclidean"

    @model_validator(mode="after")
    def _check_margins(self) -> ContrastiveLossConfig:
        if self.distance in _SIMILARITIES and not self.pos_margin > self.neg_margin:
            raise ValueError(
                f"pos_margin: with the similarity {self.distance!r} (larger = closer) pos_margin must "
                f"exceed neg_margin, e.g. pos_margin: 1.0, neg_margin: 0.0 (got {self.pos_margin}, "
                f"{self.neg_margin}); or use distance: euclidean")
        if self.distance not in _SIMILARITIES and not self.pos_margin < self.neg_margin:
            raise ValueError(
                f"pos_margin: with the distance {self.distance!r} pos_margin must be below neg_margin, "
                f"e.g. pos_margin: 0.0, neg_margin: 1.0 (got {self.pos_margin}, {self.neg_margin})")
        return self


class TripletLossConfig(_MetricComponent):
    """PML TripletMarginLoss. margin 0.05 is PML's default (GSV-Cities used 0.1, paper 000 1.0)."""

    target: ClassVar[type] = losses.TripletMarginLoss
    name: Literal["triplet"] = "triplet"
    margin: float = Field(0.05, ge=0)
    swap: bool = False
    smooth_loss: bool = False
    distance: DistanceName = "euclidean"


class MultiSimilarityLossConfig(_MetricComponent):
    """PML MultiSimilarityLoss with the GSV-Cities parameters (PML's defaults are 2, 50, 0.5)."""

    target: ClassVar[type] = losses.MultiSimilarityLoss
    name: Literal["multisimilarity"] = "multisimilarity"
    alpha: float = Field(1.0, gt=0)
    beta: float = Field(50.0, gt=0)
    base: float = 0.0
    distance: DistanceName = "cosine"


class AngularLossConfig(_MetricComponent):
    """PML AngularLoss; alpha is the angle in degrees (PML default 40)."""

    target: ClassVar[type] = losses.AngularLoss
    accepted_distances: ClassVar[tuple[str, ...]] = ("euclidean",)
    distance_reason: ClassVar[str] = _LP_UNIT
    name: Literal["angular"] = "angular"
    alpha: float = Field(40.0, gt=0, lt=90)
    distance: DistanceName = "euclidean"


class FastAPLossConfig(_MetricComponent):
    """PML FastAPLoss; histogram over [0, 2**power] of the normalised distance (PML default 10 bins)."""

    target: ClassVar[type] = losses.FastAPLoss
    accepted_distances: ClassVar[tuple[str, ...]] = ("euclidean", "squared_euclidean")
    distance_reason: ClassVar[str] = "PML asserts LpDistance(p=2, normalize_embeddings=True)"
    name: Literal["fastap"] = "fastap"
    num_bins: int = Field(10, ge=1)
    distance: DistanceName = "squared_euclidean"


class NTXentLossConfig(_MetricComponent):
    """PML NTXentLoss (PML default temperature 0.07, the MoCo value)."""

    target: ClassVar[type] = losses.NTXentLoss
    name: Literal["ntxent"] = "ntxent"
    temperature: float = Field(0.07, gt=0)
    distance: DistanceName = "cosine"


LOSSES: dict[str, type[_MetricComponent]] = {
    "contrastive": ContrastiveLossConfig,
    "triplet": TripletLossConfig,
    "multisimilarity": MultiSimilarityLossConfig,
    "angular": AngularLossConfig,
    "fastap": FastAPLossConfig,
    "ntxent": NTXentLossConfig,
}


# Miners ---------------------------------------------------------------------------------------

class NoMinerConfig(ComponentConfig):
    """No mining: the loss sees every pair/triplet of the batch."""

    name: Literal["none"] = "none"


class MultiSimilarityMinerConfig(_MetricComponent):
    """PML MultiSimilarityMiner; epsilon in units of `distance` (GSV-Cities: 0.1 with cosine)."""

    target: ClassVar[type] = miners.MultiSimilarityMiner
    name: Literal["multisimilarity"] = "multisimilarity"
    epsilon: float = Field(0.1, ge=0)
    distance: DistanceName = "cosine"


class AngularMinerConfig(_MetricComponent):
    """PML AngularMiner; keeps triplets whose angle exceeds `angle` degrees (PML default 20)."""

    target: ClassVar[type] = miners.AngularMiner
    accepted_distances: ClassVar[tuple[str, ...]] = ("euclidean",)
    distance_reason: ClassVar[str] = _LP_UNIT
    name: Literal["angular"] = "angular"
    angle: float = Field(20.0, gt=0, lt=90)
    distance: DistanceName = "euclidean"


class BatchHardMinerConfig(_MetricComponent):
    """PML BatchHardMiner: hardest positive and hardest negative per anchor."""

    target: ClassVar[type] = miners.BatchHardMiner
    name: Literal["batchhard"] = "batchhard"
    distance: DistanceName = "euclidean"


Strategy = Literal["easy", "semihard", "hard", "all"]


class BatchEasyHardMinerConfig(_MetricComponent):
    """PML BatchEasyHardMiner (PML defaults: easy positives, semihard negatives)."""

    target: ClassVar[type] = miners.BatchEasyHardMiner
    name: Literal["batcheasyhard"] = "batcheasyhard"
    pos_strategy: Strategy = "easy"
    neg_strategy: Strategy = "semihard"
    distance: DistanceName = "euclidean"

    @model_validator(mode="after")
    def _check_strategies(self) -> BatchEasyHardMinerConfig:
        # The same combinations PML's constructor refuses, caught before any compute.
        pair = {self.pos_strategy, self.neg_strategy}
        if self.pos_strategy == self.neg_strategy == "semihard":
            raise ValueError("pos_strategy: pos_strategy and neg_strategy cannot both be 'semihard'")
        if pair == {"semihard", "all"}:
            raise ValueError("pos_strategy: 'semihard' cannot be combined with 'all' "
                             f"(got pos_strategy={self.pos_strategy}, neg_strategy={self.neg_strategy})")
        return self


class UniformHistogramMinerConfig(_MetricComponent):
    """PML UniformHistogramMiner (PML defaults: 100 bins, 10 positive and 10 negative pairs per bin)."""

    target: ClassVar[type] = miners.UniformHistogramMiner
    name: Literal["uniformhistogram"] = "uniformhistogram"
    num_bins: int = Field(100, ge=1)
    pos_per_bin: int = Field(10, ge=1)
    neg_per_bin: int = Field(10, ge=1)
    distance: DistanceName = "euclidean"


MINERS: dict[str, type[ComponentConfig]] = {
    "none": NoMinerConfig,
    "multisimilarity": MultiSimilarityMinerConfig,
    "angular": AngularMinerConfig,
    "batchhard": BatchHardMinerConfig,
    "batcheasyhard": BatchEasyHardMinerConfig,
    "uniformhistogram": UniformHistogramMinerConfig,
}


# Optimizers -----------------------------------------------------------------------------------

def _check_betas(betas: tuple[float, float]) -> None:
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas: each must be in [0, 1), got {list(betas)}")


class AdamConfig(ComponentConfig):
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


class SGDConfig(ComponentConfig):
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


class ASGDConfig(ComponentConfig):
    """torch.optim.ASGD with torch's defaults."""

    target: ClassVar[type] = torch.optim.ASGD
    name: Literal["asgd"] = "asgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lambd: float = Field(1e-4, ge=0)
    alpha: float = Field(0.75, ge=0)
    t0: float = Field(1e6, ge=0)


OPTIMIZERS: dict[str, type[ComponentConfig]] = {
    "adam": AdamConfig,
    "adamw": AdamWConfig,
    "sgd": SGDConfig,
    "asgd": ASGDConfig,
}


# Schedulers -----------------------------------------------------------------------------------

class _SchedulerBase(ComponentConfig):
    per_batch: ClassVar[bool] = False  # stepped after every optimizer step, else after every epoch
    warmup_steps: int = Field(0, ge=0)


class NoSchedulerConfig(_SchedulerBase):
    """Constant learning rate (warmup still applies)."""

    name: Literal["none"] = "none"


class MultiStepConfig(_SchedulerBase):
    """torch MultiStepLR; milestones in epochs. Defaults: the GSV-Cities recipe."""

    target: ClassVar[type] = torch.optim.lr_scheduler.MultiStepLR
    name: Literal["multistep"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [5, 10, 15, 25, 45])
    gamma: float = Field(0.3, gt=0)

    @model_validator(mode="after")
    def _milestones(self) -> MultiStepConfig:
        ms = self.milestones
        if any(m < 1 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones: must be strictly increasing epochs >= 1, got {ms}")
        return self


class PlateauConfig(_SchedulerBase):
    """torch ReduceLROnPlateau; the mode follows the monitored metric (torch's factor/patience defaults)."""

    target: ClassVar[type] = torch.optim.lr_scheduler.ReduceLROnPlateau
    name: Literal["plateau"] = "plateau"
    monitor: Literal["train_loss", "val_recall@1"] = "train_loss"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    min_lr: float = Field(0.0, ge=0)

    @property
    def mode(self) -> str:
        """'min' for a loss, 'max' for a recall."""
        return "min" if self.monitor == "train_loss" else "max"


class CosineConfig(_SchedulerBase):
    """torch CosineAnnealingLR; T_max in epochs, None = the run's number of epochs."""

    target: ClassVar[type] = torch.optim.lr_scheduler.CosineAnnealingLR
    name: Literal["cosine"] = "cosine"
    T_max: int | None = Field(None, ge=1)
    eta_min: float = Field(0.0, ge=0)


class CyclicConfig(_SchedulerBase):
    """torch CyclicLR, stepped per optimizer step.

    base_lr None = the optimizer's lr. Give the half-cycle either in optimizer steps
    (`step_size_up`, torch default 2000) or in epochs (`step_size_up_epochs`, converted with the
    run's steps per epoch; paper 003 cycled once per epoch: step_size_up_epochs 1).
    """

    target: ClassVar[type] = torch.optim.lr_scheduler.CyclicLR
    per_batch: ClassVar[bool] = True
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


SCHEDULERS: dict[str, type[_SchedulerBase]] = {
    "none": NoSchedulerConfig,
    "multistep": MultiStepConfig,
    "plateau": PlateauConfig,
    "cosine": CosineConfig,
    "cyclic": CyclicConfig,
}


# Tagged unions: `{name: ..., params...}`, and the shorthand `name` for all-default params.

def _name_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def _union(registry: Mapping[str, type[BaseModel]]) -> Any:
    return Annotated[Union[tuple(registry.values())], Field(discriminator="name"),  # noqa: UP007
                     BeforeValidator(_name_shorthand)]


LossConfig = _union(LOSSES)
MinerConfig = _union(MINERS)
OptimizerConfig = _union(OPTIMIZERS)
SchedulerConfig = _union(SCHEDULERS)

_KINDS: dict[str, tuple[dict[str, type[BaseModel]], Any]] = {
    "loss": (LOSSES, LossConfig),
    "miner": (MINERS, MinerConfig),
    "optimizer": (OPTIMIZERS, OptimizerConfig),
    "scheduler": (SCHEDULERS, SchedulerConfig),
}


# ---------------------------------------------------------------------------------------------
# Validation errors -> messages with key paths


def _coerce(kind: str, cfg: Any) -> Any:
    """Accept a parameter model, a dict or a bare name; return the validated model."""
    registry, union = _KINDS[kind]
    if isinstance(cfg, BaseModel) and type(cfg) in registry.values():
        return cfg
    if isinstance(cfg, BaseModel):
        cfg = cfg.model_dump()
    try:
        return TypeAdapter(union).validate_python(cfg)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, {(): (kind, registry)}, prefix=(kind,))) from None


# ---------------------------------------------------------------------------------------------
# Builders


def build_loss(cfg: Any) -> losses.BaseMetricLossFunction:
    """The PML loss named by `cfg` (a LossConfig model, a dict or a name), with its distance."""
    cfg = _coerce("loss", cfg)
    return cfg.target(distance=build_distance(cfg.distance), **cfg.params())


def build_miner(cfg: Any) -> miners.BaseMiner | None:
    """The PML miner named by `cfg`, or None for `none`."""
    cfg = _coerce("miner", cfg)
    if cfg.name == "none":
        return None
    return cfg.target(distance=build_distance(cfg.distance), **cfg.params())


def check_compatibility(loss_cfg: Any, miner_cfg: Any) -> None:
    """Raise ConfigError when a loss and a miner cannot work together (see the module docstring).

    Each component's own distance rules are checked when its model validates; this adds the
    rules that need both.
    """
    loss = _coerce("loss", loss_cfg)
    miner = _coerce("miner", miner_cfg)
    if miner.name == "none":
        return
    if (loss.distance == "dot") != (miner.distance == "dot"):
        loss_ok = [d for d in loss.accepted_distances if (d == "dot") == (miner.distance == "dot")]
        miner_ok = [d for d in miner.accepted_distances if (d == "dot") == (loss.distance == "dot")]
        fixes = []
        if miner_ok:
            fixes.append(f"miner.distance: {' or '.join(miner_ok)}")
        if loss_ok:
            fixes.append(f"loss.distance: {' or '.join(loss_ok)}")
        raise ConfigError(
            f"loss.distance / miner.distance: loss {loss.name!r} uses {loss.distance!r} but miner "
            f"{miner.name!r} uses {miner.distance!r}; 'dot' is not normalised and the others are, so the "
            f"miner would rank hardness differently from what the loss optimises. Use "
            f"{' or '.join(fixes)}")


def build_optimizer(cfg: Any, params: Iterable[torch.nn.Parameter] | Iterable[dict]) -> torch.optim.Optimizer:
    """The torch optimizer named by `cfg` over `params` (parameters or parameter groups)."""
    cfg = _coerce("optimizer", cfg)
    kwargs = cfg.params()
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return cfg.target(params, **kwargs)


class SchedulerDriver:
    """One object the trainer steps without branching on the scheduler kind.

    Call `step_batch()` after every optimizer step and `step_epoch(metrics)` after every epoch
    (metrics: e.g. {"train_loss": 0.3, "val_recall@1": 61.2}; only `plateau` reads one). Per-epoch
    schedulers step in `step_epoch`, `cyclic` in `step_batch`. Warmup composes multiplicatively:
    the wrapped torch scheduler always sees and updates the un-warmed ("scheduled") LR, and the
    optimizer gets scheduled LR x warmup factor, so no torch scheduler is chained onto another.

    Resume: build the driver on a freshly built optimizer, then load the optimizer's and the
    driver's state dicts (either order).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any, *, name: str,
                 per_batch: bool = False, warmup_steps: int = 0, monitor: str | None = None) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.name = name
        self.per_batch = per_batch
        self.warmup_steps = int(warmup_steps)
        self.monitor = monitor
        self.batch_steps = 0
        self.epochs_done = 0
        self._scheduled = [float(g["lr"]) for g in optimizer.param_groups]
        self._apply()

    def __repr__(self) -> str:
        timing = "per batch" if self.per_batch else "per epoch"
        return (f"SchedulerDriver({self.name}, {timing}, warmup_steps={self.warmup_steps}, "
                f"steps={self.batch_steps}, epochs={self.epochs_done}, lr={self.current_lr():.3g})")

    def warmup_factor(self) -> float:
        """Multiplier of the LR for the next optimizer step: (k+1)/warmup_steps for step k, then 1."""
        if self.warmup_steps <= 0 or self.batch_steps >= self.warmup_steps:
            return 1.0
        return (self.batch_steps + 1) / self.warmup_steps

    def _apply(self) -> None:
        factor = self.warmup_factor()
        for group, lr in zip(self.optimizer.param_groups, self._scheduled):
            group["lr"] = lr * factor

    def _step_scheduler(self, *args: Any) -> None:
        # Let the torch scheduler read the un-warmed LR, then record what it set.
        for group, lr in zip(self.optimizer.param_groups, self._scheduled):
            group["lr"] = lr
        self.scheduler.step(*args)
        self._scheduled = [float(g["lr"]) for g in self.optimizer.param_groups]

    def step_batch(self) -> None:
        """After each optimizer step: advance warmup and per-batch schedulers."""
        self.batch_steps += 1
        if self.per_batch and self.scheduler is not None:
            self._step_scheduler()
        self._apply()

    def step_epoch(self, metrics: Mapping[str, float] | None = None) -> None:
        """After each epoch: advance per-epoch schedulers (plateau reads `metrics[monitor]`)."""
        self.epochs_done += 1
        if not self.per_batch and self.scheduler is not None:
            if self.monitor is not None:
                if not metrics or self.monitor not in metrics:
                    raise ValueError(f"scheduler {self.name!r} monitors {self.monitor!r} but step_epoch got "
                                     f"{sorted(metrics or {})}")
                self._step_scheduler(float(metrics[self.monitor]))
            else:
                self._step_scheduler()
        self._apply()

    def current_lr(self) -> float:
        """The LR of the first parameter group, as the next optimizer step will use it."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same LR trajectory."""
        return {
            "name": self.name,
            "warmup_steps": self.warmup_steps,
            "batch_steps": self.batch_steps,
            "epochs_done": self.epochs_done,
            "scheduled_lrs": list(self._scheduled),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; refuses a state saved for another scheduler or warmup."""
        if state["name"] != self.name or state["warmup_steps"] != self.warmup_steps:
            raise ValueError(f"scheduler state is for {state['name']!r} with warmup_steps {state['warmup_steps']}, "
                             f"this driver is {self.name!r} with warmup_steps {self.warmup_steps}")
        if self.scheduler is not None:
            # CyclicLR.load_state_dict pops keys from its argument: give it a copy.
            self.scheduler.load_state_dict(copy.deepcopy(state["scheduler"]))
        self.batch_steps = int(state["batch_steps"])
        self.epochs_done = int(state["epochs_done"])
        self._scheduled = [float(x) for x in state["scheduled_lrs"]]
        self._apply()


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    epochs: int) -> SchedulerDriver:
    """A SchedulerDriver for the scheduler named by `cfg`, on a freshly built `optimizer`.

    `steps_per_epoch` (optimizer steps) converts epoch units to steps; `epochs` is the default
    cosine T_max.
    """
    cfg = _coerce("scheduler", cfg)
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch}, {epochs}")
    lr_sched = torch.optim.lr_scheduler
    scheduler: Any = None
    monitor = None
    if cfg.name == "multistep":
        scheduler = lr_sched.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    elif cfg.name == "plateau":
        scheduler = lr_sched.ReduceLROnPlateau(optimizer, mode=cfg.mode, factor=cfg.factor,
                                               patience=cfg.patience, min_lr=cfg.min_lr)
        monitor = cfg.monitor
    elif cfg.name == "cosine":
        scheduler = lr_sched.CosineAnnealingLR(optimizer, T_max=cfg.T_max or epochs, eta_min=cfg.eta_min)
    elif cfg.name == "cyclic":
        base_lr = cfg.base_lr if cfg.base_lr is not None else float(optimizer.param_groups[0]["lr"])
        if not base_lr < cfg.max_lr:
            raise ConfigError(f"scheduler.base_lr: the cyclic base LR ({base_lr}, the optimizer's lr when "
                              f"unset) must be below scheduler.max_lr ({cfg.max_lr})")
        if cfg.cycle_momentum and "momentum" not in optimizer.defaults:
            raise ConfigError(f"scheduler.cycle_momentum: needs an optimizer with momentum (sgd), "
                              f"got {type(optimizer).__name__}")
        step_size_up = cfg.step_size_up or max(1, round(cfg.step_size_up_epochs * steps_per_epoch))
        scheduler = lr_sched.CyclicLR(optimizer, base_lr=base_lr, max_lr=cfg.max_lr,
                                      step_size_up=step_size_up, mode=cfg.mode,
                                      cycle_momentum=cfg.cycle_momentum)
    return SchedulerDriver(optimizer, scheduler, name=cfg.name, per_batch=cfg.per_batch,
                           warmup_steps=cfg.warmup_steps, monitor=monitor)
