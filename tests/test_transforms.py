"""Joint transforms: every geometric step is checked against the pixels it produces.

Each landmark slot gets a dot of its own colour in a synthetic image; after a transform, the dot's
centre found in the output pixels must be where the transformed landmark says (within 1.5 px).
Boxes are checked the same way against the extent of a filled rectangle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fashionlens.config import DataConfig
from fashionlens.data.samples import FLIP_PERMUTATION, NUM_SLOTS, OCCLUDED, TRUNCATED, VISIBLE
from fashionlens.data.transforms import (
    CropToBox,
    GarmentTransform,
    PadToSquare,
    SlotHorizontalFlip,
    build_transforms,
    check_config,
    eval_size,
    landmarks_to_unit,
    original_to_unit,
    unit_to_landmarks,
    unit_to_original,
)
from fashionlens.utils import import_torchvision

import_torchvision()
from torchvision.transforms import v2  # noqa: E402

GREY = (128, 128, 128)
COLOURS = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255), (0, 0, 0),
]
TOL = 1.5  # pixels
R = 4  # dot half-size, pixels


def dots_image(points: np.ndarray, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Grey image (width, height) with a (2R+1)-pixel square of slot i's colour centred on points[i]."""
    img = Image.new("RGB", size, GREY)
    draw = ImageDraw.Draw(img)
    for (x, y), colour in zip(points.round().astype(int), COLOURS):
        draw.rectangle([x - R, y - R, x + R, y + R], fill=colour)
    return img


