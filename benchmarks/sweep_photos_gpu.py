"""Fine-tuning recipes for real clothing photos swept on a GPU, each run given the epochs that fit its
CPU budget on the 2-core machine (so the GPU answers "which recipe is best in 30 CPU minutes" in about a
minute per run, with several seeds).

    python benchmarks/sweep_photos_gpu.py prepare [--out .exp]          # here: compact data + weights to carry
    python benchmarks/sweep_photos_gpu.py run --names recipe_s0,l1f3_s0 --out DIR   # there (GPU), or on CPU
    python benchmarks/sweep_photos_gpu.py table DIR [DIR ...]           # here: seeds averaged, ensembles

``prepare`` writes the clothing-small photos as WebP (shorter side 256 px: the 224-260 px crops never need
more) under OUT/cs and the ImageNet EfficientNet-Lite0/1/2 weights as xz-compressed float16 state dicts under
OUT/w, about 62 MB together, small enough to travel to a GPU machine that has no internet.

``run`` mirrors the ``photos`` recipe's training (the fashionlens transforms, the same frozen stages,
layer-wise learning rates, AdamW, warm-up + cosine, label smoothing, EMA with warm-up, mirror TTA) in a
compact loop with bf16 autocast; each config's epochs come from CPU rates measured on the 2-core machine
(``CPU_RATE``; other backbones/sizes scaled by FLOPs; ``PER_IMAGE_OVERHEAD`` = decoding, augmentation and
validation per training image, from the recipe's real 30-minute run). Every run is scored on the
validation photos and on four shifted copies of them (``fashionlens.evaluation.distortions.shift``), and
its class probabilities are kept (DIR/probs.npz) so ``table`` can score ensembles of runs offline.

Results: DIR/results.jsonl per run; ``table`` prints mean +- spread over seeds and writes
benchmarks/results/photos_gpu_sweep.json.
"""
import argparse
import copy
import io
import json
import lzma
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
if torch.cuda.is_available():
    import torchvision  # noqa: F401  (a working build: import before fashionlens' CPU shim)
from fashionlens.config import DataConfig  # noqa: E402
from fashionlens.evaluation.distortions import SHIFTS as SHIFT_KINDS  # noqa: E402
from fashionlens.evaluation.distortions import shift  # noqa: E402
from fashionlens.data.transforms import build_transforms  # noqa: E402
from fashionlens.models.backbones import create_backbone  # noqa: E402
from fashionlens.training.ema import ema_model  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DUMMY = {"landmarks": np.zeros((8, 2), np.float32), "visibility": np.zeros(8, np.int64),
         "present": np.zeros(8, np.int64), "bbox": None}

# CPU compute rates (img/s, 2 cores, batch 32) for (backbone, size, frozen stages); others scaled by FLOPs.
CPU_RATE = {("lite0", 192, 0): 26.9, ("lite0", 224, 0): 17.0, ("lite0", 224, 3): 42.8, ("lite0", 224, 5): 64.1,
            ("lite0", 260, 0): 11.1, ("lite2", 260, 0): 9.1, ("lite2", 260, 4): 22.7, ("lite2", 224, 0): 16.6}
GFLOPS = {"lite0": 0.40, "lite1": 0.63, "lite2": 0.90}
NATIVE = {"lite0": 224, "lite1": 240, "lite2": 260}
PER_IMAGE_OVERHEAD = 1 / 24.9 - 1 / 42.8  # loading + validation per training image (recipe: 14 ep in 28.8 min)


def cpu_rate(bb, size, freeze):
    if (bb, size, freeze) in CPU_RATE:
        return CPU_RATE[(bb, size, freeze)]
    f = freeze if freeze in (0, 3, 5) else None
    if f is None:  # interpolate freeze 4 between 3 and 5
        r = (cpu_rate(bb, size, 3) + cpu_rate(bb, size, 5)) / 2
        return r
    base = CPU_RATE[("lite0", 224, f)]
    return base * (GFLOPS["lite0"] / GFLOPS[bb]) * (NATIVE[bb] / size) ** 2 * (224 / NATIVE["lite0"]) ** 0


def budget_epochs(c, minutes, n):
    per_img = 1 / cpu_rate(c["bb"], c["size"], c["freeze"]) + PER_IMAGE_OVERHEAD
    if c.get("lp"):
        minutes -= 1.5  # feature pass for the linear-probe head
    return max(1, int(minutes * 60 / per_img / n))


