"""Predictor: answers in original-image pixels, crop-before-embed, order and errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlens.config import DataConfig, ModelConfig, RunConfig
from fashionlens.inference import Predictor
from fashionlens.models import build_model


def make_predictor(**data_kw) -> Predictor:
    torch.manual_seed(0)
    cfg = RunConfig(data=DataConfig(image_size=64, **data_kw), model=ModelConfig(backbone="tiny_cnn", pretrained=False))
    model = build_model(cfg.model, num_categories=3, num_attributes=4, level_sizes=(2,))
    labels = {"categories": ["a", "b", "c"], "category_paths": ["x.a", "x.b", "y.c"], "category_types": [1, 2, 3],
              "attributes": ["p", "q", "r", "s"], "attribute_groups": [1, 1, 2, 2], "group_names": {"1": "g1", "2": "g2"},
              "single_choice_groups": True}
    return Predictor(model, cfg, labels)


@pytest.mark.parametrize("resize_mode", ["pad", "stretch"])
@pytest.mark.parametrize("size", [(200, 100), (90, 160), (64, 64)])
@pytest.mark.parametrize("eval_scale,side", [(1.0, 64), (1.5, 96)])
def test_probe_affine_maps_back_to_original_pixels(resize_mode, size, eval_scale, side):
    pred = make_predictor(resize_mode=resize_mode, eval_scale=eval_scale)
    image = Image.new("RGB", size, (120, 30, 60))
    tensor, affine = pred.preprocess(image)
    assert tensor.shape == (3, side, side) and pred.size == side  # inference runs at the eval size
    # a point at the centre of the original image lands at the centre of the network input, and back
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    out_px = affine[0] * centre + affine[1]
    assert np.allclose(out_px, (side - 1) / 2, atol=0.51)
    unit = (out_px + 0.5) / side
    assert np.allclose(pred._to_original(unit, affine), centre, atol=1e-6)
    corner = np.array([size[0] - 1.0, 0.0])  # and a corner of the image goes back to itself
    assert np.allclose(pred._to_original((affine[0] * corner + affine[1] + 0.5) / side, affine), corner, atol=1e-6)


def test_answers_use_label_space_and_type_slots():
    pred = make_predictor()
    answers = pred.predict([Image.new("RGB", (80, 120), (200, 200, 200)), Image.new("RGB", (50, 50), (0, 0, 0))])
    assert len(answers) == 2
    for a in answers:
        assert a["category"] in {"a", "b", "c"} and a["category_path"].endswith(a["category"])
        expected_slots = {0: 6, 1: 4, 2: 8}[a["category_index"]]  # upper / lower / full landmark sets
        assert len(a["landmarks"]) == expected_slots
        assert sorted(x["group"] for x in a["attributes"]) == ["g1", "g2"]  # one per single-choice group
        x1, y1, x2, y2 = a["bbox"]
        assert 0 <= x1 <= x2 <= a["width"] and 0 <= y1 <= y2 <= a["height"]


def test_crop_before_embed_uses_predicted_box():
    pred = make_predictor()
    image = Image.new("RGB", (120, 90), (10, 200, 30))
    crops, answers = pred.crop_garments([image])
    assert answers[0]["bbox"] and answers[0]["embedding"].shape == (128,)
    assert crops[0].width <= 120 and crops[0].height <= 90
    plain, cropped = pred.embed([image]), pred.embed([image], crop=True)
    assert plain.shape == cropped.shape == (1, 128)
    assert np.allclose(np.linalg.norm(cropped, axis=1), 1, atol=1e-5)


def test_predict_paths_keeps_order_and_reports_errors(tmp_path):
    pred = make_predictor()
    pred.batch_size = 2
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        if i == 2:
            p.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        else:
            Image.new("RGB", (40 + i, 40), (i * 40, 0, 0)).save(p)
        paths.append(str(p))
    answers = list(pred.predict_paths(paths))
    assert [a["image"] for a in answers] == paths
    assert "error" in answers[2] and "2.png" in answers[2]["error"]
    assert all("category" in a for i, a in enumerate(answers) if i != 2)
