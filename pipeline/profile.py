"""Profiles of params.yaml: which data a pipeline run uses and at what scale.

`params.yaml` selects one profile (`profile: demo`) among `profiles:`. A profile has

- `data:` where the datasets come from (`source: embedded` generates them, `source: real` points
  at the user's copies); the prepare stage resolves it into dataset roots (`datasets.json`);
- `run:` how every study cell is scaled: `set` (a config layer of sizes, counts, workers) and
  `max_epochs` (a cap); it may not change what a study compares (`PROFILE_FIXED`);
- `tune:` the tuning-trial cap (`max_trials`) of small profiles;
- `benchmarks:` which standard benchmarks the evaluate stage tests runs on (`source: embedded`
  generates them, `source: real` gives each one's folder under `roots:`), and the `protocol:`.

This module is the one reader of all three, and of the roots the prepare stage wrote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import RunConfig, config_from_layers, nest_dotted
from pipeline.errors import ConfigError, format_validation_error, read_yaml

__all__ = [
    "PROFILE_FIXED", "ParamsError", "RunScale", "apply_profile", "capped_budget", "check_roots", "dataset_roots", "load_profile",
    "benchmark_protocol", "benchmark_roots", "load_benchmark_roots", "load_roots", "roots_layer", "run_scale",
    "trial_cap",
]

# Config paths a profile's run.set may not touch: they define the comparison, not its scale.
PROFILE_FIXED = ("seed", "loss", "miner", "optimizer", "scheduler", "model.aggregator", "training.epochs")
PROFILE_SCALE_EXCEPTIONS = ("scheduler.warmup_steps",)  # counted in optimizer steps, so it scales with the run
# Dataset roots (as in data/prepared/datasets.json) -> config; any other key is a test set.
_ROOT_KEYS = {"train": "train_root", "val": "val_root"}
_DATASETS_JSON = "datasets.json"


class ParamsError(ConfigError):
    """params.yaml is missing a key or holds an invalid value (or the prepared roots are missing)."""


def load_profile(params_path: str | Path) -> tuple[str, dict]:
    """Return (profile name, profile dict) selected by `profile:` in params.yaml."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise ParamsError(f"{params_path}: file not found (the params file selects the profile)")
    params = read_yaml(params_path, "params file")
    name = params.get("profile")
    profiles = params.get("profiles") or {}
    if name not in profiles:
        raise ParamsError(f"{params_path}: profile {name!r} is not defined; profiles: {sorted(profiles)}")
    return name, profiles[name] or {}


# --- run scale ------------------------------------------------------------------------------------

class _ProfileRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    set: dict[str, Any] = Field(default_factory=dict)  # noqa: A003 (the key users write)
    max_epochs: Annotated[int, Field(ge=1)] | None = None


@dataclass(frozen=True)
class RunScale:
    """A profile's `run:` section: the scale layer and the epoch cap."""

    layer: dict[str, Any]
    max_epochs: int | None


def _flat_paths(layer: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted leaf paths of a nested layer."""
    out = []
    for key, value in layer.items():
        path = f"{prefix}{key}"
        out += _flat_paths(value, path + ".") if isinstance(value, Mapping) and value else [path]
    return out


def run_scale(profile: Mapping[str, Any] | None) -> RunScale:
    """The scale layer and epoch cap of a profile's `run:` section (both empty if absent).

    Raises ParamsError for an unknown key or a `set` path that would change what is compared.
    """
    source = "params.yaml profile run section"
    try:
        parsed = _ProfileRun.model_validate((profile or {}).get("run") or {})
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, {}, {(): _ProfileRun}, prefix=("run",)), source) from None
    layer = nest_dotted(parsed.set, source)
    fixed = [p for p in _flat_paths(layer)
             if p not in PROFILE_SCALE_EXCEPTIONS and any(p == f or p.startswith(f + ".") for f in PROFILE_FIXED)]
    if fixed:
        raise ParamsError([f"run.set.{p}: a profile scales runs and may not change what is compared "
                           f"({', '.join(PROFILE_FIXED)}); cap epochs with run.max_epochs" for p in fixed], source)
    return RunScale(layer, parsed.max_epochs)


def apply_profile(layers: Sequence[Mapping[str, Any]], profile: Mapping[str, Any] | None,
                  roots: Mapping[str, str] | None, source: str) -> RunConfig:
    """A run config from a cell's (or a trial's) own layers under a profile, the one place a
    profile is applied:

        layers <- profile run.set <- min(epochs, profile run.max_epochs) <- dataset roots

    `source` names the cell or trial in errors (ConfigError naming the file, the cell and the key).
    """
    scale = run_scale(profile)
    data = roots_layer(roots)
    stack = [*layers, scale.layer]
    cfg = config_from_layers([*stack, data], source)
    if scale.max_epochs is not None and cfg.training.epochs > scale.max_epochs:
        cfg = config_from_layers([*stack, {"training": {"epochs": scale.max_epochs}}, data], source)
    return cfg


def trial_cap(profile: Mapping[str, Any] | None) -> int | None:
    """The profile's `tune.max_trials` (finished trials per optimizer), or None (no cap)."""
    cap = ((profile or {}).get("tune") or {}).get("max_trials")
    if cap is None:
        return None
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ParamsError(f"params.yaml: tune.max_trials must be a positive integer, got {cap!r}")
    return cap


def capped_budget(budget: int, cap: int | None, grid_sizes: list[int] | None = None) -> int:
    """`budget` capped by the profile's trial cap and, for a grid sampler, by the grid's size."""
    if cap is not None:
        budget = min(budget, cap)
    if grid_sizes is not None:
        budget = min(budget, math.prod(grid_sizes))
    return budget


