"""Parametric garment silhouettes: the taxonomy, the attribute vocabulary and the polygons.

Geometry is built in *garment units* (shoulder half-width about 0.5), x to the image right, y down,
for a frontal garment.  Convention used everywhere in the renderer: the wearer's LEFT is image RIGHT
(+x) in a frontal view, so DeepFashion's "left collar" has the larger x.  Landmarks are points of the
drawn outline: collar = where the neckline meets the shoulder seam, sleeve = centre of the cuff
opening (the outer armhole point when sleeveless), waistline = side of the waist (the waistband's side
for trousers and skirts), hem = outer hem corner (centre of each leg opening for trousers, shorts and
jumpsuits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashionlens.data.samples import FULL, LOWER, UPPER

TEXTURES = ("solid", "striped", "dotted", "checked", "floral", "graphic")
SLEEVES = ("long_sleeve", "short_sleeve", "sleeveless", "no_sleeve")
LENGTHS = ("mini_length", "midi_length", "maxi_length", "no_length")
NECKLINES = ("crew_neckline", "v_neckline", "square_neckline", "collar_neckline", "hooded", "no_neckline")
FABRICS = ("cotton", "denim", "knit", "leather", "chiffon")
FITS = ("tight", "regular", "loose")
#: Named colours (RGB 0-255); an item's colour is jittered around its named value.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (38, 38, 42), "white": (236, 236, 230), "grey": (138, 138, 142), "navy": (32, 42, 88),
    "blue": (52, 104, 196), "red": (192, 36, 44), "pink": (236, 150, 178), "green": (42, 124, 64),
    "yellow": (236, 200, 52), "beige": (212, 190, 150), "brown": (112, 70, 40),
}
#: (type number written to list_attr_cloth.txt, group name, values); exactly one value per group is true.
ATTRIBUTE_GROUPS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "texture", TEXTURES), (2, "sleeve", SLEEVES), (3, "length", LENGTHS), (4, "neckline", NECKLINES),
    (5, "fabric", FABRICS), (6, "fit", FITS), (7, "colour", tuple(COLOURS)),
)
_TOPS = ("solid", "striped", "dotted", "checked", "floral", "graphic")
_BOTTOMS = ("solid", "solid", "striped", "checked")


@dataclass(frozen=True)
class Category:
    """A leaf category.  Repeated values in a choice tuple weight that value when sampling."""

    name: str  # DeepFashion-style name written to list_category_cloth.txt
    path: str  # dotted taxonomy path, root first
    ctype: int  # DeepFashion clothes_type: 1 upper, 2 lower, 3 full
    builder: str  # which silhouette builder draws it
    sleeves: tuple[str, ...] = ("no_sleeve",)
    necklines: tuple[str, ...] = ("no_neckline",)
    lengths: tuple[str, ...] = ("no_length",)
    fabrics: tuple[str, ...] = ("cotton",)
    textures: tuple[str, ...] = _TOPS
    fits: tuple[str, ...] = FITS
    body_length: tuple[float, float] = (1.25, 1.45)  # collar-to-hem (upper) or waist-to-hem range, units


_SH, _LS = ("short_sleeve",) * 3 + ("long_sleeve",), ("long_sleeve",)
CATEGORIES: tuple[Category, ...] = (
    Category("Tee", "upper.tops.tee", UPPER, "top", _SH, ("crew_neckline",) * 2 + ("v_neckline",),
             fabrics=("cotton", "cotton", "knit")),
    Category("Tank", "upper.tops.tank", UPPER, "top", ("sleeveless",),
             ("crew_neckline", "v_neckline", "square_neckline"), fabrics=("cotton", "knit", "chiffon"),
             body_length=(1.2, 1.4)),
    Category("Button-Down", "upper.tops.button-down", UPPER, "top", ("long_sleeve", "short_sleeve"),
             ("collar_neckline",), fabrics=("cotton", "cotton", "denim", "chiffon"),
             textures=("solid", "striped", "checked", "checked", "dotted", "floral"), body_length=(1.35, 1.6)),
    Category("Sweater", "upper.knitwear.sweater", UPPER, "top", _LS, ("crew_neckline", "v_neckline"),
             fabrics=("knit",), textures=("solid", "solid", "striped", "checked", "dotted", "graphic")),
    Category("Hoodie", "upper.knitwear.hoodie", UPPER, "top", _LS, ("hooded",), fabrics=("cotton", "knit"),
             fits=("regular", "loose"), body_length=(1.25, 1.45)),
    Category("Jacket", "upper.outerwear.jacket", UPPER, "top", _LS, ("collar_neckline",),
             fabrics=("denim", "leather", "cotton"), textures=("solid", "solid", "checked", "striped"),
             fits=("regular", "loose", "tight"), body_length=(1.15, 1.4)),
    Category("Trousers", "lower.trousers.trousers", LOWER, "trousers", fabrics=("denim", "denim", "cotton", "leather"),
             textures=_BOTTOMS, body_length=(1.45, 1.75)),
    Category("Leggings", "lower.trousers.leggings", LOWER, "trousers", fabrics=("knit", "leather", "cotton"),
             textures=("solid", "solid", "striped", "floral", "dotted"), fits=("tight",), body_length=(1.5, 1.75)),
    Category("Shorts", "lower.shorts.shorts", LOWER, "trousers", fabrics=("denim", "cotton", "knit"),
             textures=_BOTTOMS + ("floral",), fits=("regular", "loose", "tight"), body_length=(0.62, 0.85)),
    Category("Skirt", "lower.skirts.skirt", LOWER, "skirt", lengths=("mini_length", "midi_length", "maxi_length"),
             fabrics=("cotton", "denim", "leather", "chiffon", "knit"), textures=_BOTTOMS + ("floral", "dotted")),
    Category("Dress", "full.dresses.dress", FULL, "dress", ("sleeveless", "short_sleeve", "long_sleeve"),
             ("crew_neckline", "v_neckline", "square_neckline"), ("mini_length", "midi_length", "maxi_length"),
             fabrics=("cotton", "chiffon", "knit")),
    Category("Jumpsuit", "full.onepieces.jumpsuit", FULL, "jumpsuit", ("sleeveless", "short_sleeve", "long_sleeve"),
             ("crew_neckline", "v_neckline", "square_neckline", "collar_neckline"),
             fabrics=("cotton", "denim", "chiffon"),
             textures=("solid", "solid", "striped", "dotted", "floral", "checked"), body_length=(1.45, 1.75)),
    Category("Romper", "full.onepieces.romper", FULL, "jumpsuit", ("sleeveless", "short_sleeve"),
             ("crew_neckline", "v_neckline", "square_neckline"), fabrics=("cotton", "chiffon", "denim"),
             textures=("solid", "striped", "dotted", "floral", "checked"), body_length=(0.6, 0.8)),
    Category("Coat", "full.outerwear.coat", FULL, "coat", _LS, ("collar_neckline",),
             ("mini_length", "midi_length", "maxi_length"), fabrics=("cotton", "cotton", "leather", "knit"),
             textures=("solid", "solid", "checked", "striped"), fits=("regular", "loose", "tight")),
)
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}


@dataclass
class Design:
    """One item: a fixed design seen in every view of that item."""

    category: str
    texture: str
    sleeve: str
    length: str
    neckline: str
    fabric: str
    fit: str
    colour: str
    rgb: tuple[float, float, float]  # base colour, RGB 0-255 (jittered around COLOURS[colour])
    rgb2: tuple[float, float, float]  # pattern colour
    geom: dict[str, float] = field(default_factory=dict)  # silhouette parameters, garment units
    pattern: dict[str, Any] = field(default_factory=dict)  # pattern parameters (lengths as fractions of the canvas)
    seed: int = 0  # seed of the item's fixed texture details

    def attributes(self) -> dict[str, str]:
        """Group name -> the true value."""
        return {"texture": self.texture, "sleeve": self.sleeve, "length": self.length, "neckline": self.neckline,
                "fabric": self.fabric, "fit": self.fit, "colour": self.colour}


@dataclass
class Shape:
    """Drawable garment in garment units."""

    ctype: int
    parts: list[tuple[np.ndarray, float]] = field(default_factory=list)  # ((N, 2) polygon, shade), in draw order
    seams: list[np.ndarray] = field(default_factory=list)  # (N, 2) open polylines drawn as darker lines
    trims: list[tuple[str, np.ndarray, float]] = field(default_factory=list)  # (kind, (N, 2) points, size)
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) DeepFashion order
    print_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x0, y0, x1, y1 of a graphic print
    leg_hems: bool = False  # hem landmarks are the centres of leg openings


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_geometry(cat: Category, d: Design, rng: np.random.Generator) -> dict[str, float]:
    """Continuous silhouette parameters for a design (garment units, angles in degrees)."""
    fitk = {"tight": 0.88, "regular": 1.0, "loose": 1.13}[d.fit]
    g = {"fitk": fitk, "sw": _u(rng, 0.46, 0.54), "nw": _u(rng, 0.13, 0.18), "sd": _u(rng, 0.05, 0.1),
         "ay": _u(rng, 0.38, 0.47), "strap": _u(rng, 0.05, 0.11), "wy": _u(rng, 0.74, 0.88),
         "ww": _u(rng, 0.31, 0.37), "wb": _u(rng, 0.05, 0.08), "flare": _u(rng, 0.0, 1.0),
         "L": _u(rng, *cat.body_length), "detail": float(rng.integers(0, 4)), "detail2": _u(rng, 0.0, 1.0)}
    g["bw"] = g["sw"] * _u(rng, 0.9, 0.96) * fitk
    g["nd"] = {"crew_neckline": _u(rng, 0.07, 0.11), "v_neckline": _u(rng, 0.24, 0.36),
               "square_neckline": _u(rng, 0.15, 0.22), "collar_neckline": _u(rng, 0.16, 0.24),
               "hooded": _u(rng, 0.14, 0.2)}.get(d.neckline, 0.1)
    if d.sleeve == "long_sleeve":
        g.update(sl=_u(rng, 0.95, 1.15), sa=_u(rng, 10, 26), cw=_u(rng, 0.075, 0.1) * fitk)
    elif d.sleeve == "short_sleeve":
        g.update(sl=_u(rng, 0.24, 0.38), sa=_u(rng, 32, 55), cw=_u(rng, 0.13, 0.17) * fitk)
    g["lo"] = {"tight": _u(rng, 0.07, 0.09), "regular": _u(rng, 0.1, 0.13), "loose": _u(rng, 0.14, 0.2)}[d.fit]
    if cat.name in ("Shorts", "Romper"):
        g["lo"] = _u(rng, 0.15, 0.21) * fitk
    g["rise"], g["hipk"] = _u(rng, 0.36, 0.46), _u(rng, 1.08, 1.16) * (0.97 + 0.03 * fitk)
    skirt_len = {"mini_length": (0.55, 0.78), "midi_length": (1.05, 1.3), "maxi_length": (1.55, 1.85)}
    coat_len = {"mini_length": (1.4, 1.6), "midi_length": (1.9, 2.2), "maxi_length": (2.4, 2.7)}
    if cat.builder in ("skirt", "dress"):
        g["L"] = _u(rng, *skirt_len[d.length])
    elif cat.builder == "coat":
        g["L"] = _u(rng, *coat_len[d.length])
    return g


def _bezier(p0, p1, p2, n: int = 8) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def _symmetric(right: np.ndarray) -> np.ndarray:
    """Closed polygon from its right half (listed top to bottom); mirrored points on x == 0 are dropped."""
    left = right[::-1] * np.array([-1.0, 1.0])
    while len(left) and left[0, 0] == 0:
        left = left[1:]
    while len(left) and left[-1, 0] == 0:
        left = left[:-1]
    return np.concatenate([right, left])


def _both(points: np.ndarray) -> list[np.ndarray]:
    """A right-side polyline and its mirror."""
    return [points, points * np.array([-1.0, 1.0])]


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)


def _sleeve(g: dict, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(polygon, cuff centre landmark, cuff band polygon) of the sleeve on ``side`` (+1 image right)."""
    th = np.radians(g["sa"])
    s, a = np.array([side * g["sw"], g["sd"]]), np.array([side * g["bw"], g["ay"]])
    d, p = np.array([side * np.sin(th), np.cos(th)]), np.array([side * np.cos(th), -np.sin(th)])
    c = (s + a) / 2 + d * g["sl"]
    poly = np.array([s, c + p * g["cw"], c - p * g["cw"], a])
    band = np.array([c + p * g["cw"], c - p * g["cw"], c - p * g["cw"] - d * 0.07, c + p * g["cw"] - d * 0.07])
    return poly, c, band


