"""Joint image + landmark + box transforms, built on ``torchvision.transforms.v2``.

A transform is a callable ``(image, target) -> (tensor, target)``:

* ``image``: an RGB ``PIL.Image`` (from :func:`fashionlens.data.decode.load_image`).
* ``target``: a dict with ``"landmarks"`` (8, 2) pixels on the 8 unified slots, ``"visibility"`` (8,)
  0 visible / 1 occluded / 2 truncated, ``"present"`` (8,) bool (slot exists for the clothes type) and
  ``"bbox"`` (4,) x1, y1, x2, y2 in pixels or None.  The returned target has the same keys, in pixels
  of the OUTPUT image, with ``visibility`` set to 2 where a landmark left the frame, the box clipped to
  the frame (None when nothing of it is left), and absent slots zeroed.
* the returned tensor is float32 (3, S, S), normalised with ``cfg.mean`` / ``cfg.std``.

Coordinate convention: landmark pixels are pixel *indices* (the centre of pixel ``i`` is ``i``, as
DeepFashion writes them); boxes are edges (``x2 = x1 + width``).  Inside the pipeline landmarks are
shifted by +0.5 to continuous coordinates, the convention of v2's resize, crop and rotation kernels.
v2's keypoint flip uses ``W - 1 - x`` (index convention), so :class:`SlotHorizontalFlip` flips
keypoints itself (``W - x`` in continuous coordinates) and also swaps the left/right slots, which v2
cannot know about.  Everything else is stock torchvision 0.28 (KeyPoints are supported by crop, pad,
resize, resized_crop and rotate with ``expand=False``).

Resizing (``cfg.resize_mode``): ``"pad"`` (default) keeps the aspect ratio and pads to a square with
the mean colour (zero after normalisation), so a long skirt stays long; ``"stretch"`` squashes the
crop to a square like FashionNet.  Train: crop to the box with a margin, pad, RandomResizedCrop (or, with
``crop_padding``, the CIFAR crop: resize, pad N pixels, random crop back),
RandomRotation, flip with slot swap, ColorJitter (no hue: colour identifies items), RandomErasing
(image only: erased landmarks keep their visibility).
Eval: crop to the box with a margin, resize (longer side), pad -- deterministic.

Back to the original image: a deterministic pipeline (crop, pad, resize only) is a per-axis affine map, so
:class:`GarmentTransform` carries two probe points (the original image's corners, continuous coordinates
(0, 0) and (W, H)) through the same geometry call and returns ``target["affine"]``, float32 (2, 2), rows
``(scale, offset)`` such that ``original-normalized = unit * scale + offset`` per axis, where ``unit`` is
a [0, 1] coordinate of the output image (:func:`landmarks_to_unit`) and original-normalized is the
continuous pixel coordinate divided by the original (W, H) (so a landmark index x maps to (x + 0.5) / W).
Random pipelines (training) return no ``"affine"``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from fashionlens.config import DataConfig
from fashionlens.data.samples import FLIP_PERMUTATION, NUM_SLOTS, TRUNCATED
from fashionlens.utils import import_torchvision

import_torchvision()
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

Target = dict[str, Any]
JointTransform = Callable[[Image.Image, Target], tuple[torch.Tensor, Target]]
MAX_ROTATION = 50.0  # degrees


class SlotFlags(tv_tensors.TVTensor):
    """Per-slot integers (8, C) that ride along the geometry: v2 passes them through untouched, and
    :class:`SlotHorizontalFlip` permutes their rows with the landmarks."""

    def __new__(cls, data: Any) -> "SlotFlags":
        return cls._to_tensor(data, dtype=torch.int64, device=None, requires_grad=False).as_subclass(cls)


class CropToBox(v2.Transform):
    """Crop to the sample's box enlarged by ``margin`` x its width/height on each side, clipped to the
    image (no padding).  Does nothing when the sample has no (or a degenerate) box."""

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"bbox margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = [x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)]
        if not boxes or boxes[0].numel() < 4:
            return {}
        height, width = v2.query_size(flat_inputs)
        box = F.convert_bounding_box_format(boxes[0], new_format="XYXY").reshape(-1, 4)[0].tolist()
        mx, my = self.margin * (box[2] - box[0]), self.margin * (box[3] - box[1])
        left, top = max(0, math.floor(box[0] - mx)), max(0, math.floor(box[1] - my))
        right, bottom = min(width, math.ceil(box[2] + mx)), min(height, math.ceil(box[3] + my))
        if right - left < 2 or bottom - top < 2:
            return {}
        return dict(top=top, left=left, height=bottom - top, width=right - left)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params:
            return inpt
        return self._call_kernel(F.crop, inpt, **params)


class PadToSquare(v2.Transform):
    """Pad the shorter side (centred) so the image is square; ``fill`` is the RGB padding colour 0..255."""

    def __init__(self, fill: Sequence[int] = (0, 0, 0)) -> None:
        super().__init__()
        self.fill = [int(c) for c in fill]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        side = max(height, width)
        left, top = (side - width) // 2, (side - height) // 2
        return dict(padding=[left, top, side - width - left, side - height - top])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=self.fill, padding_mode="constant")


class SlotHorizontalFlip(v2.RandomHorizontalFlip):
    """Horizontal flip that also swaps left/right landmark slots (``permutation``, default
    :data:`FLIP_PERMUTATION`) in :class:`~torchvision.tv_tensors.KeyPoints` (8, 2) and :class:`SlotFlags`.

    After the flip, slot ``left_collar`` holds the point that was ``right_collar``: the garment's left
    side is now where its right side was, so slot order keeps following semantics.
    """

    def __init__(self, p: float = 0.5, permutation: Sequence[int] = FLIP_PERMUTATION) -> None:
        super().__init__(p=p)
        self.permutation = list(permutation)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.KeyPoints):
            points = inpt.as_subclass(torch.Tensor).clone()
            points[..., 0] = inpt.canvas_size[1] - points[..., 0]  # continuous coords: x -> W - x
            return tv_tensors.wrap(points[..., self.permutation, :], like=inpt)
        if isinstance(inpt, SlotFlags):
            return SlotFlags(inpt.as_subclass(torch.Tensor)[self.permutation])
        return super().transform(inpt, params)


#: Geometry steps that are deterministic per-axis affine maps (scale and translation per axis).
AFFINE_STEPS = (CropToBox, PadToSquare, v2.Resize, v2.Identity)


class GarmentTransform:
    """``(PIL image, target) -> (float32 (3, S, S) tensor, target)``: geometry on image + landmarks + box,
    then photometric changes and normalisation on the image only (see the module docstring).

    When every geometry step is one of :data:`AFFINE_STEPS` (the eval pipeline), ``deterministic`` is True
    and the returned target also holds ``"affine"`` (2, 2): the map from output [0, 1] coordinates to
    coordinates normalized by the original image (module docstring)."""

    def __init__(
        self,
        geometry: Sequence[v2.Transform],
        photometric: Sequence[v2.Transform] = (),
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        erasing_p: float = 0.0,
    ) -> None:
        self.geometry = v2.Compose(list(geometry) or [v2.Identity()])
        self.deterministic = all(isinstance(step, AFFINE_STEPS) for step in self.geometry.transforms)
        self.photometric = v2.Compose(list(photometric) or [v2.Identity()])
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.erasing = v2.RandomErasing(p=erasing_p, value=0) if erasing_p > 0 else None  # 0 = mean colour

    def __call__(self, image: Image.Image, target: Target) -> tuple[torch.Tensor, Target]:
        data = _pack(image, target, probes=self.deterministic)
        data = self.geometry(data)
        pixels = self.normalize(self.photometric(data["image"]))
        if self.erasing is not None:
            pixels = self.erasing(pixels)
        return pixels, _unpack(data)

    def normalize(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """RGB image (PIL, or uint8 (3, H, W) tensor) -> float32 (3, H, W), ``(x / 255 - mean) / std``.

        Done in NumPy: per-image tensor ops would use torch's intra-op threads, which on a busy
        machine made loading several times slower than the single-threaded work itself.
        """
        a = np.asarray(image, dtype=np.float32)
        if isinstance(image, torch.Tensor):
            a = a.transpose(1, 2, 0)
        a = (a * (1.0 / (255.0 * self.std)) - self.mean / self.std).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return (
            f"GarmentTransform(\n  geometry={self.geometry},\n  photometric={self.photometric},\n"
            f"  mean={self.mean.tolist()}, std={self.std.tolist()}, erasing={self.erasing})"
        )


def _pack(image: Image.Image, target: Target, probes: bool = False) -> dict[str, Any]:
    """Target (index-convention pixels) -> tv_tensors for v2 (continuous coordinates); with ``probes`` also
    the image corners (0, 0) and (W, H) as ``"probes"`` KeyPoints (2, 2), for :func:`_unit_affine`."""
    height, width = F.get_size(image)
    xy = torch.as_tensor(np.asarray(target["landmarks"], np.float32)).reshape(NUM_SLOTS, 2)
    vis = torch.as_tensor(np.asarray(target["visibility"]), dtype=torch.int64).reshape(NUM_SLOTS)
    present = torch.as_tensor(np.asarray(target["present"]), dtype=torch.int64).reshape(NUM_SLOTS)
    data: dict[str, Any] = {
        "image": image,
        "keypoints": tv_tensors.KeyPoints(xy + 0.5, canvas_size=(height, width)),
        "flags": SlotFlags(torch.stack([vis, present], dim=1)),
    }
    if probes:
        corners = torch.tensor([[0.0, 0.0], [float(width), float(height)]], dtype=torch.float64)
        data["probes"] = tv_tensors.KeyPoints(corners, canvas_size=(height, width))
    if target.get("bbox") is not None:
        box = torch.as_tensor(np.asarray(target["bbox"], np.float32)).reshape(1, 4)
        data["boxes"] = tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=(height, width))
    return data


def _unpack(data: dict[str, Any]) -> Target:
    """tv_tensors after the geometry -> target in output pixels (index convention), truncation marked."""
    height, width = F.get_size(data["image"])
    points = data["keypoints"].as_subclass(torch.Tensor)
    flags = data["flags"].as_subclass(torch.Tensor)
    present = flags[:, 1].bool()
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width) & (points[:, 1] >= 0) & (points[:, 1] <= height)
    visibility = torch.where(present & inside, flags[:, 0], torch.full_like(flags[:, 0], TRUNCATED))
    landmarks = torch.where(present[:, None], points - 0.5, torch.zeros_like(points))
    bbox = None
    if "boxes" in data:
        box = F.clamp_bounding_boxes(data["boxes"]).as_subclass(torch.Tensor).reshape(4).float()
        if box[2] > box[0] and box[3] > box[1]:
            bbox = box
    out = {"landmarks": landmarks.float(), "visibility": visibility, "present": present, "bbox": bbox}
    if "probes" in data:
        out["affine"] = _unit_affine(data["probes"].as_subclass(torch.Tensor), height, width)
    return out


def _unit_affine(corners: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float32 (2, 2) rows (scale, offset): output [0, 1] coordinate -> original-normalized coordinate.

    ``corners`` (2, 2) are where the original image's corners (0, 0) and (W, H) landed, in continuous
    output pixels: per axis ``out = a * in + b`` with ``b = corners[0]``, ``a * (W, H) = corners[1] - b``, so
    ``in / (W, H) = (unit * (width, height) - corners[0]) / (corners[1] - corners[0])``."""
    c = corners.double().reshape(2, 2)
    extent = c[1] - c[0]
    if (extent <= 0).any():
        raise ValueError(f"the geometry is not an orientation-preserving per-axis affine map (corners -> {c.tolist()})")
    size = torch.tensor([float(width), float(height)], dtype=torch.float64)
    return torch.stack([size / extent, -c[0] / extent + 0.0]).float()  # + 0.0: no -0.0


