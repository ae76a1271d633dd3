"""Conv-AP: 1x1 convolution, then adaptive average pooling to s1 x s2.

Ali-bey, Chaib-draa, Giguère, "GSV-Cities: Toward Appropriate Supervised Visual Place
Recognition", Neurocomputing 2022. out_dim = out_channels * s1 * s2.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2


class ConvAP(Aggregator):
    """1x1 conv C -> out_channels, adaptive average pool to (s1, s2), flatten, L2."""

    name = "convap"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, out_channels: int = 512, s1: int = 2,
                 s2: int = 2) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.channel_pool = nn.Conv2d(in_channels, out_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d((s1, s2))
        self.out_dim = out_channels * s1 * s2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2(self.pool(self.channel_pool(x)).flatten(1))


class ConvAPConfig(BaseAggregatorConfig):
    """Conv-AP: 1x1 conv to `out_channels`, adaptive average pooling to s1 x s2."""

    target: ClassVar[type] = ConvAP
    name: Literal["convap"] = "convap"
    out_channels: int = Field(512, ge=1)
    s1: int = Field(2, ge=1)
    s2: int = Field(2, ge=1)
