"""VPRModel = backbone + aggregator; `build_model(model_cfg)` and `model_from_config(run_cfg)` build it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.models.aggregators import AGGREGATORS, Aggregator, aggregator_defaults, build_aggregator
from pipeline.models.backbones import ResNetBackbone, build_backbone
from pipeline.models.dinov2 import DINOV2, DinoV2Backbone

if TYPE_CHECKING:  # the config imports the aggregators' parameter models from here: no runtime cycle
    from pipeline.config import ModelConfig, RunConfig


class VPRModel(nn.Module):
    """Images (B, 3, H, W) -> L2-normalised float32 descriptors (B, descriptor_dim).

    `feature_shape` is the backbone's (C, H, W) output for `image_size`, measured at build time.
    """

    def __init__(self, backbone: ResNetBackbone | DinoV2Backbone, aggregator: Aggregator, feature_shape: tuple[int, int, int],
                 image_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator
        self.feature_shape = tuple(feature_shape)
        self.image_size = tuple(image_size)
        self.descriptor_dim: int = aggregator.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, descriptor_dim) unit-norm float32 descriptors."""
        if not self.aggregator.uses_token:
            return self.aggregator(self.backbone(images))
        if isinstance(self.backbone, DinoV2Backbone):  # a ViT's class token is its global token
            return self.aggregator(*self.backbone.forward_features(images))
        return self.aggregator(self.backbone(images), None)

    def extra_repr(self) -> str:
        c, h, w = self.feature_shape
        return (f"backbone={self.backbone.name} (crop {list(self.backbone.layers_to_crop)}, "
                f"frozen {len(self.backbone.frozen_modules)} modules), image={self.image_size[0]}x{self.image_size[1]}, "
                f"feature_map={c}x{h}x{w}, aggregator={self.aggregator.name}, descriptor_dim={self.descriptor_dim}")

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
        """The trainable parameters as optimizer groups: the aggregator's first (at `lr`, the group
        whose LR the run logs), then the backbone's (at `lr * backbone_lr_scale`), as BoQ's
        training code groups them (amaralibey/Bag-of-Queries src/model.py configure_optimizers).
        At scale 1 one group, in module order, as before groups existed (same checkpoints)."""
        if backbone_lr_scale == 1.0:
            return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]
        groups = [{"params": [p for p in self.aggregator.parameters() if p.requires_grad], "lr": lr},
                  {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr * backbone_lr_scale}]
        return [g for g in groups if g["params"]]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickling a stored network (models.storage keeps bf16-evaluated runs' convolution and
        # linear weights in bf16): hand back an fp32 module, which runs with or without autocast.
        super().__setstate__(state)
        self._apply(lambda t: t.float() if t.dtype == torch.bfloat16 else t)

    def __repr__(self) -> str:
        # One line: the full module tree is a print(model.backbone) away.
        return f"VPRModel({self.extra_repr()})"


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (str, bytes)) or not isinstance(image_size, Sequence) or len(image_size) != 2 \
            or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in image_size):
        raise ValueError(f"image_size must be [height, width] of positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def build_model(model_cfg: ModelConfig, image_size: Sequence[int] = (320, 320),
                pretrained: str | os.PathLike | None = None) -> VPRModel:
    """The `model:` section of a run config as a VPRModel for images of `image_size` (height, width).

    The aggregator is sized from a dummy forward of the backbone at `image_size`. `pretrained`
    replaces `model_cfg.pretrained` (e.g. 'none' when a checkpoint's weights will be loaded).
    Missing or mismatched weights raise here, before any training, naming the file.
    """
    size = _check_image_size(image_size)
    if model_cfg.backbone in DINOV2:
        net = DinoV2Backbone(model_cfg.backbone, pretrained or model_cfg.pretrained, model_cfg.num_unfrozen_blocks)
    else:
        net = build_backbone(model_cfg.backbone, pretrained or model_cfg.pretrained, model_cfg.layers_to_crop,
                             model_cfg.layers_to_freeze, model_cfg.frozen_bn)
    c, h, w = net.feature_shape(size)
    return VPRModel(net, build_aggregator(model_cfg.aggregator, c, h, w), (c, h, w), size)


def model_from_config(cfg: RunConfig, pretrained: str | None = None) -> VPRModel:
    """The run's model: `cfg.model` for `cfg.data.image_size` (`pretrained='none'` before loading a checkpoint)."""
    return build_model(cfg.model, tuple(cfg.data.image_size), pretrained)


def describe_output_dims(image_size: tuple[int, int] = (320, 320), backbone: str = "resnet18",
                         layers_to_crop: Sequence[int] = (4,)) -> list[dict[str, Any]]:
    """Descriptor size of every aggregator with default params on `backbone` cut per `layers_to_crop`.

    Rows: aggregator, params (defaults), feature_map "CxHxW", descriptor_dim (checked with a forward
    on a dummy feature map), trainable_params of the aggregator. Random weights; nothing is loaded.
    """
    size = _check_image_size(image_size)
    net = build_backbone(backbone, "none", layers_to_crop, 0)
    c, h, w = net.feature_shape(size)
    rows = []
    for name in AGGREGATORS:
        agg = build_aggregator(name, c, h, w)
        with torch.no_grad():
            dim = agg(torch.rand(1, c, h, w)).shape[1]
        if dim != agg.out_dim:  # guards the out_dim formula against the real computation
            raise AssertionError(f"{name}: out_dim {agg.out_dim} but forward gives {dim}")
        rows.append({"aggregator": name, "params": aggregator_defaults(name), "feature_map": f"{c}x{h}x{w}",
                     "descriptor_dim": dim, "trainable_params": sum(p.numel() for p in agg.parameters())})
    return rows


def output_dims_markdown(image_size: tuple[int, int] = (320, 320), backbone: str = "resnet18",
                         layers_to_crop: Sequence[int] = (4,)) -> str:
    """`describe_output_dims` as a Markdown table (used to write docs/models.md)."""
    lines = ["| aggregator | default params | feature map | descriptor dim | trainable params |",
             "|---|---|---|---|---|"]
    for row in describe_output_dims(image_size, backbone, layers_to_crop):
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "-"
        lines.append(f"| {row['aggregator']} | {params} | {row['feature_map']} | {row['descriptor_dim']} "
                     f"| {row['trainable_params']:,} |")
    return "\n".join(lines)