def _neckline(g: dict, kind: str) -> np.ndarray:
    """Front neckline from the right neck point (nw, 0) to the left one, through the centre front."""
    nw, nd = g["nw"], g["nd"]
    if kind == "crew_neckline":
        t = np.linspace(0.0, np.pi, 13)
        return np.stack([nw * np.cos(t), nd * np.sin(t)], 1)
    if kind == "square_neckline":
        return np.array([(nw, 0), (nw * 0.88, nd), (-nw * 0.88, nd), (-nw, 0)])
    return np.concatenate([_bezier((nw, 0), (nw * 0.45, nd * 0.55), (0, nd), 6),
                           _bezier((0, nd), (-nw * 0.45, nd * 0.55), (-nw, 0), 6)[1:]])


def _bodice(shape: Shape, d: Design, g: dict, bottom_y: float, bottom_w: float, waist: bool) -> dict:
    """Torso, sleeves, neckline and collar/hood; returns the upper landmark points by name."""
    nw, sleeveless = g["nw"], d.sleeve == "sleeveless"
    right = [(0.0, 0.025), (nw, 0.0)]
    if sleeveless:
        st = nw + g["strap"]
        armhole = _bezier((st, 0.01), (st * 0.97, g["ay"] * 0.85), (g["bw"], g["ay"]))
        right += [(st, 0.01)] + [tuple(q) for q in armhole[1:]]
    else:
        right += [(g["sw"], g["sd"]), (g["bw"], g["ay"])]
    if waist:
        right.append((_waist_w(g), g["wy"]))
    right.append((bottom_w, bottom_y))
    if d.neckline == "hooded":
        t = np.linspace(np.pi, 2 * np.pi, 15)
        shape.parts.append((np.stack([(nw + 0.1) * np.cos(t), -0.02 + 0.32 * np.sin(t)], 1), 0.96))
        shape.parts.append((np.stack([(nw - 0.01) * np.cos(t), 0.0 + 0.22 * np.sin(t)], 1), 0.45))
    shape.parts.append((_symmetric(np.array(right)), 1.0))
    points = {"lc": np.array([nw, 0.0]), "rc": np.array([-nw, 0.0])}
    for side, key in ((1, "ls"), (-1, "rs")):
        if sleeveless:
            points[key] = np.array([side * g["bw"], g["ay"]])
            continue
        poly, cuff, band = _sleeve(g, side)
        shape.parts.append((poly, 0.97))
        shape.seams.append(poly[[0, 3]])
        if d.sleeve == "long_sleeve" and (d.fabric == "knit" or d.category in ("Hoodie", "Button-Down")):
            shape.parts.append((band, 0.88))
        else:
            shape.seams.append(band[[3, 2]])
        points[key] = cuff
    front = _neckline(g, "v_neckline" if d.neckline in ("collar_neckline", "hooded") else d.neckline)
    back = _bezier((-nw, 0.0), (0.0, 0.05), (nw, 0.0), 7)
    shape.parts.append((np.concatenate([front, back[1:-1]]), 0.5))
    if d.neckline in ("collar_neckline",):
        _collar(shape, g, d.category in ("Jacket", "Coat"))
    elif d.neckline != "hooded":
        shape.seams.append(front + np.array([0.0, 0.03]))
    return points


