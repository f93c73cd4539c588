"""The pre-activation ResNet backbone (small images, from scratch), the CIFAR crop, and the Fashion-MNIST recipes
that use them, trained for a few batches through the documented command."""

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlens.config import DataConfig
from fashionlens.data.transforms import build_transforms
from fashionlens.models import create_backbone
from fashionlens.models.backbones import backbone_stages, freeze_stages


def test_preact_resnet_contract_at_28_px():
    net = create_backbone("preact_resnet").eval()
    params = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= params <= 3_000_000  # the 1-3 M parameters of the published small-image networks
    x = torch.randn(2, 3, 28, 28)
    feats = net.forward_features(x)
    assert feats.shape == (2, net.num_features, 4, 4) and net.num_features == 256
    assert feats.min() >= 0  # the last stage ends with the final BN-ReLU a pre-activation network needs
    assert [e["reduction"] for e in net.feature_info] == [1, 2, 4, 8]
    inter = net.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    assert [t.shape[-1] for t in inter] == [28, 14, 7, 4]
    assert [t.shape[1] for t in inter] == [e["num_chs"] for e in net.feature_info]
    assert torch.equal(inter[-1], feats)


def test_preact_resnet_blocks_are_residual_with_projection_only_where_the_shape_changes():
    net = create_backbone("preact_resnet", widths=[8, 16], depths=[2, 1], stem_width=8)
    first, second = net.stages[0][0], net.stages[1][0]
    assert first.shortcut is None and second.shortcut is not None
    block = first.eval()
    with torch.no_grad():
        for p in block.conv2.parameters():
            p.zero_()  # a zero residual branch: the block is the identity
        x = torch.randn(1, 8, 6, 6)
        assert torch.equal(block(x), x)


def test_preact_resnet_stages_freeze_and_train():
    net = create_backbone("preact_resnet", widths=[8, 16, 32], depths=[1, 1, 1])
    groups = backbone_stages(net)
    assert len(groups) == 4 and groups[0] == [net.stem]  # stem + three stages
    frozen = freeze_stages(net, 1)
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    out = net.forward_features(torch.randn(2, 3, 16, 16)).sum()
    out.backward()
    assert net.stem.weight.grad is None and net.stages[2][0].conv1.weight.grad.abs().sum() > 0


def test_preact_resnet_rejects_bad_shapes_and_pretrained_weights():
    with pytest.raises(ValueError, match="one depth >= 1 per width"):
        create_backbone("preact_resnet", widths=[8, 16], depths=[1])
    with pytest.raises(ValueError, match="one depth >= 1 per width"):
        create_backbone("preact_resnet", widths=[8], depths=[0])
    with pytest.raises(ValueError, match="preact_resnet has no pretrained weights"):
        create_backbone("preact_resnet", pretrained=True)


def test_cifar_crop_shifts_the_image_without_rescaling_it():
    """crop_padding: the output is the (resized) input shifted by at most N pixels, padded with the mean colour
    (zero after normalisation); RandomResizedCrop would rescale it."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    cfg = DataConfig(image_size=28, resize_mode="stretch", crop_padding=3, rotation_degrees=0, hflip_p=0,
                     color_jitter=0)
    transform = build_transforms(cfg, train=True)
    reference = transform.normalize(Image.fromarray(pixels))
    target = {"landmarks": np.zeros((8, 2)), "visibility": np.zeros(8), "present": np.zeros(8),
              "bbox": np.array([0, 0, 27, 27], np.float32)}
    shifts = set()
    torch.manual_seed(0)
    for _ in range(30):
        out, _ = transform(Image.fromarray(pixels), target)
        assert out.shape == (3, 28, 28)
        match = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.allclose(out[:, max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)],
                                   reference[:, max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)],
                                   atol=1e-5)]
        assert match, "the crop is not a shifted copy of the input"
        shifts.add(match[0])
    assert len(shifts) > 5  # random shifts, not one fixed offset
    with pytest.raises(ValueError, match="crop_padding"):
        build_transforms(DataConfig(image_size=28, crop_padding=28), train=True)
    with pytest.raises(ValueError, match="crop_padding"):
        build_transforms(DataConfig(image_size=28, crop_padding=-1), train=True)


def _fashion_mnist_files(directory, n_train: int = 40, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):  # a bright bar whose row tells the class: learnable
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 250
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (directory / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.astype(np.uint8)
                                                                                .tobytes()))


@pytest.mark.parametrize("recipe", ["fashion-mnist", "fashion-mnist-preact"])
def test_fashion_mnist_recipes_train_a_few_batches_from_the_cli(recipe, tmp_path):
    from fashionlens.cli import main
    from fashionlens.training.checkpoint import load_model

    _fashion_mnist_files(tmp_path / "fm")
    out = tmp_path / "run"
    code = main(["train", "--recipe", recipe, "--data", f"fashion-mnist:{tmp_path / 'fm'}", "--out", str(out),
                 "--quiet", "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "data.num_workers=0",
                 "--set", "train.checkpoint_every=0",
                 # inductor compiles for ~1 min on 2 cores; the compile switch is tested in test_trainer_device.py
                 "--set", "train.compile=false"])
    assert code == 0
    with open(out / "metrics.jsonl", encoding="utf-8") as f:
        row = json.loads(f.readline())
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"])
    model, cfg, _ = load_model(str(out))
    assert cfg.data.image_size in (28, 32) and model.tta_flip
    with torch.no_grad():
        assert model(torch.randn(1, 3, cfg.data.image_size, cfg.data.image_size))["category"].shape == (1, 10)
