"""Spatial saliency pooling: shapes, starts as average pooling, weighted mean equals a loop reference, learns."""

import torch
import torch.nn.functional as F

from fashionlens.models import create_model
from fashionlens.models.attention import SpatialAttention


def test_starts_as_average_pooling_and_matches_loop_reference():
    torch.manual_seed(0)
    att = SpatialAttention(8)
    x = torch.randn(2, 8, 5, 4)
    pooled, saliency = att(x)
    assert pooled.shape == (2, 8) and saliency.shape == (2, 5, 4)
    assert torch.allclose(pooled, F.adaptive_avg_pool2d(x, 1).flatten(1), atol=1e-6)  # uniform saliency at init
    with torch.no_grad():
        att.score[-1].weight.normal_()
    pooled, saliency = att(x)
    for b in range(2):  # plain-loop weighted mean
        total = saliency[b].sum()
        ref = sum(x[b, :, i, j] * saliency[b, i, j] for i in range(5) for j in range(4)) / total
        assert torch.allclose(pooled[b], ref, atol=1e-5)
    assert not torch.allclose(pooled, F.adaptive_avg_pool2d(x, 1).flatten(1), atol=1e-3)


def test_fashionnet_with_attention_outputs_map_and_trains():
    torch.manual_seed(0)
    model = create_model("global", backbone="tiny_cnn", num_categories=3, spatial_attention=True)
    x = torch.randn(4, 3, 64, 64)
    out = model(x)
    assert out["attention"].shape == (4, 8, 8) and ((out["attention"] >= 0) & (out["attention"] <= 1)).all()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):  # the zero-initialised last conv gets a gradient first, then the rest follows
        loss = F.cross_entropy(model(x)["category"], torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        assert model.attention.score[-1].weight.grad.abs().sum() > 0
        opt.step()
    assert model.attention.score[0].weight.grad.abs().sum() > 0


def test_evaluate_report_draws_attention_maps(tmp_path):
    from PIL import Image

    from fashionlens.cli import main

    data, run, out = tmp_path / "g", tmp_path / "run", tmp_path / "rep"
    assert main(["synth", str(data), "--items", "14", "--views", "3", "--size", "64", "--quiet"]) == 0
    assert main(["train", "--data", f"garments:{data}", "--out", str(run), "--backbone", "tiny_cnn", "--no-pretrained",
                 "--model", "global", "--epochs", "1", "--image-size", "48", "--quiet", "--set", "train.pk_items=4",
                 "--set", "model.spatial_attention=true"]) == 0
    assert main(["evaluate", "--model", str(run), "--data", f"garments:{data}", "--out", str(out)]) == 0
    with Image.open(out / "attention.png") as im:
        assert im.width > 300 and im.height > 100
    assert "attention.png" in (out / "report.md").read_text()
