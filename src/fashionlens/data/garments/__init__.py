"""Procedural garments, the embedded default data set, written in the DeepFashion layouts
(``render_dataset(out)``; the ``garments:OUT`` reader reads them back).

* ``shapes``: the taxonomy, the attribute vocabulary and the parametric silhouettes (polygons);
* ``textures``: a design painted flat (colours, pattern, fabric) with its landmarks;
* ``scenes``: one view of a design: pose, background, camera, occlusion, JPEG;
* ``renderer``: plan the items and their look-alikes, render every view in parallel, write the annotation files.
"""

from fashionlens.data.garments.renderer import ATTRIBUTES, VERSION, plan_items, render_dataset, sample_design

__all__ = ["ATTRIBUTES", "VERSION", "plan_items", "render_dataset", "sample_design"]
