"""Contact sheets: a grid of images with boxes and landmarks drawn and labels printed, to check data by eye."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fashionlens.data.decode import load_image
from fashionlens.data.samples import OCCLUDED, VISIBLE, Sample, SampleSet

VIS_COLOURS = {VISIBLE: (0, 200, 0), OCCLUDED: (255, 150, 0)}  # truncated points are drawn red
TRUNCATED_COLOUR = (230, 0, 0)


def _label(sample: Sample) -> str:
    parts = [sample.category_name or "?"]
    if sample.domain:
        parts.append(sample.domain)
    if sample.item_id:
        parts.append(sample.item_id[-8:])
    return " ".join(parts)


def draw_sample(sample: Sample, thumb: int) -> Image.Image:
    """One tile: the image scaled to fit ``thumb`` x ``thumb`` with box, landmarks (green visible, orange occluded,
    red truncated, left side drawn as a square, right side as a circle) and a caption."""
    image = load_image(sample)
    scale = min(thumb / image.width, thumb / image.height)
    tile_img = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    tile = Image.new("RGB", (thumb, thumb + 14), (255, 255, 255))
    tile.paste(tile_img, (0, 0))
    draw = ImageDraw.Draw(tile)
    if sample.bbox is not None:
        draw.rectangle([c * scale for c in sample.bbox], outline=(0, 90, 255), width=1)
    if sample.landmarks is not None:
        xy, vis, present = sample.unified_landmarks()
        for slot in range(len(xy)):
            if not present[slot] or (vis[slot] != VISIBLE and vis[slot] != OCCLUDED and not xy[slot].any()):
                continue  # a truncated point written as 0 0 has no position to draw
            x, y = xy[slot] * scale
            colour = VIS_COLOURS.get(int(vis[slot]), TRUNCATED_COLOUR)
            box = [x - 2.5, y - 2.5, x + 2.5, y + 2.5]
            (draw.rectangle if slot % 2 == 0 else draw.ellipse)(box, fill=colour, outline=(0, 0, 0))
    draw.text((2, thumb + 1), _label(sample)[:28], fill=(0, 0, 0))
    return tile


def contact_sheet(data: SampleSet, out: str, *, n: int = 48, cols: int = 8, thumb: int = 160, seed: int = 0) -> str:
    """Draw ``n`` randomly chosen samples (fixed ``seed``) into a grid PNG at ``out``; return the path."""
    if not data.samples:
        raise ValueError("the data set has no samples to draw")
    rng = random.Random(seed)
    chosen = rng.sample(data.samples, min(n, len(data.samples)))
    rows = (len(chosen) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (thumb + 4), rows * (thumb + 18)), (235, 235, 235))
    for i, sample in enumerate(chosen):
        sheet.paste(draw_sample(sample, thumb), ((i % cols) * (thumb + 4), (i // cols) * (thumb + 18)))
    sheet.save(out)
    return out
