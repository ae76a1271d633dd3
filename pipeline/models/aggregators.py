"""Aggregators: feature map (B, C, H, W) -> L2-normalised descriptor (B, out_dim), float32.

Every aggregator is built from the real backbone output (`in_channels`, `in_h`, `in_w`) plus its
own keyword parameters, exposes `out_dim`, and does its final L2 normalisation in float32 so the
descriptors are unit-norm under bf16 autocast too.

- `avg`      global average pooling. out_dim = C.
- `gem`      GeM pooling (Radenovic et al.), learnable p. out_dim = C.
- `mixvpr`   MixVPR (Ali-bey et al., WACV 2023): Feature-Mixer MLPs over the flattened spatial
             dim, then channel and row projections. out_dim = out_channels * out_rows.
- `cosplace` CosPlace head (Berton et al., CVPR 2022): per-location L2, GeM, Linear. out_dim = out_dim.
- `convap`   Conv-AP (Ali-bey et al., GSV-Cities 2022): 1x1 conv, adaptive avg pool to s1 x s2.
             out_dim = out_channels * s1 * s2.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _l2(x: torch.Tensor) -> torch.Tensor:
    # float32: bf16 has ~3 significant digits, too coarse for unit norms and cosine ranking.
    return F.normalize(x.float(), p=2.0, dim=1)


def _positive_int(aggregator: str, param: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"aggregator {aggregator!r}: {param} must be a positive int, got {value!r}")
    return value


def _positive_float(aggregator: str, param: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"aggregator {aggregator!r}: {param} must be a positive number, got {value!r}")
    return float(value)


class Aggregator(nn.Module):
    """Base class: checks the feature map size; subclasses set `out_dim`."""

    name = ""
    out_dim: int

    def __init__(self, in_channels: int, in_h: int, in_w: int) -> None:
        super().__init__()
        self.in_channels = _positive_int(self.name, "in_channels", in_channels)
        self.in_h = _positive_int(self.name, "in_h", in_h)
        self.in_w = _positive_int(self.name, "in_w", in_w)


class AvgPool(Aggregator):
    """Global average pooling + L2."""

    name = "avg"

    def __init__(self, in_channels: int, in_h: int, in_w: int) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.out_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _l2(x.float().mean(dim=(2, 3)))


def gem_pool(x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
    """Generalised mean over H, W: mean(clamp(x, eps)^p)^(1/p), computed in float32. (B, C)."""
    p = p.float()
    return x.float().clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GeM(Aggregator):
    """GeM pooling with a learnable exponent p + L2."""

    name = "gem"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.p = nn.Parameter(torch.tensor([_positive_float(self.name, "p", p)]))
        self.eps = _positive_float(self.name, "eps", eps)
        self.out_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _l2(gem_pool(x, self.p, self.eps))

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class FeatureMixer(nn.Module):
    """One MixVPR Feature-Mixer block on (B, C, N): x + MLP(LayerNorm(x)) over the N spatial positions."""

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
    """MixVPR: mix_depth Feature-Mixers, channel projection C -> out_channels, row projection
    H*W -> out_rows, flatten, L2. Tied to the feature map size it was built for."""

    name = "mixvpr"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, out_channels: int = 512, mix_depth: int = 4,
                 mlp_ratio: float = 1, out_rows: int = 4) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.out_channels = _positive_int(self.name, "out_channels", out_channels)
        self.mix_depth = _positive_int(self.name, "mix_depth", mix_depth)
        self.mlp_ratio = _positive_float(self.name, "mlp_ratio", mlp_ratio)
        self.out_rows = _positive_int(self.name, "out_rows", out_rows)
        num_positions = in_h * in_w
        self.mixers = nn.Sequential(*(FeatureMixer(num_positions, self.mlp_ratio) for _ in range(mix_depth)))
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
        return _l2(x.flatten(1))

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}x{self.in_h}x{self.in_w}, out_channels={self.out_channels}, "
                f"mix_depth={self.mix_depth}, mlp_ratio={self.mlp_ratio:g}, out_rows={self.out_rows}")


class CosPlaceHead(Aggregator):
    """CosPlace head: L2 over channels at each location, GeM (learnable p=3), Linear, L2.

    The per-location L2 before GeM follows the CosPlace release (and GSV-Cities' port of it).
    """

    name = "cosplace"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, out_dim: int = 512) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.p = nn.Parameter(torch.tensor([3.0]))
        self.eps = 1e-6
        self.fc = nn.Linear(in_channels, _positive_int(self.name, "out_dim", out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = gem_pool(F.normalize(x.float(), p=2.0, dim=1), self.p, self.eps)
        return _l2(self.fc(x))


class ConvAP(Aggregator):
    """Conv-AP: 1x1 conv C -> out_channels, adaptive average pool to (s1, s2), flatten, L2."""

    name = "convap"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, out_channels: int = 512, s1: int = 2,
                 s2: int = 2) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.channel_pool = nn.Conv2d(in_channels, _positive_int(self.name, "out_channels", out_channels), 1)
        self.pool = nn.AdaptiveAvgPool2d((_positive_int(self.name, "s1", s1), _positive_int(self.name, "s2", s2)))
        self.out_dim = out_channels * s1 * s2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _l2(self.pool(self.channel_pool(x)).flatten(1))


AGGREGATORS: dict[str, type[Aggregator]] = {
    "avg": AvgPool,
    "gem": GeM,
    "mixvpr": MixVPR,
    "cosplace": CosPlaceHead,
    "convap": ConvAP,
}


def aggregator_defaults(name: str) -> dict[str, Any]:
    """The tunable keyword parameters of aggregator `name` with their defaults."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; valid aggregators: {', '.join(AGGREGATORS)}")
    signature = inspect.signature(AGGREGATORS[name].__init__)
    return {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}


def build_aggregator(name: str, in_channels: int, in_h: int, in_w: int,
                     params: Mapping[str, Any] | None = None) -> Aggregator:
    """Build aggregator `name` for a (in_channels, in_h, in_w) feature map.

    Raises ValueError for an unknown name, an unknown parameter (listing the valid ones) or an
    invalid value (naming it). `params` is not modified.
    """
    valid = aggregator_defaults(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(f"{k} (default {v!r})" for k, v in valid.items()) or "none"
        raise ValueError(f"aggregator {name!r} has no parameter(s) {', '.join(unknown)}; valid parameters: {listed}")
    return AGGREGATORS[name](in_channels, in_h, in_w, **params)
