"""fashionlens.evaluation.distortions: the query distortions of instance retrieval under distortion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from fashionlens.evaluation.distortions import distort, random_background, random_crop


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(load_sample_image("flower.jpg")).resize((160, 107))


def test_same_seed_same_output_and_input_untouched(photo):
    before = np.asarray(photo).copy()
    a = distort(photo, 3)
    b = distort(photo, np.random.default_rng(3))
    assert a.mode == "RGB"
    assert a.size == b.size
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(photo), before)


def test_different_seeds_differ_and_output_differs_from_input(photo):
    outs = [distort(photo, seed) for seed in range(4)]
    assert len({o.size for o in outs}) > 1 or not np.array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
    ref = np.asarray(photo, np.float32)
    for out in outs:
        same_size = np.asarray(out.resize(photo.size, Image.BILINEAR), np.float32)
        assert np.abs(same_size - ref).mean() > 10.0  # strong distortions change the picture a lot


def test_mild_is_closer_to_the_input_than_strong(photo):
    ref = np.asarray(photo, np.float32)

    def change(strength: str) -> float:
        outs = [distort(photo, seed, strength) for seed in range(6)]
        return float(np.mean([np.abs(np.asarray(o.resize(photo.size), np.float32) - ref).mean() for o in outs]))

    assert change("mild") < change("strong")


def test_random_crop_keeps_the_minimum_area(photo):
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(200):
        crop = random_crop(photo, rng, 0.5)
        assert crop.width <= photo.width and crop.height <= photo.height
        shares.append(crop.width * crop.height / (photo.width * photo.height))
    assert min(shares) >= 0.5 - 0.02  # rounding to whole pixels
    assert max(shares) > 0.9 and min(shares) < 0.65  # the whole range is used


def test_strong_distortion_puts_the_photo_on_a_new_background():
    # a grey photo stays grey under the colour changes; coloured pixels can only come from the background
    grey = Image.new("RGB", (80, 60), (128, 128, 128))
    for seed in range(5):
        out = np.asarray(distort(grey, seed), np.int16)
        chroma = out.max(axis=2) - out.min(axis=2)
        assert (chroma > 40).mean() > 0.1


def test_random_background_is_textured():
    rng = np.random.default_rng(1)
    varied = 0
    for _ in range(6):
        bg = np.asarray(random_background((40, 30), rng))
        assert bg.shape == (30, 40, 3) and bg.dtype == np.uint8
        varied += int(np.unique(bg.reshape(-1, 3), axis=0).shape[0] > 10)
    assert varied >= 5


def test_bad_strength(photo):
    with pytest.raises(ValueError, match="strength"):
        distort(photo, 0, "extreme")


# ---------------------------------------------------------------- named shifts (classification under shift)


def test_shift_zoomout_pastes_the_photo_unchanged_on_a_plain_larger_canvas(photo):
    from fashionlens.evaluation.distortions import shift

    out = shift(photo, "zoomout", 5)
    w, h = photo.size
    assert out.size == (int(w * 1.7), int(h * 1.7))
    a, src = np.asarray(out), np.asarray(photo)
    hits = [(x, y) for y in range(out.height - h + 1) for x in range(out.width - w + 1)
            if np.array_equal(a[y, x], src[0, 0]) and np.array_equal(a[y:y + h, x:x + w], src)]
    assert len(hits) == 1  # the photo, pixel for pixel, once
    x, y = hits[0]
    mask = np.ones(a.shape[:2], bool)
    mask[y:y + h, x:x + w] = False
    assert len(np.unique(a[mask].reshape(-1, 3), axis=0)) == 1  # one plain background colour around it
    assert np.array_equal(np.asarray(shift(photo, "zoomout", 5)), a)  # the seed fixes placement and colour
    assert not np.array_equal(np.asarray(shift(photo, "zoomout", 6)), a)


def test_shift_crop_is_the_centre_seventy_percent(photo):
    from fashionlens.evaluation.distortions import shift

    out = shift(photo, "crop")
    w, h = photo.size
    cw, ch = int(w * 0.7), int(h * 0.7)
    assert out.size == (cw, ch)
    x, y = (w - cw) // 2, (h - ch) // 2
    assert np.array_equal(np.asarray(out), np.asarray(photo)[y:y + ch, x:x + cw])


def test_shift_lowres_keeps_the_size_and_removes_fine_detail():
    from fashionlens.evaluation.distortions import shift

    photo = Image.fromarray(load_sample_image("flower.jpg"))  # 640 x 427: far above the 96 px it drops to
    out = shift(photo, "lowres")
    assert out.size == photo.size and out.mode == "RGB"

    def detail(im):  # mean absolute difference between horizontal neighbours
        g = np.asarray(im.convert("L"), np.float32)
        return float(np.abs(np.diff(g, axis=1)).mean())

    assert detail(out) < 0.7 * detail(photo)
    assert abs(np.asarray(out, np.float32).mean() - np.asarray(photo, np.float32).mean()) < 8  # same picture


def test_shift_lighting_is_darker_duller_and_warmer(photo):
    from fashionlens.evaluation.distortions import shift

    before = np.asarray(photo).copy()
    out = shift(photo, "lighting")
    a, b = np.asarray(out, np.float32), before.astype(np.float32)
    assert out.size == photo.size
    assert a.mean() < b.mean()
    sat = lambda im: float(np.asarray(im.convert("HSV"))[..., 1].mean())  # noqa: E731
    assert sat(out) < sat(photo)
    assert a[..., 0].mean() / a[..., 2].mean() > b[..., 0].mean() / b[..., 2].mean()  # red over blue rises
    assert np.array_equal(np.asarray(photo), before)  # the input is untouched


def test_shift_rejects_an_unknown_kind(photo):
    from fashionlens.evaluation.distortions import SHIFTS, shift

    with pytest.raises(ValueError, match="unknown shift 'fog'.*zoomout"):
        shift(photo, "fog")
    assert set(SHIFTS) == {"zoomout", "lowres", "lighting", "crop"}