# --- dataset roots --------------------------------------------------------------------------------

def dataset_roots(profile: Mapping[str, Any], out: Path, params_path: str | Path) -> dict[str, str]:
    """Dataset roots of a profile: {train, val, sf_xs_test, tokyo_xs}; generates the embedded data
    (under `out/embedded`) for `source: embedded`."""
    data = profile.get("data") or {}
    source = data.get("source")
    if source == "embedded":
        from pipeline.data.synthetic import generate

        root = out / "embedded"
        generate(root, seed=int(data.get("seed", 0)), scale=str(data.get("scale", "demo")),
                 image_size=data.get("image_size"))
        gsv, sf, tokyo = root / "gsv_xs", root / "sf_xs", root / "tokyo_xs"
    elif source == "real":
        missing = [k for k in ("gsv_xs", "sf_xs", "tokyo_xs") if not data.get(k)]
        if missing:
            raise ParamsError(f"{params_path}: profiles.<profile>.data.{missing[0]} is not set; "
                              "give the folder of that dataset")
        gsv, sf, tokyo = Path(data["gsv_xs"]), Path(data["sf_xs"]), Path(data["tokyo_xs"])
    else:
        raise ParamsError(f"{params_path}: data.source must be 'embedded' or 'real', got {source!r}")
    return {"train": str(gsv), "val": str(sf / "val"), "sf_xs_test": str(sf / "test"),
            "tokyo_xs": str(tokyo / "test")}


# --- benchmarks -----------------------------------------------------------------------------------

class _BenchmarksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Literal["embedded", "real"] = "embedded"
    names: list[str] | Literal["all"] = "all"          # embedded: which to generate
    roots: dict[str, str] = Field(default_factory=dict)  # real: benchmark key -> its folder
    protocol: dict[str, Any] = Field(default_factory=dict)


def _benchmarks_section(profile: Mapping[str, Any] | None) -> _BenchmarksConfig | None:
    section = (profile or {}).get("benchmarks")
    if section is None:
        return None
    try:
        return _BenchmarksConfig.model_validate(section)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, {}, {(): _BenchmarksConfig}, prefix=("benchmarks",)),
                          "params.yaml profile benchmarks section") from None


def benchmark_roots(profile: Mapping[str, Any], out: Path) -> dict[str, str]:
    """{benchmark key: folder} of a profile's `benchmarks:` section ({} without one); generates the
    embedded versions (under `out/benchmarks`) for `source: embedded`."""
    from pipeline.data.benchmarks import BENCHMARKS, benchmark_keys

    section = _benchmarks_section(profile)
    if section is None:
        return {}
    if section.source == "real":
        for key in section.roots:
            benchmark_keys(key)  # an unknown name is an error naming the valid ones
        return {key: str(Path(root)) for key, root in section.roots.items()}
    keys = list(BENCHMARKS) if section.names == "all" else [benchmark_keys(k)[0] for k in section.names]
    from pipeline.data.synthetic.benchmarks import generate_benchmarks

    data = profile.get("data") or {}
    generate_benchmarks(out / "benchmarks", keys, seed=int(data.get("seed", 0)), scale=str(data.get("scale", "demo")),
                        image_size=data.get("image_size"), progress=False)
    return {key: str(out / "benchmarks" / key) for key in keys}


def benchmark_protocol(profile: Mapping[str, Any] | None):
    """The profile's `benchmarks.protocol` as a ProtocolConfig (the field's defaults without one)."""
    from pipeline.data.benchmarks.protocol import ProtocolConfig

    section = _benchmarks_section(profile)
    try:
        return ProtocolConfig.model_validate(section.protocol if section else {})
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, {}, {(): ProtocolConfig}, prefix=("benchmarks", "protocol")),
                          "params.yaml profile benchmarks section") from None


def load_benchmark_roots(prepared: str | Path) -> dict[str, str]:
    """{benchmark key: folder} the prepare stage wrote ({} when none, or before it ran)."""
    path = Path(prepared) / _DATASETS_JSON
    return json.loads(path.read_text()).get("benchmarks", {}) if path.exists() else {}


def load_roots(prepared: str | Path) -> dict[str, str] | None:
    """Dataset roots written by the prepare stage, or None when it has not run."""
    path = Path(prepared) / _DATASETS_JSON
    return json.loads(path.read_text())["roots"] if path.exists() else None


def check_roots(prepared: str | Path, params: str | Path = "params.yaml") -> dict[str, str]:
    """The prepared roots, each an existing folder; a clear error says which stage to (re)run."""
    path = Path(prepared) / _DATASETS_JSON
    roots = load_roots(prepared)
    if roots is None:
        raise ParamsError(f"{path} not found: run `vpr prepare` (the DVC prepare stage) first")
    missing = [f"roots.{k} = '{v}'" for k, v in roots.items() if not Path(v).is_dir()]
    if missing:
        raise ParamsError(f"{path}: dataset root(s) not found: {', '.join(missing)}; rerun `vpr prepare` "
                          f"or fix the profile in {params}")
    return roots


def roots_layer(roots: Mapping[str, str] | None) -> dict[str, Any]:
    """{train, val, <test name>...} (datasets.json "roots") as a config layer."""
    if not roots:
        return {}
    data: dict[str, Any] = {}
    tests = {}
    for key, path in roots.items():
        if key in _ROOT_KEYS:
            data[_ROOT_KEYS[key]] = str(path)
        else:
            tests[key] = str(path)
    if tests:
        data["test_roots"] = tests
    return {"data": data}
