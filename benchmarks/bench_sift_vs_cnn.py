"""SIFT bag-of-visual-words vs learned (CNN) embeddings: the same retrieval protocols side by side.

    python benchmarks/bench_sift_vs_cnn.py [--run RUN_DIR] [--garments DIR] [--photos DIR]
        [--max-train 1500] [--max-images 0] [--vocab 1000] [--threads 2]

Methods (every one gives L2-normalised vectors compared by cosine similarity):
  - SIFT BoVW: ``fashionlens.baselines.SiftBoVW`` (RootSIFT, 500 keypoints at a longer side of 256 px,
    a k-means vocabulary of ``--vocab`` words fit on TRAIN images only, TF-IDF);
  - ImageNet CNN: EfficientNet-Lite0 with its ImageNet weights, no training: the image resized (longer
    side 224 px), padded to a square, scaled to [-1, 1]; global-average-pooled features (1280-d);
  - trained run (``--run``): ``Predictor.load(RUN_DIR).embed``;
  - "+ geometric re-rank (top K)": the CNN's top ``--rerank`` candidates re-ranked by RANSAC-verified RootSIFT
    matches (``fashionlens.rerank.GeometricReranker``, what ``search --rerank`` does); its cost per query is
    the query's keypoints plus K verifications (gallery keypoints computed once, as the catalog caches them).

(a) Real photos, ``--photos`` (default ../shared/data/clothing-small; skipped with a message if absent):
  - category retrieval on the validation split, leave-one-out, hit = same class: Recall@1/5/10, MAP@R;
  - instance retrieval under distortion: gallery = the validation photos, one query per photo = a
    strongly distorted copy (``fashionlens.evaluation.distortions.distort``, seed = photo index),
    hit = its original: top-1/5/10 accuracy and mAP.
(b) Rendered garments, ``--garments`` (default: render 200 items x 6 views of 128 px into a temp dir):
    in-shop (query -> gallery shop views) and consumer-to-shop (consumer -> shop) top-1/10/20 and mAP
    on the test split, with the protocols of ``fashionlens evaluate``.  Without ``--run`` the CNN column
    is the ImageNet feature extractor.

Limits: ``--max-train`` train images for the SIFT vocabulary (evenly spaced over the sorted list, so every
class is kept); ``--max-images`` caps the evaluated images of each section the same way (0 = all; for the
garments, whole items are kept so that every query keeps its gallery views).
Prints Markdown tables and writes benchmarks/results/sift_vs_cnn.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from _common import PHOTOS, table, write

from fashionlens import read
from fashionlens.baselines import SiftBoVW
from fashionlens.data.decode import load_image
from fashionlens.data.samples import Sample
from fashionlens.evaluation.distortions import distort
from fashionlens.evaluation.report import retrieval_metrics
from fashionlens.evaluation.retrieval import recall_at_k_and_map_at_r, retrieval_topk
from fashionlens.runs import inshop_protocol

Embed = Callable[[list[Image.Image]], np.ndarray]

PHOTO_CATEGORY = ("cat_R@1", "cat_R@5", "cat_R@10", "cat_MAP@R", "ms_per_image")
PHOTO_INSTANCE = ("inst_top1", "inst_top5", "inst_top10", "inst_mAP", "ms_per_distorted_query", "ms_rerank_per_query")
GARMENT_COLUMNS = ("inshop_top1", "inshop_top10", "inshop_top20", "inshop_map", "c2s_top1", "c2s_top10",
                   "c2s_top20", "c2s_map", "ms_per_image")


class ImageNetFeatures:
    """Pooled features of an ImageNet-initialised EfficientNet-Lite0 (no training): (N, 1280) L2-normalised."""

    def __init__(self, size: int = 224, name: str = "tf_efficientnet_lite0"):
        from fashionlens.models.backbones import backbone_normalization, create_backbone

        self.model = create_backbone(name, pretrained=True).eval()
        mean, std = backbone_normalization(name)
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        self.size = size

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        """(3, S, S): the image with its longer side resized to S px, centred on a mean-coloured square."""
        scale = self.size / max(image.size)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        x = torch.from_numpy(np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255.0)
        x = (x.permute(2, 0, 1) - self.mean) / self.std
        out = torch.zeros(3, self.size, self.size)  # 0 = the mean colour after normalisation
        top, left = (self.size - h) // 2, (self.size - w) // 2
        out[:, top:top + h, left:left + w] = x
        return out

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        x = torch.stack([self._tensor(im) for im in images])
        feats = self.model.forward_features(x).mean(dim=(2, 3))  # (B, C)
        return torch.nn.functional.normalize(feats, dim=1).numpy()


def evenly(items: Sequence, limit: int) -> list:
    """At most ``limit`` items evenly spaced over the sequence (0 = all)."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def evenly_items(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """All images of evenly spaced items, about ``limit`` images in all (0 = all): keeps query/gallery pairs."""
    items = sorted({s.item_id for s in samples})
    if limit <= 0 or len(samples) <= limit:
        return list(samples)
    keep = set(evenly(items, max(2, round(limit * len(items) / len(samples)))))
    return [s for s in samples if s.item_id in keep]


def embed_all(methods: dict[str, Embed], images: Iterable[Image.Image], batch: int = 32) -> tuple[dict, dict]:
    """Every method's (N, D) embeddings of the images (streamed in batches) and its milliseconds per image."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    todo: list[Image.Image] = []
    n = 0

    def flush() -> None:
        for name, fn in methods.items():
            start = time.perf_counter()
            out[name].append(np.asarray(fn(todo), np.float32))
            seconds[name] += time.perf_counter() - start

    for image in images:
        todo.append(image)
        n += 1
        if len(todo) == batch:
            flush()
            todo = []
    if todo:
        flush()
    ms = {name: round(1000 * s / max(n, 1), 2) for name, s in seconds.items()}
    return {name: np.concatenate(v) for name, v in out.items()}, ms


