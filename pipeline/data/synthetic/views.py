"""Views of a scene: camera pose, light, season, occluders; one photograph as JPEG bytes.

A `Condition` holds the knobs of one difficulty (training views, database views, queries of each
evaluation split); `render_view` draws every random choice from the view's own stream.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

JPEG_QUALITY = 90

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
    # another season or era (Nordland winter, AmsterTime archive, SVOX weather): always a seasonal
    # hue rotation, washed-out light
    "winter": Condition(shift=0.08, shift_per_m=0.007, zoom=0.1, roll_deg=3, keystone=0.06, gain=0.3,
                        brightness=(0.8, 1.4), contrast=(0.5, 1.0), gamma=0.35, hue_deg=25,
                        season_prob=1.0, night_prob=0.05, occluders=(0, 2), noise=0.04),
}



def perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output corners `dst` to scene points `src` (4 x 2 each)."""
    a = []
    for (x, y), (X, Y) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -X * x, -X * y])
        a.append([0, 0, 0, x, y, 1, -Y * x, -Y * y])
    return np.linalg.solve(np.array(a, dtype=np.float64), src.reshape(8)).tolist()


def colour_matrix(hue_deg: float, saturation: float, gains: np.ndarray) -> np.ndarray:
    """3x3 RGB matrix: hue rotation and saturation in YIQ space, then per-channel gains."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    t = math.radians(hue_deg)
    rot = np.array([[1, 0, 0],
                    [0, saturation * math.cos(t), -saturation * math.sin(t)],
                    [0, saturation * math.sin(t), saturation * math.cos(t)]])
    return (np.diag(gains) @ np.linalg.inv(to_yiq) @ rot @ to_yiq).astype(np.float32)


def draw_occluders(img: Image.Image, rng: np.random.Generator, count: int) -> None:
    """Cars, trees and pedestrians in front of the facade, in colours unrelated to the place."""
    draw = ImageDraw.Draw(img)
    sx, s = img.width, img.height  # x positions span the width; sizes and heights follow the height
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        x = sx * rng.uniform(-0.1, 0.9)
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


def render_view(scene: Image.Image, lights: Image.Image, size: tuple[int, int], cond: Condition,
                rng: np.random.Generator, displacement_m: float) -> bytes:
    """One photograph of a scene as JPEG bytes, `size` = (height, width)."""
    h = scene.height
    w = scene.width
    # camera: centre, zoom, roll and keystone define the scene quadrilateral seen by the view
    half = 0.42 * h * math.exp(rng.uniform(-cond.zoom, cond.zoom))
    cx = w / 2 + 2 * half * (rng.uniform(-cond.shift, cond.shift) + cond.shift_per_m * displacement_m)
    cy = h * 0.5 + 2 * half * rng.uniform(-cond.shift, cond.shift) * 0.5
    roll = math.radians(rng.uniform(-cond.roll_deg, cond.roll_deg))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    corners = corners + rng.uniform(-cond.keystone, cond.keystone, (4, 2)) * 2
    corners[:, 0] *= size[1] / size[0]  # a wider view sees a wider quadrilateral
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    src = corners @ rot.T * half + np.array([cx, cy])
    out = (2 * size[1], 2 * size[0])  # (w, h) at twice the size, then box-filter down (anti-aliasing)
    dst = np.array([[0, 0], [out[0], 0], [out[0], out[1]], [0, out[1]]], dtype=np.float64)
    coeffs = perspective_coeffs(dst, src)
    view = scene.transform(out, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR,
                           fillcolor=(128, 128, 128))
    night = rng.random() < cond.night_prob
    if night:
        lit = lights.transform(out, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    draw_occluders(view, rng, int(rng.integers(cond.occluders[0], cond.occluders[1] + 1)))
    view = view.reduce(2)

    img = np.asarray(view, dtype=np.float32) / 255.0
    hue = rng.uniform(-cond.hue_deg, cond.hue_deg)
    if rng.random() < cond.season_prob:
        hue += rng.choice([-1, 1]) * rng.uniform(45, 135)
    gains = 1 + rng.uniform(-cond.gain, cond.gain, 3)
    img = img @ colour_matrix(hue, rng.uniform(0.6, 1.3), gains).T
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

