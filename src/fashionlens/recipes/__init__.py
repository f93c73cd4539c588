"""Named training recipes shipped with fashionlens: ``recipes/NAME.yaml`` files holding a RunConfig."""

from __future__ import annotations

from importlib import resources

from fashionlens.config import RunConfig, load_yaml


def available() -> list[str]:
    """Names of the shipped recipes."""
    folder = resources.files("fashionlens") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name: str) -> RunConfig:
    """The RunConfig of recipe ``name``; ValueError listing the recipes when unknown."""
    if name not in available():
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(available()) or 'none'}")
    folder = resources.files("fashionlens") / "recipes"
    with resources.as_file(folder / f"{name}.yaml") as path:
        return load_yaml(str(path))
