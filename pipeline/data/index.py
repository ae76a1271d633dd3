"""Discover dataset layouts, build manifests and the ground-truth positives of evaluation splits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from pipeline.data.formats import (
    FormatError,
    gsv_cities_image_name,
    parse_image_name,
    parse_utm,
    read_city_csv,
)
from pipeline.errors import ConfigError, UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

EVAL_LAYOUT = "<split>/database/*.jpg and <split>/queries/*.jpg (SF-XS / Tokyo-XS layout)"
TRAIN_LAYOUT = ("train/<City>/@UTMe@UTMn@...@<place_id>_<City>@.jpg (GSV-XS) or "
                "Dataframes/<City>.csv + Images/<City>/*.jpg (GSV-Cities)")


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset folder is missing or not laid out as expected."""


def require_dir(path: str | Path, parameter: str, expected: str) -> Path:
    """Return `path` as a Path, or raise naming the parameter that pointed there and the layout."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(
            f"{parameter}: '{path}' does not exist or is not a folder; expected a folder laid out "
            f"as {expected}")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (a stable, filesystem-independent order)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def compute_positives(database_utm: np.ndarray, query_utm: np.ndarray,
                      radius: float = 25.0) -> list[np.ndarray]:
    """For each query, the sorted indices of database points within `radius` metres (inclusive)."""
    database_utm = np.asarray(database_utm, dtype=np.float64).reshape(-1, 2)
    query_utm = np.asarray(query_utm, dtype=np.float64).reshape(-1, 2)
    if radius < 0:
        raise ConfigError(f"positive radius must be >= 0 metres, got {radius}")
    if len(database_utm) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(query_utm))]
    tree = cKDTree(database_utm)
    hits = tree.query_ball_point(query_utm, r=radius)
    return [np.array(sorted(h), dtype=np.int64) for h in hits]


def utm_of(paths: list[Path] | list[str]) -> np.ndarray:
    """UTM (east, north) of every image name; raises FormatError naming the first bad file."""
    out = np.empty((len(paths), 2), dtype=np.float64)
    for i, p in enumerate(paths):
        out[i] = parse_utm(p)
    return out


@dataclass
class EvalSplitIndex:
    """File lists and ground truth of one evaluation split."""

    root: Path
    database_paths: list[Path]
    query_paths: list[Path]
    positives: list[np.ndarray] = field(repr=False)
    radius: float = 25.0   # NaN when the ground truth is given (GSV-Cities evaluation files)

    @property
    def name(self) -> str:
        """`<dataset>/<split>`: a downloader split `<dataset>/images/test` and a folder of
        evaluation files `<dataset>/` are `<dataset>/test`."""
        if self.radius != self.radius:
            return f"{self.root.name}/test"
        parent = self.root.parent.parent if self.root.parent.name == "images" else self.root.parent
        return f"{parent.name}/{self.root.name}"

    def __repr__(self) -> str:
        no_pos = sum(len(p) == 0 for p in self.positives)
        rule = f"within {self.radius:g} m" if self.radius == self.radius else "in the given ground truth"
        return (f"EvalSplitIndex({self.name}: {len(self.database_paths)} database, "
                f"{len(self.query_paths)} queries, {no_pos} without positives {rule})")


def index_eval_split(split_dir: str | Path, radius: float = 25.0,
                     parameter: str = "split") -> EvalSplitIndex:
    """Scan `<split_dir>/{database,queries}` and compute each query's positives."""
    split_dir = require_dir(split_dir, parameter, EVAL_LAYOUT)
    parts = {}
    for sub in ("database", "queries"):
        folder = split_dir / sub
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"{parameter}: '{split_dir}' has no '{sub}/' folder; expected {EVAL_LAYOUT}")
        parts[sub] = list_images(folder)
    db, q = parts["database"], parts["queries"]
    positives = compute_positives(utm_of(db), utm_of(q), radius)
    return EvalSplitIndex(split_dir, db, q, positives, radius)


# --- training sets ---------------------------------------------------------------------------

def index_gsv_xs(root: str | Path, parameter: str = "train_root") -> pd.DataFrame:
    """Manifest of a GSV-XS training set: one row per image (path, city, place_id, UTM)."""
    root = require_dir(root, parameter, TRAIN_LAYOUT)
    train = root / "train" if (root / "train").is_dir() else root
    rows = []
    cities = sorted(p for p in train.iterdir() if p.is_dir())
    if not cities:
        raise DatasetLayoutError(f"{parameter}: '{train}' has no city folders; expected {TRAIN_LAYOUT}")
    for city_dir in cities:
        for path in list_images(city_dir):
            rec = parse_image_name(path)
            if rec.place_id is None:
                raise FormatError(f"{path}: training image name has no '<place_id>_<City>' tag")
            rows.append((str(path), rec.city or city_dir.name, rec.place_id, rec.utm_east, rec.utm_north))
    return pd.DataFrame(rows, columns=["path", "city", "place_id", "utm_east", "utm_north"])


