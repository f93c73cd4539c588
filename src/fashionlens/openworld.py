"""What kind of thing a photo shows, before a model's answer is believed ("not a garment I know").

A fine-tuned model answers with one of its own categories for ANY photo: the demo model, trained on rendered
garments, calls a running shoe "Shorts" and a cat "Hoodie".  The guide is the shipped backbone's own ImageNet
classifier, which fine-tuning never touches (the offline EfficientNet-Lite weights, ``models.create_imagenet_classifier``):
its 1,000 classes include some forty garments, shoes, hats, bags and accessories (:data:`KINDS`).  Its
probabilities summed per kind say whether the photo shows

* ``known``: a kind the model has categories for (its answer stands),
* ``outside``: a wardrobe thing the model has no category for ("shoes (running shoe): not among this model's
  categories"), or
* ``unknown``: something else ("not a garment I know (looks like: tabby cat)").

Which kinds a model covers follows from its category names and taxonomy paths (:func:`covered_kinds`: a model
with a "shoes" category covers footwear; every model with other categories covers garments).  The rule
(:func:`scope_verdict`) and its two thresholds are plain numbers, measured in ``benchmarks/bench_openworld.py``
on rendered garments (must stay ``known``) and on real photos.

:class:`ImageNetGuide` runs that network on images (letterboxed to a square, 224 px); ``Predictor.add_scope`` and the
server's answers use it when a guide is attached (``Predictor.load(run, guide="imagenet")``, ``serve --guide``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from fashionlens.files import atomic_write
from fashionlens.models import backbone_normalization, create_imagenet_classifier
from fashionlens.models.backbones import EFFICIENTNET_LITE
from fashionlens.utils import softmax

#: ImageNet-1k class index -> short name, per kind of wardrobe thing (timm's class order).
KINDS: dict[str, dict[int, str]] = {
    "garment": {
        399: "abaya", 400: "academic gown", 411: "apron", 445: "bikini", 459: "brassiere", 465: "vest",
        474: "cardigan", 501: "cloak", 797: "puffer", 568: "fur coat", 578: "gown", 601: "hoopskirt", 608: "jeans",
        610: "T-shirt", 614: "kimono", 617: "lab coat", 638: "maillot", 639: "tank suit", 652: "uniform",
        655: "miniskirt", 689: "overskirt", 697: "pyjamas", 735: "poncho", 775: "sarong", 824: "stole",
        834: "suit", 841: "sweatshirt", 842: "swimming trunks", 869: "trench coat", 887: "vestment",
        # textiles: knitwear and flat-laid garments are often seen as their cloth
        552: "feather boa", 591: "handkerchief", 885: "velvet", 911: "wool",
    },
    "footwear": {502: "clog", 514: "cowboy boot", 630: "loafer", 770: "running shoe", 774: "sandal",
                 788: "shoes", 806: "sock"},
    "headwear": {433: "bathing cap", 452: "bonnet", 515: "cowboy hat", 518: "crash helmet", 560: "football helmet",
                 667: "mortarboard", 715: "pickelhaube", 793: "shower cap", 796: "ski mask", 808: "sombrero"},
    "bag": {414: "backpack", 636: "mailbag", 748: "purse", 893: "wallet"},
    "accessory": {451: "bolo tie", 457: "bow tie", 464: "buckle", 531: "watch", 658: "mitten", 679: "necklace",
                  836: "sunglasses", 837: "sunglasses", 906: "tie"},
}
#: Words (in a category's name or taxonomy path) that make a model cover a kind other than garments.
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "footwear": ("shoe", "shoes", "sandal", "sandals", "boot", "boots", "sneaker", "sneakers", "footwear", "heels",
                 "loafer", "loafers", "slipper", "slippers", "trainers"),
    "headwear": ("hat", "hats", "cap", "caps", "beanie", "beanies", "headwear", "beret", "helmet"),
    "bag": ("bag", "bags", "handbag", "handbags", "purse", "purses", "backpack", "backpacks", "wallet", "tote"),
    "accessory": ("accessory", "accessories", "tie", "ties", "scarf", "scarves", "belt", "belts", "sunglasses",
                  "glasses", "watch", "watches", "jewellery", "jewelry", "necklace", "gloves"),
}
#: How a kind the model lacks is named to a person.
KIND_NAMES = {"garment": "a garment", "footwear": "shoes", "headwear": "a hat", "bag": "a bag",
              "accessory": "an accessory"}
FAMILIARITY_FILE = "familiarity.npz"  # in a run directory: what the model was trained on, as embeddings
FAMILIAR_QUANTILE = 0.05  # a photo is familiar when as close to the training photos as 95% of validation photos are
OUTSIDE_MIN = 0.4  # an uncovered kind needs this much probability (and more than the covered kinds) to be named
UNKNOWN_MAX = 0.15  # all wardrobe kinds together below this: "not a garment I know"
GUIDE_SIZE = 224


def guide_backbone(backbone: str) -> str:
    """The EfficientNet-Lite whose ImageNet classifier guides a model of ``backbone``: the same one, else Lite0."""
    return backbone if backbone in EFFICIENTNET_LITE else EFFICIENTNET_LITE[0]


def kind_masses(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 1000) ImageNet probabilities -> {kind: (N,) summed probability of its classes}."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[1] != 1000:
        raise ValueError(f"expected (N, 1000) ImageNet probabilities, got shape {p.shape}")
    return {kind: p[:, sorted(classes)].sum(axis=1) for kind, classes in KINDS.items()}


def covered_kinds(categories: Iterable[str], paths: Iterable[str] = ()) -> set[str]:
    """The kinds a model with these category names (and dotted taxonomy paths) has categories for."""
    covered: set[str] = set()
    for text in [*categories, *paths]:
        words = set(re.findall(r"[a-z]+", str(text).lower()))
        hits = {kind for kind, vocab in KIND_WORDS.items() if words & set(vocab)}
        covered |= hits or {"garment"}
    return covered


def scope_verdict(masses: dict[str, float], covered: set[str], familiar: bool = False, *,
                  outside_min: float = OUTSIDE_MIN, unknown_max: float = UNKNOWN_MAX) -> tuple[str, str | None]:
    """("known" | "outside" | "unknown", the kind named) for one photo's kind masses.

    ``familiar`` (the photo lies as close to the model's training photos as its validation photos do,
    :class:`Familiarity`): ``known`` whatever ImageNet says (rendered garments look like ties to it).
    ``outside``: the most probable kind is one the model lacks, with at least ``outside_min`` probability.
    ``unknown``: every wardrobe kind together stays under ``unknown_max``.  Otherwise ``known``: the guide
    does not overrule the model on a photo it is not sure about."""
    best = max(masses, key=lambda k: masses[k])
    if familiar:
        return "known", best if best in covered else None
    if best not in covered and masses[best] >= outside_min:
        return "outside", best
    if sum(masses.values()) < unknown_max:
        return "unknown", None
    return "known", best if best in covered else None


#: ImageNet garment classes -> words naming the garment, most specific first: the first word that names one of a
#: model's categories (by name or taxonomy level, :func:`category_matrix`) gives it that class's probability.
GARMENT_WORDS: dict[int, tuple[str, ...]] = {
    610: ("tee", "t-shirt", "tshirt", "top", "tops"), 841: ("sweatshirt", "hoodie", "sweater", "knitwear", "longsleeve"),
    474: ("cardigan", "sweater", "knitwear", "longsleeve"), 869: ("trench coat", "coat", "outerwear", "outwear"),
    568: ("coat", "outerwear", "outwear"), 617: ("coat", "outerwear", "outwear"), 735: ("poncho", "coat", "outerwear"),
    501: ("cloak", "coat", "outerwear", "outwear"), 797: ("jacket", "outerwear", "outwear", "coat"),
    465: ("vest", "jacket", "outerwear", "outwear"), 834: ("suit", "blazer", "jacket", "outerwear", "outwear"),
    652: ("uniform", "jacket", "outerwear", "outwear"), 608: ("jeans", "trousers", "pants"),
    655: ("miniskirt", "skirt", "skirts"), 689: ("skirt", "skirts"), 601: ("skirt", "skirts", "dress"),
    775: ("sarong", "skirt", "skirts"), 578: ("gown", "dress", "dresses"), 399: ("abaya", "dress", "dresses"),
    614: ("kimono", "dress", "dresses"), 400: ("gown", "dress"), 842: ("swimming trunks", "shorts"),
    445: ("bikini", "swimwear"), 639: ("swimsuit", "swimwear", "tank"), 638: ("swimsuit", "swimwear"),
    459: ("bra", "underwear"), 697: ("pyjamas", "nightwear"), 411: ("apron",), 887: ("robe",), 824: ("stole", "scarf"),
    **{i: ("shoes", "shoe", "footwear", "sneakers", "boots", "sandals") for i in KINDS["footwear"]},
    **{i: ("hat", "hats", "cap", "headwear") for i in KINDS["headwear"]},
    **{i: ("bag", "bags", "handbag", "backpack") for i in KINDS["bag"]},
}


def _norm(text: str) -> str:
    """Lower case, letters only, no plural s: 'T-shirts' -> 'tshirt'."""
    word = re.sub(r"[^a-z]", "", text.lower())
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def category_matrix(categories: Sequence[str], paths: Sequence[str] = ()) -> np.ndarray:
    """(1000, C) share of each ImageNet garment class that goes to each of a model's categories: the first of the
    class's :data:`GARMENT_WORDS` that names a category (its name, a word of it, or a level of its taxonomy path)
    picks it, split evenly when it names several (a taxonomy level)."""
    names = [{_norm(c), *(_norm(w) for w in re.split(r"[\s/_]+", c))} for c in categories]
    levels = [{_norm(x) for x in p.split(".")[:-1]} if p else set() for p in list(paths) + [""] * len(categories)]
    matrix = np.zeros((1000, len(categories)))
    for cls, words in GARMENT_WORDS.items():
        for word in map(_norm, words):
            hits = [j for j, name in enumerate(names) if word in name] or \
                   [j for j in range(len(categories)) if word in levels[j]]
            if hits:
                matrix[cls, hits] = 1.0 / len(hits)
                break
    return matrix


class ImageNetGuide:
    """The offline ImageNet EfficientNet-Lite classifier, asked what kind of thing each photo shows."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", *, device: str | torch.device = "cpu",
                 batch_size: int = 16):
        self.backbone, self.device, self.batch_size = backbone, torch.device(device), batch_size
        self.model = create_imagenet_classifier(backbone).to(self.device)
        mean, std = backbone_normalization(backbone)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.class_names = {i: name for classes in KINDS.values() for i, name in classes.items()}
        self._matrices: dict[tuple, np.ndarray] = {}
        self._info: Any = None

    def _descriptions(self) -> Any:
        """timm's ImageNet class descriptions (its ``ImageNetInfo``, read once)."""
        if self._info is None:
            from timm.data import ImageNetInfo  # lazy: timm is imported (after the CPU shim) by the model above

            self._info = ImageNetInfo()
        return self._info

    @property
    def space(self) -> str:
        """The name of the feature space :meth:`look` embeds into (a familiarity file must match it)."""
        return f"imagenet:{self.backbone}@{GUIDE_SIZE}"

    def tensor(self, image: Image.Image) -> np.ndarray:
        """(3, 224, 224) normalised input: the whole photo letterboxed on a white square (nothing cut off)."""
        image = image.convert("RGB")
        w, h = image.size
        side = max(w, h)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - w) // 2, (side - h) // 2))
        square = square.resize((GUIDE_SIZE, GUIDE_SIZE), Image.Resampling.BICUBIC)
        x = np.asarray(square, np.float32).transpose(2, 0, 1) / 255.0
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def look(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """((N, F) L2-normalised ImageNet features, (N, 1000) ImageNet class probabilities) in one pass."""
        feats, probs = [], []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.stack([self.tensor(im) for im in images[start:start + self.batch_size]]))
            pooled = self.model.forward_head(self.model.forward_features(batch.to(self.device)), pre_logits=True)
            logits = self.model.get_classifier()(pooled).float().cpu().numpy()
            feats.append(torch.nn.functional.normalize(pooled.float(), dim=1).cpu().numpy())
            probs.append(softmax(logits.astype(np.float64)))
        if not feats:
            return np.zeros((0, int(self.model.num_features)), np.float32), np.zeros((0, 1000))
        return np.concatenate(feats).astype(np.float32), np.concatenate(probs)

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 1000) ImageNet class probabilities."""
        return self.look(images)[1]

    def describe(self, probabilities: np.ndarray) -> dict[str, Any]:
        """What one photo looks like: its kind masses and the most probable ImageNet class (any class)."""
        masses = {k: float(v[0]) for k, v in kind_masses(probabilities[None]).items()}
        top = int(np.argmax(probabilities))
        looks = self.class_names.get(top) or self._descriptions().index_to_description(top).split(",")[0]
        return {"masses": masses, "looks_like": looks, "looks_like_probability": float(probabilities[top])}

    def scope(self, images: Sequence[Image.Image], categories: Sequence[str], paths: Sequence[str] = (),
              familiarity: Familiarity | None = None, **thresholds: float) -> list[dict[str, Any]]:
        """One ``scope`` dict per image for a model with these categories: verdict, kind, what it looks like, the
        message a person reads, ``familiar`` (by the model's :class:`Familiarity`, in this guide's feature
        space) and ``category_mass``: the (C,) ImageNet probability of each of the model's categories
        (:func:`category_matrix`; what :func:`fuse` mixes in)."""
        feats, probs = self.look(list(images))
        if familiarity is not None and familiarity.space not in ("", self.space):
            raise ValueError(f"{familiarity.source}: fitted in feature space {familiarity.space}, this guide's is "
                             f"{self.space}; rerun `fashionlens calibrate --familiarity`")
        flags = familiarity.familiar(feats) if familiarity is not None else np.zeros(len(probs), bool)
        key = (tuple(categories), tuple(paths))
        if key not in self._matrices:
            self._matrices[key] = category_matrix(categories, paths)
        mass = probs @ self._matrices[key]
        covered = covered_kinds(categories, paths)
        answers = []
        for p, near, m in zip(probs, flags, mass):
            seen = self.describe(p)
            verdict, kind = scope_verdict(seen["masses"], covered, bool(near), **thresholds)
            answers.append({**scope_answer(verdict, kind, seen), "familiar": bool(near), "category_mass": m})
        return answers


def fuse(model_probabilities: np.ndarray, category_mass: np.ndarray) -> tuple[np.ndarray, float]:
    """(the model's (C,) category probabilities mixed with ImageNet's, the weight ImageNet got) for a photo the
    model does not find familiar: ``(1 - w) p_model + w q / w`` with ``w`` = ImageNet's total probability on
    the model's categories (``category_mass.sum()``): the surer ImageNet is that the photo shows one of them,
    the more its own reading counts."""
    p = np.asarray(model_probabilities, np.float64)
    q = np.asarray(category_mass, np.float64)
    w = float(np.clip(q.sum(), 0.0, 1.0))
    if w <= 0:
        return p, 0.0
    return (1 - w) * p + q * (w / q.sum()), w


class Familiarity:
    """How close a photo lies to what the model was trained on: the cosine similarity of its guide features
    (:meth:`ImageNetGuide.look`) to the nearest training photo's (k-NN out-of-distribution scoring), against the
    ``threshold`` that ``1 - FAMILIAR_QUANTILE`` of the validation photos reach (``runs.familiarity``).

    The untouched ImageNet features, not the model's embedding: the demo model's embedding put 71% of real
    photos as close to its rendered training photos as its rendered validation photos are; ImageNet features
    put 5% there (and 94% of rendered test photos), see benchmarks/bench_openworld.py."""

    def __init__(self, reference: np.ndarray, threshold: float, *, source: str = "", space: str = ""):
        self.space = space  # the guide's feature space (ImageNetGuide.space) the reference lives in
        self.reference = np.asarray(reference, np.float32)
        if self.reference.ndim != 2 or not len(self.reference):
            raise ValueError(f"{source or 'familiarity'}: expected a non-empty (M, D) array of training features")
        self.threshold, self.source = float(threshold), source

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(N,) similarity of each (L2-normalised) vector to its nearest training embedding."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.reference.shape[1]:
            raise ValueError(f"{self.source or 'familiarity'}: vectors of dimension {vectors.shape[-1]}, the "
                             f"training photos' features have {self.reference.shape[1]} (another guide's file?)")
        return (vectors @ self.reference.T).max(axis=1) if len(vectors) else np.zeros(0, np.float32)

    def familiar(self, vectors: np.ndarray) -> np.ndarray:
        return self.scores(vectors) >= self.threshold

    def save(self, path: str) -> str:
        """Write ``path`` (.npz: the reference embeddings as float16, the threshold) crash-safely."""
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
                np.savez_compressed(f, reference=self.reference.astype(np.float16),
                                    threshold=np.float64(self.threshold), space=np.str_(self.space))

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str) -> Familiarity:
        try:
            with np.load(path) as data:
                space = str(data["space"]) if "space" in data.files else ""
                return cls(data["reference"].astype(np.float32), float(data["threshold"]), source=path, space=space)
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{path}: not a familiarity file ({e}); rerun `fashionlens calibrate`") from None


def scope_answer(verdict: str, kind: str | None, seen: dict[str, Any]) -> dict[str, Any]:
    """The ``scope`` of an answer: ``{"verdict", "kind", "looks_like", "message", "masses"}``."""
    looks = seen["looks_like"]
    if verdict == "outside":
        message = f"{KIND_NAMES[kind or 'garment']} ({looks}): not among this model's categories"
    elif verdict == "unknown":
        message = f"not a garment I know (looks like: {looks})"
    else:
        message = ""
    return {"verdict": verdict, "kind": kind, "looks_like": looks, "message": message,
            "masses": {k: round(v, 4) for k, v in seen["masses"].items()}}


__all__ = ["FAMILIARITY_FILE", "FAMILIAR_QUANTILE", "GARMENT_WORDS", "GUIDE_SIZE", "KINDS", "KIND_NAMES", "KIND_WORDS",
           "OUTSIDE_MIN", "UNKNOWN_MAX", "Familiarity", "ImageNetGuide", "category_matrix", "covered_kinds", "fuse",
           "guide_backbone", "kind_masses", "scope_answer", "scope_verdict"]
