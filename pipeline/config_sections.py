"""The sections of a run config: `data`, `model`, `training`, `evaluation` (the component
sections `loss`, `miner`, `optimizer`, `scheduler` are the components' own parameter models).

Each section validates what it can alone; rules that span sections (a miner that fits the loss,
sizes DINOv2 needs) are `RunConfig`'s (`pipeline.config`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.data.augment import AugmentConfig
from pipeline.data.device_decode import decode_setting_problem
from pipeline.models.aggregators import AggregatorConfig
from pipeline.models.aggregators.avg import AvgConfig
from pipeline.models.backbones import BACKBONES, check_crop, check_freeze
from pipeline.models.dinov2 import DINOV2, DINOV2_DEPTH

__all__ = ["DataConfig", "EvaluationConfig", "ModelConfig", "Size", "TrainingConfig"]


Size = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]


class Section(BaseModel):
    """Base of the sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# Sections

_ROOT = Annotated[str, Field(min_length=1)]


class DataConfig(Section):
    """Where the data is and how training places are selected."""

    train_root: _ROOT = "data/embedded/gsv_xs"   # GSV-XS root (train/<City>/) or GSV-Cities root
    val_root: _ROOT = "data/embedded/sf_xs/val"  # evaluation split: database/ and queries/
    test_roots: dict[str, _ROOT] = Field(default_factory=lambda: {
        "sf_xs_test": "data/embedded/sf_xs/test", "tokyo_xs": "data/embedded/tokyo_xs/test"})
    cities: list[Annotated[str, Field(min_length=1)]] | None = None  # None = every city
    min_images_per_place: int = Field(4, ge=1)
    image_size: Size = (320, 320)  # [height, width] of training images
    num_workers: int = Field(4, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)  # training only (GSV-Cities RandAugment)
    image_cache: str | None = None  # folder of training images pre-resized to image_size (None: off)
    # loader: workers decode and resize (PIL); device: workers read JPEG bytes, the training device
    # decodes (nvjpeg on CUDA) and resizes. Training images only; evaluation decodes in the loader.
    decode: Literal["loader", "device"] = "loader"

    @model_validator(mode="after")
    def _decode_needs_pixels_nowhere_else(self) -> DataConfig:
        problem = decode_setting_problem(self.decode, self.image_cache,
                                         self.augment.enabled and self.augment.on == "loader")
        if problem:
            raise ValueError(f"decode: {problem}")
        return self

    @field_validator("test_roots")
    @classmethod
    def _test_names(cls, roots: dict[str, str]) -> dict[str, str]:
        # Test names become metric names (e.g. test_tokyo_xs_recall_at_1): keep them plain.
        bad = [k for k in roots if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", k)]
        if bad:
            raise ValueError(f"test set names may use letters, digits, _ . - only, got {bad}")
        return roots

    @field_validator("cities")
    @classmethod
    def _cities(cls, cities: list[str] | None) -> list[str] | None:
        # A set of cities: order and repeats do not matter, so canonicalise.
        if cities is not None and not cities:
            raise ValueError("an empty list selects no city; use null for all cities")
        return None if cities is None else sorted(set(cities))


class ModelConfig(Section):
    """Backbone (a torchvision ResNet cut and frozen GSV-Cities style, or a DINOv2 ViT with its
    last blocks trained) and aggregator."""

    backbone: str = "resnet18"  # a name of pipeline.models.backbones.BACKBONES or pipeline.models.dinov2.DINOV2
    # imagenet (ResNet) | dinov2 (DINOv2: Meta's weights) | none | path to a weights file
    pretrained: Annotated[str, Field(min_length=1)] = "imagenet"
    layers_to_crop: list[int] = Field(default_factory=lambda: [4])
    layers_to_freeze: int = Field(2, ge=0)  # stem + layer1..N frozen, only when pretrained (GSV-Cities)
    frozen_bn: Literal["train", "eval"] = "train"  # frozen BatchNorms: batch stats (GSV-Cities) or fixed
    # DINOv2: the last N transformer blocks train, the rest is frozen (BoQ and SALAD's rule).
    num_unfrozen_blocks: int = Field(2, ge=0)
    aggregator: AggregatorConfig = Field(default_factory=AvgConfig)

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, name: str) -> str:
        if name not in BACKBONES and name not in DINOV2:
            raise ValueError(f"unknown backbone {name!r} (valid: {', '.join([*BACKBONES, *DINOV2])})")
        return name

    @property
    def is_vit(self) -> bool:
        """True for a DINOv2 backbone (patch 14, no crop/freeze of ResNet layers)."""
        return self.backbone in DINOV2

    @model_validator(mode="after")
    def _vit(self) -> ModelConfig:
        if self.is_vit:
            if self.pretrained == "imagenet":
                raise ValueError("pretrained: 'imagenet' names torchvision's ResNet weights; a DINOv2 backbone takes "
                                 "'dinov2' (Meta's released weights), 'none' or a path to a weights file")
            if self.num_unfrozen_blocks > DINOV2_DEPTH:
                raise ValueError(f"num_unfrozen_blocks must be in 0..{DINOV2_DEPTH} ({self.backbone} has "
                                 f"{DINOV2_DEPTH} blocks), got {self.num_unfrozen_blocks}")
        elif self.pretrained == "dinov2":
            raise ValueError(f"pretrained: 'dinov2' is for DINOv2 backbones; {self.backbone} takes 'imagenet', "
                             "'none' or a path")
        return self

    @field_validator("layers_to_crop")
    @classmethod
    def _crop(cls, crop: list[int]) -> list[int]:
        return list(check_crop(crop))  # the backbone's own rule, defined once there

    @model_validator(mode="after")
    def _freeze(self) -> ModelConfig:
        try:
            check_freeze(self.layers_to_freeze, self.layers_to_crop)
        except ValueError as err:
            raise ValueError(f"layers_to_freeze: {err}") from None
        return self


class TrainingConfig(Section):
    """Batch composition, length and execution of training."""

    epochs: int = Field(30, ge=1)
    places_per_batch: int = Field(100, ge=2)  # P; >= 2 so every batch has negatives
    images_per_place: int = Field(4, ge=2)    # K; >= 2 so every batch has positives
    batches_per_epoch: int | None = Field(None, ge=1)  # None = one pass over the places
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on cuda and bf16-capable cpus
    channels_last: Literal["auto"] | bool = "auto"
    # torch.compile the model for the training step (the first step pays the compile: ~40 s on a
    # CPU, less on a GPU; measured on an H100: +46% model-only, +17% end to end, benchmarks/RESULTS.md)
    compile: bool = False
    # Learning rate of the backbone's parameters as a multiple of optimizer.lr (the aggregator's).
    backbone_lr_scale: float = Field(1.0, ge=0)
    max_grad_norm: float | None = Field(None, gt=0)
    log_every: int = Field(10, ge=1)


class EvaluationConfig(Section):
    """Validation and test protocol.

    `interpolation` names PIL's resampling filters (as pipeline.data.datasets uses), which
    antialias when shrinking. Every image is resized to `resize` so that batches stack.
    """

    resize: Size = (320, 320)  # [height, width]
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    recall_at: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    top_k: int = Field(20, ge=1)  # predictions saved per query
    batch_size: int = Field(64, ge=1)
    positive_radius_m: float = Field(25.0, gt=0)

    @field_validator("recall_at")
    @classmethod
    def _recall_at(cls, values: list[int]) -> list[int]:
        return sorted(set(values))
