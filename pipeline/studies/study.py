"""Studies: one YAML file per paper table or figure, the comparisons that reproduce it.

A study file (schema and examples: experiments/README.md) names a paper table, a `base` config
layer, the cells to compare (a `grid` of config values and/or explicit `variants`), the `seeds`
to repeat every cell with, the paper's `published` numbers per cell label, and optionally the
`baseline` cell and the `qualitative` cells the report shows. `load_study` validates everything
before any compute: the schema (unknown keys, metric and dataset names), that labels named
anywhere are cells, and that every cell resolves to a valid `RunConfig`; errors name the file,
the key and, for a cell, its label.

A cell's own layers are `study.base <- grid point <- variant.set <- {seed}` (`cell_stacks`);
`pipeline.studies.plan` adds the profile's scale and the dataset roots and merges cells into runs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config import config_from_layers, nest_dotted
from pipeline.data.benchmarks import BENCHMARKS
from pipeline.errors import ConfigError, read_yaml
from pipeline.components.optim import OPTIMIZERS
from pipeline.studies.study_file import DATASETS, KINDS, METRICS, StudyFileConfig, describe_errors

__all__ = [
    "DATASETS", "KINDS", "METRICS", "TUNED", "CellStack", "Study", "StudyError", "Variant", "cell_stacks",
    "load_studies", "load_study", "resolve_tuned",
]

TUNED = "tuned"  # `optimizer: {name: tuned, ...}`: the best values of an Optuna tuning


class StudyError(ConfigError):
    """An invalid study file; names the file and every offending key."""

    def __init__(self, problems: str | list[str], source: str | None = None) -> None:
        super().__init__(problems, source)
        where = f" ({source})" if source else ""
        self.args = (f"invalid study{where}:\n" + "\n".join(f"  {p}" for p in self.problems),)


# ---------------------------------------------------------------------------------------------
# Parsed objects


@dataclass(frozen=True)
class Variant:
    """An explicit cell: a label and the config layer it applies (nested and/or dotted keys)."""

    label: str
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file. `published` is plain data: {label: {dataset or 'per_epoch': ...}}."""

    path: Path
    id: str
    paper: str | None
    reproduces: str | None
    title: str
    kind: str
    base: dict[str, Any]
    seeds: tuple[int, ...]
    grid: dict[str, list[Any]]
    variants: tuple[Variant, ...]
    published: dict[str, dict[str, Any]]
    baseline: str | None = None
    qualitative: tuple[str, ...] = ()  # cell labels the report's qualitative figure shows
    benchmarks: tuple[str, ...] = ()   # benchmark keys its runs are tested on (evaluate stage)
    cost: bool = False                 # the report adds what each cell costs next to its recall

    @property
    def origin(self) -> str:
        """What it reproduces, for captions: "paper 003 Table 2", or "beyond the papers"."""
        return f"paper {self.paper} {self.reproduces}" if self.paper else "beyond the papers"

    @property
    def labels(self) -> list[str]:
        """Cell labels in expansion order (grid points, each with every variant)."""
        return [label for label, _ in _cell_layers(self)]

    def __repr__(self) -> str:
        return (f"Study({self.id!r}, {self.origin}, {self.kind}, "
                f"{len(self.labels)} cells x {len(self.seeds)} seeds, {len(self.published)} published)")


# ---------------------------------------------------------------------------------------------
# Cells and labels


def _value_label(value: Any) -> str:
    """Readable text of a grid value: `gem`, `0.0001`, `64x64`, `triplet margin=1`."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        head = [str(value["name"])] if "name" in value else []
        return " ".join(head + [f"{k}={_value_label(v)}" for k, v in value.items() if k != "name"])
    if isinstance(value, (list, tuple)):
        return "x".join(_value_label(v) for v in value)
    return str(value)


def _cell_layers(study: Study) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, [grid layer, variant layer]) per cell, grid points outer, variants inner."""
    axes = list(study.grid)
    points = list(itertools.product(*(study.grid[a] for a in axes))) if axes else [()]
    variants: list[Variant | None] = list(study.variants) or [None]
    cells = []
    for point in points:
        grid_label = " / ".join(_value_label(v) for v in point)
        for variant in variants:
            labels = [text for text in (grid_label, variant.label if variant else "") if text]
            layers = [dict(zip(axes, point))] + ([variant.set] if variant else [])
            cells.append((" / ".join(labels) or "base", layers))
    return cells


