"""BoQ: Bag-of-Queries, learnable global queries cross-attending to the local features.

Ali-bey, Chaib-draa, Giguère, "BoQ: A Place is Worth a Bag of Learnable Queries", CVPR 2024.
The features are projected (3x3 conv to `proj_channels`), normalised, and refined by `num_layers`
blocks; each block (a transformer encoder layer on the features, then its `num_queries` learnable
queries self-attending and cross-attending to the features) outputs one vector per query. The
outputs of all blocks are concatenated and mixed by a linear layer over the queries into
`row_dim` rows: out_dim = proj_channels x row_dim. Attention heads: proj_channels / 64.

Written to match the authors' module (amaralibey/Bag-of-Queries src/boq.py) parameter for
parameter, so their released weights load by name; tests/test_modern_methods.py checks equal
outputs. The authors' settings: ResNet-50 (cut after layer3) proj 512, 64 queries, 2 layers,
row_dim 32 (16384-D); DINOv2-B proj 384, 64 queries, 2 layers, row_dim 32 (12288-D) (hubconf.py).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig, l2

HEAD_DIM = 64  # the authors' heads: in_dim // 64


class _QueryBlock(nn.Module):
    """One BoQ block: encode the features, then read them out with the block's learnable queries."""

    def __init__(self, dim: int, num_queries: int, heads: int) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=4 * dim, dropout=0.0,
                                                  batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, num_heads=heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads=heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(tokens)
        queries = self.queries.expand(tokens.shape[0], -1, -1)
        # The queries' self-attention does not depend on the image (the authors note it only
        # stabilises training); it is recomputed here so that training and eval run one path.
        queries = self.norm_q(queries + self.self_attn(queries, queries, queries, need_weights=False)[0])
        read = self.cross_attn(queries, tokens, tokens, need_weights=False)[0]
        return tokens, self.norm_out(read)


class BoQ(Aggregator):
    """Projection, `num_layers` query blocks, a linear mix over all queries + L2."""

    name = "boq"

    def __init__(self, in_channels: int, in_h: int, in_w: int, *, proj_channels: int = 512, num_queries: int = 64,
                 num_layers: int = 2, row_dim: int = 32) -> None:
        super().__init__(in_channels, in_h, in_w)
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(_QueryBlock(proj_channels, num_queries, proj_channels // HEAD_DIM)
                                  for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)
        self.proj_channels, self.num_queries, self.row_dim = proj_channels, num_queries, row_dim
        self.out_dim = proj_channels * row_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm_input(self.proj_c(x).flatten(2).transpose(1, 2))   # (B, HW, proj)
        reads = []
        for block in self.boqs:
            tokens, read = block(tokens)
            reads.append(read)                                                  # (B, queries, proj)
        mixed = self.fc(torch.cat(reads, dim=1).transpose(1, 2))                # (B, proj, row_dim)
        return l2(mixed.flatten(1))

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}x{self.in_h}x{self.in_w}, proj_channels={self.proj_channels}, "
                f"num_queries={self.num_queries}, layers={len(self.boqs)}, row_dim={self.row_dim}")


class BoQConfig(BaseAggregatorConfig):
    """Bag-of-Queries; the defaults are the authors' ResNet-50 settings."""

    target: ClassVar[type] = BoQ
    name: Literal["boq"] = "boq"
    proj_channels: int = Field(512, ge=HEAD_DIM)
    num_queries: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=1)
    row_dim: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _heads(self) -> "BoQConfig":
        if self.proj_channels % HEAD_DIM:
            raise ValueError(f"proj_channels must be a multiple of {HEAD_DIM} (one attention head per {HEAD_DIM} "
                             f"channels), got {self.proj_channels}")
        return self