def _collar(shape: Shape, g: dict, lapel: bool) -> None:
    """Shirt collar flaps (or wide lapels) meeting at the centre front."""
    nw, nd = g["nw"], g["nd"]
    w, ln = (0.16, 0.2) if lapel else (0.06, 0.09)
    flap = np.array([(nw - 0.01, -0.03), (nw + w * 0.6, 0.04), (nw * 0.5 + w, nd + ln * 0.6), (0.0, nd + 0.02)])
    band = _bezier((-nw, 0.01), (0.0, -0.1), (nw, 0.01), 9)
    shape.parts.append((np.concatenate([band, band[::-1] + np.array([0.0, 0.05])]), 1.05))
    for f in _both(flap):
        shape.parts.append((f, 1.08))
        shape.seams.append(np.concatenate([f, f[:1]]))


def _front_closure(shape: Shape, d: Design, g: dict, top: float, bottom: float) -> None:
    """Buttons, zip or placket down the centre front."""
    if d.category == "Hoodie" or (d.category == "Jacket" and g["detail"] < 2):
        shape.trims.append(("zip", np.array([(0.0, top), (0.0, bottom)]), 0.018))
        return
    if d.category in ("Button-Down", "Jacket", "Coat") or (d.category == "Jumpsuit" and g["detail"] == 0):
        shape.seams += [np.array([(x, top), (x, bottom)]) for x in (-0.035, 0.035)]
        cols = (-0.09, 0.09) if d.category == "Coat" and g["detail"] >= 2 else (0.0,)
        for y in np.linspace(top + 0.06, bottom - 0.08, max(3, int((bottom - top) / 0.2))):
            for x in cols:
                shape.trims.append(("button", np.array([(x, y)]), 0.022))


