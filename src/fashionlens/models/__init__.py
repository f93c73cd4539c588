"""Models: backbones (timm contract) and the multi-task FashionNet."""

from fashionlens.models.backbones import backbone_normalization, create_backbone, create_imagenet_classifier
from fashionlens.models.fashionnet import PRESETS, FashionNet, build_model, create_model

__all__ = ["PRESETS", "FashionNet", "backbone_normalization", "build_model", "create_backbone",
           "create_imagenet_classifier", "create_model"]