def tuned_values_path(tuned_dir: str | Path, tuning_id: str) -> Path:
    """Where `vpr tune run` writes a tuning's best values and studies read them."""
    return Path(tuned_dir) / tuning_id / "best_params.json"


def resolve_tuned(layer: Mapping[str, Any], tuned_dir: str | Path | None, source: str) -> dict[str, Any]:
    """Replace `optimizer: {name: tuned, tuning: <id>, optimizer: <name>}` in a layer by that
    optimizer with the best values of the tuning (`<tuned_dir>/<id>/best_params.json`).

    With `tuned_dir=None` (validating a study file before any tuning ran) the optimizer keeps
    its defaults, so the rest of the cell is still checked.
    """
    nested = nest_dotted(layer, source)
    opt = nested.get("optimizer")
    if not (isinstance(opt, Mapping) and opt.get("name") == TUNED):
        return nested
    tuning_id, name = opt.get("tuning"), opt.get("optimizer")
    if not tuning_id or name not in OPTIMIZERS:
        raise StudyError([f"optimizer: `name: tuned` needs `tuning: <tune_*.yaml id>` and `optimizer:` one of "
                          f"{', '.join(OPTIMIZERS)} (got tuning={tuning_id!r}, optimizer={name!r})"], source)
    extra = {k: v for k, v in opt.items() if k not in ("name", "tuning", "optimizer")}
    values: dict[str, Any] = {}
    if tuned_dir is not None:
        path = tuned_values_path(tuned_dir, tuning_id)
        if not path.is_file():
            raise StudyError([f"optimizer: tuned values of {tuning_id!r} not found at {path}; run "
                              f"`vpr tune run experiments/{tuning_id}.yaml` (the DVC stage tune) first"], source)
        best = json.loads(path.read_text()).get(name)
        if not best:
            raise StudyError([f"optimizer: {path} has no finished trial for {name!r}"], source)
        values = {k: v for k, v in best.items() if k in OPTIMIZERS[name].model_fields and k != "name"}
    return {**nested, "optimizer": {"name": name, **values, **extra}}


@dataclass(frozen=True)
class CellStack:
    """One cell at one seed as its own config layers: base <- grid point <- variant <- {seed}."""

    label: str
    seed: int
    source: str  # "<file>: cell '<label>', seed <n>", for errors
    layers: list[dict[str, Any]]


def cell_stacks(study: Study, tuned_dir: str | Path | None = None) -> list[CellStack]:
    """Every cell x seed of `study` (cells in expansion order, seeds inner) as config layers;
    `optimizer: tuned` resolved from `tuned_dir` (defaults when None)."""
    stacks = []
    for label, layers in _cell_layers(study):
        for seed in study.seeds:
            source = f"{study.path}: cell {label!r}, seed {seed}"
            stack = [resolve_tuned(layer, tuned_dir, source) for layer in (study.base, *layers)]
            stacks.append(CellStack(label, seed, source, [*stack, {"seed": seed}]))
    return stacks