def eval_size(cfg: DataConfig) -> int:
    """Side of the square network input at evaluation and inference: ``round(image_size * eval_scale)``.

    Random-resized-crop training shows objects larger than the whole-image eval transform does (a crop of a
    fraction s of the area magnifies by 1/sqrt(s)); testing at a higher resolution than training closes that
    gap (Touvron et al., "Fixing the train-test resolution discrepancy", 2019)."""
    return max(8, int(round(cfg.image_size * cfg.eval_scale)))


def build_transforms(cfg: DataConfig, train: bool) -> GarmentTransform:
    """The train (random) or eval (deterministic) pipeline described by ``cfg``.

    Output: float32 (3, S, S) normalised with ``cfg.mean``/``cfg.std``, S = ``cfg.image_size`` for training
    and ``eval_size(cfg)`` for evaluation, and the target in output pixels.  Randomness comes from torch's
    global generator (seed it with ``torch.manual_seed`` for a reproducible sequence; DataLoader workers get
    distinct seeds).
    """
    check_config(cfg)
    size = int(cfg.image_size) if train else eval_size(cfg)
    fill = [int(round(255 * m)) for m in cfg.mean]  # padding/rotation fill: zero after normalisation
    geometry: list[v2.Transform] = [CropToBox(cfg.bbox_margin)] if cfg.crop_to_bbox else []
    pad = cfg.resize_mode == "pad"
    if train:
        geometry += [PadToSquare(fill)] if pad else []
        if cfg.crop_padding > 0:  # the CIFAR crop: every object keeps its scale, shifted by up to N pixels
            geometry += [v2.Resize([size, size]), v2.RandomCrop(size, padding=int(cfg.crop_padding), fill=fill)]
        else:
            geometry.append(v2.RandomResizedCrop(size, scale=tuple(cfg.rrc_scale), ratio=tuple(cfg.rrc_ratio)))
        if cfg.rotation_degrees > 0:
            bilinear = v2.InterpolationMode.BILINEAR
            geometry.append(v2.RandomRotation(cfg.rotation_degrees, interpolation=bilinear, fill=fill))
        if cfg.hflip_p > 0:
            geometry.append(SlotHorizontalFlip(cfg.hflip_p))
    elif pad:
        geometry += [v2.Resize(None, max_size=size), PadToSquare(fill), v2.Resize([size, size])]
    else:
        geometry.append(v2.Resize([size, size]))
    photometric: list[v2.Transform] = []
    if train and cfg.color_jitter > 0:
        j = float(cfg.color_jitter)
        photometric.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    erasing = float(cfg.random_erasing) if train else 0.0
    return GarmentTransform(geometry, photometric, cfg.mean, cfg.std, erasing)


