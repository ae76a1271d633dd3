"""Run config: schema, YAML loading with layered merging and overrides, validation, canonical hash.

A run is described by one `RunConfig`; its defaults are the GSV-Cities ResNet-18 recipe
(ResNet-18 cut after layer3, avg pooling, MultiSimilarity loss + miner, SGD 0.05 with MultiStepLR
and 600 warmup steps, 100 places x 4 images, 320x320). See `DEFAULT_YAML` for the full listing.

Layering (`load_config`, `config_from_dict`): recipe defaults <- YAML file <- `--set` overrides;
`config_from_layers`: recipe defaults <- any number of layers (nested and/or dotted keys, see
`nest_dotted`), each applied as one file would be.
Sections merge key by key, with two exceptions:
- Component sections (`loss`, `miner`, `optimizer`, `scheduler`, `model.aggregator`) are tagged by
  `name`. A layer that changes the name replaces the whole section: the new component starts from
  its own defaults plus what that same layer gives. So `--set optimizer.name=adam` on the SGD
  recipe gives Adam with torch's defaults (lr 1e-3), not Adam with SGD's momentum (an error) or
  SGD's lr 0.05 (a silent, diverging change). A layer that keeps or omits the name merges into the
  section (`--set optimizer.lr=0.01` keeps SGD's momentum). Overrides count as one layer, so
  `--set optimizer.lr=1e-4 --set optimizer.name=adam` is Adam at 1e-4 in either order. A bare
  name is shorthand for all-default params: `miner: none`, `--set loss=triplet`.
  Component defaults are per component, not the recipe's: e.g. warmup_steps is 0 unless given,
  the recipe sets 600 on its multistep scheduler.
- Mapping values (`data.test_roots`) given in a file replace the default mapping; an override of
  one entry (`--set data.test_roots.pitts=...`) adds or changes that entry.

Paths in the config are not checked for existence here: a config is planned and hashed on one
machine and may run on another. Sizes are `[height, width]`.

Identity: `config_hash` is the first 12 hex digits of the sha256 of the sorted-key JSON of the
semantic part of the fully resolved config (defaults filled in, floats parsed, derived defaults
such as cosine T_max made explicit). `NON_SEMANTIC_FIELDS` lists what is left out, in one place.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.data.augment import AugmentConfig
from pipeline.errors import (
    ConfigError,
    UniqueKeyLoader,
    format_validation_error,
    read_yaml,
)
from pipeline.training.components import (
    LOSSES,
    MINERS,
    OPTIMIZERS,
    SCHEDULERS,
    ComponentConfig,
    LossConfig,
    MinerConfig,
    MultiSimilarityLossConfig,
    MultiSimilarityMinerConfig,
    MultiStepConfig,
    OptimizerConfig,
    SchedulerConfig,
    SGDConfig,
    check_compatibility,
)

__all__ = [
    "AGGREGATORS", "ConfigError", "DataConfig", "EvaluationConfig", "ModelConfig", "NON_SEMANTIC_FIELDS",
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
    "training.log_every",       # logging cadence
    "evaluation.batch_size",    # inference batching (eval mode: no batch statistics)
)
# Kept on purpose: seed, every size and count, cities, pretrained weights (a path, as the weights
# file is the identity), precision ("auto" hashes as "auto", so CPU and GPU runs of one config
# share a hash while an explicit fp32-vs-bf16 study gets two), recall_at, top_k, positive radius.

Size = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# Aggregators: names and parameters as pipeline.models.aggregators builds them. Kept here so a
# config validates without importing the model code; tests cross-check the two.

class AvgAggregatorConfig(ComponentConfig):
    """Global average pooling (+ L2 normalisation)."""

    name: Literal["avg"] = "avg"


class GeMAggregatorConfig(ComponentConfig):
    """Generalised mean pooling; p is learnable, initialised to `p`."""

    name: Literal["gem"] = "gem"
    p: float = Field(3.0, gt=0)
    eps: float = Field(1e-6, gt=0)


class MixVPRAggregatorConfig(ComponentConfig):
    """MixVPR feature mixer; input channels and h x w are taken from the backbone's feature map."""

    name: Literal["mixvpr"] = "mixvpr"
    out_channels: int = Field(512, ge=1)
    mix_depth: int = Field(4, ge=1)
    mlp_ratio: float = Field(1.0, gt=0)
    out_rows: int = Field(4, ge=1)


