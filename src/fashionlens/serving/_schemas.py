"""The JSON contract: pydantic models (they document /docs and /openapi.json) and the functions that
shape library answers (Predictor / Catalog dicts) into them.

Taxonomy paths are lists (``["upper", "tops", "tee"]``); the catalog stores them dotted.  Stored items
expose ``image_url`` (``/v1/items/{id}/image``), never the server's file path.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fashionlens.export import model_label
from fashionlens.serving._errors import ApiError
from fashionlens.serving._viewer import public_source, sees_private


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from e
    return value


Text = Annotated[str, AfterValidator(_utf8)]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable snake_case code, e.g. unsupported_format")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Category(BaseModel):
    name: str
    path: list[str] = Field(description="taxonomy path, coarse to fine, e.g. ['upper', 'tops', 'tee']")
    score: float | None = Field(description="probability of the predicted category, 0..1")


class Score(BaseModel):
    name: str
    score: float


class Attribute(BaseModel):
    name: str
    score: float = Field(description="probability 0..1")
    group: str | None = Field(None, description="attribute group (texture, fabric, ...) when the model has groups")


class Landmark(BaseModel):
    name: str
    x: float = Field(description="original-image pixels")
    y: float = Field(description="original-image pixels")
    visibility: str = Field(description="visible, occluded or truncated")
    visible_prob: float


class ImageSize(BaseModel):
    width: int = Field(description="pixels, after the EXIF orientation")
    height: int


class Hedged(BaseModel):
    name: str = Field(description="the taxonomy node answered: a category, a coarser node, or 'garment' (the root)")
    path: list[str] = Field(description="the node's taxonomy path, coarse to fine (empty for the root)")
    probability: float = Field(description="calibrated probability that the garment lies under this node, 0..1")
    target_accuracy: float = Field(description="the accuracy asked for, 0..1")


class Scope(BaseModel):
    verdict: str = Field(description=(
        "known: a kind of thing the model has categories for (its answer stands); outside: a wardrobe thing it "
        "has no category for (shoes, a hat, a bag, an accessory); unknown: not a garment it knows"))
    kind: str | None = Field(description="garment, footwear, headwear, bag or accessory (null when unknown)")
    looks_like: str = Field(description="the most probable ImageNet class (e.g. 'running shoe', 'tabby')")
    message: str = Field(description="what to tell a person when the verdict is not known (empty otherwise)")
    familiar: bool = Field(description="as close to the model's training photos as its validation photos are")
    fused: float = Field(description=(
        "for a known kind of photo far from the model's training photos: the weight of ImageNet's reading in the "
        "category answered (0: the model's own answer)"))
    model_category: str | None = Field(description="the model's own best category, before ImageNet was mixed in")
    masses: dict[str, float] = Field(description="ImageNet probability summed per kind, 0..1")


class ClassifyResponse(BaseModel):
    category: Category | None
    category_scores: list[Score] = Field(description="the 5 most likely categories, best first")
    attributes: list[Attribute]
    landmarks: list[Landmark]
    bbox: list[float] | None = Field(description="garment box [x1, y1, x2, y2] in original-image pixels")
    image: ImageSize
    hedged: Hedged | None = Field(None, description=(
        "with the form field target_accuracy: the most specific taxonomy node that is right with that probability "
        "(needs a calibrated model); null otherwise"))
    scope: Scope | None = Field(None, description=(
        "with the server's open-world guide (serve --guide imagenet): whether the photo shows a kind of thing "
        "the model knows; null without a guide"))


class SearchResult(BaseModel):
    item_id: int
    score: float = Field(description="cosine similarity of the embeddings, -1..1")
    inliers: int | None = Field(None, description=(
        "with rerank: local-feature matches consistent with one homography between query and item"))
    verified: bool | None = Field(None, description="with rerank: enough inliers to call the item the same picture")
    same_sku: list[int] | None = Field(None, description="with group_sku: the SKU's other items among the candidates")
    category: str | None
    category_path: list[str] | None
    attributes: list[str]
    sku: str | None
    title: str | None
    source: str | None
    image_url: str | None


class SearchScope(BaseModel):
    category: str | None = Field(description="the category name or taxonomy path searched (null: everything)")
    probability: float = Field(description="the model's probability that the query belongs there")
    items: int = Field(description="catalog items within it")
    hedged: bool = Field(description="chosen by the calibrated hedged answer (else by summed probabilities)")


class WordMatch(BaseModel):
    words: str = Field(description="the query's words (lower case) that named the label, e.g. 't shirts'")
    kind: str = Field(description="category (a leaf), node (a taxonomy node: every category under it) or attribute")
    label: str = Field(description="the category name, the node's name or the attribute name")
    paths: list[list[str]] = Field(description="taxonomy paths the category or node covers (empty for attributes)")
    group: str | None = Field(None, description="an attribute's group, when the model's labels have groups")


class WordsQuery(BaseModel):
    text: str = Field(description="the words as sent")
    matched: list[WordMatch] = Field(description="which words matched which label, in query order")
    unknown: list[str] = Field(description="words that name no label the catalog knows (ignored by the filter)")
    ignored: list[str] = Field(description="filler words (a, with, ...)")
    suggestions: dict[str, list[str]] = Field(description="unknown word -> label names spelt close to it")


class ItemMatch(BaseModel):
    exact: bool = Field(description="the stored labels match every term")
    matched_terms: int = Field(description="terms the stored category / attributes match")
    terms: int = Field(description="terms understood in the query")
    log_probability: float = Field(description=(
        "sum of the log-probabilities the model gave the terms (stored prediction; a stored label without one: 0)"))
    probability: float = Field(description="exp(log_probability)")


class FilterName(BaseModel):
    name: str = Field(description="the filter value asked for")
    known: bool = Field(description="the model or some item has this label (but no stored item has it now)")
    suggestions: list[str] = Field(description="close names the catalog knows")


class FilterHint(BaseModel):
    category: FilterName | None = None
    attribute: FilterName | None = None


class SearchQuery(BaseModel):
    category: Category | None = Field(description="the model's category for the query image")
    bbox: list[float] | None = Field(description="the garment box found in the query image, pixels")
    crop: list[int] | None = Field(None, description=(
        "with crop: the [left, top, right, bottom] pixels that were embedded (null: the whole image)"))
    scope: SearchScope | None = Field(None, description="with category=auto: where the search looked")
    words: WordsQuery | None = Field(None, description="with q: what was understood of the words")
    filter_hint: FilterHint | None = Field(None, description=(
        "when the category / attribute filter matches no stored item: whether the name is known, and close names"))


class SearchResponse(BaseModel):
    results: list[SearchResult]
    query: SearchQuery
    classification: ClassifyResponse = Field(description=(
        "what /v1/classify answers for the query image (one upload gives both)"))


class ItemLabel(BaseModel):
    category: str | None
    attributes: list[str]
    provenance: Literal["predicted", "given", "confirmed", "corrected"] = Field(description=(
        "predicted: the model's answer; given: sent with the item or set by an edit, unreviewed; confirmed: a person "
        "said it is right; corrected: a person gave it instead of the model's answer"))
    at: str = Field(description="when the label was recorded, ISO 8601 UTC")
    model: str | None = Field(description="the model (run name) that predicted it or whose answer was judged")


class Item(BaseModel):
    item_id: int
    sku: str | None
    title: str | None
    category: str | None
    category_path: list[str] | None
    attributes: list[str]
    source: str | None = Field(description=(
        "where the item came from: a URL, upload:NAME, or a file's name (its full server path only with the API key)"))
    image_url: str | None
    created_at: str
    updated_at: str
    extra: dict[str, Any] = Field(description="other metadata and the model's prediction details")
    label: ItemLabel | None = Field(None, description=(
        "the item's current label and where it came from (null: stored before labels were recorded)"))


class AnswerBody(BaseModel):
    """A person's answer to an item's label."""

    model_config = ConfigDict(extra="forbid")
    verdict: Literal["yes", "no"] = Field(description=(
        "yes: the stored category and attributes are right; no: category and / or attributes are the right ones"))
    category: Text | None = Field(None, max_length=200, description="with no: the right category")
    attributes: list[Annotated[Text, Field(max_length=200)]] | None = Field(None, max_length=1000, description=(
        "with no: the right attribute names (what is not sent stays)"))


class ReviewSuspect(BaseModel):
    score: float = Field(description="the audit's probability of the stored category, 0..1")
    model_category: str = Field(description="the category the audit finds more likely")
    confidence: float = Field(description="its probability minus the stored category's: 1 = surely wrong")
    at: str = Field(description="when the audit ran (ISO 8601, UTC)")


class ReviewEntry(BaseModel):
    item: Item
    margin: float | None = Field(description="the model's best category probability minus its second best: low = "
                                 "unsure (null when the item has no stored prediction)")
    guesses: list[Score] = Field(description="the model's top categories for the item, best first")
    reason: str = Field(description="suspect (the label audit, `fashionlens catalog audit`, doubts the stored "
                        "category) or unsure (the model's own answer, not yet checked by a person)")
    suspect: ReviewSuspect | None = Field(None, description="with reason suspect: what the audit found")


class ReviewQueue(BaseModel):
    items: list[ReviewEntry] = Field(description="the audit's suspects (most certainly wrong first), then items "
                                     "whose label is the model's answer, least sure first")
    total: int = Field(description="items waiting for review")
    offset: int
    limit: int


class ListedItem(Item):
    match: ItemMatch | None = Field(None, description="with q: how the item matches the words")


class ItemList(BaseModel):
    items: list[ListedItem] = Field(description="by id; with q: best match first")
    total: int = Field(description="items in the catalog; with q or sku: items that match")
    offset: int
    limit: int
    query: WordsQuery | None = Field(None, description="with q: what was understood of the words")


class LabelCategory(BaseModel):
    name: str
    path: list[str] = Field(description="taxonomy path, coarse to fine (just the name when the model has none)")


class LabelAttribute(BaseModel):
    name: str
    group: str | None = Field(None, description="attribute group (texture, fabric, ...) when the model has groups")


class Hedging(BaseModel):
    calibrated: bool = Field(description="whether target_accuracy can be asked for (`fashionlens calibrate` ran)")
    targets: list[float] = Field(description="of 0.8, 0.9, 0.95 and 0.99: the target accuracies the calibration fits")
    default: float | None = Field(None, description="the target accuracy the page asks for first (serve "
                                  "--target-accuracy); null: the best guess")


class TrainedOn(BaseModel):
    data: str = Field(description="what the model was trained on, in words (e.g. 'rendered garments')")
    categories: int = Field(description="how many categories it tells apart")
    kinds: list[str] = Field(description="the kinds of wardrobe things it has categories for (garment, footwear, ...)")
    guide: bool = Field(description="whether answers say when a photo shows something the model does not know")


class Labels(BaseModel):
    categories: list[LabelCategory] = Field(description="every category the model predicts, in its order")
    attributes: list[LabelAttribute] = Field(description="every attribute the model predicts, in its order")
    hedging: Hedging
    trained_on: TrainedOn | None = Field(None, description="what the model knows (null for an ensemble of "
                                         "different data)")


class ItemPatch(BaseModel):
    """Fields to change; a field left out stays, null clears it."""

    model_config = ConfigDict(extra="forbid")
    sku: Text | None = Field(None, max_length=500)
    title: Text | None = Field(None, max_length=2000)
    category: Text | None = Field(None, max_length=200)
    attributes: list[Annotated[Text, Field(max_length=200)]] | None = Field(None, max_length=1000)


class Health(BaseModel):
    status: str
    model: str
    catalog_items: int | None = Field(description="null when no catalog is configured")


# -- shaping library answers -------------------------------------------------------------------------------
def split_path(dotted: str | None) -> list[str] | None:
    return [p for p in dotted.split(".") if p] if dotted else None


def category_of(answer: dict[str, Any]) -> dict[str, Any] | None:
    name = answer.get("category")
    if name is None:
        return None
    scores = answer.get("category_scores") or []
    return {"name": name, "path": split_path(answer.get("category_path")) or [name],
            "score": scores[0]["score"] if scores else None}


def classify_body(answer: dict[str, Any]) -> dict[str, Any]:
    """A Predictor answer (with ``"hedged"`` when one was asked for) -> :class:`ClassifyResponse` fields."""
    return {"category": category_of(answer), "category_scores": answer.get("category_scores") or [],
            "attributes": answer.get("attributes") or [], "landmarks": answer.get("landmarks") or [],
            "bbox": answer.get("bbox"), "image": {"width": answer["width"], "height": answer["height"]},
            "hedged": answer.get("hedged"), "scope": answer.get("scope")}


def image_url(item_id: int, stored: str | None) -> str | None:
    return f"/v1/items/{item_id}/image" if stored else None


def source_of(value: str | None) -> str | None:
    """``source`` as this request may see it: in full with the API key, else without server paths."""
    return value if sees_private() else public_source(value)


def label_body(label: dict[str, Any] | None) -> dict[str, Any] | None:
    """An item's ``label`` -> :class:`ItemLabel` fields (the model by its run's name, never a server path)."""
    if not label:
        return None
    return {"category": label.get("category"), "attributes": list(label.get("attributes") or []),
            "provenance": label["provenance"], "at": label["at"],
            "model": model_label(label["model"]) if label.get("model") else None}


def item_body(item: dict[str, Any]) -> dict[str, Any]:
    """A ``Catalog.get`` dict -> :class:`Item` fields."""
    keys = ("sku", "title", "category", "attributes", "created_at", "updated_at", "extra")
    return {"item_id": item["item_id"], **{k: item.get(k) for k in keys}, "source": source_of(item.get("source")),
            "category_path": split_path(item.get("category_path")),
            "image_url": image_url(item["item_id"], item.get("image")), "label": label_body(item.get("label"))}


def review_body(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``Catalog.review_queue`` entry -> :class:`ReviewEntry` fields."""
    return {"item": item_body(entry["item"]), "margin": entry["margin"],
            "guesses": [{"name": g["name"], "score": g["score"]} for g in entry["guesses"]],
            "reason": entry.get("reason", "unsure"), "suspect": entry.get("suspect")}