class BatchTransform:
    """The training pipeline of the CIFAR-crop configuration applied to a whole batch in a few tensor operations:
    uint8 (B, S, S, 3) images already of the training size -> float32 (B, 3, S, S), the distribution
    :func:`build_transforms` draws per image: normalise, pad ``padding`` pixels with the mean colour (zero after
    normalisation), a random S x S crop (offsets uniform in 0..2 x padding), a mirror with probability
    ``hflip_p``, then ``v2.RandomErasing``'s rectangle (area 0.02-0.33 of the image, aspect 0.3-3.3 log-uniform,
    up to 10 tries, value 0) with probability ``erasing_p``.

    At 28 px the per-image pipeline costs ~1.2 ms of Python per image (~850 images/s on one core), a third of a
    core at the network's training speed, and a loader worker next to two compute threads oversubscribes a
    2-core CPU; the whole batch here costs about a millisecond.  Only for images without landmarks or a box
    (:meth:`GarmentDataset.__getitems__` checks each batch and falls back to the per-image pipeline).
    Randomness comes from torch's global generator, like the per-image pipeline."""

    SCALE, RATIO, TRIES = (0.02, 0.33), (0.3, 3.3), 10  # v2.RandomErasing's defaults

    def __init__(self, size: int, padding: int, hflip_p: float, erasing_p: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.padding = int(size), int(padding)
        self.hflip_p, self.erasing_p = float(hflip_p), float(erasing_p)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, s, p = images.shape[0], self.size, self.padding
        if images.dtype != torch.uint8 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"BatchTransform needs uint8 (B, {s}, {s}, 3) images, got {tuple(images.shape)} "
                             f"{images.dtype}")
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        top, left = torch.randint(0, 2 * p + 1, (2, n))
        ar = torch.arange(s)
        rows = (top[:, None] + ar)[:, None, :, None].expand(n, 3, s, s + 2 * p)  # padded row of output row i
        flip = torch.rand(n) < self.hflip_p
        cols = left[:, None] + torch.where(flip[:, None], ar.flip(0)[None], ar[None])  # mirrored: read right to left
        out = padded.gather(2, rows).gather(3, cols[:, None, None, :].expand(n, 3, s, s))
        if self.erasing_p > 0:
            out = out * (1 - self._erase_masks(n).unsqueeze(1).float())
        return out.contiguous()

    def _erase_masks(self, n: int) -> torch.Tensor:
        """bool (n, S, S): the rectangle each image loses (none for images not drawn or without a fitting try)."""
        s, tries = self.size, self.TRIES
        area = s * s * torch.empty(n, tries).uniform_(*self.SCALE)
        aspect = torch.exp(torch.empty(n, tries).uniform_(math.log(self.RATIO[0]), math.log(self.RATIO[1])))
        h = torch.sqrt(area * aspect).round().long()
        w = torch.sqrt(area / aspect).round().long()
        fits = (h < s) & (w < s)
        first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
        erase = (torch.rand(n) < self.erasing_p) & (first >= 0)
        pick = first.clamp(min=0)[:, None]
        h, w = h.gather(1, pick)[:, 0] * erase, w.gather(1, pick)[:, 0] * erase
        top = (torch.rand(n) * (s - h + 1)).long()
        left = (torch.rand(n) * (s - w + 1)).long()
        ar = torch.arange(s)
        in_rows = (ar[None] >= top[:, None]) & (ar[None] < (top + h)[:, None])
        in_cols = (ar[None] >= left[:, None]) & (ar[None] < (left + w)[:, None])
        return in_rows[:, :, None] & in_cols[:, None, :]


