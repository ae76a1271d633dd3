"""Read an evaluation split in any of the formats VPR benchmarks ship in; every reader returns an
`EvalSplitIndex` (database and query files in a fixed order, each query's positives).

- `xs`: SF-XS / Tokyo-XS, `<split>/{database,queries}/*.jpg` (`pipeline.data.index.index_eval_split`);
- `downloader`: gmberton/VPR-datasets-downloader, `<dataset>/images/test/{database,queries}/` with
  images in any subfolder and an optional `<folder>_images_paths.txt` beside each folder (one path
  per line, relative to the folder: VPR-methods-evaluation test_dataset.py reads it with
  `splitlines()` and prefixes `<folder>/`); positives from the names' UTM east/north;
- `npy`: the GSV-Cities evaluation files, image paths relative to the folder that holds them, and
  the ground truth as given.

`split_format` tells which one a folder holds; `read_split` reads any. Nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.benchmarks.catalog import DOWNLOADER, NPY
from pipeline.data.index import (IMAGE_SUFFIXES, DatasetLayoutError, EvalSplitIndex, compute_positives,
                                 index_eval_split, utm_of)
from pipeline.data.formats import FormatError

XS = "xs"
# Database folder names: VPR-datasets-downloader writes `database`; SVOX ships it as `gallery`.
DATABASE_FOLDERS = ("database", "gallery")
DOWNLOADER_LAYOUT = ("<dataset>/images/test/{database,queries}/**/*.jpg, names "
                     "@UTM_east@UTM_north@zone@letter@lat@lon@...@.jpg (VPR-datasets-downloader)")
NPY_LAYOUT = "<prefix>_dbImages.npy, <prefix>_qImages.npy and <prefix>_gt.npy (GSV-Cities evaluation files)"


def split_format(folder: str | Path) -> str | None:
    """`xs`, `downloader` or `npy` for an evaluation split folder; None when it holds none of them."""
    folder = Path(folder)
    if any(folder.glob("*_dbImages.npy")):
        return NPY
    database = database_folder(folder)
    if database is None or not (folder / "queries").is_dir():
        return None
    # The XS layout is the downloader's without subfolders: one reader would do, but the XS
    # reader keeps its own (flat, faster) listing and error messages.
    flat = not any(p.is_dir() for sub in (database, folder / "queries") for p in sub.iterdir())
    has_paths_file = any((folder / f"{sub.name}_images_paths.txt").is_file() for sub in (database, folder / "queries"))
    return XS if flat and not has_paths_file and database.name == "database" else DOWNLOADER


def find_split(root: str | Path) -> Path:
    """The test split of a benchmark folder: the folder itself, `images/test` (downloader), `test`,
    or `val` (MSLS, which the downloader writes as msls/{train,val})."""
    root = Path(root)
    for candidate in (root, root / "images" / "test", root / "test", root / "val"):
        if candidate.is_dir() and split_format(candidate):
            return candidate
    raise DatasetLayoutError(
        f"'{root}' holds no evaluation split: expected {DOWNLOADER_LAYOUT}; or {NPY_LAYOUT}; or "
        "<split>/database and <split>/queries (SF-XS layout)")


def read_split(folder: str | Path, radius: float = 25.0, parameter: str = "split") -> EvalSplitIndex:
    """The evaluation split in `folder` (any format; a benchmark's root is searched with `find_split`)."""
    folder = Path(folder)
    kind = split_format(folder) if folder.is_dir() else None
    half_a_split = folder.is_dir() and (database_folder(folder) is not None or (folder / "queries").is_dir())
    if kind is None and folder.is_dir() and not half_a_split:  # a benchmark's root: find its split
        folder = find_split(folder)
        kind = split_format(folder)
    if kind == NPY:
        return read_npy_split(folder, parameter=parameter)
    if kind == DOWNLOADER:
        return read_downloader_split(folder, radius, parameter)
    return index_eval_split(folder, radius, parameter)  # xs, or its error naming what is missing


# --- VPR-datasets-downloader ---------------------------------------------------------------------

def database_folder(split: Path) -> Path | None:
    """The split's database folder (`database`, or SVOX's `gallery`), or None."""
    return next((split / n for n in DATABASE_FOLDERS if (split / n).is_dir()), None)


def split_images(folder: Path, parameter: str = "split") -> list[Path]:
    """The folder's images: as its `<folder>_images_paths.txt` lists them, else every image below
    it (hidden folders skipped), sorted by relative path."""
    listed = folder.parent / f"{folder.name}_images_paths.txt"
    if listed.is_file():
        paths = [folder / line.strip() for line in listed.read_text().splitlines() if line.strip()]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DatasetLayoutError(f"{parameter}: {listed} lists {len(missing)} file(s) that do not exist, the "
                                     f"first {missing[0]}; paths there are relative to {folder}")
        return paths
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                  key=lambda p: p.relative_to(folder).as_posix())


