"""Run config: schema, YAML loading with layered merging and overrides, validation, canonical hash.

A run is described by one `RunConfig`; its defaults are the GSV-Cities ResNet-18 recipe
(ResNet-18 cut after layer3, avg pooling, MultiSimilarity loss + miner, SGD 0.05 with MultiStepLR
and 600 warmup steps, 100 places x 4 images, 320x320); `default_dict()` lists it in full.

Layering (defaults <- files <- overrides) and its merge rules: `pipeline.config_layers`; the
sections (`data`, `model`, `training`, `evaluation`): `pipeline.config_sections`.

Paths in the config are not checked for existence here: a config is planned and hashed on one
machine and may run on another. Sizes are `[height, width]`.

Identity: `config_hash` is the first 12 hex digits of the sha256 of the sorted-key JSON of the
semantic part of the fully resolved config (defaults filled in, floats parsed, derived defaults
such as cosine T_max made explicit). `NON_SEMANTIC_FIELDS` lists what is left out, in one place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)

from pipeline.data.augment import AugmentConfig
from pipeline.errors import (
    ConfigError,
    format_validation_error,
    UserError,
    read_yaml,
)
from pipeline.components.losses import (
    LossConfig,
    MinerConfig,
    MultiSimilarityLossConfig,
    MultiSimilarityMinerConfig,
    check_compatibility,
)
from pipeline.components.optim import MultiStepConfig, OptimizerConfig, SchedulerConfig, SGDConfig
from pipeline.models.aggregators import AGGREGATORS
from pipeline.config_layers import COMPONENT_SECTIONS, merge, nest_dotted, parse_overrides
from pipeline.config_sections import DataConfig, EvaluationConfig, ModelConfig, Section, TrainingConfig
from pipeline.models.dinov2 import check_patch_multiple

__all__ = [
    "AGGREGATORS", "ConfigError", "DataConfig", "EvaluationConfig", "ModelConfig", "NON_SEMANTIC_FIELDS",
    "OMITTED_AT_DEFAULT",
    "RunConfig", "TrainingConfig", "config_from_dict", "config_from_layers", "config_hash", "default_dict",
    "dump_config", "load_config", "nest_dotted", "semantic_dict",
]

HASH_VERSION = 1  # bump when a change of schema or defaults must change every run's identity

# Fields that do not change what a run computes, left out of `config_hash`. Dotted paths.
NON_SEMANTIC_FIELDS: tuple[str, ...] = (
    "data.train_root",          # dataset locations: the same data at another mount point is the same run
    "data.val_root",
    "data.test_roots",          # which test sets get evaluated (names and paths) does not change the
                                # trained model; missing test evaluations can be added to a finished run
    "data.num_workers",         # loader parallelism (sampling is seeded per item, not per worker)
    "data.image_cache",         # pre-resized training images: the same pixels as decoding each time
    "training.device",          # where it runs
    "training.channels_last",   # memory layout only
    "training.compile",         # the same model, its kernels fused by the compiler
    "training.log_every",       # logging cadence
    "evaluation.batch_size",    # inference batching (eval mode: no batch statistics)
)
# Fields added after HASH_VERSION 1, left out of `config_hash` while at the value that reproduces
# what runs computed before they existed, so adding them renamed no recorded run.
OMITTED_AT_DEFAULT: dict[str, Any] = {"data.decode": "loader", "model.num_unfrozen_blocks": 2,
                                      "training.backbone_lr_scale": 1.0}
# Kept on purpose: seed, every size and count, cities, pretrained weights (a path, as the weights
# file is the identity), precision ("auto" hashes as "auto", so CPU and GPU runs of one config
# share a hash while an explicit fp32-vs-bf16 study gets two), recall_at, top_k, positive radius.

class RunConfig(Section):
    """Everything that defines one training run (and its evaluation)."""

    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=MultiSimilarityLossConfig)
    miner: MinerConfig = Field(default_factory=MultiSimilarityMinerConfig)
    optimizer: OptimizerConfig = Field(default_factory=SGDConfig)
    scheduler: SchedulerConfig = Field(default_factory=lambda: MultiStepConfig(warmup_steps=600))
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        problems = []
        try:
            check_compatibility(self.loss, self.miner)
        except ConfigError as err:
            problems.append(str(err))
        if self.data.min_images_per_place < self.training.images_per_place:
            problems.append(
                f"data.min_images_per_place ({self.data.min_images_per_place}) is below "
                f"training.images_per_place ({self.training.images_per_place}): a place needs K distinct "
                f"images; raise data.min_images_per_place or lower training.images_per_place")
        sched = self.scheduler
        if sched.name == "cyclic":
            base = sched.base_lr if sched.base_lr is not None else self.optimizer.lr
            if not base < sched.max_lr:
                problems.append(f"scheduler.max_lr ({sched.max_lr}) must exceed the cyclic base LR ({base}, "
                                f"scheduler.base_lr or else optimizer.lr)")
            if sched.cycle_momentum and not (self.optimizer.name == "sgd" and self.optimizer.momentum > 0):
                problems.append(f"scheduler.cycle_momentum: cycles SGD momentum; optimizer "
                                f"{self.optimizer.name!r} has none to cycle (set it false)")
        if sched.name == "plateau" and sched.monitor == "val_recall@1" and 1 not in self.evaluation.recall_at:
            problems.append("scheduler.monitor: val_recall@1 needs 1 in evaluation.recall_at")
        if self.model.aggregator.name == "mixvpr" and self.evaluation.resize != self.data.image_size:
            problems.append(
                f"evaluation.resize ({self.evaluation.resize}) must equal data.image_size "
                f"({list(self.data.image_size)}) with model.aggregator mixvpr: its token-mixing layers are "
                f"sized to the training feature map")
        if self.model.is_vit:
            for what, size in (("data.image_size", self.data.image_size), ("evaluation.resize", self.evaluation.resize)):
                try:
                    check_patch_multiple(size, what)  # the backbone's own rule, defined once there
                except UserError as err:
                    problems.append(str(err))
        if self.evaluation.top_k < max(self.evaluation.recall_at):
            problems.append(f"evaluation.top_k ({self.evaluation.top_k}) must be >= the largest "
                            f"evaluation.recall_at ({max(self.evaluation.recall_at)}) so saved predictions "
                            f"reproduce every recall")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples as lists), complete: round-trips via config_from_dict."""
        return self.model_dump(mode="json")


