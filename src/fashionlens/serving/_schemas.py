"""The JSON contract: pydantic models (they document /docs and /openapi.json) and the functions that
shape library answers (Predictor / Catalog dicts) into them.

Taxonomy paths are lists (``["upper", "tops", "tee"]``); the catalog stores them dotted.  Stored items
expose ``image_url`` (``/v1/items/{id}/image``), never the server's file path.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fashionlens.serving._errors import ApiError


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


class SearchQuery(BaseModel):
    category: Category | None = Field(description="the model's category for the query image")
    bbox: list[float] | None = Field(description="the garment box found in the query image, pixels")
    crop: list[int] | None = Field(None, description=(
        "with crop: the [left, top, right, bottom] pixels that were embedded (null: the whole image)"))
    scope: SearchScope | None = Field(None, description="with category=auto: where the search looked")


class SearchResponse(BaseModel):
    results: list[SearchResult]
    query: SearchQuery
    classification: ClassifyResponse = Field(description=(
        "what /v1/classify answers for the query image (one upload gives both)"))


class Item(BaseModel):
    item_id: int
    sku: str | None
    title: str | None
    category: str | None
    category_path: list[str] | None
    attributes: list[str]
    source: str | None
    image_url: str | None
    created_at: str
    updated_at: str
    extra: dict[str, Any] = Field(description="other metadata and the model's prediction details")


class ItemList(BaseModel):
    items: list[Item]
    total: int
    offset: int
    limit: int


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
            "hedged": answer.get("hedged")}


def image_url(item_id: int, stored: str | None) -> str | None:
    return f"/v1/items/{item_id}/image" if stored else None


def item_body(item: dict[str, Any]) -> dict[str, Any]:
    """A ``Catalog.get`` dict -> :class:`Item` fields."""
    keys = ("sku", "title", "category", "attributes", "source", "created_at", "updated_at", "extra")
    return {"item_id": item["item_id"], **{k: item.get(k) for k in keys},
            "category_path": split_path(item.get("category_path")), "image_url": image_url(item["item_id"], item.get("image"))}


def result_body(hit: dict[str, Any]) -> dict[str, Any]:
    """A ``Catalog.search`` hit -> :class:`SearchResult` fields."""
    keys = ("item_id", "category", "attributes", "sku", "title", "source", "inliers", "verified", "same_sku")
    return {**{k: hit.get(k) for k in keys}, "score": round(float(hit["score"]), 5),
            "category_path": split_path(hit.get("category_path")), "image_url": image_url(hit["item_id"], hit.get("image"))}


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


__all__ = ["ClassifyResponse", "ErrorResponse", "Health", "Item", "ItemList", "ItemPatch", "SearchResponse",
           "classify_body", "form_text", "item_body", "parse_attributes", "result_body"]
