"""Embedded versions of the standard benchmarks: each in its real format, name scheme and rule.

`generate_benchmarks(out, keys)` writes `out/<key>/` for every benchmark asked, small and
procedural, with the real query/database ratio (at least `MIN_QUERIES` queries), so every reader,
rule and table of `pipeline.data.benchmarks` runs offline:

- downloader format, `<key>/images/test/{database,queries}/` with names carrying the real UTM zone:
  pitts30k (Pittsburgh, 17T, images in numbered subfolders as the .mat paths are),
  tokyo247 (54S), svox (Oxford, database folder `gallery`), st_lucia (first traversal database,
  last traversal queries), eynsham (the first panoramas' 5 tiles each are the database, the rest
  queries), nordland (mock coordinates: north = frame x 25/10.5, summer database, winter queries),
  amstertime (pairs with mock coordinates 1 km apart);
- GSV-Cities npy format, `<key>/<prefix>_*.npy` and the images the arrays name: msls_val
  (`msls_val_qIdx.npy` leaves some queries out, `msls_val_pIdx.npy` holds the positives within
  25 m; no panoramas) and sped (a 2-D integer ground truth, one positive per query).

Like the other embedded data, the files are a function of (seed, scale, image size) alone.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.benchmarks.catalog import BENCHMARKS, DOWNLOADER, NPY, benchmark
from pipeline.data.formats import format_downloader_name, latlon_to_utm, utm_to_latlon
from pipeline.data.index import compute_positives
from pipeline.data.synthetic.generator import MARKER, SynthOutputError, _check_request, _render_all
from pipeline.data.synthetic.layout import PlaceTask, View
from pipeline.data.synthetic.seeds import rng_for

MIN_QUERIES = 4
# Database images per benchmark at each scale (the real sizes are in the catalog).
DATABASE_IMAGES = {"demo": 32, "small": 200, "medium": 1000, "large": 4000, "real": 16}

# Where each benchmark is and how it is laid out: format, centre (lat, lon; None = mock coordinates),
# kind of layout, query condition.
_SPECS: dict[str, tuple[str, tuple[float, float] | None, str, str]] = {
    "pitts30k": (DOWNLOADER, (40.4406, -79.9959), "streets", "test"),
    "msls_val": (NPY, (55.6761, 12.5683), "streets", "test"),
    "nordland": (DOWNLOADER, None, "frames", "winter"),
    "sped": (NPY, None, "pairs", "test"),
    "amstertime": (DOWNLOADER, None, "pairs", "winter"),
    "st_lucia": (DOWNLOADER, (-27.4975, 153.0137), "traversals", "test"),
    "eynsham": (DOWNLOADER, (51.7782, -1.3976), "panoramas", "test"),
    "tokyo247": (DOWNLOADER, (35.6762, 139.6503), "streets", "tokyo"),
    "svox": (DOWNLOADER, (51.7520, -1.2577), "streets", "winter"),
}
NORDLAND_M_PER_FRAME = 25 / 10.5   # download_nordland.py: utm_north = num_image * 25 / 10.5
PAIR_SPACING_M = 1000              # download_sped.py / download_amstertime.py: int(name) * 1000
EYNSHAM_TILES = 5                  # download_eynsham.py: 5 tiles per panorama
MSLS_LEFT_OUT = 0.01               # msls_val_qIdx keeps 740 of its 747 queries


def sizes(key: str, scale: str) -> tuple[int, int]:
    """(database, queries) of the embedded version: the real ratio, at least MIN_QUERIES queries."""
    real = benchmark(key)
    db = min(real.database, DATABASE_IMAGES[scale])
    queries = max(MIN_QUERIES, round(db * real.queries / real.database))
    if _SPECS[key][2] == "panoramas":  # whole panoramas of EYNSHAM_TILES tiles
        db, queries = (EYNSHAM_TILES * math.ceil(n / EYNSHAM_TILES) for n in (db, queries))
    return db, queries


def _frame(lat: float, lon: float) -> tuple[float, float, int, str, bool]:
    east, north, zone, band = latlon_to_utm(lat, lon)
    return east, north, zone, band, lat >= 0


def _name(east: float, north: float, frame: tuple, pano_id: str, heading: float = 0.0, tile: int | str = "") -> str:
    """A downloader-format name at a UTM position of the benchmark's zone."""
    lat, lon = utm_to_latlon(east, north, frame[2], frame[4])
    return format_downloader_name(east, north, frame[2], frame[3], lat, lon, pano_id, tile, int(heading) % 360)


