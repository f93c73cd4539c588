"""Photograph a painted garment: one view = a homography of the canonical painting onto a scene.

Shop views: plain light studio background, frontal, centred, small jitter (plus one zoom-in and one
slightly turned view).  Consumer views: the garment worn (head, hands, legs drawn behind it), textured
or cluttered backgrounds, rotation, scale, perspective, occluders (hands, bags, straps, objects),
lighting gradient and colour cast, blur, noise and JPEG artefacts at varying quality.

Landmarks are the canonical landmarks mapped by the SAME homography that warps the image (OpenCV
pixel-centre convention on both canvases), so they are exact; ``visibility`` is 2 when the rounded
position falls outside the frame, 1 when an occluder covers that pixel, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from fashionlens.data.garments.shapes import COLOURS
from fashionlens.data.garments.textures import Canonical, _grid
from fashionlens.data.samples import LOWER, OCCLUDED, TRUNCATED, UPPER, VISIBLE

SKIN = ((236, 200, 172), (214, 168, 130), (178, 124, 88), (130, 86, 58), (92, 60, 42))
#: variation_type -> (scale range, max rotation in degrees, corner jitter as a fraction of the size, shift)
_VARIATION = {1: ((0.8, 0.95), 6, 0.03, 0.08), 2: ((0.74, 0.92), 15, 0.06, 0.1), 3: ((0.68, 0.88), 30, 0.1, 0.12),
              4: ((1.2, 1.45), 10, 0.05, 0.18), 5: ((1.5, 1.9), 10, 0.05, 0.22)}
#: DeepFashion pose_type written for each variation type (1 frontal, 2 side, 5 zoom-in)
POSE_OF_VARIATION = {1: 1, 2: 2, 3: 2, 4: 5, 5: 5}


@dataclass
class ViewParams:
    """Everything random about one photograph, sampled before drawing (so a test can edit it)."""

    domain: str  # "shop" or "consumer"
    variation: int  # DeepFashion variation_type
    H: np.ndarray  # (3, 3) homography: canonical pixels -> view pixels
    seed: int  # seed for background and noise arrays
    background: str  # "studio", "room", "clutter", "texture" or "smooth"
    occluders: tuple[dict, ...] = ()  # shapes in view pixels drawn over the garment
    body: bool = False  # draw the wearer (behind the garment)
    skin: tuple[int, int, int] = SKIN[0]
    outfit: tuple[int, int, int] = (60, 60, 70)  # colour of the other garment the wearer has on
    gain: tuple[float, float, float] = (1.0, 0.0, 0.0)  # brightness, x gradient, y gradient (per image size)
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel RGB gain
    blur: float = 0.0  # Gaussian sigma in pixels (0 = none)
    noise: float = 1.0  # Gaussian noise sigma, 0-255 units
    jpeg: int = 92  # JPEG quality


@dataclass
class View:
    """A rendered photograph and its exact annotation."""

    image: np.ndarray  # (S, S, 3) uint8 RGB, before JPEG encoding
    landmarks: np.ndarray  # (K, 2) float64 exact view pixels
    visibility: np.ndarray  # (K,) int8
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 inclusive pixels of the garment mask, clipped to the frame
    garment_mask: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (S, S) float32 alpha
    occluder_mask: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (S, S) float32


def _homography(canon: Canonical, size: int, variation: int, shop: bool, rng: np.random.Generator) -> np.ndarray:
    (s_lo, s_hi), rot, jitter, shift = _VARIATION[variation]
    if shop:
        rot, jitter, shift = (1.5, 0.0, 0.02) if variation == 1 else (6, jitter, 0.12 if variation >= 4 else 0.03)
        s_lo, s_hi = (0.96, 1.04) if variation == 1 else (s_lo, s_hi)
    x0, y0, x1, y1 = canon.box
    scale = rng.uniform(s_lo, s_hi) * 0.82 * size / max(x1 - x0, y1 - y0)
    a = np.radians(rng.uniform(-rot, rot))
    t = (size - 1) / 2 + rng.uniform(-shift, shift, 2) * size
    rs = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    src = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32)
    dst = (src - centre) @ rs.T + t + rng.uniform(-jitter, jitter, (4, 2)) * size
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def sample_view(canon: Canonical, domain: str, index: int, size: int, rng: np.random.Generator) -> ViewParams:
    """Random parameters of view ``index`` (0-based within its domain) of an item."""
    seed = int(rng.integers(0, 2**31))
    if domain == "shop":
        variation = (1, 4, 2)[index % 3] if index < 3 else int(rng.choice((1, 2, 4)))
        return ViewParams("shop", variation, _homography(canon, size, variation, True, rng), seed, "studio",
                          gain=(float(rng.uniform(0.97, 1.03)), 0.0, 0.0), noise=1.0, jpeg=92)
    variation = int(rng.choice((1, 2, 3, 4, 5), p=(0.2, 0.3, 0.2, 0.2, 0.1)))
    H = _homography(canon, size, variation, False, rng)
    occ = tuple(_sample_occluder(canon, H, size, rng) for _ in range(rng.choice((0, 1, 2), p=(0.35, 0.5, 0.15))))
    colours = list(COLOURS.values())
    return ViewParams(
        "consumer", variation, H, seed, str(rng.choice(("room", "clutter", "texture", "smooth"))), occ,
        body=bool(rng.random() < 0.8), skin=SKIN[int(rng.integers(len(SKIN)))],
        outfit=colours[int(rng.integers(len(colours)))],
        gain=(float(rng.uniform(0.65, 1.2)), float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5))),
        cast=tuple(float(v) for v in rng.uniform(0.8, 1.2, 3)), blur=float(rng.choice((0.0, rng.uniform(0.4, 1.3)))),
        noise=float(rng.uniform(2.0, 9.0)), jpeg=int(rng.integers(25, 86)))


def _sample_occluder(canon: Canonical, H: np.ndarray, size: int, rng: np.random.Generator) -> dict:
    """An occluder near a landmark (half the time) or anywhere on the garment, in view pixels."""
    pts = project(canon.landmarks, H)
    if rng.random() < 0.5:
        centre = pts[int(rng.integers(len(pts)))] + rng.normal(0, 0.03 * size, 2)
    else:
        box = project(np.array([canon.box[:2], canon.box[2:]]), H)
        centre = box[0] + rng.random(2) * (box[1] - box[0])
    kind = str(rng.choice(("hand", "bag", "strap", "object")))
    colour = tuple(float(v) for v in _colours(rng, 1, 0.8)[0])
    if kind == "hand":
        colour = tuple(float(v) for v in SKIN[int(rng.integers(len(SKIN)))])
    return {"kind": kind, "centre": centre.tolist(), "size": float(rng.uniform(0.08, 0.16) * size),
            "angle": float(rng.uniform(0, 180)), "colour": colour, "aspect": float(rng.uniform(0.5, 1.0))}


def project(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 3x3 homography."""
    p = np.concatenate([points, np.ones((len(points), 1))], 1) @ H.T
    return p[:, :2] / p[:, 2:3]


