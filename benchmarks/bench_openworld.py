"""The demo model meets real photos: plausible, hedged, rejected and wrong answers (``openworld``).

    python benchmarks/bench_openworld.py --run out/demo/run --garments out/demo/garments [--photos DIR]
                                         [--target-accuracy 0.9]

The demo model is trained on rendered garments only (14 categories: tops, knitwear, outerwear, trousers, shorts,
skirts, dresses, one-pieces, coats); clothing-small's validation photos are real photos of 10 classes, two of
which (hat, shoes) it has no category for.  Every photo gets the run's answer with its hedged node at
``--target-accuracy`` (the demo calibrates on rendered validation photos) and the ImageNet guide's scope.  Each
answer lands in one bucket, under three policies (what the page showed before; hedged; hedged + guide):

* plausible: the answer names a category that fits the photo's class (PLAUSIBLE below: a clothing-small "t-shirt"
  answered Tee or Tank), or, for shoes and hats, the guide's kind (footwear / headwear: "shoes (sandal): not
  among this model's categories");
* hedged: a coarser taxonomy node above a plausible category ("an upper-body item — not sure which kind");
* unsure: the taxonomy's root ("a garment — not sure what kind") for a garment;
* rejected: "not a garment I know", or "outside" with another kind;
* wrong: anything else (a category, or a node, that does not fit).

The rendered test photos (the model's own kind of data) must stay answered: their share of "known" verdicts is
reported too, and a threshold sweep of the guide (``OUTSIDE_MIN`` x ``UNKNOWN_MAX``) from the same answers.
Writes benchmarks/results/openworld.json.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PHOTOS, write

#: clothing-small class -> the demo categories that are a plausible answer for it (hat, shoes: none).
PLAUSIBLE = {
    "dress": {"Dress"}, "longsleeve": {"Tee", "Sweater", "Hoodie", "Button-Down"},
    "outwear": {"Jacket", "Coat", "Hoodie"}, "pants": {"Trousers", "Leggings"}, "shirt": {"Button-Down"},
    "shorts": {"Shorts"}, "skirt": {"Skirt"}, "t-shirt": {"Tee", "Tank"}, "hat": set(), "shoes": set(),
}
#: clothing-small classes the demo model lacks -> the guide's kind that is a plausible answer for them.
OUTSIDE_KIND = {"hat": "headwear", "shoes": "footwear"}
BUCKETS = ("plausible", "hedged", "unsure", "rejected", "wrong")


def bucket(cls: str, answer: dict, paths: dict[str, str], *, hedge: bool, guide: bool,
           verdict: tuple[str, str | None] | None = None) -> str:
    """The bucket of one photo of clothing-small class ``cls`` under a policy (``verdict``: the guide's, else
    the answer's stored scope)."""
    if guide:
        v, kind = verdict or (answer["scope"]["verdict"], answer["scope"]["kind"])
        if v == "unknown":
            return "rejected"
        if v == "outside":
            return "plausible" if OUTSIDE_KIND.get(cls) == kind else "rejected"
    good = PLAUSIBLE[cls]
    if not hedge or not answer.get("hedged") or answer["hedged"]["name"] == answer["category"]:
        return "plausible" if answer["category"] in good else "wrong"
    node = answer["hedged"]["path"]
    if not node:  # the root: "a garment — not sure what kind" (true of garments, but no answer)
        return "unsure" if good else "wrong"
    prefix = ".".join(node)
    return "hedged" if any(paths[c] == prefix or paths[c].startswith(prefix + ".") for c in good) else "wrong"


def shares(classes: list[str], answers: list[dict], paths: dict[str, str], **policy) -> dict[str, float]:
    got = [bucket(c, a, paths, **policy) for c, a in zip(classes, answers)]
    return {b: round(got.count(b) / len(got), 4) for b in BUCKETS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="out/demo/run")
    ap.add_argument("--garments", default="out/demo/garments", help="the demo's render (its test photos)")
    ap.add_argument("--photos", default=PHOTOS, help="clothing-small (validation/<class>/*.jpg)")
    ap.add_argument("--target-accuracy", type=float, default=0.9)
    args = ap.parse_args()
    root = os.path.join(args.photos, "validation")
    if not os.path.isdir(root):
        sys.exit(f"skipped: no clothing-small photos at {root} (set --photos or FASHIONLENS_PHOTOS)")
    import torch

    from fashionlens.data.decode import load_image
    from fashionlens.data.readers import read
    from fashionlens.inference import Predictor
    from fashionlens.openworld import OUTSIDE_MIN, UNKNOWN_MAX, covered_kinds, scope_verdict

    torch.set_num_threads(2)
    plain = Predictor.load(args.run)
    predictor = Predictor.load(args.run, guide="imagenet")
    paths = dict(zip(predictor.categories, predictor.paths))
    covered = covered_kinds(predictor.categories, predictor.paths)
    files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
    classes = [os.path.basename(os.path.dirname(f)) for f in files]
    rendered = [s for s in read(f"garments:{args.garments}").samples if s.split == "test"]

    def answer_all(model, images_of, n):
        out = []
        for start in range(0, n, 32):
            out += model.predict(images_of(start, min(n, start + 32)), args.target_accuracy)
        return out

    real_plain = answer_all(plain, lambda a, b: [load_image(f) for f in files[a:b]], len(files))
    start = time.perf_counter()
    real = answer_all(predictor, lambda a, b: [load_image(f) for f in files[a:b]], len(files))
    seconds = time.perf_counter() - start
    synthetic = answer_all(predictor, lambda a, b: [load_image(s) for s in rendered[a:b]], len(rendered))
    render_right = float(np.mean([a["category"] == s.category_name for a, s in zip(synthetic, rendered)]))
    synthetic_plain = answer_all(plain, lambda a, b: [load_image(s) for s in rendered[a:b]], len(rendered))
    render_plain = float(np.mean([a["category"] == s.category_name for a, s in zip(synthetic_plain, rendered)]))

    target = f"{args.target_accuracy:g}"
    rows = {"model alone, best guess (before)": shares(classes, real_plain, paths, hedge=False, guide=False),
            f"model alone, hedged at {target}": shares(classes, real_plain, paths, hedge=True, guide=False),
            "with the ImageNet guide, best guess": shares(classes, real, paths, hedge=False, guide=True),
            f"with the ImageNet guide, hedged at {target} (the demo's default)":
                shares(classes, real, paths, hedge=True, guide=True)}
    per_class = {c: shares([c] * classes.count(c), [a for a, k in zip(real, classes) if k == c], paths,
                           hedge=True, guide=True) for c in sorted(set(classes))}
    known_rendered = float(np.mean([a["scope"]["verdict"] == "known" for a in synthetic]))
    familiar_real = float(np.mean([a["scope"]["familiar"] for a in real]))
    sweep = []
    for outside_min in (0.3, 0.4, 0.5, 0.6):
        for unknown_max in (0.05, 0.1, 0.15, 0.2, 0.3):
            def verdict(a, outside_min=outside_min, unknown_max=unknown_max):
                return scope_verdict(a["scope"]["masses"], covered, a["scope"]["familiar"], outside_min=outside_min,
                                     unknown_max=unknown_max)
            got = [bucket(c, a, paths, hedge=True, guide=True, verdict=verdict(a)) for c, a in zip(classes, real)]
            sweep.append({"outside_min": outside_min, "unknown_max": unknown_max,
                          **{b: round(got.count(b) / len(got), 4) for b in BUCKETS},
                          "rendered_known": round(float(np.mean([verdict(a)[0] == "known" for a in synthetic])), 4)})

    print(f"{len(files)} clothing-small validation photos, demo model {args.run} "
          f"(rendered test photos right: {render_plain:.3f} alone, {render_right:.3f} with the guide; guide thresholds outside {OUTSIDE_MIN}, unknown {UNKNOWN_MAX})")
    print("| answers | plausible | hedged (right kind) | unsure (root) | rejected | wrong |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[b]:.3f}" for b in BUCKETS) + " |")
    fused = float(np.mean([a["scope"]["fused"] > 0 for a in real]))
    print(f"ImageNet mixed into the category of {fused:.3f} of the real photos")
    print("\nper class (hedged + guide):")
    for c, r in per_class.items():
        print(f"  {c:<11} n={classes.count(c):3d} " + "  ".join(f"{b} {r[b]:.2f}" for b in BUCKETS))
    print(f"\nrendered test photos answered 'known': {known_rendered:.3f} ({len(rendered)}); real photos familiar: "
          f"{familiar_real:.3f}; {seconds / len(files) * 1000:.0f} ms per real photo (model + guide, 2 threads)")
    path = write("openworld", {
        "run": args.run, "photos": len(files), "rendered_test_photos": len(rendered), "target_accuracy":
        args.target_accuracy, "thresholds": {"outside_min": OUTSIDE_MIN, "unknown_max": UNKNOWN_MAX},
        "plausible_map": {k: sorted(v) for k, v in PLAUSIBLE.items()}, "policies": rows, "per_class": per_class,
        "rendered_known": known_rendered, "real_fused": fused, "rendered_category_top1": render_plain,
        "rendered_category_top1_guided": render_right, "real_familiar": familiar_real,
        "ms_per_photo": seconds / len(files) * 1000, "sweep": sweep})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
