"""Run configuration: small dataclasses with defaults, read from and written to YAML.

The resolved config is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class DataConfig:
    spec: str = ""  # data spec string, e.g. "garments:data/garments" (see fashionlens.data.readers)
    image_size: int = 128  # side of the square network input, pixels
    crop_to_bbox: bool = True  # crop to the annotated box (with margin) before resizing, when a box exists
    bbox_margin: float = 0.1  # margin added around the box, as a fraction of its width/height
    rrc_scale: tuple[float, float] = (0.6, 1.0)  # RandomResizedCrop area range (train only)
    rrc_ratio: tuple[float, float] = (0.75, 1.333)  # RandomResizedCrop aspect range (train only)
    rotation_degrees: float = 15.0  # random rotation range +-degrees (train only; up to 50)
    hflip_p: float = 0.5  # horizontal flip probability (train only); landmarks swap left/right
    color_jitter: float = 0.3  # brightness/contrast/saturation jitter strength (train only; 0 disables)
    random_erasing: float = 0.0  # probability of random erasing (train only)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # normalisation mean (follows the backbone)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # normalisation std (follows the backbone)
    num_workers: int = 0  # DataLoader worker processes
    skip_missing: bool = False  # drop samples whose image file is missing instead of failing


@dataclass
class RunConfig:
    """Top-level config: one section per concern (more sections join as the system grows)."""

    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0  # global random seed
    threads: int = 0  # torch intra-op threads (0 = library default)


def to_dict(cfg: Any) -> dict:
    """Dataclass -> plain dict (tuples become lists, ready for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def _build(cls: type, values: dict, where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def from_dict(values: dict, cls: type = RunConfig) -> Any:
    """Plain dict -> config dataclass; unknown keys raise ValueError naming them."""
    return _build(cls, values or {}, cls.__name__)


def load_yaml(path: str, cls: type = RunConfig) -> Any:
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return from_dict(values, cls)


def save_yaml(cfg: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
