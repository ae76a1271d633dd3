"""The planner: studies -> the distinct runs that reproduce them, and the plan a sweep executed.

Each cell x seed of a study is resolved as the layers, in order:

    recipe defaults <- study.base <- grid point <- variant.set <- {seed}     (pipeline.studies.study)
                    <- profile run.set <- min(epochs, profile run.max_epochs) <- dataset roots

with `pipeline.profile.apply_profile` (a layer that changes a component's name replaces that
section). The profile layer scales a run (image size, batches, workers) and may not change what
is compared (`pipeline.profile.PROFILE_FIXED`). `plan` merges cells with the same `config_hash`
into one `PlannedRun`, so a run that serves several tables is trained once.

`write_plan` records a plan as JSON (the `train` stage's `data/sweep/plan.json`) and
`load_recorded_plan` reads it back, so the report describes exactly what was trained instead of
re-expanding the studies. Format (version 1):

    {"version": 1, "profile": "demo",
     "runs": [{"config_hash": "...", "config": {<resolved RunConfig as a dict>},
               "cells": [{"study": "...", "label": "...", "seed": 0}, ...]}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import project_files
from pipeline.config import RunConfig, config_from_dict, config_hash
from pipeline.errors import UserError
from pipeline.profile import apply_profile, load_profile, load_roots, run_scale
from pipeline.studies.study import Study, cell_stacks, load_study

__all__ = ["PLAN_VERSION", "Cell", "PlannedRun", "expand_study", "load_recorded_plan", "plan", "plan_records",
           "resolve_cell", "write_plan"]

PLAN_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One cell of a study at one seed, resolved to a run config."""

    study: str
    label: str
    seed: int
    config: RunConfig
    config_hash: str


@dataclass
class PlannedRun:
    """One distinct run (one config hash) and every study cell it serves."""

    config_hash: str
    config: RunConfig
    cells: list[Cell] = field(default_factory=list)

    @property
    def studies(self) -> list[str]:
        """Ids of the studies this run serves, sorted."""
        return sorted({c.study for c in self.cells})

    def __repr__(self) -> str:
        return f"PlannedRun({self.config_hash}, {len(self.cells)} cells, studies={self.studies})"


def expand_study(study: Study, profile: Mapping[str, Any] | None = None,
                 roots: Mapping[str, str] | None = None, tuned_dir: str | Path | None = None) -> list[Cell]:
    """Every cell x seed of `study` as a resolved config (layer order: module docstring).

    `profile` is one profile of params.yaml (its `run:` section is used); `roots` the dataset
    roots from the prepare stage. Raises ConfigError naming the file, the cell and the key.
    """
    run_scale(profile)  # a wrong profile fails once, before any cell
    cells = []
    for cell in cell_stacks(study, tuned_dir):
        cfg = apply_profile(cell.layers, profile, roots, cell.source)
        cells.append(Cell(study.id, cell.label, cell.seed, cfg, config_hash(cfg)))
    return cells


def plan(studies: Iterable[Study], profile: Mapping[str, Any] | None = None,
         roots: Mapping[str, str] | None = None, tuned_dir: str | Path | None = project_files.TUNED_VALUES_DIR) -> list[PlannedRun]:
    """Expand every study and merge cells with the same config hash into one PlannedRun.

    Order is stable: runs appear in the order of their first cell (studies in the given order,
    cells in expansion order). The run's config is its first cell's (same hash = same semantics).
    """
    runs: dict[str, PlannedRun] = {}
    for study in studies:
        for cell in expand_study(study, profile, roots, tuned_dir):
            run = runs.get(cell.config_hash)
            if run is None:
                run = runs[cell.config_hash] = PlannedRun(cell.config_hash, cell.config)
            run.cells.append(cell)
    return list(runs.values())


class CellNotFound(UserError):
    """A study or cell label that does not exist; the message lists the valid ones."""


def resolve_cell(study: str, label: str, seed: int | None = None, params: str | Path = "params.yaml",
                 prepared: str | Path = "data/prepared", experiments: str | Path = "experiments",
                 tuned_dir: str | Path | None = project_files.TUNED_VALUES_DIR) -> Cell:
    """One cell of a study resolved as the sweep resolves it (profile of `params`, prepared roots
    when the prepare stage has run): `vpr config show`."""
    path = Path(study)
    if not path.is_file():
        path = Path(experiments) / f"{study}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in Path(experiments).glob("*.yaml") if not p.name.startswith("tune_"))
            raise CellNotFound(f"no study {study!r} in {experiments}/ (studies: {', '.join(known)})")
    parsed = load_study(path)
    if label not in parsed.labels:
        raise CellNotFound(f"{path}: no cell {label!r} (cells: {', '.join(repr(x) for x in parsed.labels)})")
    seed = parsed.seeds[0] if seed is None else seed
    if seed not in parsed.seeds:
        raise CellNotFound(f"{path}: cell {label!r} has no seed {seed} (seeds: {list(parsed.seeds)})")
    _, profile = load_profile(params)
    cells = expand_study(parsed, profile, load_roots(prepared), tuned_dir)
    return next(c for c in cells if c.label == label and c.seed == seed)


def plan_records(planned: Iterable[PlannedRun]) -> list[dict[str, Any]]:
    """Each run as plain data: hash, cells and the fully resolved config the trainer receives."""
    return [{"config_hash": p.config_hash, "config": p.config.to_dict(),
             "cells": [{"study": c.study, "label": c.label, "seed": c.seed} for c in p.cells]}
            for p in planned]


def write_plan(planned: Iterable[PlannedRun], path: str | Path, profile: str | None = None) -> Path:
    """Record a plan as JSON at `path` (format: module docstring); written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"version": PLAN_VERSION, "profile": profile, "runs": plan_records(planned)},
                              indent=1, sort_keys=False))
    tmp.replace(path)
    return path


class PlanFileError(UserError):
    """A recorded plan is missing or unreadable."""


def load_recorded_plan(path: str | Path) -> list[PlannedRun]:
    """The runs a sweep recorded with `write_plan`, as PlannedRuns (cells share the run's config)."""
    path = Path(path)
    if not path.is_file():
        raise PlanFileError(f"{path}: no recorded plan; run the train stage (`vpr sweep run --record-plan "
                            f"{path}`) first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PlanFileError(f"{path}: not a JSON plan ({err}); rerun the train stage (dvc repro)") from None
    version = data.get("version") if isinstance(data, dict) else None
    if version != PLAN_VERSION:
        raise PlanFileError(f"{path}: plan version {version!r}, expected {PLAN_VERSION}; rerun the train "
                            "stage (dvc repro)")
    planned = []
    try:
        for run in data["runs"]:
            cfg = config_from_dict(run["config"], source=f"{path}: run {run['config_hash']}")
            cells = [Cell(c["study"], c["label"], int(c["seed"]), cfg, run["config_hash"]) for c in run["cells"]]
            planned.append(PlannedRun(run["config_hash"], cfg, cells))
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise PlanFileError(f"{path}: a run lacks {err} or is malformed; rerun the train stage (dvc repro)") from None
    return planned