def _check(study: Study) -> list[str]:
    """Cross-field rules of a parsed study (everything but config validity)."""
    problems = []
    if study.id != study.path.stem:
        problems.append(f"study: must equal the file name without .yaml ({study.path.stem!r}), got {study.id!r}")
    for where, layer in [("base", study.base)] + [(f"variants[{i}].set", v.set) for i, v in enumerate(study.variants)]:
        try:
            nested = nest_dotted(layer)
        except ConfigError as err:
            problems += [f"{where}: {p}" for p in err.problems]
            continue
        if "seed" in nested:
            problems.append(f"{where}.seed: set seeds with the top-level `seeds:` list")
    if "seed" in study.grid:
        problems.append("grid.seed: set seeds with the top-level `seeds:` list")
    labels = study.labels
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        problems.append(f"variants: cell labels must be unique, repeated: {repeated}")
    valid = ", ".join(repr(x) for x in labels)
    for label, cell in study.published.items():
        if label not in labels:
            problems.append(f"published[{label!r}]: not a cell of this study (cells: {valid})")
        if not cell:
            problems.append(f"published[{label!r}]: no numbers (give {', '.join(DATASETS)} or per_epoch)")
        if "per_epoch" in cell and study.kind != "per_epoch":
            problems.append(f"published[{label!r}].per_epoch: only for kind per_epoch (this study is {study.kind})")
    if study.baseline is not None and study.baseline not in labels:
        problems.append(f"baseline: {study.baseline!r} is not a cell of this study (cells: {valid})")
    for i, label in enumerate(study.qualitative):
        if label not in labels:
            problems.append(f"qualitative[{i}]: {label!r} is not a cell of this study (cells: {valid})")
    if (study.paper is None) != (study.reproduces is None):
        problems.append("paper and reproduces: give both (a paper's table) or neither (a study beyond the papers)")
    if study.published and study.paper is None:
        problems.append("published: numbers need the paper they come from (paper: and reproduces:)")
    for i, key in enumerate(study.benchmarks):
        if key not in BENCHMARKS:
            problems.append(f"benchmarks[{i}]: unknown benchmark {key!r} (valid: {', '.join(BENCHMARKS)}, or all)")
    return problems


def load_study(path: str | Path) -> Study:
    """Parse and validate one study file; every cell is resolved (recipe defaults, no profile) so
    that a wrong name or value fails here. Raises StudyError/ConfigError naming the file and key."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        m = StudyFileConfig.model_validate(raw)
    except ValidationError as err:
        raise StudyError(describe_errors(err), str(path)) from None
    study = Study(
        path=path, id=m.study, paper=m.paper, reproduces=m.reproduces, title=m.title, kind=m.kind,
        base=m.base, seeds=tuple(m.seeds), grid=m.grid,
        variants=tuple(Variant(v.label, v.set_) for v in m.variants),
        published={label: cell.model_dump(by_alias=True, exclude_none=True) for label, cell in m.published.items()},
        baseline=m.baseline, qualitative=tuple(m.qualitative),
        benchmarks=tuple(BENCHMARKS) if m.benchmarks == "all" else tuple(m.benchmarks), cost=m.cost,
    )
    problems = _check(study)
    if problems:
        raise StudyError(problems, str(path))
    for stack in cell_stacks(study):
        config_from_layers(stack.layers, stack.source)
    return study


def _study_files(paths_or_dirs: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in paths_or_dirs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.glob("*.yaml") if not f.name.startswith("tune_"))
        elif p.is_file():
            files.append(p)
        else:
            raise StudyError(f"{p}: no such study file or folder")
    seen: set[Path] = set()
    unique = []
    for f in files:  # a file named twice (itself and via its folder) is loaded once
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def load_studies(paths_or_dirs: Sequence[str | Path] = ("experiments",)) -> list[Study]:
    """Every study in the given files and folders (folders: *.yaml except tune_*.yaml, sorted).

    Study ids must be unique: a repeated id is an error naming both files.
    """
    if isinstance(paths_or_dirs, (str, Path)):
        paths_or_dirs = [paths_or_dirs]
    studies: list[Study] = []
    by_id: dict[str, Path] = {}
    for f in _study_files(paths_or_dirs):
        study = load_study(f)
        if study.id in by_id:
            raise StudyError(f"study: id {study.id!r} is defined twice: {by_id[study.id]} and {f}")
        by_id[study.id] = f
        studies.append(study)
    return studies
