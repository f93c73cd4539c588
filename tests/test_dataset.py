"""Image decoding, the GarmentDataset batch contract, and the P x K sampler."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fashionlens.config import DataConfig
from fashionlens.data.dataset import GarmentDataset, PackedSamples, PKSampler, build_item_index
from fashionlens.data.decode import load_image
from fashionlens.data.samples import FULL, LOWER, OCCLUDED, TRUNCATED, UPPER, DatasetInfo, Sample, SampleSet
from fashionlens.data.transforms import build_transforms

# ---------------------------------------------------------------- decoding


def save(img: Image.Image, path, **kw) -> str:
    img.save(path, **kw)
    return str(path)


def test_rgb_and_greyscale_modes(tmp_path):
    grey = Image.new("L", (8, 6), 77)
    out = load_image(save(grey, tmp_path / "g.png"))
    assert out.mode == "RGB" and out.size == (8, 6) and out.getpixel((0, 0)) == (77, 77, 77)
    bw = Image.new("1", (8, 6), 1)
    assert load_image(save(bw, tmp_path / "b.png")).getpixel((3, 3)) == (255, 255, 255)
    pal = Image.new("RGB", (8, 6), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert load_image(save(pal, tmp_path / "p.png")).getpixel((1, 1)) == (10, 200, 30)


def test_sixteen_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    a = np.array([[0, 32896, 65535, 1000]], np.uint16)
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    out = np.asarray(load_image(save(img, tmp_path / "w.png")))
    assert out[0, :, 0].tolist() == [0, 128, 255, 4]
    dark = Image.fromarray(np.array([[0, 200, 514]], np.uint16))  # a dark 16-bit image stays dark
    assert np.asarray(load_image(save(dark, tmp_path / "d.png")))[0, :, 0].tolist() == [0, 1, 2]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    out = load_image(save(rgba, tmp_path / "a.png"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (255, 0, 0)
    la = Image.new("LA", (4, 4), (0, 128))
    value = load_image(save(la, tmp_path / "la.png")).getpixel((2, 2))
    assert value[0] == value[1] == value[2] and 120 <= value[0] <= 135  # black at ~half alpha on white
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((3, 3), 1)
    pal.info["transparency"] = 0
    out = load_image(save(pal, tmp_path / "t.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((3, 3)) == (255, 0, 0)


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    r, g, b = load_image(save(cmyk, tmp_path / "c.jpg", quality=95)).getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    out = load_image(save(img, tmp_path / "o.jpg", exif=exif, quality=95))
    assert out.size == (20, 40)
    assert out.getpixel((10, 5))[0] > 200 and out.getpixel((10, 35))[2] > 200  # red on top now


def test_multi_frame_keeps_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(str(path)).getpixel((4, 4)) == (255, 0, 0)


def test_in_memory_array_sample_needs_no_file():
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    s = Sample(image="/nonexistent/fmnist/17.png", source="train-images:17", array=pixels)
    out = load_image(s)
    assert out.mode == "RGB" and out.size == (28, 28) and out.getpixel((5, 1)) == (33, 33, 33)
    with pytest.raises(ValueError, match="train-images:17"):
        load_image(Sample(image="x", source="train-images:17", array=np.zeros((2, 3, 5), np.uint8)))


def test_broken_files_raise_value_error_naming_the_file(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_image(str(truncated))
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    with pytest.raises(ValueError, match="notes.jpg.*not a readable image"):
        load_image(str(text))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(str(tmp_path / "missing.jpg"))


def test_pixel_limit_guards_against_decompression_bombs(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (40, 40)), tmp_path / "big.png")
    with pytest.raises(ValueError, match="big.png.*decompression bomb"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=1600).size == (40, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own check (> 2x its limit) is caught too
    with pytest.raises(ValueError, match="big.png.*decompression bomb"):
        load_image(path, max_pixels=10**9)


# ---------------------------------------------------------------- dataset


def eval_tf(size: int = 32, **kw):
    cfg = DataConfig(image_size=size, resize_mode="stretch", crop_to_bbox=False, **kw)
    return build_transforms(cfg, train=False)


@pytest.fixture()
def sample_set(tmp_path) -> SampleSet:
    paths = []
    for i in range(3):
        paths.append(save(Image.new("RGB", (60, 40), (40 * i, 90, 200)), tmp_path / f"img{i}.png"))
    upper = Sample(
        image=paths[0], source="list_bbox.txt:3", category=4, clothes_type=UPPER,
        attributes=np.array([1, -1, 0, 1], np.int8),
        landmarks=np.array([[10, 5], [50, 5], [2, 20], [58, 20], [15, 35], [45, 35]], np.float32),
        visibility=np.array([0, 1, 0, 0, 0, 0], np.int8),
        bbox=(5.0, 2.0, 55.0, 38.0), item_id="id_07", domain="consumer", split="train",
    )
    lower = Sample(
        image=paths[1], source="list_bbox.txt:4", category=1, clothes_type=LOWER,
        landmarks=np.array([[20, 10], [40, 10], [18, 39], [42, 39]], np.float32),
        visibility=np.array([0, 0, 2, 0], np.int8), item_id="id_02", domain="shop",
    )
    bare = Sample(image=paths[2], source="list_bbox.txt:5")
    pixels = np.full((28, 28), 200, np.uint8)
    mnist = Sample(image="fmnist/9.png", source="t10k-images:9", category=9, array=pixels, item_id="id_02")
    info = DatasetInfo(name="tiny", attributes=["a", "b", "c", "d"])
    return SampleSet([upper, lower, bare, mnist], info)


CONTRACT = {
    "image": (torch.float32, (3, 32, 32)),
    "category": (torch.int64, ()),
    "clothes_type": (torch.int64, ()),
    "attributes": (torch.float32, (4,)),
    "attribute_mask": (torch.float32, (4,)),
    "landmarks": (torch.float32, (8, 2)),
    "visibility": (torch.int64, (8,)),
    "landmark_mask": (torch.bool, (8,)),
    "bbox": (torch.float32, (4,)),
    "has_bbox": (torch.bool, ()),
    "item": (torch.int64, ()),
    "domain": (torch.int64, ()),
    "index": (torch.int64, ()),
    "landmark_affine": (torch.float32, (2, 2)),  # the eval transform is deterministic
}


def test_items_follow_the_batch_contract(sample_set):
    ds = GarmentDataset(sample_set, eval_tf())
    assert len(ds) == 4 and ds.num_attributes == 4
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == set(CONTRACT)
        for key, (dtype, shape) in CONTRACT.items():
            assert item[key].dtype == dtype and tuple(item[key].shape) == shape, key
        assert item["index"] == i
        assert item["landmarks"].min() >= 0 and item["landmarks"].max() <= 1


def test_label_values(sample_set):
    ds = GarmentDataset(sample_set, eval_tf())
    up, low, bare, mnist = (ds[i] for i in range(4))
    assert ds.items == ["id_02", "id_07"]
    assert (up["item"], low["item"], bare["item"], mnist["item"]) == (1, 0, -1, 0)
    assert (up["domain"], low["domain"], bare["domain"]) == (1, 0, -1)
    assert (up["category"], bare["category"], up["clothes_type"], bare["clothes_type"]) == (4, -1, UPPER, 0)
    assert up["attributes"].tolist() == [1, 0, 0, 1] and up["attribute_mask"].tolist() == [1, 1, 0, 1]
    assert bare["attributes"].sum() == 0 and bare["attribute_mask"].sum() == 0
    assert up["landmark_mask"].tolist() == [True, True, True, True, False, False, True, True]
    assert low["landmark_mask"].tolist() == [False] * 4 + [True] * 4
    assert not bare["landmark_mask"].any() and (bare["landmarks"] == 0).all()
    assert up["visibility"][1] == OCCLUDED and up["visibility"][4] == TRUNCATED  # absent slot
    assert low["visibility"][6] == TRUNCATED  # annotated as truncated
    assert up["has_bbox"] and not bare["has_bbox"] and (bare["bbox"] == 0).all()


def test_landmarks_and_box_are_normalised_to_the_output_image(sample_set):
    ds = GarmentDataset(sample_set, eval_tf())  # plain resize 60x40 -> 32x32
    up = ds[0]
    expected = (torch.tensor([10.0, 5.0]) + 0.5) / torch.tensor([60.0, 40.0])  # pixel centre / size
    torch.testing.assert_close(up["landmarks"][0], expected)
    torch.testing.assert_close(up["bbox"], torch.tensor([5 / 60, 2 / 40, 55 / 60, 38 / 40]))


def test_crop_to_box_marks_landmarks_outside_as_truncated(sample_set):
    cfg = DataConfig(image_size=32, resize_mode="stretch", crop_to_bbox=True, bbox_margin=0.0)
    sample = sample_set.samples[0]
    sample.bbox = (8.0, 0.0, 52.0, 40.0)  # cuts off the sleeves at x=2 and x=58
    up = GarmentDataset([sample], build_transforms(cfg, train=False), num_attributes=4)[0]
    assert up["visibility"][2] == TRUNCATED and up["visibility"][3] == TRUNCATED
    assert up["visibility"][0] == 0
    torch.testing.assert_close(up["bbox"], torch.tensor([0.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize("mode", ["pad", "stretch"])
def test_landmark_affine_maps_the_targets_back_to_the_original_image(sample_set, mode):
    # a non-square 60 x 40 photo, cropped to its box (with margin), resized (and padded) to 32 x 32
    cfg = DataConfig(image_size=32, resize_mode=mode, crop_to_bbox=True, bbox_margin=0.1)
    up = GarmentDataset(sample_set, build_transforms(cfg, train=False))[0]
    sample = sample_set.samples[0]
    xy, _, present = sample.unified_landmarks()
    visible = (up["visibility"] == 0).numpy() & present
    assert visible.sum() >= 4
    back = up["landmarks"] * up["landmark_affine"][0] + up["landmark_affine"][1]
    expected = (xy + 0.5) / np.array([60, 40], np.float32)  # DeepFashion's frame: pixel centre / original size
    np.testing.assert_allclose(back.numpy()[visible], expected[visible], atol=1e-6)


def test_train_items_have_no_affine_and_batches_stay_uniform(sample_set):
    train = GarmentDataset(sample_set, build_transforms(DataConfig(image_size=32), train=True))
    assert all("landmark_affine" not in train[i] for i in range(len(train)))
    batch = next(iter(DataLoader(GarmentDataset(sample_set, eval_tf()), batch_size=4)))
    assert batch["landmark_affine"].shape == (4, 2, 2)
    # plain resize 60 x 40 -> 32 x 32: the unit frame is the original frame
    torch.testing.assert_close(batch["landmark_affine"][0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_categories_can_be_dropped(sample_set):
    ds = GarmentDataset(sample_set, eval_tf(), use_categories=False)
    assert all(ds[i]["category"] == -1 for i in range(len(ds)))
    assert ds.category_labels.tolist() == [-1, -1, -1, -1]
    assert GarmentDataset(sample_set, eval_tf()).category_labels.tolist() == [4, 1, -1, 9]


@pytest.mark.parametrize("workers", [0, 2])
def test_default_collate(sample_set, workers):
    ds = GarmentDataset(sample_set, build_transforms(DataConfig(image_size=32), train=True))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=workers)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["landmarks"].shape == (4, 8, 2)
    assert batch["index"].tolist() == [0, 1, 2, 3] and batch["has_bbox"].dtype == torch.bool


def test_decode_errors_name_image_and_annotation(sample_set, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    samples = [
        Sample(image=str(bad), source="list_eval_partition.txt:12"),
        Sample(image=str(tmp_path / "gone.jpg"), source="x.txt:3"),
    ]
    ds = GarmentDataset(samples, eval_tf())
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:12.*broken.jpg"):
        ds[0]
    with pytest.raises(FileNotFoundError, match=r"x.txt:3.*gone.jpg"):
        ds[1]


def test_attribute_length_mismatch_and_given_item_table(sample_set):
    with pytest.raises(ValueError, match="list_bbox.txt:3"):
        GarmentDataset(sample_set, eval_tf(), num_attributes=5)
    ds = GarmentDataset(sample_set, eval_tf(), item_index={"id_07": 3})
    assert ds.item_labels.tolist() == [3, -1, -1, -1]
    assert build_item_index(sample_set.samples) == {"id_02": 0, "id_07": 1}


# ---------------------------------------------------------------- P x K sampler


LABELS = np.array([0] * 6 + [1] * 1 + [2] * 3 + [3] * 5 + [-1] * 4 + [4] * 2 + [5] * 7 + [6] * 4 + [7] * 1)


def check_batches(batches, p, k, labels=LABELS, allowed=None):
    for batch in batches:
        assert len(batch) == p * k
        counts = Counter(labels[batch].tolist())
        assert len(counts) == p and set(counts.values()) == {k}
        if allowed is not None:
            assert set(counts) <= allowed


def test_pk_batches_hold_p_items_times_k_images():
    sampler = PKSampler(LABELS, p=3, k=4, seed=1, length=20)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    check_batches(batches, 3, 4, allowed={0, 2, 3, 4, 5, 6})  # never single-image (1, 7) or unknown (-1)
    for batch in batches:  # items with >= k images use k distinct images
        for item in {0, 3, 5, 6}:
            picked = [i for i in batch if LABELS[i] == item]
            assert len(picked) in (0, 4) and len(set(picked)) == len(picked)
    seen = Counter(LABELS[i] for b in batches for i in b)
    assert set(seen) == {0, 2, 3, 4, 5, 6}  # every eligible item is visited


def test_pk_without_replacement_skips_small_items():
    sampler = PKSampler(LABELS, p=2, k=5, replace=False)
    assert len(sampler) == 1  # items 0, 3, 5 qualify: one pass = 3 // 2 batches
    check_batches(list(PKSampler(LABELS, p=2, k=5, replace=False, length=10)), 2, 5, allowed={0, 3, 5})


def test_pk_determinism_and_epochs():
    a, b = PKSampler(LABELS, 2, 2, seed=7, length=6), PKSampler(LABELS, 2, 2, seed=7, length=6)
    assert list(a) == list(b) and list(a) == list(a)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(PKSampler(LABELS, 2, 2, seed=8, length=6)) != first


def test_pk_refuses_impossible_requests():
    with pytest.raises(ValueError, match="need p=7"):
        PKSampler(LABELS, p=7, k=2)
    with pytest.raises(ValueError, match="k >= 2"):
        PKSampler(LABELS, p=2, k=1)


def test_pk_sampler_drives_a_dataloader(tmp_path):
    img = save(Image.new("RGB", (20, 20), (9, 9, 9)), tmp_path / "x.png")
    samples = [Sample(image=img, source=f"m.csv:{i}", item_id=f"item{i // 3}", clothes_type=FULL) for i in range(12)]
    ds = GarmentDataset(samples, eval_tf(16))
    loader = DataLoader(ds, batch_sampler=PKSampler(ds.item_labels, p=2, k=3, seed=0, length=3))
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch["image"].shape == (6, 3, 16, 16)
        assert sorted(Counter(batch["item"].tolist()).values()) == [3, 3]


def test_packed_samples_give_back_every_sample_and_index_like_a_list():
    samples = [Sample(image=f"img/{i}.jpg", category=i % 3, item_id=f"id_{i // 2}", attributes=np.arange(i % 4) - 1,
                      bbox=(1.0, 2.0, 3.0 + i, 4.0), source=f"list.txt:{i + 3}") for i in range(7)]
    packed = PackedSamples(samples)
    assert len(packed) == 7
    for a, b in zip(packed, samples):
        assert (a.image, a.category, a.item_id, a.bbox, a.source) == (b.image, b.category, b.item_id, b.bbox, b.source)
        assert np.array_equal(a.attributes, b.attributes)
    assert packed[-1].image == "img/6.jpg" and [s.image for s in packed[2:5]] == ["img/2.jpg", "img/3.jpg", "img/4.jpg"]
    assert packed[3] is not packed[3]  # a fresh copy per access: nothing in the buffer is a live object
    with pytest.raises(IndexError, match="sample index 7 out of range for 7 samples"):
        packed[7]
    assert len(PackedSamples([])) == 0 and list(PackedSamples([])) == []


def test_dataset_labels_survive_packing():
    samples = [Sample(image=f"{i}.jpg", category=i % 2, item_id=f"it{i % 3}") for i in range(6)]
    ds = GarmentDataset(samples, build_transforms(DataConfig(image_size=16), train=False))
    assert isinstance(ds.samples, PackedSamples) and len(ds) == 6
    assert ds.item_labels.tolist() == [0, 1, 2, 0, 1, 2] and ds.category_labels.tolist() == [0, 1, 0, 1, 0, 1]
    ds.item_labels[0] = 99  # a copy: the dataset's own labels stay
    assert ds.item_labels[0] == 0
