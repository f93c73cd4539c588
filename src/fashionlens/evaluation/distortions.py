"""Random distortions of a photo, for instance retrieval under distortion.

Protocol (used by ``benchmarks/bench_sift_vs_cnn.py``): the gallery holds the original photos, every
query is a distorted copy of one of them, and a query's only relevant gallery item is its original.
:func:`distort` applies, in this order:

1. a random crop that keeps at least ``min_area`` of the image area (any aspect ratio within that);
2. a rescale by a random factor;
3. colour changes: hue rotation, saturation, brightness and contrast factors;
4. a rotation by up to +-``rotation`` degrees (the canvas grows to hold the rotated photo);
5. a new background: the photo is pasted at a random place onto a larger canvas (a random margin on
   each side) filled with a random linear gradient, blotchy noise texture or stripes; the corners
   uncovered by the rotation show that background too;
6. Gaussian blur and JPEG re-compression at a random quality.

Everything is drawn from the ``numpy.random.Generator`` given (or seeded from an int), so a seed fixes
the output exactly.

:func:`shift` is the other use: one named distribution shift at a fixed strength, applied to every photo of
a validation set, to estimate how a classifier trained on one photographer's pictures fares on another's
(``benchmarks/bench_photos.py shifted``): ``zoomout`` (the garment smaller in a frame 1.7x larger, on a
plain background of a random colour), ``lowres`` (down to 96 px on the longer side and back, then JPEG at
quality 30), ``lighting`` (desaturated, darker, lower contrast, a warm colour cast) and ``crop`` (the centre
70 % of each side only: sleeves, hems and legs cut off).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from fashionlens.data.decode import to_rgb


@dataclass(frozen=True)
class DistortionParams:
    """Ranges of one distortion strength (factors are multiplicative, 1 = unchanged)."""

    min_area: float  # crop keeps at least this share of the image area
    scale: tuple[float, float]  # rescale factor range
    hue: float  # largest hue rotation, as a share of the colour circle
    saturation: tuple[float, float]  # saturation factor range
    brightness: tuple[float, float]  # brightness factor range
    contrast: tuple[float, float]  # contrast factor range
    rotation: float  # largest rotation in degrees (either direction)
    margin: tuple[float, float]  # background margin per side, as a share of the photo's side
    background_prob: float  # chance of a textured background (else plain white)
    blur: tuple[float, float]  # Gaussian blur radius range in pixels
    jpeg_quality: tuple[int, int]  # JPEG quality range (inclusive)


STRENGTHS: dict[str, DistortionParams] = {
    "mild": DistortionParams(min_area=0.8, scale=(0.8, 1.1), hue=0.03, saturation=(0.8, 1.2),
                             brightness=(0.85, 1.15), contrast=(0.85, 1.15), rotation=10.0, margin=(0.0, 0.15),
                             background_prob=0.5, blur=(0.0, 0.8), jpeg_quality=(60, 95)),
    "strong": DistortionParams(min_area=0.5, scale=(0.6, 1.25), hue=0.1, saturation=(0.5, 1.5),
                               brightness=(0.6, 1.4), contrast=(0.7, 1.3), rotation=30.0, margin=(0.1, 0.4),
                               background_prob=1.0, blur=(0.0, 2.0), jpeg_quality=(30, 80)),
}


def distort(image: Image.Image, rng: np.random.Generator | int, strength: str = "strong") -> Image.Image:
    """A randomly distorted RGB copy of ``image`` (see the module docstring for the steps).

    Args:
        image: any Pillow image (converted to RGB; not modified).
        rng: a numpy Generator (advanced in place) or an int seed.
        strength: a key of :data:`STRENGTHS` ("mild" or "strong").
    Returns:
        A new RGB image; its size in pixels differs from the input's (crop, scale, rotation, margin).
    """
    if strength not in STRENGTHS:
        raise ValueError(f"unknown distortion strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
    p = STRENGTHS[strength]
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    img = to_rgb(image).copy()
    img = random_crop(img, rng, p.min_area)
    factor = rng.uniform(*p.scale)
    img = img.resize((max(8, round(img.width * factor)), max(8, round(img.height * factor))), Image.BICUBIC)
    img = colour_jitter(img, rng, p)
    img = img.convert("RGBA").rotate(rng.uniform(-p.rotation, p.rotation), Image.BICUBIC, expand=True)
    img = paste_on_background(img, rng, p)
    radius = rng.uniform(*p.blur)
    if radius > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    return jpeg(img, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))


def random_crop(img: Image.Image, rng: np.random.Generator, min_area: float) -> Image.Image:
    """A random crop keeping a share >= ``min_area`` of the area (width share w, height share >= min_area / w)."""
    fw = rng.uniform(min_area, 1.0)
    fh = rng.uniform(min(min_area / fw, 1.0), 1.0)
    cw, ch = max(1, round(img.width * fw)), max(1, round(img.height * fh))
    x = int(rng.integers(0, img.width - cw + 1))
    y = int(rng.integers(0, img.height - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def colour_jitter(img: Image.Image, rng: np.random.Generator, p: DistortionParams) -> Image.Image:
    """Hue rotation (HSV), then saturation, brightness and contrast factors; RGB in, RGB out."""
    shift = round(rng.uniform(-p.hue, p.hue) * 256)
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 256).astype(np.uint8)
    img = Image.fromarray(hsv, mode="HSV").convert("RGB")
    img = ImageEnhance.Color(img).enhance(rng.uniform(*p.saturation))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(*p.brightness))
    return ImageEnhance.Contrast(img).enhance(rng.uniform(*p.contrast))


def paste_on_background(img: Image.Image, rng: np.random.Generator, p: DistortionParams) -> Image.Image:
    """Paste an RGBA photo (alpha = where it covers) at a random place on a larger background canvas."""
    mx = round(img.width * rng.uniform(*p.margin))
    my = round(img.height * rng.uniform(*p.margin))
    size = (img.width + 2 * mx, img.height + 2 * my)
    if rng.random() < p.background_prob:
        canvas = random_background(size, rng)
    else:
        canvas = Image.new("RGB", size, (255, 255, 255))
    x, y = int(rng.integers(0, 2 * mx + 1)), int(rng.integers(0, 2 * my + 1))
    canvas.paste(img, (x, y), mask=img.getchannel("A"))
    return canvas


def random_background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A (width, height) RGB background: a linear gradient, blotchy noise or stripes in random colours."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 1:  # blotchy texture: coarse random noise upsampled
        cells = int(rng.integers(3, 12))
        noise = rng.random((cells, cells), dtype=np.float32)
        t = np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                       np.float32) / 255.0
    else:
        angle = rng.uniform(0, np.pi)
        proj = (xx * np.cos(angle) + yy * np.sin(angle)) / max(w, h, 1)
        if kind == 0:  # linear gradient
            t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
        else:  # stripes
            t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 12) * proj)
    a, b = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    rgb = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip through JPEG at ``quality`` (1..95)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


SHIFTS = ("zoomout", "lowres", "lighting", "crop")


def shift(image: Image.Image, kind: str, rng: np.random.Generator | int = 0) -> Image.Image:
    """``image`` under the named distribution shift (see the module docstring); ``rng`` places the photo and
    picks the background colour of ``zoomout`` (the other shifts are deterministic). Returns a new RGB image."""
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; choose one of {', '.join(SHIFTS)}")
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    img = to_rgb(image)
    w, h = img.size
    if kind == "zoomout":
        factor = 1.7
        colour = tuple(int(v) for v in rng.integers(120, 250, 3))
        canvas = Image.new("RGB", (int(w * factor), int(h * factor)), colour)
        x, y = rng.integers(0, int(w * factor) - w + 1), rng.integers(0, int(h * factor) - h + 1)
        canvas.paste(img, (int(x), int(y)))
        return canvas
    if kind == "lowres":
        side = max(w, h)
        small = img.resize((max(1, w * 96 // side), max(1, h * 96 // side)), Image.BILINEAR)
        return jpeg(small.resize((w, h), Image.BICUBIC), 30)
    if kind == "lighting":
        out = ImageEnhance.Color(img).enhance(0.4)
        out = ImageEnhance.Contrast(ImageEnhance.Brightness(out).enhance(0.75)).enhance(0.8)
        cast = np.asarray(out, np.float32) * np.array([1.08, 1.0, 0.85], np.float32)
        return Image.fromarray(np.clip(cast, 0, 255).astype(np.uint8), mode="RGB")
    cw, ch = int(w * 0.7), int(h * 0.7)  # crop
    x, y = (w - cw) // 2, (h - ch) // 2
    return img.crop((x, y, x + cw, y + ch))


__all__ = ["SHIFTS", "STRENGTHS", "DistortionParams", "colour_jitter", "distort", "paste_on_background",
           "random_background", "random_crop", "shift"]
