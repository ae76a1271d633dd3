"""SALAD: Sinkhorn Algorithm for Locally Aggregated Descriptors.

Izquierdo, Civera, "Optimal Transport Aggregation for Visual Place Recognition", CVPR 2024.
Every local feature is scored against `num_clusters` clusters and a dustbin; an optimal-transport
assignment (3 Sinkhorn iterations in log space) turns the scores into soft assignments, the
reduced features (`cluster_dim`) are summed per cluster, and the global token (the DINOv2 class
token; for a CNN, the average-pooled feature map) adds `token_dim` values:
out_dim = num_clusters x cluster_dim + token_dim.

Written to match the authors' module (serizba/salad models/aggregators/salad.py) parameter for
parameter (their Sinkhorn is adapted from OpenGlue); tests/test_modern_methods.py checks equal
outputs. One departure: the dustbin's mass is log(n - m) for n features and m clusters, which the
reference cannot compute when n <= m (math.log of a non-positive number raises), as on the tiny
feature maps of the demo profile; it is then the mass of one feature (log 1). Wherever the
reference computes, the two agree.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2

HIDDEN = 512  # the width of the authors' three small MLPs


def sinkhorn_log_assignment(scores: torch.Tensor, dustbin: torch.Tensor, iterations: int) -> torch.Tensor:
    """Log transport plan (B, m + 1, n) of scores (B, m, n) with a dustbin row of score `dustbin`:
    uniform mass over the n features, m clusters of one share each and the dustbin the rest."""
    b, m, n = scores.shape
    costs = torch.cat([scores, dustbin.to(scores.dtype).expand(b, 1, n)], dim=1)
    log_norm = -math.log(n + m)
    log_rows = torch.full((m + 1,), log_norm, dtype=scores.dtype, device=scores.device)
    log_rows[-1] = log_rows[-1] + math.log(max(n - m, 1))
    log_cols = torch.full((n,), log_norm, dtype=scores.dtype, device=scores.device)
    u = torch.zeros(b, m + 1, dtype=scores.dtype, device=scores.device)
    v = torch.zeros(b, n, dtype=scores.dtype, device=scores.device)
    for _ in range(iterations):
        u = log_rows - torch.logsumexp(costs + v[:, None, :], dim=2)
        v = log_cols - torch.logsumexp(costs + u[:, :, None], dim=1)
    return costs + u[:, :, None] + v[:, None, :] - log_norm


class SALAD(Aggregator):
    """Optimal-transport soft assignment of local features to clusters, plus the global token + L2."""

    name = "salad"
    uses_token = True

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, dropout: float = 0.3, sinkhorn_iterations: int = 3) -> None:
        super().__init__(in_channels, in_h, in_w)

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.token_features = nn.Sequential(nn.Linear(in_channels, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, token_dim))
        self.cluster_features = nn.Sequential(nn.Conv2d(in_channels, HIDDEN, 1), drop(), nn.ReLU(),
                                              nn.Conv2d(HIDDEN, cluster_dim, 1))
        self.score = nn.Sequential(nn.Conv2d(in_channels, HIDDEN, 1), drop(), nn.ReLU(),
                                   nn.Conv2d(HIDDEN, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.num_clusters, self.cluster_dim, self.token_dim = num_clusters, cluster_dim, token_dim
        self.iterations = sinkhorn_iterations
        self.out_dim = num_clusters * cluster_dim + token_dim

    def forward(self, x: torch.Tensor, token: torch.Tensor | None = None) -> torch.Tensor:
        if token is None:  # a CNN has no class token: the average-pooled feature map stands in
            token = x.mean(dim=(2, 3))
        features = self.cluster_features(x).flatten(2)                           # (B, cluster_dim, n)
        plan = sinkhorn_log_assignment(self.score(x).flatten(2), self.dust_bin, self.iterations)
        weights = plan[:, :-1, :].exp()                                          # (B, clusters, n)
        clusters = torch.einsum("bln,bmn->blm", features, weights)               # (B, cluster_dim, clusters)
        desc = torch.cat([F.normalize(self.token_features(token), p=2, dim=-1),
                          F.normalize(clusters, p=2, dim=1).flatten(1)], dim=-1)
        return l2(desc)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}x{self.in_h}x{self.in_w}, num_clusters={self.num_clusters}, "
                f"cluster_dim={self.cluster_dim}, token_dim={self.token_dim}, sinkhorn_iterations={self.iterations}")


class SALADConfig(BaseAggregatorConfig):
    """SALAD; the defaults are the authors' DINOv2-B settings (8448-D)."""

    target: ClassVar[type] = SALAD
    name: Literal["salad"] = "salad"
    num_clusters: int = Field(64, ge=1)
    cluster_dim: int = Field(128, ge=1)
    token_dim: int = Field(256, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    sinkhorn_iterations: int = Field(3, ge=1)
