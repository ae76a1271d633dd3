"""What every aggregator shares: the parameter-model base and the float32 L2 normalisation.

An aggregator maps a feature map (B, C, H, W) to an L2-normalised descriptor (B, out_dim) in
float32. Each one is a file in this package with its paper, its parameter model (validated with
the run config, before any compute) and its nn.Module; the model's `build(c, h, w)` sizes the
module from the real backbone output.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.components.base import ComponentConfig


def l2(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows in float32: bf16 has ~3 significant digits, too coarse for unit norms."""
    return F.normalize(x.float(), p=2.0, dim=1)


class Aggregator(nn.Module):
    """Base class of the modules: remembers the feature map it was built for; sets `out_dim`."""

    name = ""
    out_dim: int
    # True for an aggregator that also reads the backbone's global token (`forward(x, token)`).
    uses_token: ClassVar[bool] = False

    def __init__(self, in_channels: int, in_h: int, in_w: int) -> None:
        super().__init__()
        self.in_channels, self.in_h, self.in_w = in_channels, in_h, in_w


class BaseAggregatorConfig(ComponentConfig):
    """Base of the aggregators' parameter models: `build` passes every field to the module."""

    target: ClassVar[type[Aggregator]]

    def build(self, in_channels: int, in_h: int, in_w: int) -> Aggregator:
        """The module for a (in_channels, in_h, in_w) feature map."""
        return self.target(in_channels, in_h, in_w, **self.params())
