import math

import pytest
import torch

from fashionlens.config import LossConfig, ModelConfig, RunConfig, from_dict, to_dict
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
    "local_stride_4": dict(name="fashionnet", local_stride=4),  # tiny_cnn's stride-4 stage (its final map is 8)
    "local_stride_4_fuse_conv": dict(name="fashionnet", local_stride=4, fuse_conv=True),
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
    assert ("heatmaps" in out) == (config not in ("regression", "global"))
    for value in out.values():
        for t in value if isinstance(value, list) else [value]:
            assert torch.isfinite(t).all()
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("config", ["fashionnet", "regression", "fuse_conv", "local_stride_4_fuse_conv"])
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


# --- local_stride: the map the local branch samples -------------------------------------------------------

LITE0 = "tf_efficientnet_lite0"


def _local_model(backbone: str, local_stride: int, **kw) -> FashionNet:
    torch.manual_seed(0)
    return create_model("fashionnet", **{**SIZES, "backbone": backbone, "pretrained": False,
                                         "local_stride": local_stride, **kw})


def _stage_entry(model: FashionNet, stride: int) -> dict | None:
    """The backbone's deepest feature_info entry at ``stride``; None where the final map is meant."""
    info = model.backbone.feature_info
    if stride == 32 or stride == info[-1]["reduction"]:
        return None
    return [e for e in info if e["reduction"] == stride][-1]


def _stem(model: FashionNet) -> torch.nn.Module:
    return model.backbone.conv_stem if hasattr(model.backbone, "conv_stem") else model.backbone.stages[0]


@pytest.mark.parametrize("backbone,stride", [(LITE0, 8), (LITE0, 16), (LITE0, 32),
                                             ("tiny_cnn", 4), ("tiny_cnn", 8), ("tiny_cnn", 32)])
def test_local_stride_picks_the_stage_in_one_pass(backbone, stride):
    model = _local_model(backbone, stride).eval()
    size = 64
    entry = _stage_entry(model, stride)
    channels = model.backbone.num_features if entry is None else entry["num_chs"]
    side = size // (stride if entry is not None else model.backbone.feature_info[-1]["reduction"])
    assert model.local.reduce[0].in_channels == channels
    seen, stem_calls, stage_out, head_in = [], [], [], []
    model.local.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.landmark_head.register_forward_pre_hook(lambda m, args: head_in.append(args[0]))
    _stem(model).register_forward_hook(lambda m, i, o: stem_calls.append(1))
    if entry is not None:
        model.backbone.get_submodule(entry["module"]).register_forward_hook(lambda m, i, o: stage_out.append(o))
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert len(stem_calls) == 1  # one backbone pass feeds every branch
    assert seen[0].shape == (2, channels, side, side)
    if entry is not None:
        assert seen[0] is stage_out[0]  # that stage's own output (stride 32: see the test below)
    final_side = size // model.backbone.feature_info[-1]["reduction"]
    assert head_in[0].shape == (2, model.backbone.num_features, final_side, final_side)  # heads: the final map
    reference = _local_model(backbone, 32).eval()
    with torch.no_grad():
        ref = reference(torch.randn(2, 3, size, size))
    assert {k: tuple(v.shape) for k, v in out.items() if torch.is_tensor(v)} == \
        {k: tuple(v.shape) for k, v in ref.items() if torch.is_tensor(v)}


def test_local_stride_32_is_the_final_map_as_before():
    x = torch.randn(2, 3, 64, 64)
    for backbone in ("tiny_cnn", LITE0):
        model = _local_model(backbone, 32).eval()
        seen = []
        model.local.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0]))
        with torch.no_grad():
            model(x)
            assert torch.equal(seen[0], model.backbone.forward_features(x))
        assert model.local.reduce[0].in_channels == model.backbone.num_features
    # tiny_cnn's final map is stride 8: local_stride 8 and 32 are the same model
    tiny32, tiny8 = _local_model("tiny_cnn", 32).eval(), _local_model("tiny_cnn", 8).eval()
    assert {k: v.shape for k, v in tiny32.state_dict().items()} == {k: v.shape for k, v in tiny8.state_dict().items()}
    tiny8.load_state_dict(tiny32.state_dict())
    with torch.no_grad():
        assert torch.equal(tiny32(x)["embedding"], tiny8(x)["embedding"])


