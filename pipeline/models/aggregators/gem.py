"""GeM: generalised-mean pooling with a learnable exponent.

Radenović, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2019.
out_dim = C.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2


def gem_pool(x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
    """Generalised mean over H, W: mean(clamp(x, eps)^p)^(1/p), computed in float32. (B, C)."""
    p = p.float()
    return x.float().clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GeM(Aggregator):
    """GeM pooling with a learnable exponent p + L2."""

    name = "gem"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.p = nn.Parameter(torch.tensor([float(p)]))
        self.eps = eps
        self.out_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2(gem_pool(x, self.p, self.eps))

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class GeMConfig(BaseAggregatorConfig):
    """Generalised mean pooling; p is learnable, initialised to `p`."""

    target: ClassVar[type] = GeM
    name: Literal["gem"] = "gem"
    p: float = Field(3.0, gt=0)
    eps: float = Field(1e-6, gt=0)
