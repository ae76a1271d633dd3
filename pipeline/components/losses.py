"""Losses, miners and distances by name, and the check that a loss and a miner fit together.

Every loss and miner is a pytorch-metric-learning (PML) object built by its parameter model's
`build()`; parameter names are the constructor's keyword names.

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
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.components.base import ComponentConfig, coerce, tagged_union
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pytorch_metric_learning import distances, losses, miners

__all__ = [
    "DISTANCES", "LOSSES", "MINERS", "LossConfig", "MinerConfig", "build_distance", "build_loss",
    "build_miner", "check_compatibility",
]


# ---------------------------------------------------------------------------------------------
# Distances

DistanceName = Literal["dot", "cosine", "euclidean", "squared_euclidean"]

# name -> (PML class in pytorch_metric_learning.distances, its keyword arguments)
DISTANCES: dict[str, tuple[str, dict[str, Any]]] = {
    "dot": ("DotProductSimilarity", {"normalize_embeddings": False}),
    "cosine": ("CosineSimilarity", {}),
    "euclidean": ("LpDistance", {"p": 2, "power": 1, "normalize_embeddings": True}),
    "squared_euclidean": ("LpDistance", {"p": 2, "power": 2, "normalize_embeddings": True}),
}
_SIMILARITIES = ("dot", "cosine")  # larger = closer (PML `is_inverted`)


def build_distance(name: str) -> distances.BaseDistance:
    """A fresh PML distance object for one of `DISTANCES`."""
    if name not in DISTANCES:
        raise ConfigError(f"unknown distance {name!r} (valid: {', '.join(DISTANCES)})")
    cls, kwargs = DISTANCES[name]
    return pml_class(f"distances.{cls}")(**kwargs)


def pml_class(path: str) -> type:
    """The PML class at `path` ("losses.X", "miners.X", "distances.X"), imported on first use:
    validating a config never needs the library (about 0.7 s to import)."""
    module, _, name = path.partition(".")
    return getattr(importlib.import_module(f"pytorch_metric_learning.{module}"), name)


# ---------------------------------------------------------------------------------------------
# Parameter models

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

    def build(self) -> Any:
        """The PML object this model describes, with its distance."""
        return self.target_class()(distance=build_distance(self.distance), **self.params())

    @classmethod
    def target_class(cls) -> type:
        """The PML class this model builds (its `target`, imported on first use)."""
        return pml_class(cls.target)


_LP_UNIT = "PML asserts LpDistance(p=2, power=1, normalize_embeddings=True)"


# Losses ---------------------------------------------------------------------------------------

class ContrastiveLossConfig(_MetricComponent):
    """PML ContrastiveLoss; margins are in the units of `distance`."""

    target: ClassVar[str] = "losses.ContrastiveLoss"
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

    target: ClassVar[str] = "losses.TripletMarginLoss"
    name: Literal["triplet"] = "triplet"
    margin: float = Field(0.05, ge=0)
    swap: bool = False
    smooth_loss: bool = False
    distance: DistanceName = "euclidean"


class MultiSimilarityLossConfig(_MetricComponent):
    """PML MultiSimilarityLoss with the GSV-Cities parameters (PML's defaults are 2, 50, 0.5)."""

    target: ClassVar[str] = "losses.MultiSimilarityLoss"
    name: Literal["multisimilarity"] = "multisimilarity"
    alpha: float = Field(1.0, gt=0)
    beta: float = Field(50.0, gt=0)
    base: float = 0.0
    distance: DistanceName = "cosine"


class AngularLossConfig(_MetricComponent):
    """PML AngularLoss; alpha is the angle in degrees (PML default 40)."""

    target: ClassVar[str] = "losses.AngularLoss"
    accepted_distances: ClassVar[tuple[str, ...]] = ("euclidean",)
    distance_reason: ClassVar[str] = _LP_UNIT
    name: Literal["angular"] = "angular"
    alpha: float = Field(40.0, gt=0, lt=90)
    distance: DistanceName = "euclidean"


class FastAPLossConfig(_MetricComponent):
    """PML FastAPLoss; histogram over [0, 2**power] of the normalised distance (PML default 10 bins)."""

    target: ClassVar[str] = "losses.FastAPLoss"
    accepted_distances: ClassVar[tuple[str, ...]] = ("euclidean", "squared_euclidean")
    distance_reason: ClassVar[str] = "PML asserts LpDistance(p=2, normalize_embeddings=True)"
    name: Literal["fastap"] = "fastap"
    num_bins: int = Field(10, ge=1)
    distance: DistanceName = "squared_euclidean"


class NTXentLossConfig(_MetricComponent):
    """PML NTXentLoss (PML default temperature 0.07, the MoCo value)."""

    target: ClassVar[str] = "losses.NTXentLoss"
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

    def build(self) -> None:
        """No miner object: the trainer calls the loss on the whole batch."""
        return None


class MultiSimilarityMinerConfig(_MetricComponent):
    """PML MultiSimilarityMiner; epsilon in units of `distance` (GSV-Cities: 0.1 with cosine)."""

    target: ClassVar[str] = "miners.MultiSimilarityMiner"
    name: Literal["multisimilarity"] = "multisimilarity"
    epsilon: float = Field(0.1, ge=0)
    distance: DistanceName = "cosine"


class AngularMinerConfig(_MetricComponent):
    """PML AngularMiner; keeps triplets whose angle exceeds `angle` degrees (PML default 20)."""

    target: ClassVar[str] = "miners.AngularMiner"
    accepted_distances: ClassVar[tuple[str, ...]] = ("euclidean",)
    distance_reason: ClassVar[str] = _LP_UNIT
    name: Literal["angular"] = "angular"
    angle: float = Field(20.0, gt=0, lt=90)
    distance: DistanceName = "euclidean"


class BatchHardMinerConfig(_MetricComponent):
    """PML BatchHardMiner: hardest positive and hardest negative per anchor."""

    target: ClassVar[str] = "miners.BatchHardMiner"
    name: Literal["batchhard"] = "batchhard"
    distance: DistanceName = "euclidean"


Strategy = Literal["easy", "semihard", "hard", "all"]


class BatchEasyHardMinerConfig(_MetricComponent):
    """PML BatchEasyHardMiner (PML defaults: easy positives, semihard negatives)."""

    target: ClassVar[str] = "miners.BatchEasyHardMiner"
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

    target: ClassVar[str] = "miners.UniformHistogramMiner"
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


LossConfig = tagged_union(LOSSES)
MinerConfig = tagged_union(MINERS)


def build_loss(cfg: Any) -> losses.BaseMetricLossFunction:
    """The PML loss named by `cfg` (a LossConfig model, a dict or a name), with its distance."""
    return coerce("loss", LOSSES, LossConfig, cfg).build()


def build_miner(cfg: Any) -> miners.BaseMiner | None:
    """The PML miner named by `cfg`, or None for `none`."""
    return coerce("miner", MINERS, MinerConfig, cfg).build()


def check_compatibility(loss_cfg: Any, miner_cfg: Any) -> None:
    """Raise ConfigError when a loss and a miner cannot work together (see the module docstring).

    Each component's own distance rules are checked when its model validates; this adds the
    rules that need both.
    """
    loss = coerce("loss", LOSSES, LossConfig, loss_cfg)
    miner = coerce("miner", MINERS, MinerConfig, miner_cfg)
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
