"""Transfer-learning ingredients of the photos recipe: frozen stages, layer-wise learning rates, weight
averaging (EMA) with resume, class-balanced sampling, mirror test-time augmentation, ImageNet feature
variants for linear probes, and the shipped ``photos`` recipe."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from fashionlens.config import DataConfig, LossConfig
from fashionlens.data.samples import Sample
from fashionlens.models import build_model, create_backbone
from fashionlens.models.backbones import backbone_stages, freeze_stages, stage_depths
from fashionlens.models.fashionnet import FashionNet
from fashionlens.training.checkpoint import load_checkpoint, load_model
from fashionlens.training.fit import Trainer, build_optimizer, epoch_batches, fit
from fashionlens.training.sampling import class_balance_weights
from test_fit import assert_same_weights, tiny_cfg  # the "spec" fixture comes from conftest.py


def _grads_after_step(model: FashionNet) -> tuple[dict, dict]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(torch.randn(4, 3, 48, 48))
    out["category"].sum().backward()
    opt.step()
    return before, dict(model.named_parameters())


# ---------------------------------------------------------------- frozen stages


@pytest.mark.parametrize("name, stages, groups", [("tiny_cnn", 4, 4), ("tf_efficientnet_lite0", 7, 9),
                                                  ("resnet18", 4, 5)])
def test_backbone_stages_cover_every_parameter_in_order(name, stages, groups):
    backbone = create_backbone(name)
    found = backbone_stages(backbone)
    assert len(found) == groups
    grouped = {id(p) for g in found for m in g for p in m.parameters()}
    assert grouped == {id(p) for p in backbone.parameters()}  # every weight belongs to one group
    depths = stage_depths(backbone)
    assert max(depths.values()) == groups - 1 and min(depths.values()) == 0
    first = next(iter(dict(backbone.named_parameters())))  # the stem's first weight is the deepest
    assert depths[first] == groups - 1


def test_frozen_stages_do_not_change_and_keep_batchnorm_statistics():
    torch.manual_seed(0)
    model = FashionNet("tiny_cnn", num_categories=3, hidden_dim=16, embedding_dim=8, use_landmarks=False,
                       use_local=False, use_bbox=False, frozen_stages=2)
    stats = {n: b.clone() for n, b in model.named_buffers() if "backbone.stages.0" in n or "backbone.stages.1" in n}
    before, after = _grads_after_step(model)
    for name, param in after.items():
        frozen = name.startswith(("backbone.stages.0.", "backbone.stages.1."))
        assert param.requires_grad is not frozen, name
        if name.startswith("backbone."):  # frozen: unchanged; trainable: moved by the category loss
            assert torch.equal(param, before[name]) is frozen, name
    for name, value in dict(model.named_buffers()).items():
        if name in stats and value.is_floating_point():
            assert torch.equal(value, stats[name]), f"{name}: frozen BatchNorm statistics were updated"
    assert not model.backbone.stages[0].training and model.backbone.stages[2].training


def test_freezing_every_stage_is_refused():
    with pytest.raises(ValueError, match="leave at least one trainable"):
        freeze_stages(create_backbone("tiny_cnn"), 4)


def test_frozen_prefix_gets_no_gradients_and_the_rest_does():
    """Gradient flows only from the first trainable stage: the frozen stem gets no .grad at all."""
    model = FashionNet("tiny_cnn", num_categories=3, hidden_dim=16, embedding_dim=8, use_landmarks=False,
                       use_local=False, use_bbox=False, frozen_stages=3)
    model(torch.randn(2, 3, 48, 48))["category"].sum().backward()
    assert all(p.grad is None for p in model.backbone.stages[0].parameters())
    assert all(p.grad is not None for p in model.backbone.stages[3].parameters())


# ---------------------------------------------------------------- layer-wise learning rates


def test_layer_decay_scales_each_stage_by_its_depth(spec):
    cfg = tiny_cfg(spec)
    cfg.train.layer_decay, cfg.train.backbone_lr_scale = 0.5, 0.8
    model = build_model(cfg.model, num_categories=5)
    from fashionlens.losses import MultiTaskLoss

    opt = build_optimizer(model, MultiTaskLoss(LossConfig(metric=0.0)), cfg)
    scale_of = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    depths = stage_depths(model.backbone)
    for name, param in model.backbone.named_parameters():
        assert scale_of[id(param)] == pytest.approx(0.8 * 0.5 ** depths[name]), name
    assert scale_of[id(model.category.weight)] == 1.0
    assert len({round(s, 6) for s in scale_of.values()}) == 5  # head, and 4 backbone depths


# ---------------------------------------------------------------- class-balanced sampling


def test_balance_weights_equalise_class_mass():
    samples = [Sample(image=f"{i}.jpg", category=c) for i, c in enumerate([0] * 90 + [1] * 9 + [2])]
    for power, expect in ((1.0, [1 / 3] * 3), (0.0, [0.9, 0.09, 0.01])):
        w = class_balance_weights(samples, power).numpy()
        mass = [w[:90].sum(), w[90:99].sum(), w[99:].sum()]
        np.testing.assert_allclose(np.array(mass) / w.sum(), expect, rtol=1e-9)
    w = class_balance_weights(samples, 0.5).numpy()
    assert w[0] < w[95] < w[99]  # sqrt: in between


def test_balanced_batches_draw_rare_classes_about_as_often_as_common_ones(spec):
    cfg = tiny_cfg(spec, balance=1.0)
    trainer = Trainer(cfg, "/tmp/unused-balance", progress=False, log=lambda *_: None)
    cats = np.array([s.category for s in trainer.train_ds.samples])
    drawn = np.concatenate([cats[b] for e in range(40) for b in epoch_batches(trainer.train_ds, trainer.cfg, e)])
    freq = np.bincount(drawn, minlength=cats.max() + 1)[np.unique(cats)] / len(drawn)
    natural = np.bincount(cats)[np.unique(cats)] / len(cats)
    uniform = 1 / len(freq)
    assert np.abs(freq - uniform).max() < 0.4 * uniform  # near-uniform over classes
    assert np.abs(freq - uniform).max() < np.abs(natural - uniform).max()  # closer than the data's own mix
    first = [list(b) for b in epoch_batches(trainer.train_ds, trainer.cfg, 3)]
    assert first == [list(b) for b in epoch_batches(trainer.train_ds, trainer.cfg, 3)]  # seeded per epoch


# ---------------------------------------------------------------- weight averaging (EMA)


def test_ema_run_ships_averaged_weights_and_resumes_exactly(spec, tmp_path):
    cfg = tiny_cfg(spec, epochs=2, ema_decay=0.9, checkpoint_every=1)
    fit(cfg, str(tmp_path / "a"), progress=False, log=lambda *_: None)
    last = load_checkpoint(str(tmp_path / "a" / "last.pt"))
    assert last["ema_steps"] == last["step"] == 6
    differs = [n for n in last["model"] if last["model"][n].is_floating_point()
               and not torch.equal(last["model"][n], last["train_model"][n])]
    assert differs, "the averaged weights equal the optimised ones"
    # EMA by hand from the per-step weights would need them all; check the shipped model is the average:
    model, _, _ = load_model(str(tmp_path / "a" / "last.pt"))
    assert_same_weights(model.state_dict(), last["model"])

    # Interrupted after epoch 1 (its checkpoint written), resumed: identical to the uninterrupted run
    # (optimised weights, averaged weights and the number of averaged steps).
    def interrupt_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, str(tmp_path / "b"), progress=False, log=interrupt_after_epoch_1)
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["ema_steps"] == 3
    fit(cfg, str(tmp_path / "b"), progress=False, log=lambda *_: None)
    resumed = load_checkpoint(str(tmp_path / "b" / "last.pt"))
    assert resumed["ema_steps"] == 6
    assert_same_weights(resumed["model"], last["model"])
    assert_same_weights(resumed["train_model"], last["train_model"])


def test_ema_update_is_the_exponential_moving_average_with_warm_up():
    from fashionlens.training.ema import ema_model

    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = ema_model(net, 0.9)
    weights = [net[0].weight.detach().clone()]
    ema.update_parameters(net)  # the first update copies
    expected = weights[0].clone()
    for step in range(1, 100):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        weights.append(net[0].weight.detach().clone())
        ema.update_parameters(net)
        d = min(0.9, (1 + step) / (10 + step))  # warm-up: early steps follow the weights closely
        expected = d * expected + (1 - d) * weights[-1]
        torch.testing.assert_close(ema.module[0].weight, expected)
    assert d == 0.9  # the warm-up ended at the configured decay
    assert int(ema.module[1].num_batches_tracked) == int(net[1].num_batches_tracked)


# ---------------------------------------------------------------- mirror test-time augmentation


def test_tta_flip_averages_the_image_and_its_mirror_in_eval_only():
    torch.manual_seed(0)
    model = FashionNet("tiny_cnn", num_categories=4, num_attributes=3, hidden_dim=16, embedding_dim=8,
                       use_landmarks=True, use_local=False, use_bbox=True).eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        plain, mirrored = model(x), model(torch.flip(x, dims=[3]))
        model.tta_flip = True
        both = model(x)
    torch.testing.assert_close(both["category"], (plain["category"] + mirrored["category"]) / 2)
    torch.testing.assert_close(both["attributes"], (plain["attributes"] + mirrored["attributes"]) / 2)
    emb = torch.nn.functional.normalize(plain["embedding"] + mirrored["embedding"], dim=1)
    torch.testing.assert_close(both["embedding"], emb)
    torch.testing.assert_close(both["bbox"], plain["bbox"])  # geometry from the unmirrored view
    torch.testing.assert_close(both["landmarks"], plain["landmarks"])
    assert not torch.allclose(plain["category"], mirrored["category"])  # the mirror really differs
    model.train()
    assert model(x)["category"].shape == (3, 4)  # training ignores TTA (one pass, batch of 3)


def test_evaluate_tta_switch_overrides_the_run(spec, tmp_path):
    from fashionlens.runs import run_outputs

    cfg = tiny_cfg(spec, epochs=1)
    cfg.model.tta_flip = True
    fit(cfg, str(tmp_path), progress=False, log=lambda *_: None)
    on, *_ = run_outputs(str(tmp_path), spec, split="test", progress=False)
    off, *_ = run_outputs(str(tmp_path), spec, split="test", progress=False, tta=False)
    forced, *_ = run_outputs(str(tmp_path), spec, split="test", progress=False, tta=True)
    np.testing.assert_allclose(on["category"], forced["category"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(on["category"], off["category"])


# ---------------------------------------------------------------- linear-probe features


def test_imagenet_feature_variants_have_distinct_cache_identities(tmp_path):
    from PIL import Image

    from fashionlens.audit.features import compute_features, feature_identity

    assert feature_identity("imagenet", 96, "features") != feature_identity("imagenet", 96, "features", flip=True)
    assert feature_identity("imagenet", 96, "features") != feature_identity("imagenet:tf_efficientnet_lite1", 96, "features")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(image=str(path)))
    plain, _ = compute_features(samples, "imagenet", image_size=64, cache_dir=str(tmp_path / "c"))
    flip, _ = compute_features(samples, "imagenet", image_size=64, flip=True, cache_dir=str(tmp_path / "c"))
    assert plain.shape == flip.shape == (3, 1280) and not np.allclose(plain, flip)
    mirrored = [Sample(image=str(tmp_path / f"m{i}.png")) for i in range(3)]
    for s, m in zip(samples, mirrored):
        Image.open(s.image).transpose(Image.FLIP_LEFT_RIGHT).save(m.image)
    flip_of_mirror, _ = compute_features(mirrored, "imagenet", image_size=64, flip=True)
    np.testing.assert_allclose(flip, flip_of_mirror, rtol=1e-4, atol=1e-4)  # mirror-invariant by construction
    with pytest.raises(ValueError, match="ImageNet feature models only"):
        compute_features(samples, str(tmp_path), flip=True)


# ---------------------------------------------------------------- the shipped recipe


def test_photos_recipe_builds_a_partly_frozen_pretrained_model():
    from fashionlens.recipes import available, load_recipe

    assert "photos" in available()
    cfg = load_recipe("photos")
    assert cfg.model.pretrained is True and cfg.model.frozen_stages > 0 and cfg.train.ema_decay > 0
    assert cfg.train.max_minutes == 30 and cfg.model.tta_flip
    # catalog search works out of the box: the embedding is trained (on kinds, from the pooled features)
    assert cfg.loss.metric > 0 and cfg.loss.metric_loss == "multi_similarity" and cfg.loss.ms_epsilon == 0
    assert cfg.loss.metric_labels == "category" and cfg.model.embedding_from == "pooled"
    model = build_model(copy.deepcopy(cfg.model), num_categories=10)
    trainable = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.backbone.parameters())
    assert 0.5 < trainable / total < 1.0  # the last stages train; the stem and first stages do not
    assert not any(p.requires_grad for p in model.backbone.conv_stem.parameters())
    data = DataConfig()
    assert cfg.data.image_size >= 160 and cfg.data.random_erasing > 0 and cfg.data.hflip_p == data.hflip_p
    assert 1.0 < cfg.data.eval_scale <= 1.3  # tested above the training size (FixRes), no more than crops magnify


def test_photos_recipe_trains_end_to_end_from_the_cli_on_a_folder(tmp_path):
    """The documented command on a tiny image folder (small size and one short epoch via --set)."""
    from PIL import Image

    from fashionlens.cli import main

    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("validation", 3)):
        for k, cls in enumerate(("hat", "shoes")):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                colour = np.array([200, 40, 40]) if k else np.array([40, 40, 200])
                img = np.clip(colour + rng.normal(0, 20, (50, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(tmp_path / "data" / split / cls / f"{i}.jpg")
    out = tmp_path / "run"
    code = main(["train", "--recipe", "photos", "--data", f"folder:{tmp_path / 'data'}", "--out", str(out),
                 "--quiet", "--set", "data.image_size=64", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                 "--set", "data.num_workers=0", "--set", "train.warmup_epochs=0.2"])
    assert code == 0
    ckpt = load_checkpoint(str(out / "best.pt"))
    assert ckpt["labels"]["categories"] == ["hat", "shoes"] and "train_model" in ckpt
    with open(out / "metrics.jsonl", encoding="utf-8") as f:
        assert json.loads(f.readline())["train_metric"] > 0  # the embedding learned from the category labels
    model, cfg, _ = load_model(str(out))
    assert cfg.model.frozen_stages == 3 and model.tta_flip
    from fashionlens.inference import Predictor

    assert Predictor.load(str(out)).size == round(64 * cfg.data.eval_scale) > 64  # answers at the eval size


# ---------------------------------------------------------------- self-supervised instance discrimination


def test_instance_views_pair_two_augmentations_of_one_unlabelled_image(spec, tmp_path):
    from fashionlens.losses.metric import build_metric_loss

    cfg = tiny_cfg(spec, epochs=1, instance_views=2, pk_items=4, pk_images=2, select_metric="train_loss")
    cfg.loss = LossConfig(metric_loss="ntxent", category=0.0, levels=0.0, attributes=0.0, landmarks=0.0,
                          visibility=0.0, bbox=0.0, metric=1.0)
    trainer = Trainer(cfg, str(tmp_path / "ssl"), progress=False, log=lambda *_: None)
    ds = trainer.train_ds
    assert all(s.category is None and s.attributes is None and s.bbox is None for s in ds.samples)
    assert len(ds.items) * 2 == len(ds)
    for batch in epoch_batches(ds, trainer.cfg, 0):
        by_item: dict[int, set] = {}
        for i in batch:
            by_item.setdefault(int(ds.item_labels[i]), set()).add(ds.samples[i].image)
        assert len(by_item) == 4 and all(len(images) == 1 for images in by_item.values())  # one image per item
        assert sorted(np.bincount(ds.item_labels[batch])[np.unique(ds.item_labels[batch])]) == [2] * 4
    summary = trainer.fit()
    trainer.close()
    assert summary["epochs"] == 1 and np.isfinite(summary["last"]["train_loss"])
    # NT-Xent: two identical embeddings per pair and distinct pairs cost less than shuffled pairs
    loss = build_metric_loss(cfg.loss)
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=1).repeat_interleave(2, 0)
    labels = torch.arange(4).repeat_interleave(2)
    assert loss(emb, labels) < loss(emb, labels[torch.randperm(8, generator=torch.Generator().manual_seed(1))])
    with pytest.raises(ValueError, match="instance_views must be >= 2"):
        from fashionlens.training.sampling import instance_views

        instance_views(ds.samples, 1)


# ---------------------------------------------------------------- every shipped recipe


def test_every_recipe_builds_its_model_and_runs_a_forward_pass():
    from fashionlens.recipes import available, load_recipe

    assert {"garments", "identity", "photos", "fashion-mnist"} <= set(available())
    for name in available():
        cfg = load_recipe(name)
        cfg.model.pretrained = False  # architecture only (the photos test above loads the real weights)
        model = build_model(cfg.model, num_categories=7, num_attributes=3, num_items=4 if cfg.loss.item else 0).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size))
        assert out["category"].shape == (2, 7), name
        assert out["embedding"].shape == (2, cfg.model.embedding_dim), name


def test_backbone_kwargs_reach_the_backbone():
    from fashionlens.config import ModelConfig

    cfg = ModelConfig(backbone="tiny_cnn", pretrained=False, backbone_kwargs={"widths": [8, 16, 24]})
    model = build_model(cfg, num_categories=2)
    assert model.backbone.num_features == 24 and len(model.backbone.stages) == 3
    with pytest.raises(TypeError):
        build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, backbone_kwargs={"nonsense": 1}))