def box_image(box: tuple[int, int, int, int], size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Grey image with the box [x1, x2) x [y1, y2) (edges, pixels) filled blue."""
    img = Image.new("RGB", size, GREY)
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(0, 0, 255))
    return img


def make_target(points: np.ndarray, bbox=None, visibility=None, present=None) -> dict:
    return {
        "landmarks": points.astype(np.float32),
        "visibility": np.zeros(NUM_SLOTS, np.int64) if visibility is None else np.asarray(visibility),
        "present": np.ones(NUM_SLOTS, bool) if present is None else np.asarray(present, bool),
        "bbox": bbox,
    }


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] (mean 0, std 1) -> (H, W, 3) float 0..255."""
    return x.permute(1, 2, 0).numpy() * 255.0


def colour_weight(pixels: np.ndarray, colour) -> np.ndarray:
    """Per-pixel closeness to ``colour`` in [0, 1] (1 = exactly that colour, 0 beyond 120 levels)."""
    dist = np.linalg.norm(pixels - np.asarray(colour, np.float32), axis=-1)
    return np.clip(1.0 - dist / 120.0, 0.0, 1.0)


def dot_centre(pixels: np.ndarray, colour) -> np.ndarray | None:
    """Weighted centre (x, y) of the pixels of ``colour`` in pixel-index coordinates, or None if absent."""
    w = colour_weight(pixels, colour)
    if w.sum() < 2.0:
        return None
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def check_dots(out: torch.Tensor, target: dict, colours=COLOURS, margin: float = 6.0) -> int:
    """Assert each dot well inside the frame sits at its landmark; return how many were checked.

    Dots whose landmark left the frame must be marked truncated.
    """
    pixels = to_pixels(out)
    height, width = pixels.shape[:2]
    checked = 0
    for slot, colour in enumerate(colours):
        x, y = target["landmarks"][slot].tolist()
        inside = -0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5
        if not inside:
            assert target["visibility"][slot] == TRUNCATED, f"slot {slot} at {(x, y)} left the frame"
            continue
        if not (margin <= x <= width - 1 - margin and margin <= y <= height - 1 - margin):
            continue  # dot partly cut by the border: its centre is biased
        centre = dot_centre(pixels, colour)
        assert centre is not None, f"slot {slot}: dot not found near {(x, y)}"
        assert np.abs(centre - [x, y]).max() <= TOL, f"slot {slot}: dot at {centre}, landmark at {(x, y)}"
        checked += 1
    return checked


def check_box(out: torch.Tensor, box: torch.Tensor | None) -> None:
    """The output box matches the extent of the blue rectangle (pixels more than half blue)."""
    w = colour_weight(to_pixels(out), (0, 0, 255)) > 0.5
    if not w.any():
        assert box is None
        return
    ys, xs = np.nonzero(w)
    extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    assert box is not None
    assert np.abs(box.numpy() - extent).max() <= TOL, f"box {box.tolist()} vs blue extent {extent.tolist()}"


POINTS = np.array([[50, 30], [110, 30], [35, 60], [125, 60], [60, 75], [100, 75], [55, 95], [105, 95]], np.float32)


def run(transform: v2.Transform, img: Image.Image, target: dict):
    return GarmentTransform([transform])(img, target)


def test_crop_to_box_moves_dots_and_box():
    box = (30, 20, 130, 110)
    out, t = run(CropToBox(0.1), dots_image(POINTS), make_target(POINTS, bbox=box))
    # margin 10 px x, 9 px y -> crop [20, 140) x [11, 119)
    assert out.shape == (3, 108, 120)
    np.testing.assert_allclose(t["landmarks"].numpy(), POINTS - [20, 11], atol=1e-4)
    assert check_dots(out, t) == 8
    out_b, t_b = run(CropToBox(0.1), box_image(box), make_target(POINTS, bbox=box))
    check_box(out_b, t_b["bbox"])


def test_crop_to_box_without_box_is_identity_and_clips_to_image():
    out, t = run(CropToBox(0.1), dots_image(POINTS), make_target(POINTS))
    assert out.shape == (3, 120, 160)
    np.testing.assert_allclose(t["landmarks"].numpy(), POINTS, atol=1e-4)
    out, _ = run(CropToBox(0.5), dots_image(POINTS), make_target(POINTS, bbox=(10, 5, 150, 115)))
    assert out.shape == (3, 120, 160)  # margin beyond the image is clipped, not padded


@pytest.mark.parametrize("size", [[96, 128], [240, 200], [60, 60]])
def test_resize(size):
    points = POINTS.copy()
    out, t = run(v2.Resize(size), dots_image(points), make_target(points))
    assert out.shape == (3, *size)
    assert check_dots(out, t, margin=3.0) == 8
    out_b, t_b = run(v2.Resize(size), box_image((30, 20, 130, 110)), make_target(points, bbox=(30, 20, 130, 110)))
    check_box(out_b, t_b["bbox"])


def test_pad_to_square():
    out, t = run(PadToSquare(GREY), dots_image(POINTS), make_target(POINTS, bbox=(30, 20, 130, 110)))
    assert out.shape == (3, 160, 160)
    np.testing.assert_allclose(t["landmarks"].numpy(), POINTS + [0, 20], atol=1e-4)
    assert check_dots(out, t) == 8


@pytest.mark.parametrize("seed", range(6))
def test_random_resized_crop(seed):
    torch.manual_seed(seed)
    transform = v2.RandomResizedCrop(112, scale=(0.25, 1.0), ratio=(0.6, 1.6))
    img, target = dots_image(POINTS), make_target(POINTS)
    state = torch.get_rng_state()
    out, t = run(transform, img, target)
    assert out.shape == (3, 112, 112)
    assert check_dots(out, t) >= 1
    torch.set_rng_state(state)  # same crop on the box image
    box = (30, 20, 130, 110)
    out_b, t_b = run(transform, box_image(box), make_target(POINTS, bbox=box))
    check_box(out_b, t_b["bbox"])


@pytest.mark.parametrize("angle", [-50.0, -30.0, -7.0, 12.0, 33.0, 50.0])
def test_rotation(angle):
    centre = np.array([80.0, 60.0])
    ring = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    points = (centre + 40 * ring * [1.0, 0.9]).round().astype(np.float32)
    points[7] = [3, 3]  # a corner dot that rotates out of the frame for large angles
    transform = v2.RandomRotation((angle, angle), interpolation=v2.InterpolationMode.BILINEAR, fill=list(GREY))
    out, t = run(transform, dots_image(points), make_target(points))
    assert check_dots(out, t) >= 7
    # rotation is about the image centre: the distance to it is preserved
    moved = t["landmarks"].numpy()[:7] + 0.5
    radius_before = np.linalg.norm(points[:7] + 0.5 - [80, 60], axis=1)
    np.testing.assert_allclose(np.linalg.norm(moved - [80, 60], axis=1), radius_before, atol=1e-3)
    if abs(angle) >= 30:
        assert t["visibility"][7] == TRUNCATED
    box = (50, 35, 110, 85)
    out_b, t_b = run(transform, box_image(box), make_target(points, bbox=box))
    check_box(out_b, t_b["bbox"])


def test_flip_moves_dots_and_swaps_slots():
    visibility = [VISIBLE, OCCLUDED, VISIBLE, VISIBLE, VISIBLE, VISIBLE, VISIBLE, VISIBLE]
    present = [True, True, True, False, True, True, True, True]
    img = dots_image(POINTS)
    out, t = run(SlotHorizontalFlip(p=1.0), img, make_target(POINTS, visibility=visibility, present=present))
    pixels = to_pixels(out)
    for slot in range(NUM_SLOTS):
        source = FLIP_PERMUTATION[slot]
        if not present[source]:
            assert not t["present"][slot] and t["visibility"][slot] == TRUNCATED
            assert t["landmarks"][slot].abs().sum() == 0
            continue
        # slot now holds its mirror partner's point, at the mirrored position ...
        mirrored = [159 - POINTS[source][0], POINTS[source][1]]
        np.testing.assert_allclose(t["landmarks"][slot].numpy(), mirrored, atol=1e-4)
        # ... which is where the partner's dot now is in the pixels
        centre = dot_centre(pixels, COLOURS[source])
        assert np.abs(centre - t["landmarks"][slot].numpy()).max() <= TOL
        assert t["visibility"][slot] == visibility[source]
    assert t["visibility"][0] == OCCLUDED  # the occluded right collar became the left collar
    assert not t["present"][2]  # the absent right sleeve (slot 3) is now the absent left sleeve
    box = (30, 20, 130, 110)
    out_b, t_b = run(SlotHorizontalFlip(p=1.0), box_image(box), make_target(POINTS, bbox=box))
    check_box(out_b, t_b["bbox"])


def test_flip_keeps_left_collar_on_image_left_for_a_frontal_garment():
    # a frontal garment: its left collar appears on the image's right.  After a flip, the garment's
    # left collar (slot 0) must again be the point on the image's right.
    out, t = run(SlotHorizontalFlip(p=1.0), dots_image(POINTS), make_target(POINTS))
    assert POINTS[0, 0] < POINTS[1, 0]  # before: slot 0 left of slot 1 in the image
    assert t["landmarks"][0, 0] < t["landmarks"][1, 0]  # still: the order follows semantics


GREY_MEAN = (128 / 255,) * 3  # pad/rotation fill = the mean colour = the grey background


def quiet_cfg(**kw) -> DataConfig:
    base = dict(image_size=96, mean=GREY_MEAN, std=(1.0, 1.0, 1.0), color_jitter=0.0, bbox_margin=0.1)
    base.update(kw)
    return DataConfig(**base)


def denorm(out: torch.Tensor) -> torch.Tensor:
    """Undo quiet_cfg's normalisation: back to [0, 1]."""
    return out + torch.tensor(GREY_MEAN).view(3, 1, 1)


@pytest.mark.parametrize("mode", ["pad", "stretch"])
def test_eval_pipeline_geometry_and_determinism(mode):
    box = (30, 20, 130, 110)
    transform = build_transforms(quiet_cfg(resize_mode=mode), train=False)
    out1, t1 = transform(dots_image(POINTS), make_target(POINTS, bbox=box))
    out2, t2 = transform(dots_image(POINTS), make_target(POINTS, bbox=box))
    assert out1.shape == (3, 96, 96) and out1.dtype == torch.float32
    assert torch.equal(out1, out2) and torch.equal(t1["landmarks"], t2["landmarks"])
    assert check_dots(denorm(out1), t1, margin=4.0) == 8
    out_b, t_b = transform(box_image(box), make_target(POINTS, bbox=box))
    check_box(denorm(out_b), t_b["bbox"])


@pytest.mark.parametrize("seed", range(6))
def test_train_pipeline_geometry(seed):
    cfg = quiet_cfg(rotation_degrees=50.0, hflip_p=0.5, rrc_scale=(0.5, 1.0))
    transform = build_transforms(cfg, train=True)
    torch.manual_seed(seed)
    out, t = transform(dots_image(POINTS), make_target(POINTS))
    swapped = [COLOURS[FLIP_PERMUTATION[i]] for i in range(NUM_SLOTS)]
    # unflipped, every slot holds its own dot; flipped, every slot holds its partner's dot: exactly one holds
    outcomes = []
    for colours in (COLOURS, swapped):
        try:
            outcomes.append(check_dots(denorm(out), t, colours=colours, margin=5.0))
        except AssertionError:
            outcomes.append(-1)
    assert sorted(outcomes)[0] == -1 and max(outcomes) >= 1, outcomes


@pytest.mark.parametrize("scale,side", [(1.0, 96), (1.2, 115), (1.5, 144), (0.75, 72)])
def test_eval_scale_sets_the_eval_side_only(scale, side):
    cfg = quiet_cfg(eval_scale=scale)
    assert eval_size(cfg) == side
    box = (30, 20, 130, 110)
    out, t = build_transforms(cfg, train=False)(dots_image(POINTS), make_target(POINTS, bbox=box))
    assert out.shape == (3, side, side)
    assert check_dots(denorm(out), t, margin=4.0 * side / 96) == 8  # the targets follow the larger input
    torch.manual_seed(0)
    train_out, _ = build_transforms(cfg, train=True)(dots_image(POINTS), make_target(POINTS))
    assert train_out.shape == (3, 96, 96)  # training keeps image_size


def test_train_pipeline_random_but_reproducible():
    transform = build_transforms(DataConfig(image_size=64, random_erasing=0.5), train=True)
    img, target = dots_image(POINTS), make_target(POINTS, bbox=(30, 20, 130, 110))
    torch.manual_seed(3)
    a = [transform(img, target) for _ in range(3)]
    torch.manual_seed(3)
    b = [transform(img, target) for _ in range(3)]
    for (xa, ta), (xb, tb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ta["landmarks"], tb["landmarks"])
    assert not torch.equal(a[0][0], a[1][0])  # successive draws differ


def test_normalisation_uses_cfg_mean_std():
    cfg = DataConfig(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_to_bbox=False)
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    out, _ = build_transforms(cfg, train=False)(white, make_target(np.zeros((8, 2), np.float32)))
    torch.testing.assert_close(out, torch.ones(3, 32, 32))
    # padding uses the mean colour, i.e. zero after normalisation
    wide = Image.new("RGB", (64, 16), (255, 255, 255))
    out, _ = build_transforms(cfg, train=False)(wide, make_target(np.zeros((8, 2), np.float32)))
    assert out[:, 0, :].abs().max() < 0.02 and out[:, 16, :].min() > 0.98


def test_unit_conversion_round_trip():
    xy = torch.tensor([[0.0, 0.0], [63.0, 31.0], [10.5, 20.25]])
    unit = landmarks_to_unit(xy, height=32, width=64)
    torch.testing.assert_close(unit[0], torch.tensor([0.5 / 64, 0.5 / 32]))  # pixel centres, not edges
    torch.testing.assert_close(unit[1], torch.tensor([63.5 / 64, 31.5 / 32]))
    assert landmarks_to_unit(torch.tensor([[-5.0, 40.0]]), 32, 64).tolist() == [[0.0, 1.0]]  # clamped
    torch.testing.assert_close(unit_to_landmarks(unit, 32, 64), xy)


# ---------------------------------------------------------------- back to the original image


def test_eval_affine_hand_case_pad_without_crop():
    # 160 x 120 -> resize 0.6 -> 96 x 72 -> pad 12 rows above and below -> 96 x 96
    cfg = quiet_cfg(resize_mode="pad", crop_to_bbox=False)
    _, t = build_transforms(cfg, train=False)(dots_image(POINTS), make_target(POINTS))
    # x: unit * 96 / 0.6 / 160 = unit; y: (unit * 96 - 12) / 0.6 / 120 = unit * 4/3 - 1/6
    torch.testing.assert_close(t["affine"], torch.tensor([[1.0, 4 / 3], [0.0, -1 / 6]]))
    assert t["affine"].dtype == torch.float32 and t["affine"].shape == (2, 2)


@pytest.mark.parametrize("mode", ["pad", "stretch"])
@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("size", [(160, 120), (90, 170)])
def test_eval_affine_maps_output_landmarks_back_to_original(mode, crop, size):
    w, h = size
    points = POINTS * np.array([w / 160, h / 120], np.float32)
    box = (int(0.2 * w), int(0.15 * h), int(0.8 * w), int(0.9 * h))
    cfg = quiet_cfg(resize_mode=mode, crop_to_bbox=crop, bbox_margin=0.05)
    out, t = build_transforms(cfg, train=False)(dots_image(points, size), make_target(points, bbox=box))
    side = out.shape[-1]
    unit = landmarks_to_unit(t["landmarks"], side, side)
    back = unit_to_original(unit, t["affine"])
    kept = (t["visibility"] != TRUNCATED).numpy()
    assert kept.sum() >= 4  # the check below has something to check
    expected = (points + 0.5) / np.array([w, h], np.float32)  # pixel index x -> (x + 0.5) / W
    np.testing.assert_allclose(back.numpy()[kept], expected[kept], atol=2e-6)
    torch.testing.assert_close(original_to_unit(back, t["affine"]), unit)
    # the box maps the same way (edges, no half-pixel shift)
    box_unit = t["bbox"].reshape(2, 2) / side
    np.testing.assert_allclose(unit_to_original(box_unit, t["affine"]).numpy(),
                               np.clip(np.array(box, np.float32).reshape(2, 2) / [w, h], 0, 1), atol=2e-6)


def test_only_deterministic_pipelines_carry_an_affine():
    cfg = quiet_cfg(rotation_degrees=10.0, hflip_p=0.5)
    train, evaluation = build_transforms(cfg, train=True), build_transforms(cfg, train=False)
    assert not train.deterministic and evaluation.deterministic
    torch.manual_seed(0)
    assert "affine" not in train(dots_image(POINTS), make_target(POINTS))[1]
    assert "affine" in evaluation(dots_image(POINTS), make_target(POINTS))[1]
    assert GarmentTransform([]).deterministic and GarmentTransform([CropToBox(0.1), PadToSquare()]).deterministic
    assert not GarmentTransform([SlotHorizontalFlip(1.0)]).deterministic


def test_unit_to_original_batched_matches_a_loop():
    rng = np.random.default_rng(0)
    unit = torch.tensor(rng.uniform(0, 1, (5, 8, 2)), dtype=torch.float32)
    affine = torch.tensor(np.stack([rng.uniform(0.5, 2, (5, 2)), rng.uniform(-0.3, 0.3, (5, 2))], 1), dtype=torch.float32)
    got = unit_to_original(unit, affine)
    for i in range(5):
        for k in range(8):
            for axis in range(2):
                assert got[i, k, axis].item() == pytest.approx(
                    unit[i, k, axis].item() * affine[i, 0, axis].item() + affine[i, 1, axis].item(), abs=1e-6)
    torch.testing.assert_close(original_to_unit(got, affine), unit)


@pytest.mark.parametrize(
    "field,value",
    [
        ("rotation_degrees", 60.0), ("resize_mode", "crop"), ("rrc_scale", (0.0, 1.0)), ("hflip_p", 1.5),
        ("image_size", 4), ("eval_scale", 3.0), ("eval_scale", 0.2),
    ],
)
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        check_config(DataConfig(**{field: value}))