def _build_top(d: Design, g: dict) -> Shape:
    shape, L = Shape(UPPER), g["L"]
    hw = g["bw"] * {"tight": 0.93, "regular": 1.0, "loose": 1.08}[d.fit]
    pts = _bodice(shape, d, g, L, hw, waist=True)
    if d.category in ("Sweater", "Hoodie") or (d.category == "Jacket" and g["detail"] == 1):
        shape.parts.append((_rect(-hw, L - 0.09, hw, L), 0.88))
    if d.category == "Hoodie":
        shape.parts.append((np.array([(-0.27, L - 0.45), (0.27, L - 0.45), (0.36, L - 0.12), (-0.36, L - 0.12)]), 0.95))
        shape.seams.append(shape.parts[-1][0][[3, 0, 1, 2]])
        shape.trims += [("string", s, 0.012) for s in _both(np.array([(0.06, g["nd"] * 0.7), (0.08, g["nd"] + 0.28)]))]
    if d.neckline == "collar_neckline" or d.category == "Hoodie":
        _front_closure(shape, d, g, g["nd"], L)
    if d.category == "Button-Down" and g["detail"] >= 2:
        shape.seams.append(_rect(0.14, 0.32, 0.3, 0.5)[[0, 3, 2, 1]])
    if d.category == "Jacket":
        shape.seams += _both(np.array([(0.22, L - 0.4), (0.32, L - 0.22)]))
    shape.landmarks = np.array([pts["lc"], pts["rc"], pts["ls"], pts["rs"], (hw, L), (-hw, L)])
    shape.print_box = (-g["bw"] * 0.55, g["nd"] + 0.1, g["bw"] * 0.55, g["ay"] + 0.45)
    return shape


