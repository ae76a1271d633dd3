"""Run config: recipe defaults, YAML layering and overrides, errors with key paths, canonical hash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import (AGGREGATORS, NON_SEMANTIC_FIELDS, ConfigError, RunConfig, config_from_dict,
                             config_hash, default_dict, dump_config, load_config, semantic_dict)

RECIPE_YAML = """
seed: 0
data:
  train_root: data/embedded/gsv_xs
  val_root: data/embedded/sf_xs/val
  test_roots: {sf_xs_test: data/embedded/sf_xs/test, tokyo_xs: data/embedded/tokyo_xs/test}
  cities: null
  min_images_per_place: 4
  image_size: [320, 320]
  num_workers: 4
model:
  backbone: resnet18
  pretrained: imagenet
  layers_to_crop: [4]
  layers_to_freeze: 2
  aggregator: {name: avg}
loss: {name: multisimilarity, alpha: 1.0, beta: 50.0, base: 0.0}
miner: {name: multisimilarity, epsilon: 0.1}
optimizer: {name: sgd, lr: 0.05, weight_decay: 0.001, momentum: 0.9}
scheduler: {name: multistep, milestones: [5, 10, 15, 25, 45], gamma: 0.3, warmup_steps: 600}
training:
  epochs: 30
  places_per_batch: 100
  images_per_place: 4
  batches_per_epoch: null
  device: auto
  precision: auto
  channels_last: auto
  max_grad_norm: null
  log_every: 10
evaluation:
  resize: [320, 320]
  interpolation: bilinear
  recall_at: [1, 5, 10]
  top_k: 20
  batch_size: 64
  positive_radius_m: 25.0
