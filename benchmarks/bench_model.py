"""Model throughput: training and inference images/s of the default configuration, on random batches.

Measures the default FashionNet (recipe ``garments``: EfficientNet-Lite0 backbone, landmark branch,
landmark-pooled local branch, 128 px) and the global-only preset, training (forward + backward +
AdamW step, channels_last) and inference (eval, no grad), each as a ratio to a reference measured
in the same run: timm ResNet-18 inference at the same size (the machines are noisy; ratios travel).

    python benchmarks/bench_model.py [--size 128] [--batch 32] [--seconds 8]

Writes benchmarks/results/model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from _common import rate

from fashionlens.config import LossConfig, ModelConfig
from fashionlens.losses import MultiTaskLoss
from fashionlens.models import build_model, create_backbone

HERE = os.path.dirname(os.path.abspath(__file__))


def fake_batch(n: int, size: int, categories: int, attributes: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(n, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last),
        "category": torch.randint(0, categories, (n,), generator=g),
        "attributes": (torch.rand(n, attributes, generator=g) < 0.2).float(),
        "attribute_mask": torch.ones(n, attributes),
        "landmarks": torch.rand(n, 8, 2, generator=g), "visibility": torch.zeros(n, 8, dtype=torch.long),
        "landmark_mask": torch.ones(n, 8, dtype=torch.bool), "bbox": torch.tensor([[0.1, 0.1, 0.9, 0.9]]).repeat(n, 1),
        "has_bbox": torch.ones(n, dtype=torch.bool), "item": torch.arange(n) // 4,
    }




def measure(name: str, size: int, batch: int, seconds: float) -> dict:
    model = build_model(ModelConfig(name=name, backbone="tf_efficientnet_lite0", pretrained=False),
                        num_categories=14, num_attributes=39, level_sizes=(3, 9))
    model = model.to(memory_format=torch.channels_last)
    loss_fn = MultiTaskLoss(LossConfig(), embedding_dim=128)
    data = fake_batch(batch, size, 14, 39)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)

    def train_step():
        model.train()
        loss = loss_fn(model(data["image"]), data)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer_step():
        model.eval()
        with torch.no_grad():
            model(data["image"])

    return {"train_images_per_s": rate(train_step, batch, seconds), "infer_images_per_s": rate(infer_step, batch, seconds)}


def reference(size: int, batch: int, seconds: float) -> float:
    net = create_backbone("resnet18").eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.no_grad():
            net.forward_features(x)

    return rate(step, batch, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    ref = reference(args.size, args.batch, args.seconds)
    rows = {name: measure(name, args.size, args.batch, args.seconds) for name in ("fashionnet", "global")}
    print(f"reference: timm resnet18 inference {ref:.1f} img/s ({args.size} px, batch {args.batch}, "
          f"{torch.get_num_threads()} threads)")
    print(f"{'model':<12} {'train img/s':>12} {'x ref':>7} {'infer img/s':>12} {'x ref':>7}")
    for name, r in rows.items():
        print(f"{name:<12} {r['train_images_per_s']:>12.1f} {r['train_images_per_s'] / ref:>7.2f} "
              f"{r['infer_images_per_s']:>12.1f} {r['infer_images_per_s'] / ref:>7.2f}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = {"size": args.size, "batch": args.batch, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "reference_resnet18_infer_images_per_s": ref,
           "models": {n: {**r, "train_ratio": r["train_images_per_s"] / ref, "infer_ratio": r["infer_images_per_s"] / ref}
                      for n, r in rows.items()}}
    with open(os.path.join(HERE, "results", "model.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