SHIFTS = ("orig", *SHIFT_KINDS)


def shift_image(im, kind, i):
    return im if kind == "orig" else shift(im, kind, 1000 + i)  # the seeds bench_photos.py shifted uses


class DS(Dataset):
    def __init__(self, items, tf, images=None):
        self.items, self.tf, self.images = items, tf, images

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        p, y = self.items[i]
        im = self.images[i] if self.images is not None else Image.open(p).convert("RGB")
        x, _ = self.tf(im, DUMMY)
        return x, y


def listing(root, split, classes):
    return [(os.path.join(root, split, c, f), k) for k, c in enumerate(classes)
            for f in sorted(os.listdir(os.path.join(root, split, c)))]


def load_weights(path):
    with lzma.open(path + ".xz") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu")


class Net(nn.Module):
    def __init__(self, bb, weights, n, freeze, drop):
        super().__init__()
        self.backbone = create_backbone(f"tf_efficientnet_{bb}", pretrained=False)
        sd = load_weights(weights)
        self.backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
        self.freeze = freeze
        self.frozen = [self.backbone.conv_stem, self.backbone.bn1] + list(self.backbone.blocks[:freeze]) if freeze else []
        for m in self.frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        self.drop = nn.Dropout(drop)
        self.head = nn.Linear(self.backbone.num_features, n)

    def train(self, mode=True):
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def features(self, x):
        b = self.backbone
        if self.freeze:
            with torch.no_grad():
                x = b.bn1(b.conv_stem(x))
                for s in b.blocks[:self.freeze]:
                    x = s(x)
            for s in b.blocks[self.freeze:]:
                x = s(x)
            x = b.bn2(b.conv_head(x))
        else:
            x = b.forward_features(x)
        return x.mean((2, 3))

    def forward(self, x):
        return self.head(self.drop(self.features(x)))