class CosPlaceAggregatorConfig(ComponentConfig):
    """CosPlace head: GeM + linear projection to `out_dim`."""

    name: Literal["cosplace"] = "cosplace"
    out_dim: int = Field(512, ge=1)


class ConvAPAggregatorConfig(ComponentConfig):
    """Conv-AP: 1x1 conv to `out_channels`, adaptive average pooling to s1 x s2."""

    name: Literal["convap"] = "convap"
    out_channels: int = Field(512, ge=1)
    s1: int = Field(2, ge=1)
    s2: int = Field(2, ge=1)


AGGREGATORS: dict[str, type[ComponentConfig]] = {
    "avg": AvgAggregatorConfig,
    "gem": GeMAggregatorConfig,
    "mixvpr": MixVPRAggregatorConfig,
    "cosplace": CosPlaceAggregatorConfig,
    "convap": ConvAPAggregatorConfig,
}


def _name_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


AggregatorConfig = Annotated[Union[tuple(AGGREGATORS.values())], Field(discriminator="name"),  # noqa: UP007
                             BeforeValidator(_name_shorthand)]


# ---------------------------------------------------------------------------------------------
# Sections

_ROOT = Annotated[str, Field(min_length=1)]


class DataConfig(_Section):
    """Where the data is and how training places are selected."""

    train_root: _ROOT = "data/embedded/gsv_xs"   # GSV-XS root (train/<City>/) or GSV-Cities root
    val_root: _ROOT = "data/embedded/sf_xs/val"  # evaluation split: database/ and queries/
    test_roots: dict[str, _ROOT] = Field(default_factory=lambda: {
        "sf_xs_test": "data/embedded/sf_xs/test", "tokyo_xs": "data/embedded/tokyo_xs/test"})
    cities: list[Annotated[str, Field(min_length=1)]] | None = None  # None = every city
    min_images_per_place: int = Field(4, ge=1)
    image_size: Size = (320, 320)  # [height, width] of training images
    num_workers: int = Field(4, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)  # training only (GSV-Cities RandAugment)
    image_cache: str | None = None  # folder of training images pre-resized to image_size (None: off)

    @field_validator("test_roots")
    @classmethod
    def _test_names(cls, roots: dict[str, str]) -> dict[str, str]:
        # Test names become metric names (e.g. tokyo_xs/recall@1): keep them plain.
        bad = [k for k in roots if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", k)]
        if bad:
            raise ValueError(f"test set names may use letters, digits, _ . - only, got {bad}")
        return roots

    @field_validator("cities")
    @classmethod
    def _cities(cls, cities: list[str] | None) -> list[str] | None:
        # A set of cities: order and repeats do not matter, so canonicalise.
        if cities is not None and not cities:
            raise ValueError("an empty list selects no city; use null for all cities")
        return None if cities is None else sorted(set(cities))


class ModelConfig(_Section):
    """Backbone (torchvision ResNet, cut and frozen GSV-Cities style) and aggregator."""

    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    pretrained: Annotated[str, Field(min_length=1)] = "imagenet"  # imagenet | none | path to a .pth
    layers_to_crop: list[int] = Field(default_factory=lambda: [4])
    layers_to_freeze: int = Field(2, ge=0, le=4)
    aggregator: AggregatorConfig = Field(default_factory=AvgAggregatorConfig)

    @field_validator("layers_to_crop")
    @classmethod
    def _crop(cls, crop: list[int]) -> list[int]:
        if any(x not in (3, 4) for x in crop):
            raise ValueError(f"may only contain 3 and 4, got {crop}")
        crop = sorted(set(crop))
        if crop == [3]:
            raise ValueError("[3] is invalid: layer4 consumes layer3's output; use [4] or [3, 4]")
        return crop

    @model_validator(mode="after")
    def _freeze(self) -> ModelConfig:
        kept = 4 - len(self.layers_to_crop)
        if self.layers_to_freeze > kept:
            raise ValueError(f"layers_to_freeze: {self.layers_to_freeze} exceeds the {kept} residual "
                             f"stages left after cropping {self.layers_to_crop}")
        return self


class TrainingConfig(_Section):
    """Batch composition, length and execution of training."""

    epochs: int = Field(30, ge=1)
    places_per_batch: int = Field(100, ge=2)  # P; >= 2 so every batch has negatives
    images_per_place: int = Field(4, ge=2)    # K; >= 2 so every batch has positives
    batches_per_epoch: int | None = Field(None, ge=1)  # None = one pass over the places
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    channels_last: Literal["auto"] | bool = "auto"
    max_grad_norm: float | None = Field(None, gt=0)
    log_every: int = Field(10, ge=1)


class EvaluationConfig(_Section):
    """Validation and test protocol.

    `interpolation` names PIL's resampling filters (as pipeline.data.datasets uses), which
    antialias when shrinking. Every image is resized to `resize` so that batches stack.
    """

    resize: Size = (320, 320)  # [height, width]
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    recall_at: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    top_k: int = Field(20, ge=1)  # predictions saved per query
    batch_size: int = Field(64, ge=1)
    positive_radius_m: float = Field(25.0, gt=0)

    @field_validator("recall_at")
    @classmethod
    def _recall_at(cls, values: list[int]) -> list[int]:
        return sorted(set(values))


class RunConfig(_Section):
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


# Paths of the tagged-union sections -> (label, registry); section paths -> model class.
COMPONENT_SECTIONS: dict[tuple[str, ...], tuple[str, Mapping[str, type[BaseModel]]]] = {
    ("loss",): ("loss", LOSSES),
    ("miner",): ("miner", MINERS),
    ("optimizer",): ("optimizer", OPTIMIZERS),
    ("scheduler",): ("scheduler", SCHEDULERS),
    ("model", "aggregator"): ("aggregator", AGGREGATORS),
}
SECTION_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): RunConfig, ("data",): DataConfig, ("data", "augment"): AugmentConfig, ("model",): ModelConfig,
    ("training",): TrainingConfig, ("evaluation",): EvaluationConfig,
}
_MAPPING_FIELDS = {("data", "test_roots")}