def index_gsv_cities(root: str | Path, parameter: str = "train_root") -> pd.DataFrame:
    """Manifest of a GSV-Cities training set (Dataframes/<City>.csv + Images/<City>/...)."""
    root = require_dir(root, parameter, TRAIN_LAYOUT)
    frames = sorted((root / "Dataframes").glob("*.csv"))
    if not frames:
        raise DatasetLayoutError(f"{parameter}: '{root / 'Dataframes'}' holds no city CSV; expected {TRAIN_LAYOUT}")
    rows = []
    for csv in frames:
        df = read_city_csv(csv)
        images = root / "Images" / csv.stem
        for r in df.itertuples(index=False):
            name = gsv_cities_image_name(csv.stem, r.place_id, r.year, r.month, r.heading, r.lat, r.lon, r.panoid)
            rows.append((str(images / name), csv.stem, int(r.place_id), r.utm_east, r.utm_north))
    return pd.DataFrame(rows, columns=["path", "city", "place_id", "utm_east", "utm_north"])


def index_training_set(root: str | Path, parameter: str = "train_root") -> pd.DataFrame:
    """Manifest of either training layout, detected from the folder contents."""
    root = require_dir(root, parameter, TRAIN_LAYOUT)
    if (root / "Dataframes").is_dir():
        return index_gsv_cities(root, parameter)
    return index_gsv_xs(root, parameter)


# --- whole dataset roots ---------------------------------------------------------------------

def discover(root: str | Path, parameter: str = "ROOT") -> dict[str, Path]:
    """Find the training set and evaluation splits under a dataset root.

    Returns {'train': path} and/or {'<dataset>/<split>': path}. A root may itself be a split
    folder, a dataset folder (sf_xs/) or a folder of datasets (the embedded data's top level).
    """
    root = require_dir(root, parameter, f"{TRAIN_LAYOUT}, or {EVAL_LAYOUT}")
    found: dict[str, Path] = {}

    def visit(folder: Path, depth: int) -> None:
        if any(folder.glob("*_dbImages.npy")):  # GSV-Cities evaluation files: `<dataset>/` is its test split
            found[f"{folder.name}/test"] = folder
            return
        if (folder / "database").is_dir() or (folder / "queries").is_dir():
            # an evaluation split; a benchmark's `<dataset>/images/test` is named `<dataset>/test`
            dataset = folder.parent.parent.name if folder.parent.name == "images" else folder.parent.name
            found[f"{dataset}/{folder.name}"] = folder
            return
        if (folder / "Dataframes").is_dir() or (folder.name == "train" and _has_city_dirs(folder)):
            found[f"{folder.parent.name}/train" if folder.name == "train" else f"{folder.name}/train"] = folder
            return
        if depth < 3:  # a folder of benchmarks: <root>/<dataset>/images/test
            for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                visit(sub, depth + 1)

    visit(root, 0)
    if not found:
        raise DatasetLayoutError(
            f"{parameter}: '{root}' contains no dataset; expected {TRAIN_LAYOUT}, or {EVAL_LAYOUT}")
    return found


def is_training_split(folder: Path) -> bool:
    """True for a training set found by `discover` (GSV-XS `train/` or a GSV-Cities root)."""
    return (folder / "Dataframes").is_dir() or (folder.name == "train" and not (folder / "database").is_dir())


def _has_city_dirs(folder: Path) -> bool:
    return any(p.is_dir() for p in folder.iterdir())


def write_index(root: str | Path, out: str | Path, radius: float = 25.0) -> dict:
    """Write manifests (CSV) and positives (one line per query, published format) for a root.

    Returns a summary dict, also written to `out/index.json`.
    """
    root = Path(root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"root": str(root), "radius_m": radius, "splits": {}}
    for key, folder in discover(root).items():
        tag = key.replace("/", "_")
        if is_training_split(folder):
            df = index_training_set(folder)
            df["path"] = [str(Path(p).relative_to(root)) for p in df["path"]]
            df.to_csv(out / f"{tag}_manifest.csv", index=False)
            counts = df.groupby(["city", "place_id"]).size()
            summary["splits"][key] = {"kind": "train", "images": int(len(df)), "places": int(len(counts)),
                                      "cities": sorted(df["city"].unique().tolist())}
            continue
        split = index_eval_split(folder, radius, parameter=key)
        rows = [(str(p.relative_to(root)), "database", *utm) for p, utm in zip(split.database_paths, utm_of(split.database_paths))]
        rows += [(str(p.relative_to(root)), "queries", *utm) for p, utm in zip(split.query_paths, utm_of(split.query_paths))]
        pd.DataFrame(rows, columns=["path", "role", "utm_east", "utm_north"]).to_csv(
            out / f"{tag}_manifest.csv", index=False)
        write_positives(split.positives, out / f"{tag}_positives.txt")
        summary["splits"][key] = {"kind": "eval", "database": len(split.database_paths),
                                  "queries": len(split.query_paths),
                                  "queries_without_positives": int(sum(len(p) == 0 for p in split.positives))}
    (out / "index.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_positives(positives: list[np.ndarray], path: Path) -> None:
    """One line per query: space-separated sorted database indices (the published format)."""
    path.write_text("".join(" ".join(map(str, p.tolist())) + "\n" for p in positives))


def read_positives(path: str | Path) -> list[np.ndarray]:
    """Inverse of `write_positives`."""
    lines = Path(path).read_text().splitlines()
    return [np.array([int(t) for t in line.split()], dtype=np.int64) for line in lines]
