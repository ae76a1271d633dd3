"""Write the embedded datasets: the output folder, the marker, and the rendering workers."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from dataclasses import asdict
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from pipeline.data.formats import ORIGINAL_CSV_COLUMNS
from pipeline.data.synthetic.layout import POSITIVE_RADIUS_M, PlaceTask, eval_layout, eval_specs, train_layout
from pipeline.data.synthetic.scales import SCALES
from pipeline.data.synthetic.scene import render_scene
from pipeline.data.synthetic.seeds import rng_for
from pipeline.data.synthetic.views import CONDITIONS, render_view
from pipeline.errors import UserError

GENERATOR_VERSION = 1
MARKER = "synth.json"
# Top-level entries a previous generation may have left; anything else makes `out` foreign.
GENERATED_ENTRIES = ("gsv_xs", "gsv_cities", "sf_xs", "tokyo_xs", MARKER)


class SynthError(UserError, ValueError):
    """A generation request that cannot be served (unknown scale, bad seed or size)."""


class SynthOutputError(UserError, FileExistsError):
    """The output folder is not one the generator may write to."""


def _render_task(args: tuple[int, tuple[int, int], str, PlaceTask]) -> int:
    """Render one place's views and write them under `out`; returns the number of images."""
    seed, size, out, task = args
    scene, lights = render_scene(seed, task.street, task.place_key, size[0])
    for view in task.views:
        rng = rng_for(seed, "view", *view.seed_key)
        data = render_view(scene, lights, size, CONDITIONS[view.condition], rng, view.displacement_m)
        for rel in view.paths:
            with open(os.path.join(out, rel), "wb") as f:
                f.write(data)
    return len(task.views)


def _prepare_out(out: Path) -> None:
    """Create `out`, or clear a previous generation there; refuse a foreign non-empty folder."""
    if out.exists() and not out.is_dir():
        raise SynthOutputError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            foreign = [e for e in entries if e not in GENERATED_ENTRIES]
            if MARKER not in entries or foreign:
                raise SynthOutputError(
                    f"{out}: folder is not empty and holds no previous synthetic generation "
                    f"(no {MARKER}, or foreign entries {foreign[:5]}); refusing to write there. "
                    "Use an empty or new folder.")
            for name in entries:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def parse_image_size(value: int | str | Sequence[int]) -> tuple[int, int]:
    """(height, width) from `N` (square), `HxW` (e.g. `480x640`, the real datasets' size) or [H, W]."""
    try:
        if isinstance(value, str):
            parts = value.lower().split("x")
            if len(parts) not in (1, 2):
                raise ValueError
            size = tuple(int(p) for p in parts)
        elif isinstance(value, int):
            size = (value, value)
        else:
            size = tuple(int(p) for p in value)
        height, width = size if len(size) == 2 else size * 2
    except (TypeError, ValueError):
        raise SynthError(f"image size {value!r} is not N or HxW (e.g. 64 or 480x640)") from None
    if min(height, width) < 16:
        raise SynthError(f"image_size must be at least 16 pixels a side, got {value!r}")
    return height, width


def _check_request(seed: int, scale: str, image_size: int | str | Sequence[int] | None
                   ) -> tuple[int, tuple[int, int]]:
    """The validated (seed, (height, width)) of a request; SynthError names the bad value."""
    if scale not in SCALES:
        raise SynthError(f"unknown synthetic scale '{scale}'; valid scales: {', '.join(SCALES)}")
    if int(seed) != seed or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed), parse_image_size(image_size or SCALES[scale].image_size)


def _write_layout(out: Path, tasks: list[PlaceTask], frames: dict | None) -> None:
    """Create every folder (names must be unique) and, when asked, the GSV-Cities dataframes."""
    paths = [p for t in tasks for v in t.views for p in v.paths]
    if len(set(paths)) != len(paths):  # the panoid field guarantees it in practice
        raise RuntimeError("synthetic generator produced duplicate file names; report this seed")
    for folder in sorted({os.path.dirname(p) for p in paths}):
        (out / folder).mkdir(parents=True, exist_ok=True)
    if frames is not None:
        import pandas as pd  # only this optional layout needs it
        (out / "gsv_cities/Dataframes").mkdir(parents=True, exist_ok=True)
        for city, rows in frames.items():
            pd.DataFrame(rows, columns=ORIGINAL_CSV_COLUMNS).to_csv(
                out / f"gsv_cities/Dataframes/{city}.csv", index=False)


def _render_all(jobs: list, n_images: int, workers: int | None, desc: str, progress: bool) -> None:
    """Render every place task, in worker processes when there are enough of them."""
    if workers is None:  # the CPUs this process may use (a container's share, not the host's)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(8, cpus)
    workers = max(1, workers)
    with tqdm(total=n_images, unit="img", desc=desc, disable=not progress) as bar:
        if workers == 1 or len(jobs) < 4:
            for job in jobs:
                bar.update(_render_task(job))
        else:
            # fork is cheap and the workers only run numpy/PIL; spawn elsewhere
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(workers) as pool:
                for done in pool.imap_unordered(_render_task, jobs, chunksize=8):
                    bar.update(done)


def generate(out: Path, seed: int = 0, scale: str = "demo", image_size: int | str | Sequence[int] | None = None,
             gsv_cities_layout: bool = False, progress: bool = True, workers: int | None = None) -> dict:
    """Write the embedded datasets under `out`; return a summary dict (counts per split, params).

    `image_size` is `N` (square) or `HxW`/(H, W); default: the scale's square size.
    The files are a function of (seed, scale, image_size) alone: `workers` (default: the usable
    CPUs, at most 8) only changes speed. `out` must be new, empty or hold a previous generation (its
    `synth.json` marker), which is removed first. Raises SynthError for an unknown scale, a bad
    seed or size, SynthOutputError for a folder it may not write to.
    """
    seed, size = _check_request(seed, scale, image_size)
    sc = SCALES[scale]
    out = Path(out)
    _prepare_out(out)

    tasks, frames, train_counts = train_layout(seed, sc, gsv_cities_layout)
    counts: dict[str, dict] = {"gsv_xs/train": train_counts}
    for spec in eval_specs(sc).values():
        split_tasks, counts[spec.folder] = eval_layout(seed, spec)
        tasks += split_tasks
    _write_layout(out, tasks, frames if gsv_cities_layout else None)
    if gsv_cities_layout:
        counts["gsv_cities"] = dict(train_counts)

    summary = {"generator": "pipeline.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
               "scale": scale, "scale_params": asdict(sc), "image_size": size[0] if size[0] == size[1] else list(size),
               "gsv_cities_layout": gsv_cities_layout, "positive_radius_m": POSITIVE_RADIUS_M,
               "counts": counts, "complete": False}
    # the marker goes first, so an interrupted generation can be regenerated in place
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    jobs = [(seed, size, str(out), t) for t in tasks]
    _render_all(jobs, sum(len(t.views) for t in tasks), workers, f"synth {scale}", progress)
    summary["complete"] = True
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
