"""CosPlace head: per-location L2, GeM, linear projection, L2.

Berton, Masone, Caputo, "Rethinking Visual Geo-localization for Large-Scale Applications",
CVPR 2022. The per-location L2 before GeM follows the CosPlace release (and GSV-Cities' port of
it). out_dim = out_dim.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2
from pipeline.models.aggregators.gem import gem_pool


class CosPlaceHead(Aggregator):
    """L2 over channels at each location, GeM (learnable p=3), Linear, L2."""

    name = "cosplace"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, out_dim: int = 512) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.p = nn.Parameter(torch.tensor([3.0]))
        self.eps = 1e-6
        self.fc = nn.Linear(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = gem_pool(F.normalize(x.float(), p=2.0, dim=1), self.p, self.eps)
        return l2(self.fc(x))


class CosPlaceConfig(BaseAggregatorConfig):
    """CosPlace head: GeM + linear projection to `out_dim`."""

    target: ClassVar[type] = CosPlaceHead
    name: Literal["cosplace"] = "cosplace"
    out_dim: int = Field(512, ge=1)
