"""`vpr data check`: find every problem in a dataset root at once, without modifying anything."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from pipeline.data.benchmarks.catalog import NPY
from pipeline.data.benchmarks.formats import (DOWNLOADER_LAYOUT, NPY_LAYOUT, XS, database_folder, read_npy_split,
                                              split_format, split_images)
from pipeline.data.formats import FormatError, parse_image_name, parse_utm
from pipeline.data.index import (EVAL_LAYOUT, TRAIN_LAYOUT, DatasetLayoutError, compute_positives,
                                 discover, is_training_split, list_images)

# Splits each known dataset folder must have (the real releases' layout).
EXPECTED_SPLITS = {"sf_xs": ("val", "test"), "tokyo_xs": ("test",), "gsv_xs": ("train",)}


@dataclass(frozen=True)
class Problem:
    """One finding: severity 'error' or 'warning', the path concerned and what is wrong."""

    severity: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.path}: {self.message}"


@dataclass
class CheckReport:
    """All problems found under a root, plus what was scanned."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    scanned: dict[str, dict] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, severity: str, path: str | Path, message: str) -> None:
        self.problems.append(Problem(severity, str(path), message))


def check_image(path: Path) -> str | None:
    """Return why an image cannot be used, or None if it decodes fully."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(path) as img:
            img.load()
    except OSError as err:
        return f"unreadable or truncated image ({err})"
    return None


def check_dataset(root: str | Path, min_images_per_place: int = 4, radius: float = 25.0,
                  decode_images: bool = True, progress: bool = True) -> CheckReport:
    """Scan every split under `root` and report all problems found (never raises on bad data)."""
    root = Path(root)
    report = CheckReport(root)
    if not root.is_dir():
        report.add("error", root, f"dataset root does not exist; expected a folder with {TRAIN_LAYOUT}, "
                                  f"or {EVAL_LAYOUT}")
        return report
    _check_expected_splits(root, report)
    try:
        splits = discover(root)
    except DatasetLayoutError as err:
        report.add("error", root, str(err))
        return report
    for key, folder in splits.items():
        if is_training_split(folder):
            _check_train(key, folder, min_images_per_place, decode_images, progress, report)
        else:
            _check_eval(key, folder, radius, decode_images, progress, report)
    return report


def _check_expected_splits(root: Path, report: CheckReport) -> None:
    candidates = [root] + [p for p in root.iterdir() if p.is_dir()]
    for folder in candidates:
        for split in EXPECTED_SPLITS.get(folder.name, ()):
            if not (folder / split).is_dir():
                report.add("error", folder / split, f"missing split folder: {folder.name} must contain "
                                                    f"{', '.join(s + '/' for s in EXPECTED_SPLITS[folder.name])}")


def _scan_images(paths: list[Path], decode: bool, progress: bool, desc: str,
                 report: CheckReport, parse=parse_image_name) -> list[tuple[Path, object]]:
    """Parse every name with `parse` (and decode every image); return (path, parsed) of the usable ones."""
    usable = []
    for path in tqdm(paths, desc=desc, unit="img", disable=not progress, leave=False):
        try:
            rec = parse(path) if parse is not None else None
        except FormatError as err:
            report.add("error", path, str(err).split(": ", 1)[-1])
            continue
        if decode:
            why = check_image(path)
            if why:
                report.add("error", path, why)
                continue
        usable.append((path, rec))
    return usable


def _check_eval(key: str, folder: Path, radius: float, decode: bool, progress: bool,
                report: CheckReport) -> None:
    """An evaluation split in any format (`pipeline.data.benchmarks.formats`): names, images, positives."""
    if split_format(folder) == NPY:
        _check_npy(key, folder, decode, progress, report)
        return
    downloader = split_format(folder) not in (None, XS)
    layout = DOWNLOADER_LAYOUT if downloader else EVAL_LAYOUT
    parts = {}
    for sub in ("database", "queries"):
        sub_folder = database_folder(folder) if sub == "database" else folder / sub
        if sub_folder is None or not sub_folder.is_dir():
            report.add("error", folder / sub, f"missing folder; expected {layout}")
            continue
        try:
            paths = split_images(sub_folder, key) if downloader else list_images(sub_folder)
        except DatasetLayoutError as err:
            report.add("error", sub_folder, str(err))
            continue
        if not paths:
            report.add("error", sub_folder, "folder holds no images")
        parts[sub] = _scan_images(paths, decode, progress, f"{key}/{sub}", report, parse_utm)
    if len(parts) < 2:
        return
    db, q = parts["database"], parts["queries"]
    positives = compute_positives([utm for _, utm in db], [utm for _, utm in q], radius)
    lonely = [path for (path, _), pos in zip(q, positives) if len(pos) == 0]
    for path in lonely:
        report.add("warning", path, f"query has no database image within {radius:g} m (it will count as a miss)")
    report.scanned[key] = {"database": len(db), "queries": len(q), "queries_without_positives": len(lonely)}


def _check_npy(key: str, folder: Path, decode: bool, progress: bool, report: CheckReport) -> None:
    """GSV-Cities evaluation files: the arrays, every image they name, queries without positives."""
    try:
        index = read_npy_split(folder, parameter=key)
    except (FormatError, DatasetLayoutError) as err:
        report.add("error", folder, f"{err} (expected {NPY_LAYOUT})")
        return
    _scan_images(index.database_paths + index.query_paths, decode, progress, key, report, parse=None)
    lonely = [path for path, pos in zip(index.query_paths, index.positives) if len(pos) == 0]
    for path in lonely:
        report.add("warning", path, "query has no positive in the ground truth (it will count as a miss)")
    report.scanned[key] = {"database": len(index.database_paths), "queries": len(index.query_paths),
                           "queries_without_positives": len(lonely)}


def _check_train(key: str, folder: Path, min_images: int, decode: bool, progress: bool,
                 report: CheckReport) -> None:
    if (folder / "Dataframes").is_dir():
        _check_gsv_cities(key, folder, min_images, decode, progress, report)
        return
    cities = sorted(p for p in folder.iterdir() if p.is_dir())
    places: Counter = Counter()
    first_path: dict = {}
    images = 0
    for city in cities:
        for path, rec in _scan_images(list_images(city), decode, progress, f"{key}/{city.name}", report):
            if rec.place_id is None:
                report.add("error", path, "training image name has no '<place_id>_<City>' place tag")
                continue
            places[(city.name, rec.place_id)] += 1
            first_path.setdefault((city.name, rec.place_id), path)
            images += 1
    _report_small_places(places, first_path, min_images, report)
    report.scanned[key] = {"cities": len(cities), "places": len(places), "images": images}


def _check_gsv_cities(key: str, folder: Path, min_images: int, decode: bool, progress: bool,
                      report: CheckReport) -> None:
    from pipeline.data.index import index_gsv_cities

    try:
        df = index_gsv_cities(folder)
    except (FormatError, DatasetLayoutError) as err:
        report.add("error", folder, str(err))
        return
    for path in tqdm(df["path"], desc=key, unit="img", disable=not progress, leave=False):
        path = Path(path)
        why = "missing file listed in the dataframe" if not path.exists() else (check_image(path) if decode else None)
        if why:
            report.add("error", path, why)
    places = Counter(zip(df["city"], df["place_id"]))
    first = {k: Path(p) for k, p in zip(zip(df["city"], df["place_id"]), df["path"])}
    _report_small_places(places, first, min_images, report)
    report.scanned[key] = {"cities": int(df["city"].nunique()), "places": len(places), "images": len(df)}


def _report_small_places(places: Counter, first_path: dict, min_images: int, report: CheckReport) -> None:
    for place, count in sorted(places.items()):
        if count < min_images:
            report.add("warning", first_path[place],
                       f"place {place[1]} of {place[0]} has {count} image(s), fewer than the minimum "
                       f"{min_images}; the training loader will skip it")
