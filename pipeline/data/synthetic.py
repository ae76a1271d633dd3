"""Embedded datasets: a deterministic generator of GSV-XS, SF-XS and Tokyo-XS look-alikes.

The real datasets cannot be shipped, so `generate` writes procedurally rendered street scenes in
exactly the real layouts (file names, folders, optional GSV-Cities dataframes), and the loaders
read both without a special case::

    out/gsv_xs/train/<City>/@east@north@zone@band@lat@lon@panoid@@heading@@@@yyyymm@<id>_<City>@.jpg
    out/gsv_cities/{Dataframes/<City>.csv, Images/<City>/*.jpg}      (gsv_cities_layout=True)
    out/sf_xs/{val,test}/{database,queries}/*.jpg
    out/tokyo_xs/test/{database,queries}/*.jpg
    out/synth.json                                                   (marker and summary)

A place is a facade scene (buildings, window grids, roofs, shop signs, trees, lamps) whose
geometry is place-specific, while its colours come from a palette shared by its whole street, so
neighbouring places are hard negatives. A view of a place moves the camera (shift, zoom, roll,
perspective), changes the light (gain, contrast, gamma, colour cast, night with lit windows), the
season (hue rotation) and adds occluders (cars, trees, pedestrians). Per-view colour changes are
strong enough that global colour statistics identify the street at best, not the place: an
untrained network scores low and learning the layout is what pays.

Everything is a function of `(seed, scale, image_size)`: every image draws its randomness from
its own seed derived from (seed, split, index), so the worker count changes nothing.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.data.formats import (ORIGINAL_CSV_COLUMNS, ImageRecord, format_image_name,
                                   gsv_cities_image_name, latlon_to_utm, utm_to_latlon)

GENERATOR_VERSION = 1
MARKER = "synth.json"
POSITIVE_RADIUS_M = 25.0
JPEG_QUALITY = 90
# Top-level entries a previous generation may have left; anything else makes `out` foreign.
GENERATED_ENTRIES = ("gsv_xs", "gsv_cities", "sf_xs", "tokyo_xs", MARKER)


@dataclass(frozen=True)
class SynthScale:
    """Size preset of the embedded datasets.

    Training: `cities` x `places_per_city` places with `min_images`..`max_images` views each.
    Evaluation splits: `*_places` places, each with `db_per_place` database views; a query is
    drawn for a `query_fraction` of the places (the other places only enlarge the database).
    """

    cities: int
    places_per_city: int
    min_images: int
    max_images: int
    val_places: int
    test_places: int
    tokyo_places: int
    db_per_place: int
    val_query_fraction: float
    test_query_fraction: float
    tokyo_query_fraction: float
    image_size: int


SCALES: dict[str, SynthScale] = {
    # ~3.4k images, a few seconds on 2 cores: tests, the CPU demo, one-minute training runs
    "demo": SynthScale(cities=4, places_per_city=100, min_images=4, max_images=6,
                       val_places=160, test_places=200, tokyo_places=120, db_per_place=2,
                       val_query_fraction=1.0, test_query_fraction=0.8, tokyo_query_fraction=0.8,
                       image_size=64),
    # ~14k images, ~30 s on 2 cores: laptop studies with more data
    "small": SynthScale(cities=5, places_per_city=300, min_images=4, max_images=8,
                        val_places=400, test_places=600, tokyo_places=300, db_per_place=3,
                        val_query_fraction=1.0, test_query_fraction=0.6, tokyo_query_fraction=0.5,
                        image_size=128),
    # ~40k images at 224 px, a few minutes on 2 cores
    "medium": SynthScale(cities=6, places_per_city=800, min_images=4, max_images=8,
                         val_places=1000, test_places=1500, tokyo_places=800, db_per_place=3,
                         val_query_fraction=1.0, test_query_fraction=0.6, tokyo_query_fraction=0.4,
                         image_size=224),
    # GPU benchmarks, ~77k images (~2.3 GB) at the real training size (GSV-Cities: 320 x 320);
    # test query counts match SF-XS test (1000) and Tokyo-XS (315)
    "large": SynthScale(cities=8, places_per_city=1000, min_images=4, max_images=8,
                        val_places=2000, test_places=3000, tokyo_places=1500, db_per_place=4,
                        val_query_fraction=1.0, test_query_fraction=1 / 3, tokyo_query_fraction=0.21,
                        image_size=320),
}

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


# --- view conditions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """How strongly a view departs from the canonical scene (the knobs of one difficulty)."""

    shift: float          # random horizontal/vertical shift, fraction of the view
    shift_per_m: float    # extra horizontal shift per metre of camera displacement along the street
    zoom: float           # log-uniform zoom range +-
    roll_deg: float
    keystone: float       # perspective: corner jitter, fraction of the view
    gain: float           # per-channel colour cast +-
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    gamma: float          # log-uniform +-
    hue_deg: float        # everyday hue wobble +-
    season_prob: float    # probability of a seasonal hue rotation (45-135 degrees)
    night_prob: float
    occluders: tuple[int, int]
    noise: float


CONDITIONS: dict[str, Condition] = {
    # every training view: the whole range, so a model can learn the invariances
    "train": Condition(shift=0.12, shift_per_m=0.0, zoom=0.15, roll_deg=5, keystone=0.08, gain=0.25,
                       brightness=(0.55, 1.35), contrast=(0.6, 1.3), gamma=0.35, hue_deg=25,
                       season_prob=0.3, night_prob=0.15, occluders=(0, 3), noise=0.03),
    # database views: daytime captures, moderate variation
    "db": Condition(shift=0.06, shift_per_m=0.0, zoom=0.08, roll_deg=2, keystone=0.04, gain=0.25,
                    brightness=(0.7, 1.2), contrast=(0.75, 1.15), gamma=0.25, hue_deg=35,
                    season_prob=0.15, night_prob=0.0, occluders=(0, 1), noise=0.02),
    "val": Condition(shift=0.06, shift_per_m=0.004, zoom=0.08, roll_deg=2, keystone=0.04, gain=0.25,
                     brightness=(0.7, 1.2), contrast=(0.75, 1.15), gamma=0.25, hue_deg=35,
                     season_prob=0.15, night_prob=0.0, occluders=(0, 1), noise=0.02),
    "test": Condition(shift=0.1, shift_per_m=0.007, zoom=0.14, roll_deg=4, keystone=0.08, gain=0.25,
                      brightness=(0.55, 1.3), contrast=(0.6, 1.25), gamma=0.35, hue_deg=25,
                      season_prob=0.45, night_prob=0.1, occluders=(1, 3), noise=0.03),
    "tokyo": Condition(shift=0.1, shift_per_m=0.007, zoom=0.14, roll_deg=4, keystone=0.08, gain=0.25,
                       brightness=(0.55, 1.3), contrast=(0.6, 1.25), gamma=0.35, hue_deg=25,
                       season_prob=0.3, night_prob=0.8, occluders=(0, 3), noise=0.04),
}


# --- seeds -------------------------------------------------------------------------------------

def _key(text: str) -> int:
    """A stable 32-bit integer for a name (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def _rng(*parts: int | str) -> np.random.Generator:
    """Independent generator for a tuple of ints/names; the same tuple always gives the same stream."""
    return np.random.default_rng([_key(p) if isinstance(p, str) else int(p) for p in parts])


# --- scene rendering -----------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] (hue wraps) to an 8-bit RGB tuple."""
    h = (h % 1.0) * 6.0
    i, f = int(h), h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return int(r * 255), int(g * 255), int(b * 255)


def _street_style(seed: int, street: str) -> dict:
    """Palette and building family shared by every place of one street (source of hard negatives)."""
    rng = _rng(seed, "style", street)
    hue = rng.random()
    facades = [_hsv(hue + rng.normal(0, 0.08), rng.uniform(0.15, 0.6), rng.uniform(0.35, 0.9))
               for _ in range(4)]
    return {
        "facades": facades,
        "trim": _hsv(hue + 0.5 + rng.normal(0, 0.1), rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.9)),
        "glass": _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.5), rng.uniform(0.08, 0.35)),
        "signs": [_hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)) for _ in range(3)],
        "sky": _hsv(rng.uniform(0.52, 0.65), rng.uniform(0.1, 0.5), rng.uniform(0.7, 1.0)),
        "road": _hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.45)),
        "foliage": _hsv(rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6)),
        "window_aspect": float(rng.uniform(0.7, 2.0)),  # height / width of windows on this street
        "gable_prob": float(rng.uniform(0.0, 0.6)),
    }