def test_runs_saved_before_local_stride_load_unchanged():
    """A run config without local_stride (older checkpoints) builds the stride-32 model: same keys and shapes,
    strict load, identical outputs."""
    values = to_dict(RunConfig())
    values["model"].update(backbone="tiny_cnn", pretrained=False)
    del values["model"]["local_stride"]
    cfg = from_dict(values).model
    assert cfg.local_stride == 32
    torch.manual_seed(0)
    saved = build_model(cfg, num_categories=5, num_attributes=6).eval()
    torch.manual_seed(1)
    loaded = build_model(cfg, num_categories=5, num_attributes=6)
    today = _model("fashionnet", num_items=0, level_sizes=())
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in today.state_dict().items()}
    loaded.load_state_dict(saved.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(saved(x)["embedding"], loaded.eval()(x)["embedding"])


@pytest.mark.parametrize("backbone,stride,stage,later", [
    (LITE0, 16, "blocks.4", ["blocks.5", "blocks.6", "conv_head"]),
    (LITE0, 8, "blocks.2", ["blocks.3", "blocks.4", "conv_head"]),
    ("tiny_cnn", 4, "stages.1", ["stages.2", "stages.3"]),
])
def test_local_branch_gradient_reaches_the_chosen_stage(backbone, stride, stage, later):
    model = _local_model(backbone, stride, dropout=0.0).train()
    local_out = []
    model.local.register_forward_hook(lambda m, i, o: local_out.append(o))
    model(torch.randn(4, 3, 64, 64))
    named = dict(model.backbone.named_parameters())

    def params(prefix: str) -> list[torch.Tensor]:
        return [p for n, p in named.items() if n.startswith(prefix + ".")]

    chosen, after = params(stage), [p for prefix in later for p in params(prefix)]
    grads = torch.autograd.grad(local_out[0].square().sum(), chosen + after, allow_unused=True)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads[:len(chosen)])
    assert all(g is None for g in grads[len(chosen):])  # the local branch does not read the later stages


def test_bad_local_stride_lists_the_strides():
    with pytest.raises(ValueError, match=r"local_stride=16: TinyCNN has stages at strides 2, 4, 8, 32 "
                                         r"\(32 = the final map, whose own stride is 8\)"):
        _local_model("tiny_cnn", 16)
    with pytest.raises(ValueError, match=r"local_stride=64: EfficientNet has stages at strides 2, 4, 8, 16, 32$"):
        _local_model(LITE0, 64)
    with pytest.raises(ValueError, match=r"local_stride=16: .*no feature_info"):
        backbone = torch.nn.Conv2d(3, 8, 3, 2)
        backbone.forward_features, backbone.num_features = backbone.forward, 8
        FashionNet(backbone=backbone, local_stride=16)
    with pytest.raises(ValueError, match="local_stride=16"):
        build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, local_stride=16))
    assert create_model("global", backbone="tiny_cnn", local_stride=16).local is None  # no local branch: unused


@pytest.mark.parametrize("tta_flip", [False, True])
def test_search_pooled_appends_the_normalised_pooled_features_in_eval_only(tta_flip):
    torch.manual_seed(0)
    plain = _model("global", embedding_dim=24, tta_flip=tta_flip).eval()
    model = _model("global", embedding_dim=24, tta_flip=tta_flip, search_pooled=2.0).eval()
    model.load_state_dict(plain.state_dict())
    channels = model.backbone.num_features
    assert model.search_dim == 24 + channels and plain.search_dim == 24
    x = torch.randn(3, 3, 64, 64)
    seen = []
    model.global_proj.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        emb, got = plain(x)["embedding"], model(x)["embedding"]
    pooled = seen[0]
    halves = [pooled] if not tta_flip else [pooled[:3], pooled[3:]]
    # reference: each view's normalize([2 * normalize(pooled), embedding]); the mirror's views averaged, normalised
    views = [torch.cat([2 * torch.nn.functional.normalize(p, dim=1), e], 1) for p, e in
             zip(halves, [emb] if not tta_flip else _view_embeddings(plain, x))]
    views = [torch.nn.functional.normalize(v, dim=1) for v in views]
    ref = torch.nn.functional.normalize(sum(views), dim=1)
    assert got.shape == (3, 24 + channels)
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)
    # the last embedding_dim columns keep the trained embedding's direction (what the metric loss reads)
    assert torch.allclose(torch.nn.functional.normalize(got[:, -24:], dim=1), emb, atol=1e-5)
    model.train()
    assert model(x)["embedding"].shape == (3, 24)  # training: the embedding alone
    with pytest.raises(ValueError, match="search_pooled"):
        _model("global", search_pooled=-1.0)


def _view_embeddings(model: FashionNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The normalised embeddings of the image and of its mirror, each on its own (no merge)."""
    flip, model.tta_flip = model.tta_flip, False
    try:
        with torch.no_grad():
            return [model(x)["embedding"], model(torch.flip(x, dims=[3]))["embedding"]]
    finally:
        model.tta_flip = flip


def test_the_metric_loss_reads_the_embedding_columns_of_a_search_vector():
    torch.manual_seed(0)
    model = _model("global", embedding_dim=16, search_pooled=1.0, dropout=0.0)
    loss_fn = MultiTaskLoss(LossConfig(metric_loss="proxy_anchor"), num_items=3, embedding_dim=16)
    batch = make_batch()
    with torch.no_grad():
        train_metric = loss_fn(model.train()(batch["image"]), batch)["metric"]
        eval_metric = loss_fn(model.eval()(batch["image"]), batch)["metric"]  # (B, 16 + C): no shape error
    assert torch.isfinite(eval_metric) and torch.isfinite(train_metric)
    plain = _model("global", embedding_dim=16, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(eval_metric, loss_fn(plain.eval()(batch["image"]), batch)["metric"], atol=1e-5)