def _legs(shape: Shape, d: Design, g: dict, y0: float, ww: float, L: float) -> np.ndarray:
    """Trouser legs hanging from a waist at ``y0``; returns the two leg-opening centres (left, right)."""
    rise, lo, hipw = y0 + g["rise"], g["lo"], ww * g["hipk"]
    ky = rise + (L - rise) * 0.45
    kw = lo * (1.0 + 0.25 * (d.fit != "loose")) if L - y0 > 1.0 else lo
    hc = max(lo, kw) + 0.02 + 0.05 * g["flare"]
    right = [(0.0, y0), (ww, y0), (ww, y0 + g["wb"]), (hipw, y0 + g["rise"] * 0.7)]
    if L - y0 > 1.0:
        right.append((hc + kw, ky))
    right += [(hc + lo, L), (hc - lo, L)]
    if L - y0 > 1.0:
        right.append((hc - kw, ky))
    right.append((0.0, rise))
    shape.parts.append((_symmetric(np.array(right, float)), 1.0))
    shape.parts.append((_rect(-ww, y0, ww, y0 + g["wb"]), 0.88))
    shape.seams += _both(np.array([(hc - lo * 0.2, L - 0.02), (hc - kw * 0.3, ky), (g["rise"] * 0.1, rise)]))
    if d.category in ("Trousers", "Shorts") and d.fabric != "knit":
        shape.seams.append(_bezier((0.0, y0 + g["wb"]), (0.06, y0 + g["rise"] * 0.6), (0.0, rise - 0.03), 6))
        shape.seams += _both(_bezier((ww * 0.5, y0 + g["wb"]), (ww * 0.6, y0 + 0.2), (ww * 1.04, y0 + 0.22), 6))
    if d.category == "Shorts" and g["detail"] >= 2:
        for side in (1, -1):
            shape.parts.append((np.array([(side * (hc + lo), L), (side * (hc - lo), L),
                                          (side * (hc - lo), L - 0.07), (side * (hc + lo), L - 0.07)]), 0.9))
    shape.leg_hems = True
    return np.array([(hc, L), (-hc, L)])


def _build_trousers(d: Design, g: dict) -> Shape:
    shape, ww = Shape(LOWER), g["ww"]
    hems = _legs(shape, d, g, 0.0, ww, g["L"])
    shape.landmarks = np.array([(ww, g["wb"] / 2), (-ww, g["wb"] / 2), hems[0], hems[1]])
    shape.print_box = (0.05, g["rise"], ww * 1.1, g["rise"] + 0.35)
    return shape