def build_batch_transform(cfg: DataConfig) -> BatchTransform | None:
    """The batched equivalent of the training pipeline, when ``cfg`` describes one that has it: the CIFAR crop
    (``crop_padding`` > 0) with flips and erasing only (no rotation, no colour jitter); else None."""
    check_config(cfg)
    if cfg.crop_padding <= 0 or cfg.rotation_degrees > 0 or cfg.color_jitter > 0:
        return None
    return BatchTransform(cfg.image_size, cfg.crop_padding, cfg.hflip_p, cfg.random_erasing, cfg.mean, cfg.std)


def check_config(cfg: DataConfig) -> None:
    """Raise ValueError naming the first DataConfig field that cannot build a pipeline."""
    scale, ratio, degrees = cfg.rrc_scale, cfg.rrc_ratio, cfg.rotation_degrees
    problems = [
        (cfg.image_size < 8, f"image_size must be >= 8, got {cfg.image_size}"),
        (not 0.5 <= cfg.eval_scale <= 2, f"eval_scale must be in [0.5, 2], got {cfg.eval_scale}"),
        (cfg.resize_mode not in ("pad", "stretch"), f"resize_mode must be 'pad' or 'stretch', got {cfg.resize_mode!r}"),
        (not 0 < scale[0] <= scale[1] <= 1, f"rrc_scale needs 0 < min <= max <= 1, got {scale}"),
        (not 0 < ratio[0] <= ratio[1], f"rrc_ratio needs 0 < min <= max, got {ratio}"),
        (not 0 <= cfg.crop_padding < cfg.image_size, f"crop_padding must be in [0, image_size), got {cfg.crop_padding}"),
        (not 0 <= degrees <= MAX_ROTATION, f"rotation_degrees must be in [0, {MAX_ROTATION:g}], got {degrees}"),
        (not 0 <= cfg.hflip_p <= 1, f"hflip_p must be in [0, 1], got {cfg.hflip_p}"),
        (not 0 <= cfg.random_erasing <= 1, f"random_erasing must be in [0, 1], got {cfg.random_erasing}"),
        (cfg.color_jitter < 0, f"color_jitter must be >= 0, got {cfg.color_jitter}"),
        (len(cfg.mean) != 3 or len(cfg.std) != 3 or min(cfg.std) <= 0, "mean and std need 3 values, std > 0"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(f"DataConfig: {message}")


def landmarks_to_unit(landmarks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Output-pixel landmarks (..., 2) (index convention) -> [0, 1] of the image: ``(x + 0.5) / W``,
    clamped, so 0 is the left edge and 1 the right edge (as ``grid_sample(align_corners=False)``)."""
    scale = torch.tensor([width, height], dtype=torch.float32)
    return ((landmarks.float() + 0.5) / scale).clamp_(0.0, 1.0)


def unit_to_landmarks(unit: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`landmarks_to_unit` (without the clamp): [0, 1] (..., 2) -> pixel indices."""
    return unit.float() * torch.tensor([width, height], dtype=torch.float32) - 0.5


def unit_to_original(unit: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Output [0, 1] coordinates (..., 2) -> coordinates normalized by the original image (``target["affine"]``
    or a batch's ``landmark_affine``: (2, 2), or (B, 2, 2) with ``unit`` (B, ..., 2))."""
    a = affine.float()
    if a.ndim == 3:  # batched: broadcast over the middle dimensions of unit
        a = a.reshape(a.shape[0], *([1] * (unit.ndim - 2)), 2, 2)
    return unit.float() * a[..., 0, :] + a[..., 1, :]


def original_to_unit(normalized: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unit_to_original`: original-normalized (..., 2) -> output [0, 1] coordinates."""
    a = affine.float()
    if a.ndim == 3:
        a = a.reshape(a.shape[0], *([1] * (normalized.ndim - 2)), 2, 2)
    return (normalized.float() - a[..., 1, :]) / a[..., 0, :]


__all__ = [
    "AFFINE_STEPS",
    "BatchTransform",
    "CropToBox",
    "GarmentTransform",
    "JointTransform",
    "PadToSquare",
    "SlotFlags",
    "SlotHorizontalFlip",
    "Target",
    "build_batch_transform",
    "build_transforms",
    "check_config",
    "landmarks_to_unit",
    "original_to_unit",
    "unit_to_landmarks",
    "unit_to_original",
]