def param_groups(model, decay, wd):
    b = model.backbone
    depth = {id(p): 1 for p in list(b.conv_head.parameters()) + list(b.bn2.parameters())}
    for i, s in enumerate(b.blocks):
        for p in s.parameters():
            depth[id(p)] = len(b.blocks) - i + 1
    for p in list(b.conv_stem.parameters()) + list(b.bn1.parameters()):
        depth[id(p)] = len(b.blocks) + 2
    groups = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        d = depth.get(id(p), 0)
        groups.setdefault((d, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr_scale": decay ** d, "weight_decay": 0.0 if nd else wd} for (d, nd), ps in groups.items()]


@torch.no_grad()
def predict(model, loader, flip):
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(DEV, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV == "cuda"):
            p = model(x).float().softmax(1)
            if flip:
                p = (p + model(torch.flip(x, dims=[3])).float().softmax(1)) / 2
        out.append(p.cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def feats(model, loader):
    model.eval()
    out, ys = [], []
    for x, y in loader:
        x = x.to(DEV, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV == "cuda"):
            out.append(model.features(x).float().cpu())
        ys.append(y)
    return torch.cat(out).numpy(), torch.cat(ys).numpy()


def linear_probe_head(model, train_items, dc, args, C):
    from sklearn.linear_model import LogisticRegression
    dl = DataLoader(DS(train_items, build_transforms(dc, train=False)), 128, num_workers=args.workers)
    X, y = feats(model, dl)
    clf = LogisticRegression(C=C, max_iter=3000).fit(X, y)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(clf.coef_, dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(clf.intercept_, dtype=torch.float32))


def run(c, args, classes, train_items, val_items, val_images, log, store):
    torch.manual_seed(c.get("seed", 0))
    np.random.seed(c.get("seed", 0))
    dc = DataConfig(image_size=c["size"], resize_mode=c.get("resize", "pad"), rrc_scale=tuple(c.get("rrc", (0.35, 1.0))),
                    rotation_degrees=c.get("rot", 10.0), hflip_p=0.5, color_jitter=c.get("jitter", 0.2),
                    random_erasing=c.get("erase", 0.25), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tr = DS(train_items, build_transforms(dc, train=True))
    etf = build_transforms(dc, train=False)
    tl = DataLoader(tr, c.get("bs", 32), shuffle=True, num_workers=args.workers, drop_last=True, persistent_workers=True)
    vls = {k: DataLoader(DS(val_items, etf, imgs), 128, num_workers=4) for k, imgs in val_images.items()}
    model = Net(c["bb"], os.path.join(args.weights, f"tf_efficientnet_{c['bb']}.pt"), len(classes), c["freeze"], c.get("drop", 0.2))
    model = model.to(DEV).to(memory_format=torch.channels_last)
    t0 = time.time()
    if c.get("lp"):
        linear_probe_head(model, train_items, dc, args, c.get("lp_C", 0.5))
    theta0 = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(param_groups(model, c.get("llrd", 0.8), c.get("wd", 0.05)), lr=c["lr"])
    epochs = c.get("epochs") or budget_epochs(c, c.get("minutes", 30.0), len(train_items))
    if args.epochs_cap:
        epochs = min(epochs, args.epochs_cap)
    total = epochs * len(tl)
    warm = int(c.get("warmup", 1.0) * len(tl))
    ema = ema_model(model, c["ema"]) if c.get("ema", 0.998) else None
    mix = None
    if c.get("mix"):
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy
        mix = Mixup(mixup_alpha=c.get("mixup", 0.2), cutmix_alpha=c.get("cutmix", 1.0), prob=c["mix"],
                    label_smoothing=c.get("ls", 0.1), num_classes=len(classes))
        lossf = SoftTargetCrossEntropy()
    else:
        lossf = nn.CrossEntropyLoss(label_smoothing=c.get("ls", 0.1))
    step = 0
    hist = []
    yv = np.array([y for _, y in val_items])
    for ep in range(epochs):
        model.train()
        for x, y in tl:
            lr = c["lr"] * (step + 1) / warm if step < warm else c["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            x = x.to(DEV, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(DEV, non_blocking=True)
            if mix is not None:
                x, y = mix(x, y)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV == "cuda"):
                loss = lossf(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
        if c.get("curve"):
            hist.append({"epoch": ep + 1, "acc": float((predict(ema.module if ema else model, vls["orig"], True).argmax(1) == yv).mean())})
    res = {}
    final = ema.module if ema is not None else model
    evals = [("plain", model), ("ema", final)]
    if c.get("lp"):
        for a in c.get("wise", (0.5, 0.7)):
            w = copy.deepcopy(final)
            sd = {k: (theta0[k].float() * (1 - a) + v.float() * a).to(v.dtype) if v.is_floating_point() else v
                  for k, v in final.state_dict().items()}
            w.load_state_dict(sd)
            evals.append((f"wise{a}", w))
    for tag, m in evals:
        for k, vl in vls.items():
            p = predict(m, vl, True)
            res[f"{tag}_{k}"] = round(float((p.argmax(1) == yv).mean()), 4)
            store[f"{c['name']}|{tag}|{k}"] = p.astype(np.float16)
            if k == "orig":
                res[f"{tag}_orig_noflip"] = round(float((predict(m, vl, False).argmax(1) == yv).mean()), 4)
                res[f"{tag}_orig_meanclass"] = round(float(np.mean([(p.argmax(1)[yv == j] == j).mean() for j in range(len(classes))])), 4)
        res[f"{tag}_shifted"] = round(float(np.mean([res[f"{tag}_{k}"] for k in SHIFTS[1:]])), 4)
    rec = {**{k: v for k, v in c.items() if k != "curve"}, "epochs": epochs, "gpu_s": round(time.time() - t0, 1), **res, "hist": hist}
    log(rec)
    np.savez_compressed(os.path.join(args.out, "probs.npz"), y=yv, **store)
    return rec


B = dict(bb="lite0", size=224, freeze=3, lr=1e-3, llrd=0.8, ls=0.1, ema=0.998)
CONFIGS = {}


def add(name, **kw):
    for s in (0, 1, 2):
        CONFIGS[f"{name}_s{s}"] = dict(B, **kw, seed=s)


add("recipe")
add("l0full", freeze=0)
add("l1f3", bb="lite1", size=240)
add("l1f4", bb="lite1", size=240, freeze=4)
add("l2f4", bb="lite2", size=260, freeze=4)
add("l2full", bb="lite2", size=260, freeze=0)
add("mix", mix=1.0)
add("lpft", lp=1)
add("l0f3_15", minutes=15.0)
add("l1f3_15", bb="lite1", size=240, minutes=15.0)
add("l2f4_15", bb="lite2", size=260, freeze=4, minutes=15.0)
add("l0full_15", freeze=0, minutes=15.0)
add("recipe5ep", epochs=5)
add("l1full", bb="lite1", size=240, freeze=0)
add("l2full224", bb="lite2", size=224, freeze=0)
add("l2fullmix", bb="lite2", size=260, freeze=0, mix=1.0)
add("l2full_15", bb="lite2", size=260, freeze=0, minutes=15.0)
LABELS = {
    "recipe": "Lite0 224, stem + 3 stages frozen (first recipe)", "l0full": "Lite0 224, full fine-tuning",
    "l1f3": "Lite1 240, stem + 3 stages frozen (the recipe, 10 epochs)", "l1f4": "Lite1 240, stem + 4 stages frozen",
    "l1full": "Lite1 240, full fine-tuning", "l2f4": "Lite2 260, stem + 4 stages frozen",
    "l2full": "Lite2 260, full fine-tuning", "l2full224": "Lite2 224, full fine-tuning",
    "l2fullmix": "Lite2 260, full fine-tuning + mixup/CutMix", "mix": "Lite0 224 recipe + mixup/CutMix",
    "lpft": "Lite0 224 recipe, head from a linear probe (LP-FT)", "l0f3_15": "Lite0 224, 3 frozen, 15 min",
    "l1f3_15": "Lite1 240, 3 frozen, 15 min", "l2f4_15": "Lite2 260, 4 frozen, 15 min",
    "l2full_15": "Lite2 260, full fine-tuning, 15 min", "l0full_15": "Lite0 224, full fine-tuning, 15 min",
}


# Ensembles scored by ``table``: members' mirror-TTA probabilities of the EMA weights averaged, per seed.
ENSEMBLES = [("l1f3_15", "l2f4_15"), ("l0f3_15", "l1f3_15"), ("l0f3_15", "l2f4_15"), ("l1f3_15", "l2full_15")]
OLD_KEYS = {"lowq": "lowres", "light": "lighting"}  # shift names of the first sweep


def prepare(out):
    """Compact copies to carry to a GPU machine: WebP photos (shorter side 256) and xz float16 weights."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import PHOTOS

    for split in ("train", "validation"):
        for cls in sorted(os.listdir(os.path.join(PHOTOS, split))):
            os.makedirs(os.path.join(out, "cs", split, cls), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(PHOTOS, split, cls))):
                with Image.open(os.path.join(PHOTOS, split, cls, name)) as im:
                    im = im.convert("RGB")
                    f = 256 / min(im.size)
                    im = im.resize((round(im.width * f), round(im.height * f)), Image.BICUBIC) if f < 1 else im
                    im.save(os.path.join(out, "cs", split, cls, os.path.splitext(name)[0] + ".webp"), quality=80)
    os.makedirs(os.path.join(out, "w"), exist_ok=True)
    for bb in ("lite0", "lite1", "lite2"):
        m = create_backbone(f"tf_efficientnet_{bb}", pretrained=True)
        sd = {k: v.half() if v.is_floating_point() else v for k, v in m.state_dict().items()}
        buf = io.BytesIO()
        torch.save(sd, buf)
        with lzma.open(os.path.join(out, "w", f"tf_efficientnet_{bb}.pt.xz"), "wb", preset=9) as f:
            f.write(buf.getvalue())
    print(f"wrote {out}/cs and {out}/w")


def table(dirs):
    recs, probs, y = [], {}, None
    for d in dirs:
        with open(os.path.join(d, "results.jsonl")) as f:
            for line in f:
                recs.append(json.loads(line))
        z = np.load(os.path.join(d, "probs.npz"))
        y = z["y"]
        for k in z.files:
            if k != "y":
                name, tag, kind = k.split("|")
                probs[(name, tag, OLD_KEYS.get(kind, kind))] = z[k].astype(np.float32)
    for r in recs:  # renamed keys: "light" -> "lighting", "lowq" -> "lowres"
        for old, new in OLD_KEYS.items():
            for tag in ("plain", "ema"):
                if f"{tag}_{old}" in r:
                    r[f"{tag}_{new}"] = r.pop(f"{tag}_{old}")
    fams = {}
    for r in recs:
        fams.setdefault(r["name"].rsplit("_s", 1)[0], []).append(r)

    def acc(names, kind):
        return float((sum(probs[(n, "ema", kind)] for n in names).argmax(1) == y).mean())

    rows = {}
    for fam, rs in fams.items():
        c = rs[0]
        row = {"backbone": c["bb"], "size": c["size"], "frozen_stages": c["freeze"], "cpu_minutes": c.get("minutes", 30.0),
               "epochs": c["epochs"], "seeds": len(rs), "extra": {k: c[k] for k in ("mix", "lp") if k in c}}
        names = [r["name"] for r in rs]
        row["val"] = float(np.mean([acc([n], "orig") for n in names]))
        row["val_min"], row["val_max"] = (float(f([acc([n], "orig") for n in names])) for f in (np.min, np.max))
        for kind in SHIFT_KINDS:
            row[kind] = float(np.mean([acc([n], kind) for n in names]))
        row["shifted"] = float(np.mean([row[k] for k in SHIFT_KINDS]))
        rows[LABELS.get(fam, fam)] = row
    for a, b in ENSEMBLES:
        seeds = sorted({r["seed"] for r in fams.get(a, [])} & {r["seed"] for r in fams.get(b, [])})
        if not seeds:
            continue
        pairs = [(f"{a}_s{s}", f"{b}_s{s}") for s in seeds]
        row = {"ensemble": [a, b], "cpu_minutes": 30.0, "seeds": len(seeds),
               "val": float(np.mean([acc(p, "orig") for p in pairs]))}
        for kind in SHIFT_KINDS:
            row[kind] = float(np.mean([acc(p, kind) for p in pairs]))
        row["shifted"] = float(np.mean([row[k] for k in SHIFT_KINDS]))
        rows[f"ensemble: {LABELS.get(a, a)} + {LABELS.get(b, b)}"] = row
    print("| run (EMA weights + mirror TTA) | seeds | epochs | val | " + " | ".join(SHIFT_KINDS) + " | shifted mean |")
    print("|---|---|---|---|" + "---|" * (len(SHIFT_KINDS) + 1))
    for name, r in sorted(rows.items(), key=lambda t: -t[1]["val"]):
        spread = f" ({r['val_min']:.3f}-{r['val_max']:.3f})" if r.get("seeds", 1) > 1 and "val_min" in r else ""
        print(f"| {name} | {r['seeds']} | {r.get('epochs', '-')} | {r['val']:.3f}{spread} | "
              + " | ".join(f"{r[k]:.3f}" for k in SHIFT_KINDS) + f" | {r['shifted']:.3f} |")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import write

    print("wrote", write("photos_gpu_sweep", {"sources": [os.path.abspath(d) for d in dirs], "rows": rows}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("section", choices=("prepare", "run", "table"))
    ap.add_argument("dirs", nargs="*", help="table: the run output folders")
    ap.add_argument("--data", default=".exp/cs")
    ap.add_argument("--weights", default=".exp/w")
    ap.add_argument("--out", default="/tmp/sweep")
    ap.add_argument("--names", default="recipe_s0")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--limit", type=int, default=0, help="run: this many training photos only (smoke test)")
    ap.add_argument("--epochs-cap", type=int, default=0)
    ap.add_argument("--extra", default="", help="run: JSON dict of name -> config to add")
    args = ap.parse_args()
    if args.section == "prepare":
        return prepare(args.out if args.out != "/tmp/sweep" else ".exp")
    if args.section == "table":
        return table(args.dirs)
    os.makedirs(args.out, exist_ok=True)
    if args.extra:
        CONFIGS.update({k: dict(B, **v) for k, v in json.loads(args.extra).items()})
    classes = sorted(os.listdir(os.path.join(args.data, "train")))
    tr, va = listing(args.data, "train", classes), listing(args.data, "validation", classes)
    if args.limit:
        rng = np.random.default_rng(0)
        tr = [tr[i] for i in rng.permutation(len(tr))[:args.limit]]
        va = [va[i] for i in rng.permutation(len(va))[:args.limit // 4]]
    base = [Image.open(p).convert("RGB") for p, _ in va]
    val_images = {k: [shift_image(im, k, i) for i, im in enumerate(base)] for k in SHIFTS}
    path = os.path.join(args.out, "results.jsonl")
    store = {}

    def log(rec):
        print(json.dumps(rec), flush=True)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    torch.backends.cudnn.benchmark = True
    for name in args.names.split(","):
        t = time.time()
        run(dict(CONFIGS[name], name=name), args, classes, tr, va, val_images, log, store)
        print(f"# {name} took {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
