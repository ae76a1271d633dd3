"""Models: torchvision ResNet backbones (cut/frozen), aggregators, and `build_model`."""

from pipeline.models.aggregators import AGGREGATORS, Aggregator, aggregator_defaults, build_aggregator
from pipeline.models.backbones import (
    BACKBONES,
    BackboneError,
    PretrainedWeightsMismatch,
    PretrainedWeightsNotFound,
    ResNetBackbone,
    build_backbone,
    imagenet_weights,
    imagenet_weights_path,
)
from pipeline.models.model import VPRModel, build_model, describe_output_dims, model_from_config, output_dims_markdown

__all__ = [
    "AGGREGATORS",
    "BACKBONES",
    "Aggregator",
    "BackboneError",
    "PretrainedWeightsMismatch",
    "PretrainedWeightsNotFound",
    "ResNetBackbone",
    "VPRModel",
    "aggregator_defaults",
    "build_aggregator",
    "build_backbone",
    "build_model",
    "describe_output_dims",
    "imagenet_weights",
    "imagenet_weights_path",
    "model_from_config",
    "output_dims_markdown",
]
