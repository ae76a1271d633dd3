"""Aggregators by name: one file per aggregator (its paper, parameter model and module), one registry.

    avg       global average pooling                    out_dim = C
    gem       GeM pooling, learnable p                  out_dim = C
    mixvpr    MixVPR Feature-Mixer                      out_dim = out_channels * out_rows
    cosplace  CosPlace head (GeM + Linear)              out_dim = out_dim
    convap    Conv-AP (1x1 conv + adaptive avg pool)    out_dim = out_channels * s1 * s2
    boq       Bag-of-Queries                            out_dim = proj_channels * row_dim
    salad     SALAD optimal-transport aggregation       out_dim = num_clusters * cluster_dim + token_dim

A new aggregator is one file here and one entry in `AGGREGATORS`. The run config validates
`model.aggregator` against these parameter models, so a bad value fails before any compute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.components.base import coerce, tagged_union
from pipeline.models.aggregators.avg import AvgConfig
from pipeline.models.aggregators.base import Aggregator, BaseAggregatorConfig
from pipeline.models.aggregators.boq import BoQConfig
from pipeline.models.aggregators.convap import ConvAPConfig
from pipeline.models.aggregators.cosplace import CosPlaceConfig
from pipeline.models.aggregators.gem import GeMConfig
from pipeline.models.aggregators.mixvpr import MixVPRConfig
from pipeline.models.aggregators.salad import SALADConfig

__all__ = ["AGGREGATORS", "Aggregator", "AggregatorConfig", "BaseAggregatorConfig", "aggregator_defaults",
           "build_aggregator"]

AGGREGATORS: dict[str, type[BaseAggregatorConfig]] = {
    "avg": AvgConfig,
    "gem": GeMConfig,
    "mixvpr": MixVPRConfig,
    "cosplace": CosPlaceConfig,
    "convap": ConvAPConfig,
    "boq": BoQConfig,
    "salad": SALADConfig,
}

AggregatorConfig = tagged_union(AGGREGATORS)


def aggregator_defaults(name: str) -> dict[str, Any]:
    """The tunable parameters of aggregator `name` with their defaults."""
    return coerce("aggregator", AGGREGATORS, AggregatorConfig, name).params()


def build_aggregator(cfg: Any, in_channels: int, in_h: int, in_w: int,
                     params: Mapping[str, Any] | None = None) -> Aggregator:
    """Build the aggregator `cfg` (a parameter model, a dict or a name; with a name, `params` are
    its parameters) for a (in_channels, in_h, in_w) feature map.

    An unknown name (listing the valid ones), an unknown parameter (listing the valid ones) or an
    invalid value is a ConfigError naming it; `params` is not modified.
    """
    if isinstance(cfg, str):
        cfg = {**(params or {}), "name": cfg}
    return coerce("aggregator", AGGREGATORS, AggregatorConfig, cfg).build(in_channels, in_h, in_w)
