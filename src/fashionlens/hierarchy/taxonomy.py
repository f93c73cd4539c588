"""Category taxonomies: the levels of a tree of dotted category paths ("upper.tops.tee")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hierarchy:
    """Level structure derived from dotted category paths ("upper.tops.tee"): one list of node names per
    level above the leaves, and for each level a map category index -> node index at that level."""

    levels: list[list[str]]
    maps: list[list[int]]

    @classmethod
    def from_paths(cls, paths: list[str]) -> "Hierarchy":
        depth = min((len(p.split(".")) for p in paths), default=0)
        levels, maps = [], []
        for level in range(depth - 1):  # internal levels only (the leaf level is the category head)
            prefixes = [".".join(p.split(".")[: level + 1]) for p in paths]
            names = sorted(set(prefixes))
            levels.append(names)
            maps.append([names.index(x) for x in prefixes])
        return cls(levels, maps)
