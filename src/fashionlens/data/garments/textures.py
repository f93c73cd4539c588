"""Paint a garment: pattern, fabric look and shading on a canonical (frontal, centred) canvas.

The canonical canvas is square, ``C`` pixels, pixel centres at integer coordinates (OpenCV's
convention, also used by the view warps), RGB 0-255.  Every view of an item warps this one
painting, so an item looks the same in all its views.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from fashionlens.data.garments.shapes import Design, Shape

_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_ONE = 1 << _SHIFT


@dataclass
class Canonical:
    """The painted garment on its canonical canvas."""

    rgba: np.ndarray  # (C, C, 4) float32: RGB premultiplied by alpha (0-255), alpha in [0, 1]
    landmarks: np.ndarray  # (K, 2) float64 canonical pixels, DeepFashion order
    box: tuple[float, float, float, float]  # garment extent x0, y0, x1, y1 in canonical pixels
    ctype: int  # clothes type
    to_px: tuple[float, float, float]  # (scale, offset_x, offset_y): px = units * scale + offset
    leg_hems: bool = False  # the hem landmarks are leg openings (trousers, shorts, jumpsuits)


@lru_cache(maxsize=8)
def _grid(c: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32)
    return xx, yy


def _fit(shape: Shape, c: int) -> tuple[float, float, float]:
    """Scale and offsets that centre the garment and make its longer side 0.9 C."""
    pts = np.concatenate([p for p, _ in shape.parts])
    lo, hi = pts.min(0), pts.max(0)
    scale = 0.9 * c / float(max(hi - lo))
    centre = (lo + hi) / 2
    return scale, (c - 1) / 2 - centre[0] * scale, (c - 1) / 2 - centre[1] * scale


def _fixed(points: np.ndarray, to_px: tuple[float, float, float]) -> np.ndarray:
    s, ox, oy = to_px
    px = points * s + np.array([ox, oy])
    return np.round(px * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _stripes(u: np.ndarray, period: float, duty: float) -> np.ndarray:
    """Soft-edged 0/1 bands of ``period`` pixels, ``duty`` of each period set."""
    phase = np.mod(u / period, 1.0)
    edge = 1.5 / period
    return np.clip((duty - phase) / edge + 0.5, 0, 1) * np.clip(phase / edge + 0.5, 0, 1)


def _pattern(d: Design, shape: Shape, c: int, to_px, rng: np.random.Generator) -> np.ndarray:
    """(C, C) float32 in [0, 1]: where the pattern colour replaces the base colour."""
    xx, yy = _grid(c)
    p = d.pattern
    period = max(4.0, p["period"] * c)
    if d.texture == "striped":
        a = np.radians(p["angle"])
        return _stripes(xx * np.sin(a) + yy * np.cos(a), period, p["duty"])
    if d.texture == "checked":
        sx, sy = _stripes(xx, period, p["duty"]), _stripes(yy, period, p["duty"])
        return 0.5 * sx + 0.5 * sy
    if d.texture == "dotted":
        r = period * p["duty"] * 0.45
        row = np.floor(yy / period)
        dx = np.mod(xx + (row % 2) * period / 2, period) - period / 2
        dy = np.mod(yy, period) - period / 2
        return np.clip(r + 0.5 - np.sqrt(dx * dx + dy * dy), 0, 1)
    m = np.zeros((c, c), np.uint8)
    if d.texture == "floral":
        _flowers(m, c, period, rng)
    elif d.texture == "graphic":
        _graphic(m, shape, to_px, rng, int(p["kind"]))
    return m.astype(np.float32) / 255.0


def _flowers(m: np.ndarray, c: int, period: float, rng: np.random.Generator) -> None:
    n = int((c / period) ** 2 * 0.7)
    centres = rng.uniform(0, c, (n, 2))
    for (x, y), r in zip(centres, rng.uniform(0.18, 0.32, n) * period):
        for k in range(5):
            ang = 2 * np.pi * k / 5 + x
            q = (int((x + r * np.cos(ang)) * _ONE), int((y + r * np.sin(ang)) * _ONE))
            cv2.circle(m, q, int(r * 0.62 * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(m, (int(x * _ONE), int(y * _ONE)), int(r * 0.35 * _ONE), 140, -1, cv2.LINE_AA, _SHIFT)


def _graphic(m: np.ndarray, shape: Shape, to_px, rng: np.random.Generator, kind: int) -> None:
    """A chest print: letters, a ring, a star or a band of bars."""
    s, ox, oy = to_px
    x0, y0, x1, y1 = shape.print_box
    px0, py0, px1, py1 = x0 * s + ox, y0 * s + oy, x1 * s + ox, y1 * s + oy
    cx, cy, w, h = (px0 + px1) / 2, (py0 + py1) / 2, px1 - px0, py1 - py0
    if kind == 0:
        text = "".join(chr(65 + int(v)) for v in rng.integers(0, 26, 3))
        scale = w / 60.0
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
        org = (int(cx - tw / 2), int(cy + th / 2))
        cv2.putText(m, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, 255, max(1, int(scale * 2)), cv2.LINE_AA)
    elif kind == 1:
        r = min(w, h) * 0.42
        cv2.circle(m, (int(cx * _ONE), int(cy * _ONE)), int(r * _ONE), 255, max(2, int(r * 0.3)), cv2.LINE_AA, _SHIFT)
    elif kind == 2:
        t = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45) * min(w, h) * 0.48
        star = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
        cv2.fillPoly(m, [np.round(star * _ONE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    else:
        for k in range(3):
            yk = py0 + h * (0.25 + 0.22 * k)
            cv2.rectangle(m, (int(px0), int(yk)), (int(px1), int(yk + h * 0.12)), 255, -1, cv2.LINE_AA)


def _fabric(d: Design, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative luminance (C, C) and additive highlight (C, C) that make the fabric look."""
    xx, yy = _grid(c)
    low = cv2.resize(rng.standard_normal((6, 6)).astype(np.float32), (c, c), interpolation=cv2.INTER_CUBIC)
    fine = rng.standard_normal((c, c)).astype(np.float32)
    fold_a, fold_l, fold_k, fold_p = d.pattern["folds"]
    folds = 1.0 + fold_a * np.sin(2 * np.pi * (xx + fold_k * yy) / (fold_l * c) + fold_p)
    lum, high = folds + 0.03 * low, np.zeros((c, c), np.float32)
    if d.fabric == "denim":  # diagonal twill, speckle and lighter worn areas
        lum = lum * (1.0 + 0.1 * np.sin(2 * np.pi * (xx + yy) / 3.0)) + 0.06 * fine + 0.08 * low
    elif d.fabric == "knit":  # vertical ribs with a fine stitch texture
        lum = lum * (0.9 + 0.16 * np.abs(np.sin(np.pi * xx / 2.6))) + 0.035 * fine
    elif d.fabric == "leather":  # smooth, dark, with broad specular sheen
        sheen = np.exp(-(((xx * 0.8 + yy * 0.6) / c - d.pattern["sheen"]) / 0.07) ** 2)
        lum, high = lum * 0.85, (70.0 * sheen + 25.0 * np.clip(low, 0, None)).astype(np.float32)
    elif d.fabric == "chiffon":  # light, soft, slightly shiny
        lum, high = lum * 1.05, (18.0 * np.clip(low, 0, None)).astype(np.float32)
    else:
        lum = lum + 0.02 * fine
    return lum.astype(np.float32), high