def _skirt_poly(g: dict, y0: float, ww: float, L: float, d: Design) -> tuple[np.ndarray, float]:
    """Skirt from a waist at ``y0`` over the hips to a curved hem at ``L``: (polygon, hem half-width)."""
    spread = {"tight": (1.12, 1.3), "regular": (1.35, 1.75), "loose": (1.75, 2.35)}[d.fit]
    hw = ww * (spread[0] + (spread[1] - spread[0]) * g["flare"])
    hip_y = y0 + min(0.3, (L - y0) * 0.4)
    hip_w = ww * g["hipk"] + (hw - ww) * (hip_y - y0) / (L - y0) * 0.6
    bulge = 0.02 + 0.06 * g["flare"]
    right = np.concatenate([[(0.0, y0), (ww, y0)], _bezier((ww, y0 + g["wb"]), (hip_w, hip_y - 0.05), (hw, L), 7),
                            _bezier((hw, L), (hw * 0.5, L + bulge), (0.0, L + bulge), 5)[1:]])
    return _symmetric(right), hw


def _build_skirt(d: Design, g: dict) -> Shape:
    shape, ww, L = Shape(LOWER), g["ww"], g["L"]
    poly, hw = _skirt_poly(g, 0.0, ww, L, d)
    shape.parts += [(poly, 1.0), (_rect(-ww, 0.0, ww, g["wb"]), 0.88)]
    if g["detail"] >= 2:
        for t in np.linspace(-0.75, 0.75, 6):
            shape.seams.append(np.array([(t * ww, g["wb"]), (t * hw, L)]))
    shape.landmarks = np.array([(ww, g["wb"] / 2), (-ww, g["wb"] / 2), (hw, L), (-hw, L)])
    shape.print_box = (-ww, 0.15, ww, min(L, 0.6))
    return shape


def _waist_w(g: dict) -> float:
    return g["bw"] * (0.82 + 0.15 * min(g["fitk"], 1.0))


def _build_full(d: Design, g: dict) -> Shape:
    """Dress, jumpsuit, romper and coat: a bodice down to the waist plus a skirt, legs or a long body."""
    shape, wy, ww = Shape(FULL), g["wy"], _waist_w(g)
    builder = CATEGORY_BY_NAME[d.category].builder
    if builder == "coat":
        hw = g["bw"] * (1.0 + 0.2 * g["flare"]) * g["fitk"]
        pts = _bodice(shape, d, g, g["L"], hw, waist=True)
        hems = np.array([(hw, g["L"]), (-hw, g["L"])])
        _front_closure(shape, d, g, g["nd"] + 0.05, wy + 0.45)
        if g["detail"] % 2:
            shape.parts.append((_rect(-ww * 1.03, wy - 0.045, ww * 1.03, wy + 0.045), 0.82))
            shape.trims.append(("button", np.array([(0.0, wy)]), 0.03))
    else:
        if builder == "dress":  # lower part first: sleeves hang over it
            poly, hw = _skirt_poly(g, wy - 0.005, ww, wy + g["L"], d)
            shape.parts.append((poly, 1.0))
            hems = np.array([(hw, wy + g["L"]), (-hw, wy + g["L"])])
        else:
            hems = _legs(shape, d, g, wy - 0.005, ww, wy + g["L"])
        pts = _bodice(shape, d, g, wy, ww, waist=False)
        if builder != "dress":
            _front_closure(shape, d, g, g["nd"], wy)
        shape.seams.append(np.array([(-ww, wy), (ww, wy)]))
    shape.landmarks = np.array([pts["lc"], pts["rc"], pts["ls"], pts["rs"], (ww, wy), (-ww, wy), hems[0], hems[1]])
    shape.print_box = (-g["bw"] * 0.5, g["nd"] + 0.1, g["bw"] * 0.5, wy - 0.05)
    return shape


def build_shape(d: Design) -> Shape:
    """The drawable silhouette of a design (garment units, frontal, wearer's left = +x)."""
    builder = CATEGORY_BY_NAME[d.category].builder
    fn = {"top": _build_top, "trousers": _build_trousers, "skirt": _build_skirt}.get(builder, _build_full)
    return fn(d, d.geom)
