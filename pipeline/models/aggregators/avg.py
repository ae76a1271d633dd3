"""Global average pooling + L2 (the GSV-Cities baseline "AVG"). out_dim = C."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2


class AvgPool(Aggregator):
    """Global average pooling + L2."""

    name = "avg"

    def __init__(self, in_channels: int, in_h: int, in_w: int) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.out_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2(x.float().mean(dim=(2, 3)))


class AvgConfig(BaseAggregatorConfig):
    """Global average pooling (+ L2 normalisation); no parameters."""

    target: ClassVar[type] = AvgPool
    name: Literal["avg"] = "avg"
