"""The batched CIFAR-crop pipeline (``BatchTransform``): checked against a plain per-image numpy reference, against
the per-image v2 pipeline's statistics, and wired into ``GarmentDataset.__getitems__`` / the DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fashionlens.config import DataConfig
from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.samples import Sample
from fashionlens.data.transforms import BatchTransform, build_batch_transform, build_transforms

MEAN, STD = (0.2, 0.3, 0.4), (0.5, 0.25, 0.2)


def cfg(**kw) -> DataConfig:
    base = dict(image_size=12, resize_mode="stretch", crop_padding=2, rotation_degrees=0.0, hflip_p=0.5,
                color_jitter=0.0, random_erasing=0.0, mean=MEAN, std=STD)
    base.update(kw)
    return DataConfig(**base)


def images(n: int, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def candidates(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every output the crop + flip can give for one image: a plain loop over offsets and mirror."""
    x = (image.astype(np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = np.pad(x.transpose(2, 0, 1), ((0, 0), (pad, pad), (pad, pad)))
    s = image.shape[0]
    out = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = x[:, top:top + s, left:left + s]
            out += [crop, crop[:, :, ::-1]]
    return out


def which(out: np.ndarray, cands: list[np.ndarray]) -> int:
    hits = [k for k, c in enumerate(cands) if np.allclose(out, c, atol=1e-5)]
    assert hits, "output is not a padded crop (or its mirror) of the input"
    return hits[0]


def test_only_the_cifar_crop_configuration_has_a_batched_form():
    assert isinstance(build_batch_transform(cfg()), BatchTransform)
    assert build_batch_transform(cfg(crop_padding=0)) is None  # random-resized crop
    assert build_batch_transform(cfg(rotation_degrees=10.0)) is None
    assert build_batch_transform(cfg(color_jitter=0.2)) is None
    with pytest.raises(ValueError, match="crop_padding"):
        build_batch_transform(cfg(crop_padding=20))


def test_every_output_is_a_crop_of_the_padded_image_and_all_offsets_and_mirrors_occur():
    torch.manual_seed(0)
    x = images(400)
    out = build_batch_transform(cfg())(torch.from_numpy(x)).numpy()
    assert out.shape == (400, 3, 12, 12) and out.dtype == np.float32
    seen = [which(out[i], candidates(x[i], 2)) for i in range(len(x))]
    assert set(seen) == set(range(50))  # 25 offsets x (plain, mirrored)
    mirrored = np.mean([k % 2 for k in seen])
    assert 0.4 < mirrored < 0.6


def test_no_flip_and_the_mean_colour_padding():
    torch.manual_seed(1)
    x = np.full((64, 12, 12, 3), np.round(255 * np.array(MEAN)), np.uint8)  # the mean colour: zero after normalising
    out = build_batch_transform(cfg(hflip_p=0.0))(torch.from_numpy(x)).numpy()
    assert np.abs(out).max() < 0.01  # padding is the mean colour too
    y = images(64, seed=3)
    out = build_batch_transform(cfg(hflip_p=0.0))(torch.from_numpy(y)).numpy()
    assert all(which(out[i], candidates(y[i], 2)) % 2 == 0 for i in range(64))


def test_erasing_matches_the_per_image_pipeline_in_rate_and_area():
    """Erased pixels are exactly 0 in one axis-aligned rectangle; the share of erased images and the erased area
    agree with ``v2.RandomErasing`` in the per-image pipeline (same p, scale, ratio)."""
    c = cfg(hflip_p=0.0, crop_padding=1, image_size=28, random_erasing=0.5)
    x = torch.full((2000, 28, 28, 3), 200, dtype=torch.uint8)  # far from the mean: an erased pixel is a 0
    torch.manual_seed(2)
    out = build_batch_transform(c)(x)
    torch.manual_seed(2)  # the same crops without erasing: erasing draws after the geometry
    plain = build_batch_transform(cfg(hflip_p=0.0, crop_padding=1, image_size=28))(x)
    zero = ((out == 0) & (plain != 0)).all(1)  # (n, S, S): erased (the padding is 0 in both)
    assert torch.equal(out[~zero.unsqueeze(1).expand_as(out)], plain[~zero.unsqueeze(1).expand_as(out)])
    erased = zero.flatten(1).any(1)
    for i in torch.nonzero(erased)[:50, 0]:
        rows, cols = torch.nonzero(zero[i], as_tuple=True)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert zero[i].sum() == h * w  # one full rectangle
    ref = build_transforms(c, train=True)
    from PIL import Image
    pil = Image.fromarray(np.full((28, 28, 3), 200, np.uint8))
    target = {"landmarks": np.zeros((8, 2), np.float32), "visibility": np.full(8, 2), "present": np.zeros(8, bool),
              "bbox": None}
    per_image = torch.stack([ref(pil, target)[0] for _ in range(2000)])
    ref_zero = (per_image.abs() < 1e-6).all(1)  # v2 pads with round(255 * mean): not 0 in the green channel
    ref_erased = ref_zero.flatten(1).any(1)
    assert abs(erased.float().mean() - ref_erased.float().mean()) < 0.05
    area = zero.flatten(1).sum(1)[erased].float().mean() / 784
    ref_area = ref_zero.flatten(1).sum(1)[ref_erased].float().mean() / 784
    assert 0.1 < area < 0.2 and abs(area - ref_area) < 0.02


def test_refuses_images_of_another_size_or_type():
    bt = build_batch_transform(cfg())
    with pytest.raises(ValueError, match="uint8"):
        bt(torch.zeros(2, 10, 10, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        bt(torch.zeros(2, 12, 12, 3))


def _dataset(samples: list[Sample], c: DataConfig) -> GarmentDataset:
    return GarmentDataset(samples, build_transforms(c, train=True), batch_transform=build_batch_transform(c))


def test_dataset_batches_agree_with_items_and_fall_back_when_a_sample_has_a_box():
    c = cfg()
    arrays = images(6)
    samples = [Sample(image=f"img{i}", category=i % 3, array=arrays[i], source=f"mem:{i}") for i in range(6)]
    ds = _dataset(samples, c)
    batch = ds.__getitems__([4, 1, 2])
    single = ds[1]
    assert [int(b["index"]) for b in batch] == [4, 1, 2]
    for key in single:
        assert batch[1][key].shape == single[key].shape and batch[1][key].dtype == single[key].dtype, key
        if key != "image":
            assert torch.equal(batch[1][key], single[key]), key
    which(batch[0]["image"].numpy(), candidates(arrays[4], 2))  # the batched pipeline drew it
    boxed = samples[:2] + [Sample(image="b", category=0, array=arrays[2], bbox=(1, 1, 8, 8), source="mem:b")]
    fallback = _dataset(boxed, c).__getitems__([0, 1, 2])
    assert bool(fallback[2]["has_bbox"]) and not bool(fallback[0]["has_bbox"])
    other_size = samples[:1] + [Sample(image="x", category=0, array=images(1, size=16)[0], source="mem:x")]
    assert _dataset(other_size, c).__getitems__([0, 1])[1]["image"].shape == (3, 12, 12)  # per image: resized


def test_the_dataloader_uses_the_batched_path():
    c = cfg()
    arrays = images(8)
    samples = [Sample(image=f"img{i}", category=i % 2, array=arrays[i], source=f"mem:{i}") for i in range(8)]
    ds = _dataset(samples, c)
    calls = []
    ds.batch_transform = _Spy(ds.batch_transform, calls)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 3, 12, 12) and calls == [4]
    assert batch["category"].tolist() == [0, 1, 0, 1]


class _Spy:
    def __init__(self, inner: BatchTransform, calls: list):
        self.inner, self.calls, self.size = inner, calls, inner.size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return self.inner(x)