def default_dict() -> dict[str, Any]:
    """The recipe defaults as a plain dict."""
    return RunConfig().to_dict()


# ---------------------------------------------------------------------------------------------
# Merging


def _merge(base: Any, layer: Any, path: tuple[str, ...] = (),
           whole: frozenset[tuple[str, ...]] | set[tuple[str, ...]] = frozenset(_MAPPING_FIELDS)) -> Any:
    """`layer` over `base` (see the module docstring); `whole` = paths whose value replaces."""
    if path in COMPONENT_SECTIONS:
        layer = _name_shorthand(layer)
        if (isinstance(layer, dict) and isinstance(base, dict) and "name" in layer
                and layer["name"] != base.get("name")):
            return copy.deepcopy(layer)
    if path in whole or not (isinstance(base, dict) and isinstance(layer, dict)):
        return copy.deepcopy(layer)
    out = copy.deepcopy(base)
    for key, value in layer.items():
        out[key] = _merge(base[key], value, path + (key,), whole) if key in base else copy.deepcopy(value)
    return out


def _parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, str], set[tuple[str, ...]]]:
    """`key.path=value` strings -> (nested layer, {dotted key: raw text}, paths given whole)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    layer: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for raw in overrides:
        key, sep, text = raw.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {raw!r}: expected KEY.PATH=VALUE, e.g. training.epochs=3")
        try:
            value = yaml.load(text, Loader=UniqueKeyLoader) if text.strip() else None  # noqa: S506
        except yaml.YAMLError as err:
            raise ConfigError(f"override {raw!r}: the value is not valid YAML ({err})") from None
        node = layer
        for i, part in enumerate(parts[:-1]):
            if tuple(parts[:i + 1]) in COMPONENT_SECTIONS:  # `loss=fastap` then `loss.distance=...`
                node[part] = _name_shorthand(node.get(part, {}))
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {raw!r}: {'.'.join(parts[:i + 1])} was set to a value by an "
                                  f"earlier override")
        node[parts[-1]] = value
        origins[".".join(parts)] = raw
    whole = {tuple(k.split(".")) for k in origins} & _MAPPING_FIELDS
    return layer, origins, whole


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
    return _validate(_merge(default_dict(), dict(d or {})), source)


def nest_dotted(layer: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """A layer with dotted keys (`{"optimizer.lr": 1e-3}`) as nested dicts (`{"optimizer": {"lr": 1e-3}}`).

    Dotted and nested keys may be mixed at any depth (`{"model": {"aggregator.name": "gem"}}`).
    A bare component name met on the way becomes its mapping, so `{"loss": "triplet",
    "loss.margin": 1.0}` is `{"loss": {"name": "triplet", "margin": 1.0}}`. Keys inside mapping
    values (`data.test_roots`) are names, not paths, and are kept whole. A key path given twice is
    an error (ConfigError naming `source` and the path) rather than a silent last-one-wins.
    """
    if not isinstance(layer, Mapping):
        raise ConfigError(f"a config layer must be a mapping of keys, got {type(layer).__name__}", source)
    out: dict[str, Any] = {}
    _insert_layer(out, layer, (), source)
    return out


def _as_section(parent: dict[str, Any], key: str, path: tuple[str, ...], source: str | None) -> dict[str, Any]:
    """The dict at parent[key], created if absent, from a bare component name if one is there."""
    if key not in parent:
        parent[key] = {}
    elif isinstance(parent[key], str) and path in COMPONENT_SECTIONS:
        parent[key] = {"name": parent[key]}
    elif not isinstance(parent[key], dict):
        raise ConfigError(f"{'.'.join(path)}: given a value ({parent[key]!r}) and also used as a section", source)
    return parent[key]


def _insert_layer(node: dict[str, Any], layer: Mapping[str, Any], prefix: tuple[str, ...],
                  source: str | None) -> None:
    for key, value in layer.items():
        if prefix in _MAPPING_FIELDS:
            parts = [str(key)]
        else:
            if not isinstance(key, str):
                raise ConfigError(f"{'.'.join(prefix + (str(key),))}: keys must be strings, got {key!r}", source)
            parts = key.split(".")
            if not all(parts):
                raise ConfigError(f"{'.'.join(prefix) or '<root>'}: key {key!r} has an empty part", source)
        parent = node
        for i, part in enumerate(parts[:-1]):
            parent = _as_section(parent, part, prefix + tuple(parts[:i + 1]), source)
        leaf, path = parts[-1], prefix + tuple(parts)
        if isinstance(value, Mapping):
            _insert_layer(_as_section(parent, leaf, path, source), value, path, source)
        elif leaf not in parent:
            parent[leaf] = copy.deepcopy(value)
        elif (path in COMPONENT_SECTIONS and isinstance(value, str) and isinstance(parent[leaf], dict)
              and "name" not in parent[leaf]):
            parent[leaf]["name"] = value  # `loss.margin: 1` first, then `loss: triplet`
        else:
            raise ConfigError(f"{'.'.join(path)}: given twice in one layer (as a dotted and a nested key?)",
                              source)


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
            merged = _merge(merged, nest_dotted(layer, source))
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
        merged = _merge(merged, read_yaml(Path(path)))
    layer, origins, whole = _parse_overrides(overrides)
    # Overrides set leaves: `data.test_roots.x=...` adds an entry, `data.test_roots={...}` replaces.
    merged = _merge(merged, layer, whole=whole)
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
    """The part of the resolved config that defines the run: NON_SEMANTIC_FIELDS removed,
    derived defaults made explicit (cosine T_max = epochs, cyclic base_lr = optimizer lr)."""
    if not isinstance(cfg, RunConfig):
        cfg = config_from_dict(cfg)
    d = cfg.to_dict()
    for dotted in NON_SEMANTIC_FIELDS:
        *parents, leaf = dotted.split(".")
        node = d
        for part in parents:
            node = node[part]
        node.pop(leaf)
    sched = d["scheduler"]
    if sched["name"] == "cosine" and sched["T_max"] is None:
        sched["T_max"] = d["training"]["epochs"]
    if sched["name"] == "cyclic" and sched["base_lr"] is None:
        sched["base_lr"] = d["optimizer"]["lr"]
    return _canonical(d)


def config_hash(cfg: RunConfig | Mapping[str, Any]) -> str:
    """12-hex-digit identity of a run: sha256 of the sorted-key JSON of `semantic_dict(cfg)`."""
    payload = {"hash_version": HASH_VERSION, "config": semantic_dict(cfg)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


DEFAULT_YAML = yaml.safe_dump(RunConfig().to_dict(), sort_keys=False, default_flow_style=None)