def fit_sift(train: Sequence[Sample], args: argparse.Namespace) -> tuple[SiftBoVW, float]:
    """A SIFT BoVW model fit on the train images; seconds taken."""
    start = time.perf_counter()
    model = SiftBoVW(vocab_size=args.vocab, seed=0, workers=args.threads).fit([s.image for s in train])
    return model, time.perf_counter() - start


def cnn_methods(args: argparse.Namespace, imagenet: ImageNetFeatures) -> dict[str, Embed]:
    methods: dict[str, Embed] = {"ImageNet CNN (no training)": imagenet}
    if args.run:
        from fashionlens.inference import Predictor

        methods["trained run"] = Predictor.load(args.run).embed
    return methods


def photos_section(args: argparse.Namespace, imagenet: ImageNetFeatures) -> dict | None:
    """Category and distorted-instance retrieval on real photos; None when the photos are absent."""
    if not os.path.isdir(os.path.join(args.photos, "train")):
        print(f"(a) skipped: real photos not found at {os.path.abspath(args.photos)}")
        return None
    data = read(f"folder:{args.photos}")
    train = evenly(data.split("train").samples, args.max_train)
    val = evenly(data.split("val").samples, args.max_images)
    print(f"(a) photos: SIFT vocabulary from {len(train)} train images, {len(val)} validation images", flush=True)
    sift, fit_s = fit_sift(train, args)
    methods = {"SIFT BoVW": sift.transform, **cnn_methods(args, imagenet)}
    gallery, ms = embed_all(methods, (load_image(s) for s in val))
    distorted = [distort(load_image(s), np.random.default_rng([args.seed, i])) for i, s in enumerate(val)]
    queries, ms_q = embed_all(methods, distorted)
    labels = np.array([s.category for s in val])
    ids = np.arange(len(val))
    rows: dict[str, dict] = {}
    for name in methods:
        cat = recall_at_k_and_map_at_r(gallery[name], labels, ks=(1, 5, 10))
        inst = retrieval_topk(queries[name], ids, gallery[name], ids, ks=(1, 5, 10))
        rows[name] = {**{f"cat_R@{k}": v for k, v in cat["recall_at_k"].items()}, "cat_MAP@R": cat["map_at_r"],
                      **{f"inst_top{k}": v for k, v in inst["top_k_accuracy"].items()},
                      "inst_mAP": inst["mean_average_precision"], "ms_per_image": ms[name],
                      "ms_per_distorted_query": ms_q[name]}
    if args.rerank:
        rows.update(rerank_rows(args, val, distorted, gallery, queries, ms_q, [n for n in methods if n != "SIFT BoVW"]))
    return {"photos": os.path.abspath(args.photos), "train_images": len(train), "val_images": len(val),
            "sift_fit_seconds": round(fit_s, 1), "rerank_candidates": args.rerank, "rows": rows}


