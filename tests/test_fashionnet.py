import math

import pytest
import torch

from fashionlens.config import LossConfig, ModelConfig
from fashionlens.losses import MultiTaskLoss
from fashionlens.models import FashionNet, build_model, create_model
from fashionlens.models.heads import soft_argmax
from fashionlens.models.landmarks import pool_landmarks

SIZES = dict(num_categories=5, num_attributes=6, num_items=3, level_sizes=(2, 3))


def make_batch(b: int = 6, size: int = 64, seed: int = 0) -> dict:
    """A batch following the dataset contract (items 0, 0, 1, 1, 2, 2 for metric learning)."""
    g = torch.Generator().manual_seed(seed)
    visibility = torch.randint(0, 3, (b, 8), generator=g)
    visibility[:, :4] = 0  # some visible landmarks in every image
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "category": torch.randint(0, 5, (b,), generator=g),
        "clothes_type": torch.randint(1, 4, (b,), generator=g),
        "attributes": (torch.rand(b, 6, generator=g) > 0.5).float(),
        "attribute_mask": torch.ones(b, 6),
        "landmarks": torch.rand(b, 8, 2, generator=g) * 0.8 + 0.1,
        "visibility": visibility,
        "landmark_mask": torch.ones(b, 8, dtype=torch.bool),
        "bbox": torch.tensor([[0.1, 0.1, 0.9, 0.9]]).repeat(b, 1),
        "has_bbox": torch.ones(b, dtype=torch.bool),
        "item": torch.arange(b) // 2 % 3,
        "domain": torch.zeros(b, dtype=torch.long),
    }


CONFIGS = {
    "fashionnet": dict(name="fashionnet"),
    "regression": dict(name="fashionnet", landmark_head="regression"),
    "global": dict(name="global"),
    "fuse_conv": dict(name="fashionnet", fuse_conv=True),
    "landmarks_no_local": dict(name="fashionnet", use_local=False),
}


def _model(config: str, **kw) -> FashionNet:
    args = dict(CONFIGS[config])
    return create_model(args.pop("name"), **{**SIZES, "backbone": "tiny_cnn", **args, **kw})


@pytest.mark.parametrize("config", list(CONFIGS))
def test_output_shapes(config):
    torch.manual_seed(0)
    out = _model(config, embedding_dim=24).eval()(torch.randn(3, 3, 64, 64))
    assert out["category"].shape == (3, 5) and out["attributes"].shape == (3, 6)
    assert [t.shape for t in out["levels"]] == [(3, 2), (3, 3)]
    assert out["embedding"].shape == (3, 24) and out["item"].shape == (3, 3)
    assert out["features"].shape == (3, 256)
    if config == "global":
        assert "landmarks" not in out and "visibility" not in out
    else:
        assert out["landmarks"].shape == (3, 8, 2) and out["visibility"].shape == (3, 8, 3)
        assert bool(((out["landmarks"] >= 0) & (out["landmarks"] <= 1)).all())
    assert ("heatmaps" in out) == (config in ("fashionnet", "fuse_conv", "landmarks_no_local"))
    for value in out.values():
        for t in value if isinstance(value, list) else [value]:
            assert torch.isfinite(t).all()
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("config", ["fashionnet", "regression", "fuse_conv"])
def test_every_parameter_gets_gradient(config):
    torch.manual_seed(0)
    model = _model(config, dropout=0.0)
    loss_fn = MultiTaskLoss(LossConfig(item=1.0, metric=1.0), num_items=3, embedding_dim=128, level_maps=[
        torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 1, 1, 2, 2])])
    batch = make_batch()
    losses = loss_fn(model(batch["image"]), batch)
    assert set(losses) == {"loss", "category", "levels", "attributes", "landmarks", "visibility", "item", "metric", "bbox"}
    losses["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []


def _bilinear_reference(feat: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample at (x, y) in [0, 1] image coordinates, pixel centres at (j + 0.5) / w, zeros outside."""
    c, h, w = feat.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= xx < w and 0 <= yy < h:
                out += wx * wy * feat[:, yy, xx]
    return out


def test_landmark_pooling_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 4, 7, 9, generator=g)
    landmarks = torch.rand(2, 3, 2, generator=g)
    landmarks[0, 0] = torch.tensor([0.02, 0.97])  # window partly outside the image
    grid, window = 3, 0.2
    got = pool_landmarks(feat, landmarks, grid, window)
    assert got.shape == (2, 3, 4)
    offsets = [-window / 2, 0.0, window / 2]
    for b in range(2):
        for k in range(3):
            x, y = landmarks[b, k].tolist()
            samples = [_bilinear_reference(feat[b], x + dx, y + dy) for dy in offsets for dx in offsets]
            assert torch.allclose(got[b, k], torch.stack(samples).amax(0), atol=1e-5)


def test_soft_argmax_peak_position():
    heatmaps = torch.full((1, 2, 4, 8), -50.0)
    heatmaps[0, 0, 1, 6] = 50.0  # row 1, column 6
    heatmaps[0, 1, 3, 0] = 50.0
    xy, probs = soft_argmax(heatmaps)
    assert torch.allclose(xy[0], torch.tensor([[6.5 / 8, 1.5 / 4], [0.5 / 8, 3.5 / 4]]), atol=1e-5)
    assert torch.allclose(probs.sum((2, 3)), torch.ones(1, 2))


def test_teacher_forcing_changes_local_features_only():
    torch.manual_seed(0)
    model = _model("fashionnet").eval()
    x = torch.randn(2, 3, 64, 64)
    free = model(x)
    forced = model(x, landmarks=torch.full((2, 8, 2), 0.9))
    assert torch.equal(free["landmarks"], forced["landmarks"])
    assert not torch.allclose(free["features"], forced["features"])
    glob = _model("global").eval()
    assert torch.equal(glob(x)["embedding"], glob(x, landmarks=torch.rand(2, 8, 2))["embedding"])


def test_embed_and_channels_last():
    torch.manual_seed(0)
    model = _model("fuse_conv").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)["embedding"]
    assert torch.allclose(model.embed(x), ref)
    model_cl = model.to(memory_format=torch.channels_last)
    got = model_cl.embed(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, ref, atol=1e-5)


def test_bad_configurations():
    with pytest.raises(ValueError, match="use_local needs the landmark branch"):
        create_model("fashionnet", backbone="tiny_cnn", use_landmarks=False)
    with pytest.raises(ValueError, match="unknown model 'nope'; choices: fashionnet, global"):
        create_model("nope")
    with pytest.raises(ValueError, match="landmark_head"):
        create_model("fashionnet", backbone="tiny_cnn", landmark_head="dots")
    with pytest.raises(TypeError, match="forward_features"):
        FashionNet(backbone=torch.nn.Conv2d(3, 4, 3))


def test_build_model_from_config():
    cfg = ModelConfig(name="global", backbone="tiny_cnn", pretrained=False, embedding_dim=16, use_local=False)
    model = build_model(cfg, num_categories=4)
    out = model.eval()(torch.randn(1, 3, 32, 32))
    assert out["embedding"].shape == (1, 16) and out["category"].shape == (1, 4)
    assert model.landmark_head is None and model.local is None


def test_overfits_one_tiny_batch():
    torch.manual_seed(0)
    model = _model("fashionnet", dropout=0.0, hidden_dim=64)
    loss_fn = MultiTaskLoss(LossConfig(label_smoothing=0.0, metric=0.0, landmark_loss="l1", landmarks=5.0))
    batch = make_batch(b=4, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = loss_fn(model(batch["image"]), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0], history