def _line_map(shape: Shape, c: int, to_px) -> np.ndarray:
    """(C, C) uint8: 255 on seams and outlines."""
    lines = np.zeros((c, c), np.uint8)
    thick = max(1, c // 110)
    polys = [_fixed(p, to_px) for p, _ in shape.parts]
    cv2.polylines(lines, polys, True, 150, thick, cv2.LINE_AA, _SHIFT)
    cv2.polylines(lines, [_fixed(s, to_px) for s in shape.seams], False, 255, thick, cv2.LINE_AA, _SHIFT)
    return lines


def _trims(img: np.ndarray, d: Design, shape: Shape, to_px) -> None:
    """Buttons, zips and drawstrings painted over the fabric (in place, RGB float)."""
    s = to_px[0]
    for kind, pts, size in shape.trims:
        fp = _fixed(pts, to_px)
        width = max(1, int(round(size * s)))
        if kind == "button":
            colour = tuple(0.55 * v for v in d.rgb) if d.texture == "solid" else d.rgb2
            cv2.circle(img, tuple(int(v) for v in fp[0, 0]), int(size * s * _ONE), colour, -1, cv2.LINE_AA, _SHIFT)
        elif kind == "zip":
            cv2.polylines(img, [fp], False, (150.0, 150.0, 155.0), width, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(img, [fp], False, (235.0, 235.0, 228.0), width, cv2.LINE_AA, _SHIFT)


def render_canonical(d: Design, shape: Shape, c: int) -> Canonical:
    """Paint ``shape`` with the design's colours, pattern and fabric on a ``c`` x ``c`` canvas."""
    rng = np.random.default_rng(d.seed)
    to_px = _fit(shape, c)
    mask = np.zeros((c, c), np.uint8)
    shade = np.ones((c, c), np.float32)
    for poly, value in shape.parts:
        fp = _fixed(poly, to_px)
        cv2.fillPoly(mask, [fp], 255, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(shade, [fp], float(value), cv2.LINE_8, _SHIFT)
    alpha = mask.astype(np.float32) / 255.0
    m = _pattern(d, shape, c, to_px, rng)[..., None]
    rgb1, rgb2 = np.array(d.rgb, np.float32), np.array(d.rgb2, np.float32)
    lum, high = _fabric(d, c, rng)
    edge = 0.8 + 0.2 * np.minimum(cv2.GaussianBlur(alpha, (0, 0), c * 0.02) * 1.6, 1.0)
    lines = 1.0 - 0.35 * _line_map(shape, c, to_px).astype(np.float32) / 255.0
    img = (rgb1 + (rgb2 - rgb1) * m) * (shade * lum * edge * lines)[..., None] + high[..., None]
    _trims(img, d, shape, to_px)
    if d.fabric == "chiffon":
        alpha = alpha * d.pattern["opacity"]
    img = np.clip(img, 0, 255) * alpha[..., None]
    s, ox, oy = to_px
    pts = np.concatenate([p for p, _ in shape.parts]) * s + np.array([ox, oy])
    box = (*pts.min(0), *pts.max(0))
    lms = shape.landmarks * s + np.array([ox, oy])
    return Canonical(np.dstack([img, alpha]).astype(np.float32), lms, tuple(float(v) for v in box), shape.ctype, to_px,
                     shape.leg_hems)