def _colours(rng: np.random.Generator, n: int, max_sat: float) -> np.ndarray:
    """(n, 3) float32 RGB 0-255 colours of everyday scenes: mostly muted, some brighter."""
    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(0, max_sat, n) ** 1.5 * 255, rng.uniform(50, 245, n)], 1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def _background(vp: ViewParams, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 RGB background."""
    xx, yy = _grid(size)
    if vp.background == "studio":
        tone = rng.uniform(222, 248) + rng.uniform(-6, 6, 3) * np.array([1, 1, 1.3])
        return (tone + (yy / size - 0.5)[..., None] * rng.uniform(-14, 6)).astype(np.float32)
    corners = _colours(rng, 9, 0.6).reshape(3, 3, 3)
    img = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)
    if vp.background == "smooth":
        return img
    if vp.background == "texture":  # wood grain or tiles
        period = rng.uniform(0.03, 0.12) * size
        if rng.random() < 0.5:
            grain = np.sin(2 * np.pi * (yy + 3 * np.sin(xx / (0.2 * size))) / period)
        else:
            grain = np.sign(np.sin(np.pi * xx / period) * np.sin(np.pi * yy / period))
        return (img * (1 + 0.15 * grain[..., None])).astype(np.float32)
    n = int(rng.integers(8, 30)) if vp.background == "clutter" else 4
    for colour in _colours(rng, n, 0.8):
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        w, h = rng.uniform(0.05, 0.45, 2) * size
        if rng.random() < 0.5:
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), colour.tolist(), -1)
        else:
            cv2.ellipse(img, (int(x), int(y)), (int(w / 2), int(h / 2)), float(rng.uniform(0, 180)), 0, 360,
                        colour.tolist(), -1)
    if vp.background == "room":
        floor = int(rng.uniform(0.55, 0.85) * size)
        img[floor:] = img[floor:] * 0.5 + _colours(rng, 1, 0.5)[0] * 0.5
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 2.0))


def _thick(img: np.ndarray, a: np.ndarray, b: np.ndarray, width: float, colour) -> None:
    cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), colour, max(1, int(width)), cv2.LINE_AA)


def _draw_body(img: np.ndarray, canon: Canonical, vp: ViewParams) -> None:
    """The wearer, drawn behind the garment: head and hands for tops, legs below hems, a top above bottoms."""
    lm, H, skin = canon.landmarks, vp.H, vp.skin
    scale = np.sqrt(abs(np.linalg.det(H[:2, :2])))
    if canon.ctype != LOWER:
        unit = abs(lm[0, 0] - lm[1, 0]) / 2  # neck half-width
        neck = (lm[0] + lm[1]) / 2
        head = project(np.array([neck - (0, 3.0 * unit), neck + (0, 0.3 * unit), neck - (0, 3.6 * unit)]), H)
        _thick(img, head[0], head[1], 1.5 * unit * scale, skin)
        cv2.circle(img, tuple(int(v) for v in head[2]), int(1.55 * unit * scale), (45, 32, 26), -1, cv2.LINE_AA)
        cv2.circle(img, tuple(int(v) for v in head[0]), int(1.5 * unit * scale), skin, -1, cv2.LINE_AA)
        for k in (2, 3):
            d = (lm[k] - neck) / np.linalg.norm(lm[k] - neck) + (0, 1.0)
            hand = project(np.array([lm[k] - d * unit, lm[k] + d / np.linalg.norm(d) * 2.2 * unit]), H)
            _thick(img, hand[0], hand[1], 0.75 * unit * scale, skin)
            cv2.circle(img, tuple(int(v) for v in hand[1]), int(0.6 * unit * scale), skin, -1, cv2.LINE_AA)
    else:
        unit = abs(lm[0, 0] - lm[1, 0]) / 4.4
        waist = (lm[0] + lm[1]) / 2
        top = project(np.array([waist + (0, unit), waist - (0, 7 * unit)]), H)
        _thick(img, top[0], top[1], 5.2 * unit * scale, vp.outfit)
    centre_x = (lm[-1, 0] + lm[-2, 0]) / 2
    for hem in lm[-2:]:
        foot = hem if canon.leg_hems else np.array([centre_x + (hem[0] - centre_x) * 0.45, hem[1]])
        leg = project(np.array([foot - (0, 2 * unit), foot + (0, 9 * unit)]), H)
        _thick(img, leg[0], leg[1], 1.3 * unit * scale, skin if canon.ctype != UPPER else vp.outfit)


def _draw_occluders(img: np.ndarray, mask: np.ndarray, vp: ViewParams) -> None:
    """Occluders in colour on ``img`` and as coverage (0-255) on ``mask``."""
    for o in vp.occluders:
        c, s, ang = np.array(o["centre"]), o["size"], o["angle"]
        kind = o["kind"]
        colour = o["colour"]
        for target, value in ((img, colour), (mask, 255)):
            centre = (int(c[0]), int(c[1]))
            if kind == "strap":
                d = np.array([np.cos(np.radians(ang)), np.sin(np.radians(ang))]) * s * 4
                _thick(target, c - d, c + d, s * 0.35, value)
            elif kind == "bag":
                box = cv2.boxPoints((centre, (s * 1.6, s * 1.6 * o["aspect"]), ang)).astype(np.int32)
                cv2.fillPoly(target, [box], value, cv2.LINE_AA)
                cv2.ellipse(target, centre, (int(s * 0.5), int(s * 0.9)), ang + 90, 180, 360, value, 2, cv2.LINE_AA)
            else:
                axes = (int(s * 0.7), int(s * 0.7 * o["aspect"]))
                cv2.ellipse(target, centre, axes, ang, 0, 360, value, -1, cv2.LINE_AA)
                if kind == "hand":
                    for k in (-1, 0, 1):
                        tip = c + s * np.array([np.cos(np.radians(ang + 20 * k)), np.sin(np.radians(ang + 20 * k))])
                        _thick(target, c, tip, s * 0.2, value)


def _visibility(points: np.ndarray, occ: np.ndarray, size: int) -> np.ndarray:
    """(K,) int8: 2 outside the frame (after rounding), 1 under an occluder, else 0."""
    r = pixel(points)
    inside = (r >= 0).all(1) & (r < size).all(1)
    vis = np.full(len(points), TRUNCATED, np.int8)
    rc = np.clip(r, 0, size - 1)
    covered = occ[rc[:, 1], rc[:, 0]] >= 0.5
    vis[inside] = np.where(covered[inside], OCCLUDED, VISIBLE)
    return vis


_NOISE_MARGIN = 64


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed block of standard normal noise; views take random windows of it (much cheaper than drawing)."""
    m = size + _NOISE_MARGIN
    return np.random.default_rng(0x6E015E).standard_normal((m, m, 3), np.float32)


def pixel(points: np.ndarray) -> np.ndarray:
    """Integer pixel of exact coordinates (round half up), as written to the landmark files."""
    return np.floor(np.asarray(points, np.float64) + 0.5).astype(np.int64)


def _bbox(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def render_view(canon: Canonical, vp: ViewParams, size: int) -> View:
    """Photograph the painted garment; returns the RGB image (before JPEG) and exact annotation."""
    rng = np.random.default_rng(vp.seed)
    bg = _background(vp, size, rng)
    if vp.body:
        _draw_body(bg, canon, vp)
    warped = cv2.warpPerspective(canon.rgba, vp.H, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = warped[..., 3]
    if vp.domain == "shop":  # soft contact shadow on the studio background
        blurred, dy, dx = cv2.GaussianBlur(alpha, (0, 0), size * 0.02), max(1, size // 60), max(1, size // 90)
        shadow = np.zeros_like(alpha)
        shadow[dy:, dx:] = blurred[:-dy, :-dx]  # cast down and to the right, no wrap-around
        bg *= (1.0 - 0.22 * shadow)[..., None]
    img = bg * (1.0 - alpha[..., None]) + warped[..., :3]
    occ = np.zeros((size, size), np.uint8)
    _draw_occluders(img, occ, vp)
    xx, yy = _grid(size)
    g0, gx, gy = vp.gain
    img *= (g0 * (1.0 + gx * (xx / size - 0.5) + gy * (yy / size - 0.5)))[..., None] * np.array(vp.cast, np.float32)
    if vp.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), vp.blur)
    oy, ox = rng.integers(0, _NOISE_MARGIN, 2)
    img += _noise_bank(size)[oy:oy + size, ox:ox + size] * np.float32(vp.noise)
    lms = project(canon.landmarks, vp.H)
    occf = occ.astype(np.float32) / 255.0
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return View(image, lms, _visibility(lms, occf, size), _bbox(alpha), alpha, occf)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB uint8 image (OpenCV's libjpeg: deterministic for a given build)."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return buf.tobytes()


__all__ = ["View", "ViewParams", "encode_jpeg", "pixel", "project", "render_view", "sample_view"]
