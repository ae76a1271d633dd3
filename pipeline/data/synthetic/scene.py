"""The canonical scene of a place: a street facade drawn from place-specific geometry.

Geometry (building widths, heights, window grids, roofs, signs, trees, lamps) comes from the
place's own random stream; colours come from a palette shared by the whole street, so
neighbouring places are hard negatives. The helpers below draw in a fixed order from one stream:
changing that order changes every generated image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.synthetic.seeds import rng_for


def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] (hue wraps) to an 8-bit RGB tuple."""
    h = (h % 1.0) * 6.0
    i, f = int(h), h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return int(r * 255), int(g * 255), int(b * 255)


def street_style(seed: int, street: str) -> dict:
    """Palette and building family shared by every place of one street (source of hard negatives)."""
    rng = rng_for(seed, "style", street)
    hue = rng.random()
    facades = [hsv(hue + rng.normal(0, 0.08), rng.uniform(0.15, 0.6), rng.uniform(0.35, 0.9))
               for _ in range(4)]
    return {
        "facades": facades,
        "trim": hsv(hue + 0.5 + rng.normal(0, 0.1), rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.9)),
        "glass": hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.5), rng.uniform(0.08, 0.35)),
        "signs": [hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)) for _ in range(3)],
        "sky": hsv(rng.uniform(0.52, 0.65), rng.uniform(0.1, 0.5), rng.uniform(0.7, 1.0)),
        "road": hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.45)),
        "foliage": hsv(rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6)),
        "window_aspect": float(rng.uniform(0.7, 2.0)),  # height / width of windows on this street
        "gable_prob": float(rng.uniform(0.0, 0.6)),
    }


@dataclass
class _Canvas:
    """What every drawing step needs: the two layers, the place's stream, the street palette."""

    draw: ImageDraw.ImageDraw    # the RGB scene
    ldraw: ImageDraw.ImageDraw   # the lights layer
    rng: np.random.Generator
    style: dict
    h: float
    w: float
    u: float                     # drawing unit: 1 % of the scene height
    ground: float = 0.0


def render_scene(seed: int, street: str, place_key: str, size: int) -> tuple[Image.Image, Image.Image]:
    """Draw the canonical scene of a place; returns (RGB, lights) at 2*size x 3*size.

    `lights` holds, per pixel, the brightness rank (1..255) of the light source there (windows,
    lamps, signs); a night view switches on those above a random threshold.
    """
    style = street_style(seed, street)
    rng = rng_for(seed, "place", place_key)
    h, w = 2 * size, 3 * size
    rgb = Image.new("RGB", (w, h), style["sky"])
    lights = Image.new("L", (w, h), 0)
    c = _Canvas(ImageDraw.Draw(rgb), ImageDraw.Draw(lights), rng, style, h, w, h / 100.0)
    c.ground = h * rng.uniform(0.78, 0.86)
    _draw_sky(c)
    # buildings side by side with place-specific widths, heights, window grids and roofs
    n_buildings = int(rng.integers(2, 5))
    widths = rng.dirichlet(np.full(n_buildings, 2.5)) * w
    x0 = 0.0
    for bw in widths:
        _draw_building(c, x0, x0 + bw)
        x0 = x0 + bw
    _draw_street(c)
    _draw_landmarks(c)
    return rgb, lights


def _draw_sky(c: _Canvas) -> None:
    """Sky gradient towards the horizon (no randomness)."""
    sky = np.array(c.style["sky"], dtype=np.float32)
    for y in range(0, int(c.ground), max(1, int(c.u))):
        c.draw.rectangle([0, y, c.w, y + c.u], fill=tuple(int(v) for v in sky * (0.8 + 0.3 * y / c.ground)))


def _draw_building(c: _Canvas, x0: float, x1: float) -> None:
    """One building between x0 and x1: facade and its texture, roof, windows, shopfront."""
    rng, u, bw = c.rng, c.u, x1 - x0
    top = c.ground - c.h * rng.uniform(0.3, 0.72)
    facade = c.style["facades"][int(rng.integers(len(c.style["facades"])))]
    c.draw.rectangle([x0, top, x1, c.ground], fill=facade)
    texture = int(rng.integers(3))
    dark = tuple(int(v * 0.8) for v in facade)
    if texture == 1:  # brick courses
        step = u * rng.uniform(2.0, 4.0)
        for y in np.arange(top + step, c.ground, step):
            c.draw.line([x0, y, x1, y], fill=dark, width=max(1, int(u * 0.5)))
    elif texture == 2:  # vertical panels
        step = u * rng.uniform(5.0, 12.0)
        for x in np.arange(x0 + step, x1, step):
            c.draw.line([x, top, x, c.ground], fill=dark, width=max(1, int(u * 0.8)))
    # roof: gable or cornice
    if rng.random() < c.style["gable_prob"]:
        peak = top - c.h * rng.uniform(0.06, 0.16)
        c.draw.polygon([(x0, top), ((x0 + x1) / 2 + rng.normal(0, bw * 0.1), peak), (x1, top)],
                       fill=c.style["trim"])
    else:
        c.draw.rectangle([x0, top - u * 2, x1, top + u * rng.uniform(1, 3)], fill=c.style["trim"])
    shop = c.ground - c.h * rng.uniform(0.12, 0.18)
    _draw_windows(c, x0, bw, top, shop)
    _draw_shopfront(c, x0, x1, shop)


