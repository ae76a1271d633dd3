"""Config layers: nested/dotted keys, `--set` overrides, and how one layer merges over another.

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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from pipeline.components.base import name_shorthand
from pipeline.components.losses import LOSSES, MINERS
from pipeline.components.optim import OPTIMIZERS, SCHEDULERS
from pipeline.errors import ConfigError, UniqueKeyLoader
from pipeline.models.aggregators import AGGREGATORS

__all__ = ["COMPONENT_SECTIONS", "MAPPING_FIELDS", "merge", "nest_dotted", "parse_overrides"]

# Paths of the tagged-union sections -> (label, registry): the name-tagged sections.
COMPONENT_SECTIONS: dict[tuple[str, ...], tuple[str, Mapping[str, type[BaseModel]]]] = {
    ("loss",): ("loss", LOSSES),
    ("miner",): ("miner", MINERS),
    ("optimizer",): ("optimizer", OPTIMIZERS),
    ("scheduler",): ("scheduler", SCHEDULERS),
    ("model", "aggregator"): ("aggregator", AGGREGATORS),
}
MAPPING_FIELDS = {("data", "test_roots")}



def merge(base: Any, layer: Any, path: tuple[str, ...] = (),
           whole: frozenset[tuple[str, ...]] | set[tuple[str, ...]] = frozenset(MAPPING_FIELDS)) -> Any:
    """`layer` over `base` (see the module docstring); `whole` = paths whose value replaces."""
    if path in COMPONENT_SECTIONS:
        layer = name_shorthand(layer)
        if (isinstance(layer, dict) and isinstance(base, dict) and "name" in layer
                and layer["name"] != base.get("name")):
            return copy.deepcopy(layer)
    if path in whole or not (isinstance(base, dict) and isinstance(layer, dict)):
        return copy.deepcopy(layer)
    out = copy.deepcopy(base)
    for key, value in layer.items():
        out[key] = merge(base[key], value, path + (key,), whole) if key in base else copy.deepcopy(value)
    return out


def parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, str], set[tuple[str, ...]]]:
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
                node[part] = name_shorthand(node.get(part, {}))
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {raw!r}: {'.'.join(parts[:i + 1])} was set to a value by an "
                                  f"earlier override")
        node[parts[-1]] = value
        origins[".".join(parts)] = raw
    whole = {tuple(k.split(".")) for k in origins} & MAPPING_FIELDS
    return layer, origins, whole


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
        if prefix in MAPPING_FIELDS:
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