def result_body(hit: dict[str, Any]) -> dict[str, Any]:
    """A ``Catalog.search`` hit -> :class:`SearchResult` fields."""
    keys = ("item_id", "category", "attributes", "sku", "title", "inliers", "verified", "same_sku")
    return {**{k: hit.get(k) for k in keys}, "score": round(float(hit["score"]), 5),
            "source": source_of(hit.get("source")), "category_path": split_path(hit.get("category_path")),
            "image_url": image_url(hit["item_id"], hit.get("image"))}


def form_text(name: str, value: str | None, code: str = "invalid_request") -> str | None:
    """A form field's text (None when absent or blank, as HTML forms send empty inputs); 422 for bad text."""
    if value is None or not value.strip():
        return None
    try:
        return _utf8(value.strip())
    except ValueError as e:
        raise ApiError(422, code, f"{name}: {e}") from e


def parse_attributes(value: str | None) -> list[str] | None:
    """``attributes`` form field: a JSON list of names or ``a,b,c``; None when absent or blank."""
    text = form_text("attributes", value, "invalid_attributes")
    if text is None:
        return None
    if text[0] in "[{\"":  # JSON (a list is expected)
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ApiError(422, "invalid_attributes", f"attributes: not valid JSON ({e.msg} at character {e.pos}); "
                           "send a JSON list of names or comma-separated names") from e
        if not isinstance(names, list) or not all(isinstance(a, str) for a in names):
            raise ApiError(422, "invalid_attributes", "attributes: the JSON value must be a list of names (strings)")
        return [t for a in names if (t := form_text("attributes", a, "invalid_attributes"))]
    return [a.strip() for a in text.split(",") if a.strip()]


__all__ = ["AnswerBody", "ClassifyResponse", "ErrorResponse", "Health", "Item", "ItemList", "ItemPatch", "Labels",
           "ReviewQueue", "SearchResponse", "classify_body", "form_text", "item_body", "parse_attributes",
           "result_body", "review_body"]