SECTION_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): RunConfig, ("data",): DataConfig, ("data", "augment"): AugmentConfig, ("model",): ModelConfig,
    ("training",): TrainingConfig, ("evaluation",): EvaluationConfig,
}
def default_dict() -> dict[str, Any]:
    """The recipe defaults as a plain dict."""
    return RunConfig().to_dict()


def _validate(merged: Mapping[str, Any], source: str | None = None,
              origins: Mapping[str, str] | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        lines = [part for line in format_validation_error(err, COMPONENT_SECTIONS, SECTION_MODELS)
                 for part in line.split("\n")]
        for i, line in enumerate(lines):
            where = line.split(": ", 1)[0]
            for key, raw in (origins or {}).items():
                renamed = key.endswith(".name") and where.startswith(key[:-len("name")])
                if where == key or where.startswith(key + ".") or key.startswith(where + ".") or renamed:
                    lines[i] = f"{line} [from override {raw!r}]"
                    break
        raise ConfigError(lines, source) from None


# ---------------------------------------------------------------------------------------------
# Public API


def config_from_dict(d: Mapping[str, Any] | None = None, source: str | None = None) -> RunConfig:
    """Validate `d` merged over the recipe defaults (same rules as a YAML file)."""
    if d is not None and not isinstance(d, Mapping):
        raise ConfigError(f"a run config must be a mapping of sections, got {type(d).__name__}", source)
    return _validate(merge(default_dict(), dict(d or {})), source)


def config_from_layers(layers: Sequence[Mapping[str, Any]], source: str | None = None) -> RunConfig:
    """Recipe defaults <- each layer in order, then validation.

    Each layer is merged as one YAML file would be (the module docstring's rules: a layer that
    changes a component's `name` replaces that section, mapping values replace), so the order of
    layers matters and the order of keys within a layer does not. Layers may mix nested and dotted
    keys (`nest_dotted`); None layers are skipped. Raises ConfigError naming `source` and every
    offending key path.
    """
    if isinstance(layers, Mapping):
        raise ConfigError("config_from_layers takes a sequence of layers, got a single mapping "
                          "(wrap it in a list)", source)
    merged = default_dict()
    for layer in layers:
        if layer is not None:
            merged = merge(merged, nest_dotted(layer, source))
    return _validate(merged, source)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Recipe defaults <- YAML file at `path` (if any) <- `key.path=value` overrides (YAML values).

    Raises ConfigError naming the file (missing, YAML syntax error with line, invalid content)
    and every offending key path.
    """
    source = None
    merged = default_dict()
    if path is not None:
        source = str(path)
        merged = merge(merged, read_yaml(Path(path)))
    layer, origins, whole = parse_overrides(overrides)
    # Overrides set leaves: `data.test_roots.x=...` adds an entry, `data.test_roots={...}` replaces.
    merged = merge(merged, layer, whole=whole)
    return _validate(merged, source, origins)


def dump_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write `cfg` as YAML (complete, with its hash in a header comment); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    path.write_text(f"# VPR Sweep run config, config_hash {config_hash(cfg)}\n{body}", encoding="utf-8")
    return path


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return 0.0 if value == 0 else value  # -0.0 and 0.0 are one value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def semantic_dict(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The part of the resolved config that defines the run: NON_SEMANTIC_FIELDS removed, as are
    OMITTED_AT_DEFAULT fields at their default, derived defaults made explicit (cosine T_max = epochs, cyclic base_lr = optimizer lr)."""
    if not isinstance(cfg, RunConfig):
        cfg = config_from_dict(cfg)
    d = cfg.to_dict()
    for dotted in NON_SEMANTIC_FIELDS + tuple(OMITTED_AT_DEFAULT):
        *parents, leaf = dotted.split(".")
        node = d
        for part in parents:
            node = node[part]
        if dotted in NON_SEMANTIC_FIELDS or node[leaf] == OMITTED_AT_DEFAULT[dotted]:
            node.pop(leaf)
    sched = d["scheduler"]
    if sched["name"] == "cosine" and sched["T_max"] is None and sched["interval"] == "epoch":
        sched["T_max"] = d["training"]["epochs"]
    if sched["name"] == "cyclic" and sched["base_lr"] is None:
        sched["base_lr"] = d["optimizer"]["lr"]
    return _canonical(d)


def config_hash(cfg: RunConfig | Mapping[str, Any]) -> str:
    """12-hex-digit identity of a run: sha256 of the sorted-key JSON of `semantic_dict(cfg)`."""
    payload = {"hash_version": HASH_VERSION, "config": semantic_dict(cfg)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

