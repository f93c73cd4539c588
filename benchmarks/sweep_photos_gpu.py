"""Fine-tuning recipes for real clothing photos swept on a GPU, each run given the epochs that fit its
CPU budget on the 2-core machine (so the GPU answers "which recipe is best in 30 CPU minutes" in about a
minute per run, with several seeds).

    python benchmarks/sweep_photos_gpu.py prepare [--out .exp]          # here: compact data + weights to carry
    python benchmarks/sweep_photos_gpu.py run --names recipe_s0,l1f3_s0 --out DIR [--device cuda]  # there, or on CPU
    python benchmarks/sweep_photos_gpu.py table DIR [DIR ...]           # here: seeds averaged, ensembles

``prepare`` writes the clothing-small photos as WebP (shorter side 256 px: the 224-260 px crops never need
more) under OUT/cs and the ImageNet EfficientNet-Lite0/1/2 weights as xz-compressed float16 state dicts under
OUT/w, about 62 MB together, small enough to travel to a GPU machine that has no internet.

``run`` trains every configuration through the product's own trainer (``fashionlens.training.fit``: the
``photos`` recipe with the configuration's backbone, size, frozen stages, learning rates and seed, on
``--device``, bf16 autocast on GPUs), so a sweep measures exactly what ``fashionlens train`` ships.  Each
config's epochs come from CPU rates measured on the 2-core machine (``CPU_RATE``; other backbones/sizes
scaled by FLOPs; ``PER_IMAGE_OVERHEAD`` = decoding, augmentation and validation per training image, from the
recipe's real 30-minute run).  Every run is scored with ``fashionlens.runs.outputs.run_outputs`` (the
product's evaluation path) on the validation photos and on four shifted copies of them
(``fashionlens.evaluation.distortions.shift``, written once as image folders), and its class probabilities
are kept (DIR/probs.npz) so ``table`` can score ensembles of runs offline.

The first sweep's mixup/CutMix and LP-FT/WiSE-FT rows came from a private training loop that this script
no longer has (the product trainer has neither); their figures stay in benchmarks/results/photos_gpu_sweep.json.

Results: DIR/results.jsonl per run; ``table`` prints mean +- spread over seeds and writes
benchmarks/results/photos_gpu_sweep.json.
"""
import argparse
import io
import json
import lzma
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
if torch.cuda.is_available():
    import torchvision  # noqa: F401  (a working build: import before fashionlens' CPU shim)
from fashionlens.config import apply_overrides  # noqa: E402
from fashionlens.evaluation.distortions import SHIFTS as SHIFT_KINDS  # noqa: E402
from fashionlens.evaluation.distortions import shift  # noqa: E402
from fashionlens.models.backbones import create_backbone  # noqa: E402
from fashionlens.recipes import load_recipe  # noqa: E402
from fashionlens.runs.outputs import run_outputs  # noqa: E402
from fashionlens.training.fit import fit  # noqa: E402
from fashionlens.utils import resolve_device, softmax  # noqa: E402

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


def listing(root, split, classes):
    return [(os.path.join(root, split, c, f), k) for k, c in enumerate(classes)
            for f in sorted(os.listdir(os.path.join(root, split, c)))]