"""


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(overrides: list[str] | None = None, d: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        if d is not None:
            config_from_dict(d)
        else:
            load_config(None, overrides or [])
    return str(info.value)


# --- defaults --------------------------------------------------------------------------------

def test_defaults_are_the_gsv_cities_recipe() -> None:
    cfg = RunConfig()
    recipe = config_from_dict(yaml.safe_load(RECIPE_YAML))
    assert cfg == recipe == load_config()
    d = cfg.to_dict()
    assert d["model"] == {"backbone": "resnet18", "pretrained": "imagenet", "layers_to_crop": [4],
                          "layers_to_freeze": 2, "frozen_bn": "train", "num_unfrozen_blocks": 2,
                          "aggregator": {"name": "avg"}}
    assert d["loss"] == {"name": "multisimilarity", "distance": "cosine", "alpha": 1.0, "beta": 50.0, "base": 0.0}
    assert d["miner"] == {"name": "multisimilarity", "distance": "cosine", "epsilon": 0.1}
    assert d["optimizer"] == {"name": "sgd", "lr": 0.05, "weight_decay": 0.001, "momentum": 0.9, "nesterov": False}
    assert d["scheduler"] == {"name": "multistep", "milestones": [5, 10, 15, 25, 45], "gamma": 0.3,
                              "warmup_steps": 600, "interval": "epoch"}
    assert d["training"]["places_per_batch"] == 100 and d["training"]["images_per_place"] == 4
    assert d["data"]["image_size"] == [320, 320] and d["evaluation"]["positive_radius_m"] == 25.0


def test_round_trip_dict_and_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.aggregator=mixvpr", "scheduler={name: cosine, warmup_steps: 10}",
                             "data.cities=[London, Boston]"])
    assert config_from_dict(cfg.to_dict()) == cfg
    path = dump_config(cfg, tmp_path / "out" / "config.yaml")
    assert config_hash(cfg) in path.read_text().splitlines()[0]
    again = load_config(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)


# --- loading and overrides -------------------------------------------------------------------

def test_yaml_file_merges_over_defaults_and_overrides_win(tmp_path: Path) -> None:
    path = _write(tmp_path, "training:\n  epochs: 5\noptimizer:\n  lr: 1e-3\nmodel:\n  aggregator: {name: gem, p: 4}\n")
    cfg = load_config(path, ["training.epochs=3", "data.image_size=[64, 64]", "evaluation.resize=[64,64]",
                             "model.aggregator.name=gem"])
    assert cfg.training.epochs == 3
    assert cfg.training.places_per_batch == 100           # untouched default kept
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.001  # '1e-3' (a YAML string) parsed
    assert cfg.optimizer.momentum == 0.9                  # same component: merged
    assert cfg.model.aggregator.name == "gem" and cfg.model.aggregator.p == 4.0
    assert cfg.data.image_size == (64, 64)
    assert load_config(path).training.epochs == 5


def test_changing_a_component_name_starts_from_its_own_defaults() -> None:
    cfg = load_config(None, ["optimizer.name=adam"])       # recipe's SGD momentum must not leak
    assert cfg.optimizer.model_dump() == {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.999)}
    # overrides are one layer: order does not matter
    a = load_config(None, ["optimizer.lr=1e-4", "optimizer.name=adamw"])
    b = load_config(None, ["optimizer.name=adamw", "optimizer.lr=1e-4"])
    assert a == b and a.optimizer.lr == 1e-4 and a.optimizer.weight_decay == 0.01
    # a file switching the scheduler does not inherit multistep's params
    cfg = config_from_dict({"scheduler": {"name": "cosine"}})
    assert cfg.scheduler.model_dump() == {"name": "cosine", "warmup_steps": 0, "interval": "epoch", "T_max": None,
                                          "eta_min": 0.0}
    # a bare name is shorthand for the component with default params
    assert load_config(None, ["miner=none"]).miner.name == "none"
    assert config_from_dict({"loss": "triplet"}).loss.margin == 0.05


def test_mapping_values_replace_in_files_and_extend_by_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  test_roots: {pitts: /data/pitts30k/test}\n")
    assert load_config(path).data.test_roots == {"pitts": "/data/pitts30k/test"}
    cfg = load_config(None, ["data.test_roots.pitts=/data/pitts30k/test"])
    assert set(cfg.data.test_roots) == {"sf_xs_test", "tokyo_xs", "pitts"}
    assert load_config(None, ["data.test_roots={a: /x}"]).data.test_roots == {"a": "/x"}


def test_missing_file_and_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)
    bad = _write(tmp_path, "training:\n  epochs: 3\n  places_per_batch: [1, 2\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: YAML error"):
        load_config(bad)
    dup = _write(tmp_path, "training:\n  epochs: 3\n  epochs: 4\n", "dup.yaml")
    with pytest.raises(ConfigError, match=r"dup\.yaml:3:.*duplicate key 'epochs' \(first on line 2\)"):
        load_config(dup)
    listy = _write(tmp_path, "- a\n- b\n", "list.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)
    assert load_config(_write(tmp_path, "", "empty.yaml")) == RunConfig()


def test_errors_from_a_file_name_the_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "optimizer: {name: adam, momentum: 0.9}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "optimizer.momentum: not accepted by optimizer 'adam' (valid: lr, weight_decay, betas)" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("override", ["training.epoch=3", "trainig.epochs=3", "data.foo.bar=1"])
def test_override_of_unknown_key_is_named(override: str) -> None:
    key = override.split("=")[0].split(".")
    message = _error([override])
    assert ("unknown key" in message) and (key[0] in message) and override in message


def test_malformed_overrides() -> None:
    assert "KEY.PATH=VALUE" in _error(["training.epochs"])
    assert "not valid YAML" in _error(["data.image_size=[1, 2"])
    assert "training.epochs" in _error(["training.epochs.x=1"])


# --- errors name the key ---------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("loss.name=arcface", "loss.name: unknown loss 'arcface' (valid: contrastive, triplet, multisimilarity, "
                          "angular, fastap, ntxent)"),
    ("miner.name=hard", "miner.name: unknown miner 'hard' (valid: none, multisimilarity, angular, batchhard, "
                        "batcheasyhard, uniformhistogram)"),
    ("optimizer.name=adamax", "optimizer.name: unknown optimizer 'adamax' (valid: adam, adamw, sgd, asgd)"),
    ("scheduler.name=step", "scheduler.name: unknown scheduler 'step' (valid: none, multistep, plateau, cosine, cyclic, linear)"),
    ("model.aggregator.name=netvlad", "model.aggregator.name: unknown aggregator 'netvlad' (valid: avg, gem, "
                                      "mixvpr, cosplace, convap, boq, salad)"),
    ("model.backbone=vgg16", "model.backbone:"),
    ("model.aggregator.p=3", "model.aggregator.p: not accepted by aggregator 'avg'"),
    ("evaluation.interpolation=area", "evaluation.interpolation:"),
])
def test_unknown_names_list_valid_ones(override: str, expected: str) -> None:
    assert expected in _error([override])


@pytest.mark.parametrize("override, path", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-1e-3", "optimizer.lr"),
    ("optimizer.lr=.inf", "optimizer.lr"),
    ("training.epochs=0", "training.epochs"),
    ("training.images_per_place=1", "training.images_per_place"),
    ("training.places_per_batch=1", "training.places_per_batch"),
    ("data.image_size=[0, 320]", "data.image_size.0"),
    ("data.image_size=[320]", "data.image_size"),
    ("evaluation.resize=[320, -1]", "evaluation.resize"),
    ("evaluation.positive_radius_m=-5", "evaluation.positive_radius_m"),
    ("evaluation.recall_at=[]", "evaluation.recall_at"),
    ("evaluation.recall_at=[0, 1]", "evaluation.recall_at.0"),
    ("training.device=gpu", "training.device"),
    ("training.precision=fp16", "training.precision"),
    ("model.layers_to_crop=[3]", "model.layers_to_crop"),
    ("model.layers_to_freeze=4", "model.layers_to_freeze"),
    ("data.cities=[]", "data.cities"),
    ("data.test_roots={'bad name': /x}", "data.test_roots"),
    ("scheduler.milestones=[10, 5]", "scheduler.milestones"),
    ("scheduler.gamma=0", "scheduler.gamma"),
    ("optimizer.nesterov=maybe", "optimizer.nesterov"),
    ("seed=-1", "seed"),
])
def test_impossible_values_name_the_key(override: str, path: str) -> None:
    message = _error([override])
    assert re.search(re.escape(path) + r"(\.\d+)?: ", message), message


@pytest.mark.parametrize("overrides, needles", [
    (["loss={name: angular, distance: cosine}"], ["loss.distance", "angular accepts only euclidean"]),
    (["loss=fastap", "loss.distance=dot"], ["loss.distance", "fastap"]),
    (["miner={name: angular, distance: squared_euclidean}"], ["miner.distance", "angular"]),
    (["loss.distance=dot"], ["loss.distance / miner.distance", "multisimilarity", "miner.distance: dot"]),
    (["loss={name: contrastive, distance: cosine}", "miner=none"], ["loss.pos_margin", "neg_margin"]),
    (["miner={name: batcheasyhard, pos_strategy: semihard, neg_strategy: semihard}"], ["miner.pos_strategy"]),
    (["scheduler={name: cyclic, max_lr: 0.01}"], ["scheduler.max_lr", "0.05"]),  # optimizer lr 0.05 >= max
    (["scheduler={name: cyclic, base_lr: 0.5, max_lr: 0.1}"], ["scheduler.base_lr"]),
    (["scheduler={name: cyclic, max_lr: 1, cycle_momentum: true}", "optimizer=adam"], ["scheduler.cycle_momentum"]),
    (["scheduler={name: plateau, monitor: val_recall@1}", "evaluation.recall_at=[5]", "evaluation.top_k=5"],
     ["scheduler.monitor", "evaluation.recall_at"]),
    (["data.min_images_per_place=2"], ["data.min_images_per_place", "training.images_per_place"]),
    (["model.aggregator=mixvpr", "evaluation.resize=[480, 640]"], ["evaluation.resize", "data.image_size", "mixvpr"]),
    (["evaluation.top_k=5"], ["evaluation.top_k", "evaluation.recall_at"]),
])
def test_incompatible_combinations_fail_at_load(overrides: list[str], needles: list[str]) -> None:
    message = _error(overrides)
    for needle in needles:
        assert needle in message, message


def test_compatible_variants_load() -> None:
    load_config(None, ["loss={name: contrastive, distance: cosine, pos_margin: 1, neg_margin: 0}", "miner=batchhard"])
    load_config(None, ["loss=fastap", "miner=angular"])
    load_config(None, ["scheduler={name: plateau, monitor: val_recall@1}"])
    load_config(None, ["scheduler={name: cyclic, max_lr: 0.1, step_size_up_epochs: 1}", "optimizer=asgd"])
    cfg = load_config(None, ["model.aggregator=mixvpr", "data.image_size=[240, 320]", "evaluation.resize=[240,320]"])
    assert cfg.model.aggregator.model_dump() == {"name": "mixvpr", "out_channels": 512, "mix_depth": 4,
                                                 "mlp_ratio": 1.0, "out_rows": 4}


def test_several_problems_are_reported_together() -> None:
    message = _error(["training.epochs=0", "optimizer.lr=0", "foo=1"])
    assert "training.epochs" in message and "optimizer.lr" in message and "foo: unknown key" in message


# --- hash ------------------------------------------------------------------------------------

def test_hash_shape_and_stability() -> None:
    h = config_hash(RunConfig())
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(RunConfig()) == h == config_hash(default_dict())


def test_hash_ignores_key_order_float_spelling_and_explicit_defaults() -> None:
    a = config_from_dict({"optimizer": {"name": "adamw", "lr": 0.001}, "training": {"epochs": 3}})
    b = config_from_dict({"training": {"epochs": 3.0}, "optimizer": {"lr": "1e-3", "name": "adamw"}})
    c = config_from_dict(yaml.safe_load("optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.01, "
                                        "betas: [0.9, 0.999]}\ntraining: {places_per_batch: 100, epochs: 3}"))
    assert config_hash(a) == config_hash(b) == config_hash(c)
    # reversed key order throughout the full dict
    full = RunConfig().to_dict()
    reordered = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(list(full.items()))}
    assert config_hash(reordered) == config_hash(full)
    # derived defaults: cosine T_max None means the run's epochs
    assert config_hash({"scheduler": "cosine"}) == config_hash({"scheduler": {"name": "cosine", "T_max": 30}})
    assert config_hash({"data": {"cities": ["B", "A"]}}) == config_hash({"data": {"cities": ["A", "B", "A"]}})


@pytest.mark.parametrize("override", [
    "training.device=cuda:1", "data.num_workers=0", "training.log_every=1", "evaluation.batch_size=8",
    "training.channels_last=true", "data.train_root=/mnt/other/gsv_xs", "data.val_root=/mnt/sf_xs/val",
    "data.test_roots={tokyo_xs: /elsewhere}",
])
def test_hash_ignores_non_semantic_fields(override: str) -> None:
    assert config_hash(load_config(None, [override])) == config_hash(RunConfig())


@pytest.mark.parametrize("override", [
    "optimizer.lr=0.01", "model.aggregator=gem", "model.aggregator={name: gem, p: 4}", "seed=1",
    "data.image_size=[224, 224]", "data.cities=[London]", "training.epochs=10", "training.precision=bf16",
    "scheduler.warmup_steps=0", "evaluation.positive_radius_m=10", "miner=none", "model.pretrained=none",
])
def test_hash_changes_with_semantic_fields(override: str) -> None:
    assert config_hash(load_config(None, [override])) != config_hash(RunConfig())


def test_non_semantic_fields_exist_and_are_excluded() -> None:
    d = semantic_dict(RunConfig())
    for dotted in NON_SEMANTIC_FIELDS:
        *parents, leaf = dotted.split(".")
        node = RunConfig().to_dict()
        for part in parents:
            node = node[part]
        assert leaf in node, dotted  # the name refers to a real field
        sem = d
        for part in parents:
            sem = sem[part]
        assert leaf not in sem


# --- one definition per component ----------------------------------------------------------

def test_model_section_validates_against_the_model_registries() -> None:
    # The config has no tables of its own: aggregator parameters and backbone names are the models'.
    from pipeline.models import BACKBONES
    from pipeline.models.aggregators import AGGREGATORS as MODEL_AGGREGATORS, aggregator_defaults
    assert AGGREGATORS is MODEL_AGGREGATORS
    for name, model in AGGREGATORS.items():
        assert model().params() == aggregator_defaults(name), name
    for name in BACKBONES:
        assert load_config(None, [f"model.backbone={name}"]).model.backbone == name
    assert f"valid: {', '.join(BACKBONES)}" in _error(["model.backbone=vgg16"])
    assert "model.layers_to_crop" in _error(["model.layers_to_crop=[3]"])
    assert "layers_to_freeze" in _error(["model.layers_to_freeze=4"])


def test_plateau_monitor_accepts_the_metric_key_as_the_same_value() -> None:
    old = load_config(None, ["scheduler={name: plateau, monitor: val_recall@1}"])
    new = load_config(None, ["scheduler={name: plateau, monitor: val_recall_at_1}"])
    assert old.scheduler.monitor == new.scheduler.monitor == "val_recall@1"
    assert config_hash(old) == config_hash(new)