def rank_metrics(ranked: list[list[int]], truth: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Top-k accuracy and mAP of ranked gallery lists with one relevant item per query (AP = 1 / its rank)."""
    pos = [r.index(t) + 1 if t in r else None for r, t in zip(ranked, truth)]
    out = {f"inst_top{k}": float(np.mean([p is not None and p <= k for p in pos])) for k in ks}
    out["inst_mAP"] = float(np.mean([1.0 / p if p else 0.0 for p in pos]))
    return out


def rerank_rows(args: argparse.Namespace, val: Sequence[Sample], distorted: list[Image.Image], gallery: dict,
                queries: dict, ms_q: dict, cnn_names: list[str]) -> dict:
    """The CNN's top ``args.rerank`` re-ranked by geometric verification, for every CNN method."""
    from fashionlens.rerank import GeometricReranker

    reranker = GeometricReranker()
    start = time.perf_counter()
    stored = [reranker.features(load_image(s)) for s in val]
    gallery_ms = 1000 * (time.perf_counter() - start) / len(val)
    rows = {}
    for name in cnn_names:
        sims = queries[name] @ gallery[name].T
        ranked, seconds, verified = [], 0.0, 0
        for i, image in enumerate(distorted):
            order = [int(j) for j in np.argsort(-sims[i], kind="stable")]
            top = order[: args.rerank]
            start = time.perf_counter()
            new, counts = reranker.rerank(image, [stored[j] for j in top])
            seconds += time.perf_counter() - start
            verified += sum(c >= reranker.min_inliers for c in counts)
            ranked.append([top[j] for j in new] + order[args.rerank:])
        rows[f"{name} + geometric re-rank (top {args.rerank})"] = {
            **rank_metrics(ranked, range(len(val))), "ms_rerank_per_query": round(1000 * seconds / len(val), 1),
            "ms_per_distorted_query": ms_q[name], "gallery_keypoints_ms_per_image": round(gallery_ms, 1),
            "verified_per_query": verified / len(val)}
    return rows


def garments_root(args: argparse.Namespace, tmp: str) -> str:
    if args.garments:
        return args.garments
    from fashionlens.data.garments import render_dataset

    root = os.path.join(tmp, "garments")
    print("\n(b) rendering 200 garments x 6 views (128 px) into a temporary folder", flush=True)
    render_dataset(root, items=200, views=6, size=128, seed=0, progress=False)
    return root


def garments_section(args: argparse.Namespace, imagenet: ImageNetFeatures, tmp: str) -> dict:
    """In-shop and consumer-to-shop retrieval on the test split of a garments render."""
    root = garments_root(args, tmp)
    spec = f"garments:{root}"
    data = read(spec)
    train = evenly(data.split("train").samples, args.max_train)
    test = evenly_items(data.split("test").samples, args.max_images)
    print(f"(b) garments: SIFT vocabulary from {len(train)} train images, {len(test)} test images", flush=True)
    sift, fit_s = fit_sift(train, args)
    methods = {"SIFT BoVW": sift.transform, **cnn_methods(args, imagenet)}
    emb, ms = embed_all(methods, (load_image(s) for s in test))
    rows: dict[str, dict] = {}
    for name, x in emb.items():
        res = {**retrieval_metrics(x, test, ks=(1, 10, 20)), **inshop_protocol(spec, test, x)}
        rows[name] = {k: res.get(k) for k in GARMENT_COLUMNS[:-1]} | {"ms_per_image": ms[name]}
    return {"garments": os.path.abspath(root), "train_images": len(train), "test_images": len(test),
            "sift_fit_seconds": round(fit_s, 1), "cnn_column": "trained run" if args.run else "ImageNet features",
            "rows": rows}


def set_threads(n: int) -> None:
    import cv2
    import faiss

    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    faiss.omp_set_num_threads(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="", help="a trained fashionlens run directory (adds its embeddings)")
    parser.add_argument("--garments", default="", help="a garments render (default: render 200 items to a temp dir)")
    parser.add_argument("--photos", default=PHOTOS, help="image-folder root with train/ and validation/")
    parser.add_argument("--max-train", type=int, default=1500, help="train images for the SIFT vocabulary (0 = all)")
    parser.add_argument("--max-images", type=int, default=0, help="evaluated images per section (0 = all)")
    parser.add_argument("--vocab", type=int, default=1000, help="SIFT vocabulary size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the query distortions")
    parser.add_argument("--rerank", type=int, default=50, help="CNN candidates re-ranked geometrically (0 = no row)")
    args = parser.parse_args()
    set_threads(args.threads)
    start = time.perf_counter()
    imagenet = ImageNetFeatures()
    photos = photos_section(args, imagenet)
    if photos:
        print("\n### Real photos: category retrieval (validation, leave-one-out, hit = same class)\n")
        print(table(photos["rows"], PHOTO_CATEGORY))
        print("\n### Real photos: instance retrieval under strong distortion (hit = the original photo)\n")
        print(table(photos["rows"], PHOTO_INSTANCE))
    with tempfile.TemporaryDirectory(prefix="fl-sift-") as tmp:
        garments = garments_section(args, imagenet, tmp)
    print(f"\n### Rendered garments, test split ({garments['cnn_column']} for the CNN)\n")
    print(table(garments["rows"], GARMENT_COLUMNS))
    minutes = (time.perf_counter() - start) / 60
    print(f"\ntotal {minutes:.1f} min")
    path = write("sift_vs_cnn", {"benchmark": "SIFT BoVW vs CNN embeddings", "threads": args.threads,
                                 "vocab": args.vocab, "max_train": args.max_train, "max_images": args.max_images,
                                 "run": args.run or None, "minutes": round(minutes, 2), "photos": photos,
                                 "garments": garments})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