def stratified(items, n, n_classes, seed=0):
    """About ``n`` of ``items``, the same number from every class (at least one), in listing order."""
    rng = np.random.default_rng(seed)
    per = max(1, n // n_classes)
    keep = set()
    for k in range(n_classes):
        rows = [i for i, (_, y) in enumerate(items) if y == k]
        keep.update(rng.permutation(rows)[:per].tolist())
    return [items[i] for i in sorted(keep)]


def link_folder(items, classes, root, split):
    """An image folder ROOT/SPLIT/<class>/ of symbolic links to ``items`` (a --limit subset); every class gets
    its folder, so the subset names the same classes as the whole set."""
    for name in classes:
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
    for path, k in items:
        os.makedirs(os.path.join(root, split, classes[k]), exist_ok=True)
        target = os.path.join(root, split, classes[k], os.path.basename(path))
        if not os.path.lexists(target):
            os.symlink(os.path.abspath(path), target)


def shifted_folders(val_items, classes, out):
    """kind -> ``folder:`` spec of the validation photos under that shift (written once, PNG: lossless)."""
    specs = {}
    for kind in SHIFTS:
        root = os.path.join(out, "val", kind)
        done = os.path.join(root, ".done")
        if not os.path.exists(done):
            for name in classes:  # every class named, also where a --limit subset has no photo of it
                os.makedirs(os.path.join(root, "validation", name), exist_ok=True)
            for i, (path, k) in enumerate(val_items):
                folder = os.path.join(root, "validation", classes[k])
                os.makedirs(folder, exist_ok=True)
                with Image.open(path) as im:
                    image = shift_image(im.convert("RGB"), kind, i)
                    image.save(os.path.join(folder, f"{i:05d}.png"))
            open(done, "w").close()
        specs[kind] = f"folder:{root}"
    return specs


def backbone_weights(args, bb):
    """The carried float16 xz weights of ``tf_efficientnet_{bb}`` as a float32 .pt file (``model.pretrained``)."""
    path = os.path.join(args.out, "weights", f"tf_efficientnet_{bb}.pt")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with lzma.open(os.path.join(args.weights, f"tf_efficientnet_{bb}.pt.xz")) as f:
            sd = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
        torch.save({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, path)
    return path


UNSUPPORTED = ("mix", "lp")  # first-sweep options of the private loop: the product trainer has neither


def run_config(c, args, epochs, data_spec):
    """The photos recipe with sweep configuration ``c`` applied: what ``fashionlens train --recipe photos`` runs."""
    cfg = load_recipe("photos")
    cfg.data.spec = data_spec
    cfg.model.backbone = f"tf_efficientnet_{c['bb']}"
    cfg.model.pretrained = backbone_weights(args, c["bb"])
    overrides = {
        "data.image_size": c["size"], "data.resize_mode": c.get("resize", "pad"),
        "data.rrc_scale": list(c.get("rrc", (0.35, 1.0))), "data.rotation_degrees": c.get("rot", 10.0),
        "data.color_jitter": c.get("jitter", 0.2), "data.random_erasing": c.get("erase", 0.25),
        "data.num_workers": args.workers, "model.frozen_stages": c["freeze"], "model.dropout": c.get("drop", 0.2),
        "train.lr": c["lr"], "train.layer_decay": c.get("llrd", 0.8), "train.weight_decay": c.get("wd", 0.05),
        "train.ema_decay": c.get("ema", 0.998), "train.batch_size": c.get("bs", 32), "train.epochs": epochs,
        "train.warmup_epochs": c.get("warmup", 1.0), "train.max_minutes": 0.0, "train.checkpoint_every": 0,
        "train.device": args.device, "train.amp": resolve_device(args.device).type == "cuda",
        "loss.label_smoothing": c.get("ls", 0.1),
        "seed": c.get("seed", 0), "threads": 0,
    }
    apply_overrides(cfg, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    return cfg


def run(c, args, classes, train_items, val_specs, yv, log, store, data_spec):
    bad = [k for k in UNSUPPORTED if c.get(k)]
    if bad:
        raise SystemExit(f"{c['name']}: {', '.join(bad)} came from the first sweep's private loop; the product "
                         "trainer has no such option")
    epochs = c.get("epochs") or budget_epochs(c, c.get("minutes", 30.0), len(train_items))
    if args.epochs_cap:
        epochs = min(epochs, args.epochs_cap)
    run_dir = os.path.join(args.out, "runs", c["name"])
    t0 = time.time()
    summary = fit(run_config(c, args, epochs, data_spec), run_dir, resume=False, progress=False,
                  log=lambda *a: print(*a, flush=True))
    train_s = time.time() - t0
    res = {}
    for k, spec in val_specs.items():
        for flip in (True, False) if k == "orig" else (True,):
            preds, targets, *_ = run_outputs(run_dir, spec, split="val", batch_size=128, progress=False,
                                             tta=flip, device=args.device)
            p = softmax(preds["category"])
            assert np.array_equal(targets["category"], yv), "validation order changed"
            acc = round(float((p.argmax(1) == yv).mean()), 4)
            if not flip:
                res["ema_orig_noflip"] = acc
                continue
            res[f"ema_{k}"] = acc
            store[f"{c['name']}|ema|{k}"] = p.astype(np.float16)
            if k == "orig":
                res["ema_orig_meanclass"] = round(float(np.mean([(p.argmax(1)[yv == j] == j).mean()
                                                                 for j in range(len(classes))])), 4)
    res["ema_shifted"] = round(float(np.mean([res[f"ema_{k}"] for k in SHIFTS[1:]])), 4)
    rate = summary["last"].get("train_images_per_s")
    rec = {**c, "epochs": epochs, "device": args.device, "train_s": round(train_s, 1), "gpu_s": round(time.time() - t0, 1),
           "train_images_per_s": rate, **res, "hist": []}
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
    ap.add_argument("--workers", type=int, default=-1, help="data loader workers (-1: sized to the machine)")
    ap.add_argument("--device", default="auto", help="run: where to train (auto: a CUDA GPU when present)")
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
    data_spec = f"folder:{os.path.abspath(args.data)}"
    if args.limit:
        tr = stratified(tr, args.limit, len(classes))  # every class in both parts: the same label space
        va = stratified(va, max(len(classes), args.limit // 4), len(classes))
        subset = os.path.join(args.out, "subset")
        link_folder(tr, classes, subset, "train")
        link_folder(va, classes, subset, "validation")
        data_spec = f"folder:{subset}"
    val_specs = shifted_folders(va, classes, args.out)
    yv = np.array([k for _, k in va])
    path = os.path.join(args.out, "results.jsonl")
    store = {}

    def log(rec):
        print(json.dumps(rec), flush=True)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    torch.backends.cudnn.benchmark = True
    for name in args.names.split(","):
        t = time.time()
        run(dict(CONFIGS[name], name=name), args, classes, tr, val_specs, yv, log, store, data_spec)
        print(f"# {name} took {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
