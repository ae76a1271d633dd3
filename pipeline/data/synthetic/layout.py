"""Where the embedded images are: training places on a city grid, evaluation places along streets.

A layout is a list of `PlaceTask`s: the scene to render and its views, each with its output
paths (real dataset file names) and its own random stream. Layouts draw no pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.data.formats import (ImageRecord, format_image_name, gsv_cities_image_name, latlon_to_utm,
                                   utm_to_latlon)
from pipeline.data.synthetic.scales import SynthScale
from pipeline.data.synthetic.seeds import rng_for

POSITIVE_RADIUS_M = 25.0
# Training cities: (name, latitude, longitude of the centre); UTM zone/band follow from them.
_TRAIN_CITIES = [
    ("London", 51.5074, -0.1278), ("Boston", 42.3601, -71.0589), ("Melbourne", -37.8136, 144.9631),
    ("Osaka", 34.6937, 135.5023), ("Barcelona", 41.3874, 2.1686), ("Chicago", 41.8781, -87.6298),
    ("Lisbon", 38.7223, -9.1393), ("MexicoCity", 19.4326, -99.1332), ("Bangkok", 13.7563, 100.5018),
    ("Rome", 41.9028, 12.4964),
]
_SAN_FRANCISCO = (37.7749, -122.4194)
_TOKYO = (35.6762, 139.6503)

# Training places lie on a jittered grid: spacing - 2 * place jitter - 2 * view jitter >= 100 m.
_TRAIN_SPACING_M, _TRAIN_PLACE_JITTER_M, _TRAIN_VIEW_JITTER_M = 125.0, 7.5, 2.5
_DB_JITTER_M = 4.0          # database views of an evaluation place, around its location
_QUERY_MAX_OFFSET_M = 20.0  # query views lie 0-20 m from their place
_NO_POSITIVE_FRACTION = 0.03  # test splits: queries of places absent from the database (SF-XS: 34/1000)

_PANOID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))



@dataclass(frozen=True)
class View:
    """One image to render: where it goes, under which condition, from which random stream."""

    paths: tuple[str, ...]    # relative to `out`; the same bytes go to every path
    condition: str
    seed_key: tuple           # (split, index): the image's own random stream
    displacement_m: float     # camera offset along the street, shifts the view


@dataclass(frozen=True)
class PlaceTask:
    """One scene (a place) and its views: the unit of work of a generator worker."""

    street: str
    place_key: str
    views: tuple[View, ...]


def _panoid(rng: np.random.Generator) -> str:
    """A 22-character Street View panorama id."""
    return "".join(rng.choice(_PANOID_ALPHABET, 22))


def _city_frame(lat: float, lon: float) -> tuple[float, float, int, str, bool]:
    """UTM origin (east, north), zone, band and hemisphere of a city centre."""
    east, north, zone, band = latlon_to_utm(lat, lon)
    return east, north, zone, band, lat >= 0


def _record(east: float, north: float, frame: tuple, rng: np.random.Generator,
            place_id: int | None = None, city: str = "", heading: float | None = None) -> ImageRecord:
    """ImageRecord at a UTM position with a random panoid, heading and capture date."""
    _, _, zone, band, northern = frame
    lat, lon = utm_to_latlon(east, north, zone, northern)
    year, month = int(rng.integers(2007, 2022)), int(rng.integers(1, 13))
    if heading is None:
        heading = float(rng.integers(0, 360))
    return ImageRecord(round(east, 2), round(north, 2), str(zone), band, round(lat, 5), round(lon, 5),
                       _panoid(rng), heading, f"{year}{month:02d}", place_id, city)


def train_layout(seed: int, sc: SynthScale, gsv_cities_layout: bool) -> tuple[list[PlaceTask], dict, dict]:
    """Places of every training city; returns tasks, GSV-Cities dataframe rows and counts."""
    tasks: list[PlaceTask] = []
    frames: dict[str, list[dict]] = {}
    counts: dict[str, int] = {"cities": sc.cities, "places": 0, "images": 0}
    if sc.cities > len(_TRAIN_CITIES):  # a preset in code, not user input
        raise ValueError(f"at most {len(_TRAIN_CITIES)} training cities are defined, got {sc.cities}")
    for name, lat, lon in _TRAIN_CITIES[:sc.cities]:
        frame = _city_frame(lat, lon)
        rng = rng_for(seed, "train-layout", name)
        side = math.ceil(math.sqrt(sc.places_per_city))
        rows: list[dict] = []
        for p in range(sc.places_per_city):
            row, col = divmod(p, side)
            street = f"train/{name}/street{row}"  # a grid row is a street: shared style
            pe = frame[0] + (col - side / 2) * _TRAIN_SPACING_M + rng.uniform(-1, 1) * _TRAIN_PLACE_JITTER_M
            pn = frame[1] + (row - side / 2) * _TRAIN_SPACING_M + rng.uniform(-1, 1) * _TRAIN_PLACE_JITTER_M
            n_views = int(rng.integers(sc.min_images, sc.max_images + 1))
            views = [_train_view(seed, name, frame, p, k, (pe, pn), rng, rows if gsv_cities_layout else None)
                     for k in range(n_views)]
            tasks.append(PlaceTask(street, f"train/{name}/{p}", tuple(views)))
            counts["places"] += 1
            counts["images"] += len(views)
        frames[name] = rows
    return tasks, frames, counts


def _train_view(seed: int, city: str, frame: tuple, place_id: int, k: int, centre: tuple[float, float],
                rng: np.random.Generator, gsv_rows: list[dict] | None) -> View:
    """View k of a training place, near its centre; with `gsv_rows` also in the GSV-Cities layout."""
    r, a = _TRAIN_VIEW_JITTER_M * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    vrng = rng_for(seed, "train-name", city, place_id, k)
    rec = _record(centre[0] + r * math.cos(a), centre[1] + r * math.sin(a), frame, vrng, place_id, city)
    paths = [f"gsv_xs/train/{city}/{format_image_name(rec)}"]
    if gsv_rows is not None:
        year, month = int(rec.date[:4]), int(rec.date[4:6])
        glat, glon = utm_to_latlon(rec.utm_east, rec.utm_north, frame[2], frame[4])
        glat, glon = round(glat, 7), round(glon, 7)
        gsv_rows.append({"place_id": place_id, "year": year, "month": month,
                         "northdeg": int(rec.heading), "city_id": city, "lat": glat,
                         "lon": glon, "panoid": rec.panoid})
        paths.append(f"gsv_cities/Images/{city}/" + gsv_cities_image_name(
            city, place_id, year, month, int(rec.heading), glat, glon, rec.panoid))
    return View(tuple(paths), "train", ("train", city, place_id, k), 0.0)


@dataclass(frozen=True)
class EvalSpec:
    """How one evaluation split of the embedded data is laid out."""

    folder: str                  # under the output folder; also names the split's random streams
    places: int
    db_per_place: int
    query_fraction: float
    no_positive_fraction: float
    condition: str               # the views.CONDITIONS entry of its queries
    centre: tuple[float, float]  # latitude, longitude


def eval_specs(sc: SynthScale) -> dict[str, EvalSpec]:
    """The embedded evaluation splits of a scale, keyed by their catalog key."""
    return {
        "sf_xs_val": EvalSpec("sf_xs/val", sc.val_places, sc.db_per_place, sc.val_query_fraction, 0.0,
                              "val", _SAN_FRANCISCO),
        "sf_xs_test": EvalSpec("sf_xs/test", sc.test_places, sc.db_per_place, sc.test_query_fraction,
                               _NO_POSITIVE_FRACTION, "test", _SAN_FRANCISCO),
        "tokyo_xs": EvalSpec("tokyo_xs/test", sc.tokyo_places, sc.db_per_place, sc.tokyo_query_fraction,
                             _NO_POSITIVE_FRACTION, "tokyo", _TOKYO),
    }


def eval_layout(seed: int, spec: EvalSpec) -> tuple[list[PlaceTask], dict]:
    """Places along parallel streets, 50-100 m apart with some 30-40 m pairs (hard negatives).

    Database views lie within 4 m of their place, query views 0-20 m away; a query position is
    redrawn until no other place's database view is within 25 m, so its positives are exactly
    the database views of its own place. Places kept out of the database give queries without
    positives (only when `no_positive_fraction` > 0).
    """
    split = spec.folder
    rng = rng_for(seed, "eval-layout", split)
    frame = _city_frame(*spec.centre)
    places = _street_places(rng, frame, split, spec.places)
    n = len(places)
    order = rng.permutation(n)
    n_queries = round(n * spec.query_fraction)
    n_no_pos = round(n_queries * spec.no_positive_fraction)
    with_query = set(order[:n_queries].tolist())
    no_db = set(order[:n_no_pos].tolist())  # query-only places: queries without positives
    place_db, db_arr, owner_arr = _database_positions(rng, places, no_db, spec.db_per_place)

    tasks: list[PlaceTask] = []
    index = {"db": 0, "q": 0}
    counts = {"database": 0, "queries": 0, "queries_without_positive": 0, "places": n}
    for i, (pos, street, d) in enumerate(places):
        heading = (math.degrees(math.atan2(d[0], d[1])) + 90) % 360  # camera faces the facades
        views = []
        for east, north in place_db[i]:
            vrng = rng_for(seed, split, "db", index["db"])
            rec = _record(east, north, frame, vrng, heading=heading + vrng.normal(0, 5))
            views.append(View((f"{split}/database/{format_image_name(rec)}",), "db",
                              (split, "db", index["db"]), float(np.dot([east, north] - pos, d))))
            index["db"] += 1
        if i in with_query:
            vrng = rng_for(seed, split, "q", index["q"])
            q = _query_position(vrng, pos, db_arr[owner_arr != i] if len(db_arr) else np.zeros((0, 2)))
            rec = _record(float(q[0]), float(q[1]), frame, vrng, heading=heading + vrng.normal(0, 10))
            views.append(View((f"{split}/queries/{format_image_name(rec)}",), spec.condition,
                              (split, "q", index["q"]), float(np.dot(q - pos, d))))
            index["q"] += 1
            counts["queries_without_positive"] += int(i in no_db)
        if views:
            tasks.append(PlaceTask(street, f"{split}/{i}", tuple(views)))
    counts["database"], counts["queries"] = index["db"], index["q"]
    return tasks, counts


def _street_places(rng: np.random.Generator, frame: tuple, split: str, n_places: int) -> list[tuple]:
    """(position, street, direction) of each place, along parallel streets 150 m apart."""
    street_len = 12
    # parallel streets 150 m apart (a city grid), so places of different streets never mix
    angle = rng.uniform(0, math.pi)
    d, normal = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    places: list[tuple] = []
    for s in range(math.ceil(n_places / street_len)):
        origin = np.array(frame[:2]) + normal * 150.0 * s + d * rng.uniform(-50, 50)
        along = 0.0
        for _ in range(min(street_len, n_places - len(places))):
            along += rng.uniform(30, 40) if rng.random() < 0.2 else rng.uniform(50, 100)
            # jitter across the street only, so consecutive places stay >= 30 m apart
            places.append((origin + d * along + normal * rng.uniform(-1.5, 1.5), f"{split}/street{s}", d))
    return places


def _database_positions(rng: np.random.Generator, places: list[tuple], no_db: set[int], db_per_place: int
                        ) -> tuple[dict[int, list[tuple[float, float]]], np.ndarray, np.ndarray]:
    """Database view positions per place, and all of them as arrays (positions, owning place)."""
    db_pos: list[np.ndarray] = []
    db_owner: list[int] = []
    place_db: dict[int, list[tuple[float, float]]] = {}
    for i, (pos, _, _) in enumerate(places):
        place_db[i] = []
        if i in no_db:
            continue
        for _ in range(db_per_place):
            r, a = _DB_JITTER_M * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            p = pos + np.array([r * math.cos(a), r * math.sin(a)])
            place_db[i].append((float(p[0]), float(p[1])))
            db_pos.append(p)
            db_owner.append(i)
    return place_db, np.array(db_pos), np.array(db_owner)


def _query_position(vrng: np.random.Generator, pos: np.ndarray, others: np.ndarray) -> np.ndarray:
    """A query position 0-20 m from its place, redrawn until no other place's view is within 25 m."""
    for _ in range(100):
        r, a = vrng.uniform(0, _QUERY_MAX_OFFSET_M), vrng.uniform(0, 2 * math.pi)
        q = pos + np.array([r * math.cos(a), r * math.sin(a)])
        if not len(others) or np.min(np.linalg.norm(others - q, axis=1)) > POSITIVE_RADIUS_M + 1:
            return q
    return pos  # the layout keeps >= 26 m between a place and other places' views