def read_downloader_split(split: str | Path, radius: float = 25.0, parameter: str = "split") -> EvalSplitIndex:
    """A split in the VPR-datasets-downloader layout; positives within `radius` metres (UTM
    east/north from the names, zone ignored as the reference does)."""
    split = Path(split)
    database = database_folder(split)
    if database is None or not (split / "queries").is_dir():
        raise DatasetLayoutError(f"{parameter}: '{split}' has no database/ (or gallery/) and queries/ folder; "
                                 f"expected {DOWNLOADER_LAYOUT}")
    db, queries = split_images(database, parameter), split_images(split / "queries", parameter)
    for name, files in (("database", db), ("queries", queries)):
        if not files:
            raise DatasetLayoutError(f"{parameter}: '{split}' has no images in its {name} folder; expected "
                                     f"{DOWNLOADER_LAYOUT}")
    positives = compute_positives(utm_of(db), utm_of(queries), radius)
    return EvalSplitIndex(split, db, queries, positives, radius)


# --- GSV-Cities evaluation files ----------------------------------------------------------------

def _load_npy(path: Path, what: str, allow_pickle: bool = False) -> np.ndarray:
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: missing ({what}); expected {NPY_LAYOUT}")
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError) as err:
        raise FormatError(f"{path}: not a readable .npy array ({err})") from None


def _ground_truth(array: np.ndarray, path: Path, queries: int) -> list[np.ndarray]:
    """Per query, its positive database indices. The files hold an object array of index arrays
    (Pittsburgh, Nordland, MSLS pIdx) or, for SPED, a 2-D integer array (607 x 1)."""
    if array.dtype == object and array.ndim == 1:
        rows = list(array)
    elif array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
        rows = list(array)
    else:
        raise FormatError(f"{path}: ground truth must be an object array of index arrays (or a 2-D integer "
                          f"array), got {array.dtype} of shape {array.shape}")
    if len(rows) != queries:
        raise FormatError(f"{path}: {len(rows)} ground-truth rows for {queries} queries")
    out = []
    for i, row in enumerate(rows):
        values = np.atleast_1d(np.asarray(row))
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise FormatError(f"{path}: row {i} holds {values.dtype}, not database indices")
        out.append(np.sort(values.astype(np.int64)))
    return out


def read_npy_split(folder: str | Path, prefix: str | None = None, parameter: str = "split") -> EvalSplitIndex:
    """A split given as GSV-Cities evaluation files in `folder` (image paths relative to it).

    MSLS val has no `_gt.npy`: its queries are `qImages[qIdx]` and `pIdx[j]` is the ground truth
    of query j (amaralibey/gsv-cities dataloaders/val/MapillaryDataset.py)."""
    folder = Path(folder)
    if prefix is None:
        found = sorted(folder.glob("*_dbImages.npy"))
        if len(found) != 1:
            raise DatasetLayoutError(f"{parameter}: '{folder}' holds {len(found)} *_dbImages.npy files; give the "
                                     "benchmark's folder with exactly one set of evaluation files")
        prefix = found[0].name.removesuffix("_dbImages.npy")
    db_names = _load_npy(folder / f"{prefix}_dbImages.npy", "database image paths")
    q_names = _load_npy(folder / f"{prefix}_qImages.npy", "query image paths")
    if (folder / f"{prefix}_qIdx.npy").is_file():
        q_index = _load_npy(folder / f"{prefix}_qIdx.npy", "indices of the evaluated queries")
        q_names = q_names[np.asarray(q_index, dtype=np.int64)]
        gt_path = folder / f"{prefix}_pIdx.npy"
    else:
        gt_path = folder / f"{prefix}_gt.npy"
    positives = _ground_truth(_load_npy(gt_path, "ground truth", allow_pickle=True), gt_path, len(q_names))
    db = [folder / str(n) for n in db_names]
    queries = [folder / str(n) for n in q_names]
    bad = next((i for p in positives for i in p if not 0 <= i < len(db)), None)
    if bad is not None:
        raise FormatError(f"{gt_path}: database index {bad} is outside 0..{len(db) - 1}")
    for name, files in (("database", db), ("queries", queries)):
        missing = next((p for p in files if not p.is_file()), None)
        if missing is not None:
            raise DatasetLayoutError(f"{parameter}: {missing} ({name} image listed in {prefix}_*.npy) does not "
                                     f"exist; image paths are relative to {folder}")
    return EvalSplitIndex(folder, db, queries, positives, radius=float("nan"))