def _draw_windows(c: _Canvas, x0: float, bw: float, top: float, shop: float) -> None:
    """A grid of (possibly arched) windows above the shop floor, each with its own light rank."""
    rng, u, style = c.rng, c.u, c.style
    ww = u * rng.uniform(3.0, 8.0)
    wh = min(ww * style["window_aspect"] * rng.uniform(0.8, 1.25), u * 14)
    gap_x, gap_y = ww * rng.uniform(0.5, 1.6), wh * rng.uniform(0.35, 1.0)
    cols = max(1, int((bw - gap_x) // (ww + gap_x)))
    rows = max(0, int((shop - top - 2 * gap_y) // (wh + gap_y)))
    start_x = x0 + (bw - cols * ww - (cols - 1) * gap_x) / 2
    arched = rng.random() < 0.3
    for r in range(rows):
        y = top + gap_y * 1.5 + r * (wh + gap_y)
        for col in range(cols):
            x = start_x + col * (ww + gap_x)
            box = [x, y, x + ww, y + wh]
            if arched:
                c.draw.rounded_rectangle(box, radius=ww / 2, fill=style["glass"])
                c.ldraw.rounded_rectangle(box, radius=ww / 2, fill=int(rng.integers(1, 256)))
            else:
                c.draw.rectangle(box, fill=style["glass"])
                c.ldraw.rectangle(box, fill=int(rng.integers(1, 256)))
                c.draw.line([x, y + wh, x + ww, y + wh], fill=style["trim"], width=max(1, int(u)))


def _draw_shopfront(c: _Canvas, x0: float, x1: float, shop: float) -> None:
    """Ground floor: shop sign (lit at night), door and a striped awning."""
    rng, u, style, bw, ground = c.rng, c.u, c.style, x1 - x0, c.ground
    sign = style["signs"][int(rng.integers(len(style["signs"])))]
    if rng.random() < 0.7:
        sx0 = x0 + bw * rng.uniform(0.05, 0.4)
        sx1 = sx0 + bw * rng.uniform(0.25, 0.55)
        c.draw.rectangle([sx0, shop - u * 4, sx1, shop], fill=sign)
        c.ldraw.rectangle([sx0, shop - u * 4, sx1, shop], fill=int(rng.integers(100, 256)))
    door_x = x0 + bw * rng.uniform(0.1, 0.8)
    c.draw.rectangle([door_x, ground - u * 11, door_x + u * 6, ground], fill=style["glass"])
    if rng.random() < 0.4:  # striped awning
        ax0, ax1 = x0 + bw * 0.05, x1 - bw * 0.05
        stripes = int(rng.integers(4, 10))
        for i in range(stripes):
            colour = sign if i % 2 == 0 else (235, 235, 225)
            sx = ax0 + (ax1 - ax0) * i / stripes
            c.draw.polygon([(sx, shop + u), (sx + (ax1 - ax0) / stripes, shop + u),
                            (sx + (ax1 - ax0) / stripes + u, shop + u * 5), (sx + u, shop + u * 5)],
                           fill=colour)


def _draw_street(c: _Canvas) -> None:
    """Pavement, road and lane dashes."""
    rng, u, h, w, ground, road = c.rng, c.u, c.h, c.w, c.ground, c.style["road"]
    c.draw.rectangle([0, ground, w, h], fill=road)
    c.draw.rectangle([0, ground, w, ground + u * 2], fill=tuple(min(255, v + 60) for v in road))
    dash, phase = u * rng.uniform(6, 14), u * rng.uniform(0, 20)
    for x in np.arange(-phase, w, 2 * dash):
        c.draw.rectangle([x, ground + (h - ground) * 0.6, x + dash, ground + (h - ground) * 0.6 + u],
                         fill=(230, 230, 210))


def _draw_landmarks(c: _Canvas) -> None:
    """Trees and street lamps (lamps lit at night) at place-specific positions."""
    rng, u, h, w, ground = c.rng, c.u, c.h, c.w, c.ground
    for _ in range(int(rng.integers(0, 3))):
        tx, r = w * rng.random(), u * rng.uniform(6, 14)
        c.draw.rectangle([tx - u, ground - r * 2.2, tx + u, ground], fill=(80, 60, 40))
        c.draw.ellipse([tx - r, ground - r * 3.2, tx + r, ground - r * 1.2], fill=c.style["foliage"])
    for _ in range(int(rng.integers(0, 3))):
        lx, top = w * rng.random(), ground - h * rng.uniform(0.25, 0.4)
        c.draw.rectangle([lx - u * 0.6, top, lx + u * 0.6, ground], fill=(50, 50, 55))
        c.draw.ellipse([lx - u * 2, top - u * 2, lx + u * 2, top + u], fill=(240, 235, 200))
        c.ldraw.ellipse([lx - u * 2.5, top - u * 2.5, lx + u * 2.5, top + u * 1.5], fill=255)