def _mock_name(north: float, token: str) -> str:
    """A name with mock coordinates as the downloader writes them: east 0, zone and lat/lon empty."""
    return f"@0@{north:.2f}@@@@@{token}@@@@@@@@.jpg"


class _Layout:
    """Views of one benchmark, collected as (path, position, condition, seed key, displacement)."""

    def __init__(self, key: str, seed: int) -> None:
        self.key, self.seed = key, seed
        self.tasks: list[PlaceTask] = []
        self.db: list[tuple[str, np.ndarray]] = []
        self.queries: list[tuple[str, np.ndarray]] = []

    def place(self, place: str, views: list[tuple[str, np.ndarray, str, float]], role: list[str]) -> None:
        task_views = []
        for (path, pos, condition, displacement), r in zip(views, role):
            index = len(self.db) if r == "db" else len(self.queries)
            (self.db if r == "db" else self.queries).append((path, pos))
            task_views.append(View((f"{self.key}/{path}",), condition, (self.key, r, index), displacement))
        self.tasks.append(PlaceTask(f"{self.key}/{place.split(':')[0]}", f"{self.key}/{place}", tuple(task_views)))


def _streets(lay: _Layout, frame: tuple, n_db: int, n_q: int, cond: str, rng: np.random.Generator,
             db_folder: str, subfolders: bool) -> None:
    """Places 60-100 m apart along streets; database views within 4 m, queries 0-15 m from their place."""
    n_places = math.ceil(n_db / 2)
    order = rng.permutation(n_places).tolist()  # queries spread over the places (several where needed)
    queries_of = {p: n_q // n_places + (1 if rank < n_q % n_places else 0) for rank, p in enumerate(order)}
    angle = rng.uniform(0, math.pi)
    d, normal = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    for p in range(n_places):
        street, along = divmod(p, 10)
        pos = np.array(frame[:2]) + normal * 200.0 * street + d * (80.0 * along + rng.uniform(-10, 10))
        heading = (math.degrees(math.atan2(d[0], d[1])) + 90) % 360
        views, roles = [], []
        for k in range(min(2, n_db - 2 * p)):
            r, a = 4 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            v = pos + [r * math.cos(a), r * math.sin(a)]
            sub = f"{len(lay.db) // 8:03d}/" if subfolders else ""
            name = _name(v[0], v[1], frame, f"p{p:05d}v{k}", heading)
            views.append((f"images/test/{db_folder}/{sub}{name}", v, "db", float(np.dot(v - pos, d))))
            roles.append("db")
        for k in range(queries_of[p]):
            r, a = rng.uniform(0, 15), rng.uniform(0, 2 * math.pi)
            q = pos + [r * math.cos(a), r * math.sin(a)]
            name = _name(q[0], q[1], frame, f"q{p:05d}v{k}", heading)
            views.append((f"images/test/queries/{name}", q, cond, float(np.dot(q - pos, d))))
            roles.append("q")
        lay.place(f"street{street}:{p}", views, roles)


def _traversals(lay: _Layout, frame: tuple, n_db: int, n_q: int, cond: str, rng: np.random.Generator,
                tiles: int) -> None:
    """One route driven twice: the first pass is the database, the last the queries (St Lucia);
    with `tiles` > 1 every stop is a panorama of that many tiles (Eynsham)."""
    stops_db, stops_q = math.ceil(n_db / tiles), math.ceil(n_q / tiles)
    angle = rng.uniform(0, math.pi)
    d = np.array([math.cos(angle), math.sin(angle)])
    spacing = 30.0  # well above the 5 m the St Lucia script keeps between frames
    for s in range(max(stops_db, stops_q)):
        pos = np.array(frame[:2]) + d * spacing * s
        views, roles = [], []
        for passes, count, role, condition in ((0, stops_db, "db", "db"), (1, stops_q, "q", cond)):
            if s >= count:
                continue
            jitter = pos + rng.normal(0, 2.0, 2)
            pano = s + (stops_db if role == "q" else 0)  # panoramas numbered along the drive
            for t in range(tiles):
                heading = (t * 360 / tiles) % 360
                name = _name(jitter[0], jitter[1], frame, f"{pano:05d}", heading, tile=t if tiles > 1 else "")
                folder = "database" if role == "db" else "queries"
                views.append((f"images/test/{folder}/{name}", jitter, condition, float(t * 3)))
                roles.append(role)
        lay.place(f"route:{s}", views, roles)


def _frames(lay: _Layout, n_db: int, n_q: int, cond: str) -> None:
    """A train's frames: one scene per 5 frames, summer database and winter queries at mock
    coordinates north = frame x 25/10.5 (so frames within +-10 are positives)."""
    step = max(1, n_db // n_q)
    for block in range(math.ceil(n_db / 5)):
        views, roles = [], []
        for frame in range(5 * block, min(5 * block + 5, n_db)):
            north = frame * NORDLAND_M_PER_FRAME
            views.append((f"images/test/database/{_mock_name(north, f'{frame:05d}')}", np.array([0.0, north]),
                          "db", (frame % 5) * 2.0))
            roles.append("db")
            if frame % step == 0 and frame // step < n_q:
                views.append((f"images/test/queries/{_mock_name(north, f'{frame:05d}')}", np.array([0.0, north]),
                              cond, (frame % 5) * 2.0))
                roles.append("q")
        lay.place(f"track:{block}", views, roles)


def _pairs(lay: _Layout, n: int, cond: str, fmt: str) -> None:
    """Pairs k = 0..n-1: a database and a query image of one scene at mock north k x 1000 m."""
    for k in range(n):
        north = float(k * PAIR_SPACING_M)
        if fmt == NPY:
            db_path, q_path = f"ref/{k:05d}.jpg", f"query/{k:05d}.jpg"
        else:
            db_path = f"images/test/database/{_mock_name(north, f'{k:05d}')}"
            q_path = f"images/test/queries/{_mock_name(north, f'{k:05d}')}"
        lay.place(f"pairs:{k}", [(db_path, np.array([0.0, north]), "db", 0.0),
                                 (q_path, np.array([0.0, north]), cond, 0.0)], ["db", "q"])


def layout(key: str, seed: int, scale: str) -> _Layout:
    """Every view of one benchmark's embedded version (no pixels)."""
    fmt, centre, kind, cond = _SPECS[key]
    n_db, n_q = sizes(key, scale)
    lay = _Layout(key, seed)
    rng = rng_for(seed, "benchmark-layout", key)
    if kind == "streets":
        _streets(lay, _frame(*centre), n_db, n_q, cond, rng, "gallery" if key == "svox" else "database",
                 subfolders=key == "pitts30k")
    elif kind in ("traversals", "panoramas"):
        _traversals(lay, _frame(*centre), n_db, n_q, cond, rng, EYNSHAM_TILES if kind == "panoramas" else 1)
    elif kind == "frames":
        _frames(lay, n_db, n_q, cond)
    else:
        _pairs(lay, n_q, cond, fmt)
    if fmt == NPY and kind == "streets":  # the npy arrays name images in MSLS's own layout
        lay = _as_msls(lay)
    return lay


def _as_msls(lay: _Layout) -> _Layout:
    """MSLS val paths: train_val/cph/{database,query}/images/<key>.jpg."""
    out = _Layout(lay.key, lay.seed)
    rename = {}
    for i, (path, pos) in enumerate(lay.db):
        rename[path] = f"train_val/cph/database/images/{i:06d}.jpg"
    for i, (path, pos) in enumerate(lay.queries):
        rename[path] = f"train_val/cph/query/images/{i:06d}.jpg"
    out.db = [(rename[p], pos) for p, pos in lay.db]
    out.queries = [(rename[p], pos) for p, pos in lay.queries]
    out.tasks = [PlaceTask(t.street, t.place_key, tuple(
        View((f"{lay.key}/{rename[v.paths[0][len(lay.key) + 1:]]}",), v.condition, v.seed_key, v.displacement_m)
        for v in t.views)) for t in lay.tasks]
    return out


def _write_npy(folder: Path, key: str, lay: _Layout) -> None:
    """The GSV-Cities evaluation files of one benchmark into its folder (paths relative to it)."""
    prefix = benchmark(key).npy_prefix
    np.save(folder / f"{prefix}_dbImages.npy", np.array([p for p, _ in lay.db]))
    np.save(folder / f"{prefix}_qImages.npy", np.array([p for p, _ in lay.queries]))
    positives = compute_positives(np.array([p for _, p in lay.db]), np.array([p for _, p in lay.queries]))
    if key == "msls_val":  # qIdx keeps most queries; pIdx holds the positives of those kept
        kept = [i for i in range(len(lay.queries)) if i % max(2, round(1 / MSLS_LEFT_OUT)) != 1]
        np.save(folder / f"{prefix}_qIdx.npy", np.array(kept, dtype=np.int64))
        p_idx = np.empty(len(kept), dtype=object)
        p_idx[:] = [positives[i].astype(np.int64) for i in kept]
        np.save(folder / f"{prefix}_pIdx.npy", p_idx, allow_pickle=True)
    elif key == "sped":  # SPED_gt.npy is a (queries x 1) integer array
        np.save(folder / f"{prefix}_gt.npy", np.array([p[:1] for p in positives], dtype=np.int64))
    else:
        gt = np.empty(len(lay.queries), dtype=object)
        gt[:] = [p.astype(np.int64) for p in positives]
        np.save(folder / f"{prefix}_gt.npy", gt, allow_pickle=True)


def generate_benchmarks(out: str | Path, keys: Sequence[str], seed: int = 0, scale: str = "demo",
                        image_size: int | str | Sequence[int] | None = None, progress: bool = True,
                        workers: int | None = None) -> dict:
    """Write the embedded version of every benchmark in `keys` under `out/<key>/`; a summary.

    A benchmark's folder is written under a temporary name and renamed when complete, so an
    interrupted generation never leaves a half-written benchmark that looks whole."""
    seed, size = _check_request(seed, scale, image_size)
    keys = [benchmark(k).key for k in keys]
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"generator": "pipeline.data.synthetic.benchmarks", "seed": seed, "scale": scale,
               "image_size": size[0] if size[0] == size[1] else list(size), "benchmarks": {}}
    for key in keys:
        lay = layout(key, seed, scale)
        tmp = out / f".{key}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        paths = [v.paths[0] for t in lay.tasks for v in t.views]
        if len(set(paths)) != len(paths):
            raise RuntimeError(f"benchmark {key}: duplicate file names in the embedded layout")
        for folder in sorted({str(Path(p).parent) for p in paths}):
            (tmp / Path(folder).relative_to(key)).mkdir(parents=True, exist_ok=True)
        tasks = [PlaceTask(t.street, t.place_key, tuple(
            View((str(Path(tmp.name) / Path(v.paths[0]).relative_to(key)),), v.condition, v.seed_key,
                 v.displacement_m) for v in t.views)) for t in lay.tasks]
        _render_all([(seed, size, str(out), t) for t in tasks], len(paths), workers, f"synth {key}", progress)
        if _SPECS[key][0] == NPY:
            _write_npy(tmp, key, lay)
        shutil.rmtree(out / key, ignore_errors=True)
        tmp.rename(out / key)
        summary["benchmarks"][key] = {"format": _SPECS[key][0], "database": len(lay.db), "queries": len(lay.queries)}
    marker = out / MARKER
    previous = json.loads(marker.read_text()).get("benchmarks", {}) if marker.is_file() else {}
    summary["benchmarks"] = {**previous, **summary["benchmarks"]}
    marker.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_out(out: Path) -> None:
    """`out` must be new, or a folder of earlier generations (its marker) and benchmarks."""
    if out.exists() and not out.is_dir():
        raise SynthOutputError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir():
        allowed = set(BENCHMARKS) | {MARKER}
        foreign = [p.name for p in out.iterdir() if p.name not in allowed and not p.name.endswith(".partial")]
        if foreign and not (out / MARKER).is_file():
            raise SynthOutputError(f"{out}: folder holds other files ({foreign[:5]}) and no {MARKER}; refusing to "
                                   "write benchmarks there. Use an empty or new folder.")