def _render_scene(seed: int, street: str, place_key: str, size: int) -> tuple[Image.Image, Image.Image]:
    """Draw the canonical scene of a place; returns (RGB, lights) at 2*size x 3*size.

    `lights` holds, per pixel, the brightness rank (1..255) of the light source there (windows,
    lamps, signs); a night view switches on those above a random threshold.
    """
    style = _street_style(seed, street)
    rng = _rng(seed, "place", place_key)
    h, w = 2 * size, 3 * size
    u = h / 100.0  # drawing unit: 1 % of the scene height
    rgb = Image.new("RGB", (w, h), style["sky"])
    lights = Image.new("L", (w, h), 0)
    draw, ldraw = ImageDraw.Draw(rgb), ImageDraw.Draw(lights)

    ground = h * rng.uniform(0.78, 0.86)
    # sky gradient towards the horizon
    sky = np.array(style["sky"], dtype=np.float32)
    for y in range(0, int(ground), max(1, int(u))):
        draw.rectangle([0, y, w, y + u], fill=tuple(int(c) for c in sky * (0.8 + 0.3 * y / ground)))

    # buildings side by side with place-specific widths, heights, window grids and roofs
    n_buildings = int(rng.integers(2, 5))
    widths = rng.dirichlet(np.full(n_buildings, 2.5)) * w
    x0 = 0.0
    for bw in widths:
        x1 = x0 + bw
        top = ground - h * rng.uniform(0.3, 0.72)
        facade = style["facades"][int(rng.integers(len(style["facades"])))]
        draw.rectangle([x0, top, x1, ground], fill=facade)
        texture = int(rng.integers(3))
        dark = tuple(int(c * 0.8) for c in facade)
        if texture == 1:  # brick courses
            step = u * rng.uniform(2.0, 4.0)
            for y in np.arange(top + step, ground, step):
                draw.line([x0, y, x1, y], fill=dark, width=max(1, int(u * 0.5)))
        elif texture == 2:  # vertical panels
            step = u * rng.uniform(5.0, 12.0)
            for x in np.arange(x0 + step, x1, step):
                draw.line([x, top, x, ground], fill=dark, width=max(1, int(u * 0.8)))
        # roof: gable or cornice
        if rng.random() < style["gable_prob"]:
            peak = top - h * rng.uniform(0.06, 0.16)
            draw.polygon([(x0, top), ((x0 + x1) / 2 + rng.normal(0, bw * 0.1), peak), (x1, top)],
                         fill=style["trim"])
        else:
            draw.rectangle([x0, top - u * 2, x1, top + u * rng.uniform(1, 3)], fill=style["trim"])
        # window grid
        shop = ground - h * rng.uniform(0.12, 0.18)
        ww = u * rng.uniform(3.0, 8.0)
        wh = min(ww * style["window_aspect"] * rng.uniform(0.8, 1.25), u * 14)
        gap_x, gap_y = ww * rng.uniform(0.5, 1.6), wh * rng.uniform(0.35, 1.0)
        cols = max(1, int((bw - gap_x) // (ww + gap_x)))
        rows = max(0, int((shop - top - 2 * gap_y) // (wh + gap_y)))
        start_x = x0 + (bw - cols * ww - (cols - 1) * gap_x) / 2
        arched = rng.random() < 0.3
        for r in range(rows):
            y = top + gap_y * 1.5 + r * (wh + gap_y)
            for c in range(cols):
                x = start_x + c * (ww + gap_x)
                box = [x, y, x + ww, y + wh]
                if arched:
                    draw.rounded_rectangle(box, radius=ww / 2, fill=style["glass"])
                    ldraw.rounded_rectangle(box, radius=ww / 2, fill=int(rng.integers(1, 256)))
                else:
                    draw.rectangle(box, fill=style["glass"])
                    ldraw.rectangle(box, fill=int(rng.integers(1, 256)))
                    draw.line([x, y + wh, x + ww, y + wh], fill=style["trim"], width=max(1, int(u)))
        # ground floor: shop sign, door, awning
        sign = style["signs"][int(rng.integers(len(style["signs"])))]
        if rng.random() < 0.7:
            sx0 = x0 + bw * rng.uniform(0.05, 0.4)
            sx1 = sx0 + bw * rng.uniform(0.25, 0.55)
            draw.rectangle([sx0, shop - u * 4, sx1, shop], fill=sign)
            ldraw.rectangle([sx0, shop - u * 4, sx1, shop], fill=int(rng.integers(100, 256)))
        door_x = x0 + bw * rng.uniform(0.1, 0.8)
        draw.rectangle([door_x, ground - u * 11, door_x + u * 6, ground], fill=style["glass"])
        if rng.random() < 0.4:  # striped awning
            ax0, ax1 = x0 + bw * 0.05, x1 - bw * 0.05
            stripes = int(rng.integers(4, 10))
            for i in range(stripes):
                colour = sign if i % 2 == 0 else (235, 235, 225)
                sx = ax0 + (ax1 - ax0) * i / stripes
                draw.polygon([(sx, shop + u), (sx + (ax1 - ax0) / stripes, shop + u),
                              (sx + (ax1 - ax0) / stripes + u, shop + u * 5), (sx + u, shop + u * 5)],
                             fill=colour)
        x0 = x1

    # street: pavement, road, lane dashes
    draw.rectangle([0, ground, w, h], fill=style["road"])
    draw.rectangle([0, ground, w, ground + u * 2], fill=tuple(min(255, c + 60) for c in style["road"]))
    dash, phase = u * rng.uniform(6, 14), u * rng.uniform(0, 20)
    for x in np.arange(-phase, w, 2 * dash):
        draw.rectangle([x, ground + (h - ground) * 0.6, x + dash, ground + (h - ground) * 0.6 + u],
                       fill=(230, 230, 210))

    # landmarks: trees and street lamps at place-specific positions
    for _ in range(int(rng.integers(0, 3))):
        tx, r = w * rng.random(), u * rng.uniform(6, 14)
        draw.rectangle([tx - u, ground - r * 2.2, tx + u, ground], fill=(80, 60, 40))
        draw.ellipse([tx - r, ground - r * 3.2, tx + r, ground - r * 1.2], fill=style["foliage"])
    for _ in range(int(rng.integers(0, 3))):
        lx, top = w * rng.random(), ground - h * rng.uniform(0.25, 0.4)
        draw.rectangle([lx - u * 0.6, top, lx + u * 0.6, ground], fill=(50, 50, 55))
        draw.ellipse([lx - u * 2, top - u * 2, lx + u * 2, top + u], fill=(240, 235, 200))
        ldraw.ellipse([lx - u * 2.5, top - u * 2.5, lx + u * 2.5, top + u * 1.5], fill=255)
    return rgb, lights


# --- views ---------------------------------------------------------------------------------------

def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output corners `dst` to scene points `src` (4 x 2 each)."""
    a = []
    for (x, y), (X, Y) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -X * x, -X * y])
        a.append([0, 0, 0, x, y, 1, -Y * x, -Y * y])
    return np.linalg.solve(np.array(a, dtype=np.float64), src.reshape(8)).tolist()


def _colour_matrix(hue_deg: float, saturation: float, gains: np.ndarray) -> np.ndarray:
    """3x3 RGB matrix: hue rotation and saturation in YIQ space, then per-channel gains."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    t = math.radians(hue_deg)
    rot = np.array([[1, 0, 0],
                    [0, saturation * math.cos(t), -saturation * math.sin(t)],
                    [0, saturation * math.sin(t), saturation * math.cos(t)]])
    return (np.diag(gains) @ np.linalg.inv(to_yiq) @ rot @ to_yiq).astype(np.float32)


def _draw_occluders(img: Image.Image, rng: np.random.Generator, count: int) -> None:
    """Cars, trees and pedestrians in front of the facade, in colours unrelated to the place."""
    draw = ImageDraw.Draw(img)
    s = img.width
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        x = s * rng.uniform(-0.1, 0.9)
        if kind == 0:  # car: body and cabin near the bottom
            cw, ch = s * rng.uniform(0.3, 0.5), s * rng.uniform(0.12, 0.2)
            y = s * rng.uniform(0.82, 0.98)
            draw.rounded_rectangle([x, y - ch, x + cw, y], radius=ch * 0.3, fill=colour)
            draw.rectangle([x + cw * 0.2, y - ch * 1.6, x + cw * 0.75, y - ch], fill=colour)
            for wx in (x + cw * 0.2, x + cw * 0.8):
                draw.ellipse([wx - ch * 0.3, y - ch * 0.3, wx + ch * 0.3, y + ch * 0.3], fill=(20, 20, 20))
        elif kind == 1:  # tree
            r = s * rng.uniform(0.1, 0.22)
            y = s * rng.uniform(0.3, 0.6)
            draw.rectangle([x - s * 0.02, y, x + s * 0.02, s], fill=(70, 50, 35))
            leaves = (int(colour[0] * 0.4), int(80 + colour[1] * 0.5), 40)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=leaves)
        else:  # pedestrian
            ph = s * rng.uniform(0.25, 0.45)
            y = s * rng.uniform(0.85, 1.0)
            draw.rectangle([x, y - ph, x + ph * 0.25, y], fill=colour)
            draw.ellipse([x, y - ph * 1.25, x + ph * 0.25, y - ph], fill=(200, 160, 130))


def _render_view(scene: Image.Image, lights: Image.Image, size: int, cond: Condition,
                 rng: np.random.Generator, displacement_m: float) -> bytes:
    """One photograph of a scene as JPEG bytes (size x size)."""
    h = scene.height
    w = scene.width
    # camera: centre, zoom, roll and keystone define the scene quadrilateral seen by the view
    half = 0.42 * h * math.exp(rng.uniform(-cond.zoom, cond.zoom))
    cx = w / 2 + 2 * half * (rng.uniform(-cond.shift, cond.shift) + cond.shift_per_m * displacement_m)
    cy = h * 0.5 + 2 * half * rng.uniform(-cond.shift, cond.shift) * 0.5
    roll = math.radians(rng.uniform(-cond.roll_deg, cond.roll_deg))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    corners = corners + rng.uniform(-cond.keystone, cond.keystone, (4, 2)) * 2
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    src = corners @ rot.T * half + np.array([cx, cy])
    out = 2 * size  # render at twice the size, then box-filter down (anti-aliasing)
    dst = np.array([[0, 0], [out, 0], [out, out], [0, out]], dtype=np.float64)
    coeffs = _perspective_coeffs(dst, src)
    view = scene.transform((out, out), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR,
                           fillcolor=(128, 128, 128))
    night = rng.random() < cond.night_prob
    if night:
        lit = lights.transform((out, out), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    _draw_occluders(view, rng, int(rng.integers(cond.occluders[0], cond.occluders[1] + 1)))
    view = view.reduce(2)

    img = np.asarray(view, dtype=np.float32) / 255.0
    hue = rng.uniform(-cond.hue_deg, cond.hue_deg)
    if rng.random() < cond.season_prob:
        hue += rng.choice([-1, 1]) * rng.uniform(45, 135)
    gains = 1 + rng.uniform(-cond.gain, cond.gain, 3)
    img = img @ _colour_matrix(hue, rng.uniform(0.6, 1.3), gains).T
    if night:
        # dark blue scene; a random subset of windows, signs and lamps lit in warm light
        lit_arr = np.asarray(lit.reduce(2), dtype=np.float32)
        threshold = rng.uniform(60, 200)
        on = np.clip((lit_arr - threshold) / 40.0, 0, 1)[..., None]
        img = img * rng.uniform(0.1, 0.3) * np.array([0.6, 0.75, 1.15], dtype=np.float32)
        warm = np.array([1.0, rng.uniform(0.75, 0.95), rng.uniform(0.35, 0.6)], dtype=np.float32)
        img = img + on * warm * rng.uniform(0.7, 1.0)
    else:
        img = img * rng.uniform(*cond.brightness)
    mean = img.mean()
    img = (img - mean) * rng.uniform(*cond.contrast) + mean
    img = np.clip(img, 0, 1) ** math.exp(rng.uniform(-cond.gamma, cond.gamma))
    img = img + rng.normal(0, cond.noise, img.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# --- layout --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _View:
    paths: tuple[str, ...]    # relative to `out`; the same bytes go to every path
    condition: str
    seed_key: tuple           # (split, index): the image's own random stream
    displacement_m: float     # camera offset along the street, shifts the view


@dataclass(frozen=True)
class _PlaceTask:
    street: str
    place_key: str
    views: tuple[_View, ...]


def _panoid(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_PANOID_ALPHABET, 22))


def _city_frame(lat: float, lon: float) -> tuple[float, float, int, str, bool]:
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


def _train_layout(seed: int, sc: SynthScale, gsv_cities_layout: bool) -> tuple[list[_PlaceTask], dict, dict]:
    """Places of every training city; returns tasks, GSV-Cities dataframe rows and counts."""
    tasks: list[_PlaceTask] = []
    frames: dict[str, list[dict]] = {}
    counts: dict[str, int] = {"cities": sc.cities, "places": 0, "images": 0}
    if sc.cities > len(_TRAIN_CITIES):
        raise ValueError(f"at most {len(_TRAIN_CITIES)} training cities are defined, got {sc.cities}")
    for name, lat, lon in _TRAIN_CITIES[:sc.cities]:
        frame = _city_frame(lat, lon)
        rng = _rng(seed, "train-layout", name)
        side = math.ceil(math.sqrt(sc.places_per_city))
        rows: list[dict] = []
        for p in range(sc.places_per_city):
            row, col = divmod(p, side)
            street = f"train/{name}/street{row}"  # a grid row is a street: shared style
            pe = frame[0] + (col - side / 2) * _TRAIN_SPACING_M + rng.uniform(-1, 1) * _TRAIN_PLACE_JITTER_M
            pn = frame[1] + (row - side / 2) * _TRAIN_SPACING_M + rng.uniform(-1, 1) * _TRAIN_PLACE_JITTER_M
            place_id = p  # ids unique within the city
            views = []
            for k in range(int(rng.integers(sc.min_images, sc.max_images + 1))):
                r, a = _TRAIN_VIEW_JITTER_M * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
                vrng = _rng(seed, "train-name", name, p, k)
                rec = _record(pe + r * math.cos(a), pn + r * math.sin(a), frame, vrng, place_id, name)
                paths = [f"gsv_xs/train/{name}/{format_image_name(rec)}"]
                if gsv_cities_layout:
                    year, month = int(rec.date[:4]), int(rec.date[4:6])
                    glat, glon = utm_to_latlon(rec.utm_east, rec.utm_north, frame[2], frame[4])
                    glat, glon = round(glat, 7), round(glon, 7)
                    rows.append({"place_id": place_id, "year": year, "month": month,
                                 "northdeg": int(rec.heading), "city_id": name, "lat": glat,
                                 "lon": glon, "panoid": rec.panoid})
                    paths.append(f"gsv_cities/Images/{name}/" + gsv_cities_image_name(
                        name, place_id, year, month, int(rec.heading), glat, glon, rec.panoid))
                views.append(_View(tuple(paths), "train", ("train", name, p, k), 0.0))
            tasks.append(_PlaceTask(street, f"train/{name}/{p}", tuple(views)))
            counts["places"] += 1
            counts["images"] += len(views)
        frames[name] = rows
    return tasks, frames, counts


def _eval_layout(seed: int, split: str, n_places: int, db_per_place: int, query_fraction: float,
                 no_positive_fraction: float, condition: str, centre: tuple[float, float]
                 ) -> tuple[list[_PlaceTask], dict]:
    """Places along parallel streets, 50-100 m apart with some 30-40 m pairs (hard negatives).

    Database views lie within 4 m of their place, query views 0-20 m away; a query position is
    redrawn until no other place's database view is within 25 m, so its positives are exactly
    the database views of its own place. Places kept out of the database give queries without
    positives (only when `no_positive_fraction` > 0).
    """
    rng = _rng(seed, "eval-layout", split)
    frame = _city_frame(*centre)
    street_len = 12
    # parallel streets 150 m apart (a city grid), so places of different streets never mix
    angle = rng.uniform(0, math.pi)
    d, normal = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    places = []  # (position, street, direction)
    for s in range(math.ceil(n_places / street_len)):
        origin = np.array(frame[:2]) + normal * 150.0 * s + d * rng.uniform(-50, 50)
        along = 0.0
        for _ in range(min(street_len, n_places - len(places))):
            along += rng.uniform(30, 40) if rng.random() < 0.2 else rng.uniform(50, 100)
            # jitter across the street only, so consecutive places stay >= 30 m apart
            places.append((origin + d * along + normal * rng.uniform(-1.5, 1.5), f"{split}/street{s}", d))
    n = len(places)
    order = rng.permutation(n)
    n_queries = round(n * query_fraction)
    n_no_pos = round(n_queries * no_positive_fraction)
    with_query = set(order[:n_queries].tolist())
    no_db = set(order[:n_no_pos].tolist())  # query-only places: queries without positives

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
    db_arr, owner_arr = np.array(db_pos), np.array(db_owner)

    tasks: list[_PlaceTask] = []
    index = {"db": 0, "q": 0}
    counts = {"database": 0, "queries": 0, "queries_without_positive": 0, "places": n}
    for i, (pos, street, d) in enumerate(places):
        heading = (math.degrees(math.atan2(d[0], d[1])) + 90) % 360  # camera faces the facades
        views = []
        for east, north in place_db[i]:
            vrng = _rng(seed, split, "db", index["db"])
            rec = _record(east, north, frame, vrng, heading=heading + vrng.normal(0, 5))
            views.append(_View((f"{split}/database/{format_image_name(rec)}",), "db",
                               (split, "db", index["db"]), float(np.dot([east, north] - pos, d))))
            index["db"] += 1
        if i in with_query:
            vrng = _rng(seed, split, "q", index["q"])
            others = db_arr[owner_arr != i] if len(db_arr) else np.zeros((0, 2))
            for _ in range(100):
                r, a = vrng.uniform(0, _QUERY_MAX_OFFSET_M), vrng.uniform(0, 2 * math.pi)
                q = pos + np.array([r * math.cos(a), r * math.sin(a)])
                if not len(others) or np.min(np.linalg.norm(others - q, axis=1)) > POSITIVE_RADIUS_M + 1:
                    break
            else:
                q = pos  # the layout keeps >= 26 m between a place and other places' views
            rec = _record(float(q[0]), float(q[1]), frame, vrng, heading=heading + vrng.normal(0, 10))
            views.append(_View((f"{split}/queries/{format_image_name(rec)}",), condition,
                               (split, "q", index["q"]), float(np.dot(q - pos, d))))
            index["q"] += 1
            counts["queries_without_positive"] += int(i in no_db)
        if views:
            tasks.append(_PlaceTask(street, f"{split}/{i}", tuple(views)))
    counts["database"], counts["queries"] = index["db"], index["q"]
    return tasks, counts


# --- generation ----------------------------------------------------------------------------------

def _render_task(args: tuple[int, int, str, _PlaceTask]) -> int:
    """Render one place's views and write them under `out`; returns the number of images."""
    seed, size, out, task = args
    scene, lights = _render_scene(seed, task.street, task.place_key, size)
    for view in task.views:
        rng = _rng(seed, "view", *view.seed_key)
        data = _render_view(scene, lights, size, CONDITIONS[view.condition], rng, view.displacement_m)
        for rel in view.paths:
            with open(os.path.join(out, rel), "wb") as f:
                f.write(data)
    return len(task.views)


def _prepare_out(out: Path) -> None:
    """Create `out`, or clear a previous generation there; refuse a foreign non-empty folder."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            foreign = [e for e in entries if e not in GENERATED_ENTRIES]
            if MARKER not in entries or foreign:
                raise FileExistsError(
                    f"{out}: folder is not empty and holds no previous synthetic generation "
                    f"(no {MARKER}, or foreign entries {foreign[:5]}); refusing to write there. "
                    "Use an empty or new folder.")
            for name in entries:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(out: Path, seed: int = 0, scale: str = "demo", image_size: int | None = None,
             gsv_cities_layout: bool = False, progress: bool = True, workers: int | None = None) -> dict:
    """Write the embedded datasets under `out`; return a summary dict (counts per split, params).

    The files are a function of (seed, scale, image_size) alone: `workers` (default: the usable
    CPUs, at most 8) only changes speed. `out` must be new, empty or hold a previous generation (its
    `synth.json` marker), which is removed first. Raises ValueError for an unknown scale.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale '{scale}'; valid scales: {', '.join(SCALES)}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    sc = SCALES[scale]
    size = int(image_size or sc.image_size)
    if size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {size}")
    out = Path(out)
    _prepare_out(out)

    train_tasks, frames, train_counts = _train_layout(seed, sc, gsv_cities_layout)
    tasks = list(train_tasks)
    counts: dict[str, dict] = {"gsv_xs/train": train_counts}
    eval_specs = [  # (folder, places, query fraction, no-positive fraction, condition, centre)
        ("sf_xs/val", sc.val_places, sc.val_query_fraction, 0.0, "val", _SAN_FRANCISCO),
        ("sf_xs/test", sc.test_places, sc.test_query_fraction, _NO_POSITIVE_FRACTION, "test", _SAN_FRANCISCO),
        ("tokyo_xs/test", sc.tokyo_places, sc.tokyo_query_fraction, _NO_POSITIVE_FRACTION, "tokyo", _TOKYO),
    ]
    for split, n_places, q_frac, no_pos, condition, centre in eval_specs:
        split_tasks, split_counts = _eval_layout(seed, split, n_places, sc.db_per_place, q_frac,
                                                 no_pos, condition, centre)
        tasks += split_tasks
        counts[split] = split_counts

    # folders first, and names must be unique (the panoid field guarantees it in practice)
    paths = [p for t in tasks for v in t.views for p in v.paths]
    if len(set(paths)) != len(paths):
        raise RuntimeError("synthetic generator produced duplicate file names; report this seed")
    for folder in sorted({os.path.dirname(p) for p in paths}):
        (out / folder).mkdir(parents=True, exist_ok=True)
    if gsv_cities_layout:
        import pandas as pd  # only this optional layout needs it
        (out / "gsv_cities/Dataframes").mkdir(parents=True, exist_ok=True)
        for city, rows in frames.items():
            pd.DataFrame(rows, columns=ORIGINAL_CSV_COLUMNS).to_csv(
                out / f"gsv_cities/Dataframes/{city}.csv", index=False)
        counts["gsv_cities"] = dict(train_counts)

    summary = {"generator": "pipeline.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
               "scale": scale, "scale_params": asdict(sc), "image_size": size,
               "gsv_cities_layout": gsv_cities_layout, "positive_radius_m": POSITIVE_RADIUS_M,
               "counts": counts, "complete": False}
    # the marker goes first, so an interrupted generation can be regenerated in place
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")

    n_images = sum(len(t.views) for t in tasks)
    jobs = [(seed, size, str(out), t) for t in tasks]
    if workers is None:  # the CPUs this process may use (a container's share, not the host's)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(8, cpus)
    workers = max(1, workers)
    with tqdm(total=n_images, unit="img", desc=f"synth {scale}", disable=not progress) as bar:
        if workers == 1 or len(jobs) < 4:
            for job in jobs:
                bar.update(_render_task(job))
        else:
            # fork is cheap and the workers only run numpy/PIL; spawn elsewhere
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(workers) as pool:
                for done in pool.imap_unordered(_render_task, jobs, chunksize=8):
                    bar.update(done)

    summary["complete"] = True
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
