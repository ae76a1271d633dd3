"""MixVPR: feature mixing for visual place recognition.

Ali-bey, Chaib-draa, Giguère, "MixVPR: Feature Mixing for Visual Place Recognition", WACV 2023.
mix_depth Feature-Mixer MLPs over the flattened spatial positions, then a channel projection
C -> out_channels and a row projection H*W -> out_rows. out_dim = out_channels * out_rows.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2


class FeatureMixer(nn.Module):
    """One Feature-Mixer block on (B, C, N): x + MLP(LayerNorm(x)) over the N spatial positions."""

    def __init__(self, num_positions: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(num_positions * mlp_ratio))
        self.mix = nn.Sequential(
            nn.LayerNorm(num_positions),
            nn.Linear(num_positions, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_positions),
        )
        for module in self.mix:  # small init as in the MixVPR paper's code release
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(Aggregator):
    """MixVPR head, tied to the feature map size it was built for."""

    name = "mixvpr"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, out_channels: int = 512, mix_depth: int = 4,
                 mlp_ratio: float = 1.0, out_rows: int = 4) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.out_channels, self.mix_depth, self.mlp_ratio, self.out_rows = out_channels, mix_depth, mlp_ratio, out_rows
        num_positions = in_h * in_w
        self.mixers = nn.Sequential(*(FeatureMixer(num_positions, mlp_ratio) for _ in range(mix_depth)))
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(num_positions, out_rows)
        self.out_dim = out_channels * out_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != (self.in_h, self.in_w):
            raise ValueError(f"mixvpr was built for {self.in_h}x{self.in_w} feature maps, got "
                             f"{x.shape[2]}x{x.shape[3]}: use the image size the model was built with")
        x = self.mixers(x.flatten(2))                                # (B, C, HW)
        x = self.channel_proj(x.transpose(1, 2))                     # (B, HW, out_channels)
        x = self.row_proj(x.transpose(1, 2))                         # (B, out_channels, out_rows)
        return l2(x.flatten(1))

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}x{self.in_h}x{self.in_w}, out_channels={self.out_channels}, "
                f"mix_depth={self.mix_depth}, mlp_ratio={self.mlp_ratio:g}, out_rows={self.out_rows}")


class MixVPRConfig(BaseAggregatorConfig):
    """MixVPR feature mixer; input channels and h x w are taken from the backbone's feature map."""

    target: ClassVar[type] = MixVPR
    name: Literal["mixvpr"] = "mixvpr"
    out_channels: int = Field(512, ge=1)
    mix_depth: int = Field(4, ge=1)
    mlp_ratio: float = Field(1.0, gt=0)
    out_rows: int = Field(4, ge=1)
