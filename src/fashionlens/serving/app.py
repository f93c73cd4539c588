"""The HTTP API of fashionlens (FastAPI): classify, search, a catalog of items, health and metrics.

``create_app(ServeSettings(model_run=RUN, catalog_dir=CATALOG))`` returns the ASGI app; :func:`serve`
runs it with uvicorn.  Every answer is JSON; every error is
``{"error": {"code": "<snake_case>", "message": "..."}}`` with a 4xx status for bad input (5xx only for
the server's own faults, 503 / 504 when busy or slow).  OpenAPI docs at ``/docs``, the web page at ``/``.

Security: writes (POST / PATCH / DELETE on /v1/items) need the API key as ``Authorization: Bearer KEY``
or ``X-API-Key: KEY`` (compared in constant time) and answer 401 without it or with a wrong one.  The
key comes from ServeSettings.api_key, else ``$FASHIONLENS_API_KEY``, else ServeSettings.api_key_file.
**With no key configured, writes are refused (403)**: set one to enable them.  Reads (classify, search,
items) are public unless ``public_reads=False``; /healthz, /metrics and the docs are always public.

Endpoints (uploads are the multipart/form-data file field ``image``: JPEG, PNG or WebP):

* ``POST /v1/classify`` -> category (+ taxonomy path), top-5 scores, attributes, landmarks and garment
  box in the original image's pixels; form field ``target_accuracy`` adds the ``hedged`` taxonomy node.
* ``POST /v1/search`` (form fields ``k``, ``category``, ``attribute``, ``crop``, ``q`` words) -> the most similar items
  (``crop`` with a model without a box head: 422 ``no_box_head``).
* ``POST /v1/items`` (form fields ``sku``, ``title``, ``category``, ``attributes``, ``source``) -> 201 + item;
  ``GET`` / ``PATCH`` / ``DELETE /v1/items/{id}``, ``GET /v1/items/{id}/image``, ``GET /v1/items`` (``q``: search
  by words, e.g. ``red striped dress``; ``sku``: one product's items).
* ``GET /v1/labels`` -> every category and attribute the model knows, and whether hedged answers are available.
* People's answers: ``POST /v1/items`` form field ``label`` (``confirmed`` / ``corrected``: a person checked the
  category and attributes; absent: ``predicted`` when the model chose the category, ``given`` when the form sent
  one); ``POST /v1/items/{id}/answer`` (JSON ``{"verdict": "yes"|"no", "category", "attributes"}``, a write);
  ``GET /v1/review`` -> the audit's suspects, then the items whose label is still the model's answer, least sure
  first.  Every item has
  ``label`` (category, attributes, provenance, at, model).
* Privacy: ``source`` shows a server file path only to requests with the API key (others get its file name).
* ``GET /healthz``, ``GET /metrics`` (Prometheus text); ``/docs`` and ``/redoc`` with their scripts served here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, File, Form, Path, Query, Security, UploadFile
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import fashionlens
from fashionlens.openworld import covered_kinds
from fashionlens.serving._errors import ApiError, install_error_handlers
from fashionlens.serving._metrics import MetricsMiddleware
from fashionlens.serving._schemas import (
    AnswerBody,
    ClassifyResponse,
    ErrorResponse,
    Health,
    Item,
    ItemList,
    ItemPatch,
    Labels,
    ReviewQueue,
    SearchResponse,
    category_of,
    classify_body,
    form_text,
    item_body,
    parse_attributes,
    result_body,
    review_body,
)
from fashionlens.serving._service import Service
from fashionlens.serving._uploads import FORM_OVERHEAD, BodyLimitMiddleware, decode_upload, read_upload, upload_source
from fashionlens.serving._viewer import ViewerMiddleware
from fashionlens.serving.settings import ServeSettings

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
MAX_ITEM_ID = 2 ** 63 - 1  # SQLite's largest integer
CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
RERANK_CANDIDATES = 50  # candidates the rerank field verifies (OpenCV SIFT + RANSAC on each)
HEDGE_TARGETS = (0.8, 0.9, 0.95, 0.99)  # the target accuracies GET /v1/labels reports (the web page offers them)

ImageField = Annotated[UploadFile, File(description="the picture: JPEG, PNG or WebP (first frame of animations)")]
ItemId = Annotated[int, Path(ge=1, le=MAX_ITEM_ID, description="item id")]
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}


def create_app(settings: ServeSettings) -> FastAPI:
    """The ASGI app: loads the model and opens the catalog now (bad settings fail here, not on a request)."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.close()

    docs = _docs_assets()  # Swagger UI / ReDoc files served here (none: FastAPI's CDN-loaded pages)
    app = FastAPI(title="fashionlens", version=fashionlens.__version__, lifespan=lifespan,
                  description=(__doc__ or "").split("Endpoints")[0].strip(),
                  **({"docs_url": None, "redoc_url": None} if docs else {}))
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(ViewerMiddleware, holds_key=service.holds_key)  # innermost: the routes see who asks
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD,
                       max_file_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)  # outermost: counts the 413s too
    reads = _guard(service, "reads") if not settings.public_reads else _no_guard
    writes = _guard(service, "writes")
    _add_model_routes(app, service, reads)
    _add_item_routes(app, service, reads, writes)
    _add_review_routes(app, service, reads, writes)
    _add_ops_routes(app, service)
    if docs:
        _add_docs(app, docs)
    _add_web_page(app, settings.static_dir or STATIC_DIR)
    return app


def _guard(service: Service, action: str) -> Callable[..., None]:
    def guard(key: Annotated[str | None, Security(_api_key_header)] = None,
              bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None) -> None:
        service.check_key(key or (bearer.credentials if bearer else None), action)
    return guard


def _no_guard() -> None:
    return None


async def _decoded(service: Service, image: UploadFile) -> tuple[bytes, Any, str | None]:
    """(bytes, RGB image, extension) of a validated upload: size, format and pixel limits, full decode."""
    s = service.settings
    data = await read_upload(image, s.max_upload_bytes)
    picture, ext = await run_in_threadpool(decode_upload, data, max_pixels=s.max_pixels, formats=s.formats)
    return data, picture, ext


def _add_model_routes(app: FastAPI, service: Service, reads: Callable[..., None]) -> None:
    @app.post("/v1/classify", response_model=ClassifyResponse, dependencies=[Depends(reads)], tags=["model"],
              responses=_errors(401, 403, 413, 415, 422, 503, 504), summary="Classify a garment image")
    async def classify(image: ImageField,
                       target_accuracy: Annotated[float | None, Form(gt=0, le=1, description=(
                           "also answer the most specific taxonomy node right with this probability, e.g. 0.95 "
                           "(field hedged; needs a calibrated model)"))] = None) -> dict[str, Any]:
        """Category (+ taxonomy path and top-5), attributes, landmarks and box (original-image pixels)."""
        _, picture, _ = await _decoded(service, image)
        answer = await service.infer(picture)
        return classify_body(answer if target_accuracy is None else service.hedge(answer, target_accuracy))

    @app.post("/v1/search", response_model=SearchResponse, dependencies=[Depends(reads)], tags=["model"],
              responses=_errors(401, 403, 413, 415, 422, 503, 504), summary="Find similar catalog items")
    async def search(image: ImageField,
                     k: Annotated[int, Form(ge=1, le=100, description="number of results")] = 10,
                     category: Annotated[str | None, Form(max_length=200, description=(
                         "only items of this category name or taxonomy path prefix, e.g. upper; 'auto': the "
                         "query's predicted category, widened when the model is unsure (query.scope says where)"))
                     ] = None,
                     attribute: Annotated[str | None, Form(max_length=200, description="only items with it")] = None,
                     crop: Annotated[bool, Form(description="embed the garment box of the query")] = False,
                     same_category: Annotated[bool, Form(description=(
                         "only items of the category the model predicts for the query"))] = False,
                     target_accuracy: Annotated[float | None, Form(gt=0, le=1, description=(
                         "classification.hedged at this target accuracy (as /v1/classify)"))] = None,
                     group_sku: Annotated[bool, Form(description=(
                         "one result per SKU (its best item; same_sku lists the others found)"))] = False,
                     rerank: Annotated[bool, Form(description=(
                         "re-rank the top candidates by geometric verification of local features (RootSIFT + "
                         "RANSAC): near-duplicates of the query first; results get inliers and verified"))] = False,
                     q: Annotated[str | None, Form(max_length=500, description=(
                         "words, e.g. 'red striped dress': only items whose stored category and attributes match "
                         "every label the words name (query.words says what was understood)"))] = None,
                     ) -> dict[str, Any]:
        """The ``k`` catalog items most similar to the image, best first (cosine similarity), and the
        classification of the query image (the page uploads a photo once)."""
        catalog = service.catalog  # 503 before any work when no catalog is configured
        service.check_crop(crop)  # 422 before any work when the model has no box head
        _, picture, _ = await _decoded(service, image)
        answer = await service.infer(picture, crop)
        if target_accuracy is not None:
            answer = service.hedge(answer, target_accuracy)
        wanted, scope = form_text("category", category), None
        if same_category and answer.get("category"):
            wanted = answer["category"]
        if wanted == "auto":  # the predicted category, widened when the model is unsure (Catalog.auto_category)
            scope = await service.read(catalog.auto_category, answer, k, predictor=service.predictor)
            wanted = scope["category"]
        options = {"category": wanted, "attribute": form_text("attribute", attribute),
                   "rerank": RERANK_CANDIDATES if rerank else 0, "image": picture, "group_sku": group_sku}
        words, understood = form_text("q", q), None
        if words is not None:  # only items whose stored labels match the words
            understood, hits = await service.read(catalog.search_words, answer["embedding"], k, words,
                                                  predictor=service.predictor, **options)
        else:
            hits = await service.read(catalog.search, answer["embedding"], k, **options)
        hint = None
        if not hits and (options["category"] is not None or options["attribute"] is not None):
            hint = await service.read(catalog.filter_hint, options["category"], options["attribute"])
        return {"results": [result_body(h) for h in hits], "classification": classify_body(answer),
                "query": {"category": category_of(answer), "bbox": answer.get("bbox"), "crop": answer.get("crop"),
                          "scope": scope, "words": understood, "filter_hint": hint}}

    @app.get("/v1/labels", response_model=Labels, dependencies=[Depends(reads)], tags=["model"],
             responses=_errors(401, 403), summary="The labels the model knows")
    async def labels() -> dict[str, Any]:
        """Every category (with its taxonomy path) and attribute (with its group) the model predicts, and
        whether hedged answers (``target_accuracy``) can be asked for: what the web page offers."""
        return await run_in_threadpool(_labels_of, service.predictor, service.settings.target_accuracy)


#: What a model was trained on, in words, by the reader of its training data spec.
TRAINED_ON = {"garments": "rendered garments (fashionlens synth)", "folder": "photos (an image folder)",
              "images": "photos", "manifest": "photos (a manifest)", "fashion-mnist": "Fashion-MNIST (28 px product images)",
              "deepfashion-category": "DeepFashion (category and attribute benchmark)",
              "deepfashion-fine": "DeepFashion (fine-grained attributes)", "deepfashion-inshop": "DeepFashion In-shop",
              "deepfashion-c2s": "DeepFashion consumer-to-shop"}


def trained_on(predictor: Any) -> dict[str, Any] | None:
    """{data, categories, kinds, guide} of a Predictor: what its answers can be about."""
    cfg = getattr(predictor, "cfg", None)
    spec = str(getattr(getattr(cfg, "data", None), "spec", "") or "")
    if cfg is None or not predictor.categories:
        return None
    kind = spec.partition(":")[0]
    return {"data": TRAINED_ON.get(kind, kind or "unknown data"), "categories": len(predictor.categories),
            "kinds": sorted(covered_kinds(predictor.categories, predictor.paths)),
            "guide": getattr(predictor, "guide", None) is not None}


def _labels_of(predictor: Any, default_target: float | None = None) -> dict[str, Any]:
    """GET /v1/labels of a Predictor (reads the run's calibration file once)."""
    names, paths = list(predictor.categories), list(predictor.paths)
    categories = [{"name": n, "path": paths[i].split(".") if len(paths) == len(names) else [n]}
                  for i, n in enumerate(names)]
    groups, group_names = list(predictor.groups), predictor.group_names
    attributes = [{"name": a, "group": group_names.get(str(groups[j]), str(groups[j])) if len(groups) > j else None}
                  for j, a in enumerate(predictor.attributes)]
    try:
        predictor.check_target(HEDGE_TARGETS[0])
    except (FileNotFoundError, ValueError):  # not calibrated, or not for that target (the others are tried below)
        pass
    targets = []
    for target in HEDGE_TARGETS if predictor.hedger is not None else ():
        try:
            predictor.hedger.lambda_for(target)
            targets.append(target)
        except ValueError:
            pass
    default = default_target if default_target in targets else None
    return {"categories": categories, "attributes": attributes, "trained_on": trained_on(predictor),
            "hedging": {"calibrated": predictor.hedger is not None, "targets": targets, "default": default}}


def _add_item_routes(app: FastAPI, service: Service, reads: Callable[..., None],
                     writes: Callable[..., None]) -> None:
    @app.post("/v1/items", status_code=201, response_model=Item, dependencies=[Depends(writes)], tags=["items"],
              responses=_errors(401, 403, 413, 415, 422, 503), summary="Add an item to the catalog")
    async def add_item(response: Response, image: ImageField,
                       sku: Annotated[str | None, Form(max_length=500)] = None,
                       title: Annotated[str | None, Form(max_length=2000)] = None,
                       category: Annotated[str | None, Form(max_length=200, description=(
                           "category name; the model's prediction when absent"))] = None,
                       attributes: Annotated[str | None, Form(max_length=20000, description=(
                           "JSON list or comma-separated names; the model's prediction when absent"))] = None,
                       source: Annotated[str | None, Form(max_length=2000)] = None,
                       label: Annotated[str | None, Form(max_length=20, description=(
                           "a person checked the labels: confirmed (the category / attributes stored are right: the "
                           "form's, else the model's) or corrected (the form's category / attributes replace the "
                           "model's answer); absent: predicted, or given when the form sends a category"))] = None,
                       ) -> dict[str, Any]:
        """Store the image and its metadata (validated first: a refused upload leaves the catalog as it was)."""
        _ = service.catalog  # 503 before decoding the upload when no catalog is configured
        meta = {"sku": form_text("sku", sku), "title": form_text("title", title),
                "category": form_text("category", category), "attributes": parse_attributes(attributes),
                "source": form_text("source", source) or upload_source(image.filename)}
        answered = _label_field(label, meta)
        data, picture, ext = await _decoded(service, image)
        answer = await service.infer(picture)  # batched with other requests; the writer thread only stores
        item = await service.write(service.add_item, data, picture, ext, {k: v for k, v in meta.items() if v is not None},
                                   answer, answered)
        response.headers["Location"] = f"/v1/items/{item['item_id']}"
        return item_body(item)

    @app.get("/v1/items", response_model=ItemList, dependencies=[Depends(reads)], tags=["items"],
             responses=_errors(401, 403, 422, 503), summary="List items")
    async def list_items(offset: Annotated[int, Query(ge=0, le=MAX_ITEM_ID)] = 0,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50,
                         q: Annotated[str | None, Query(max_length=500, description=(
                             "words, e.g. 'red striped dress': the items whose stored category and attributes match "
                             "most of them first, then by the model's stored probabilities (query says what was "
                             "understood; each item's match how it matches)"))] = None,
                         sku: Annotated[str | None, Query(max_length=500, description=(
                             "only the items with exactly this SKU"))] = None) -> dict[str, Any]:
        catalog = service.catalog
        words, wanted_sku = form_text("q", q), form_text("sku", sku)
        if words is not None:
            found = await service.read(catalog.find_words, words, offset, limit, sku=wanted_sku,
                                       predictor=service.predictor)
            return {"items": [{**item_body(i), "match": i["match"]} for i in found["items"]], "total": found["total"],
                    "offset": offset, "limit": limit, "query": found["query"]}
        if wanted_sku is not None:
            found = await service.read(catalog.list_sku, wanted_sku, offset, limit)
            return {"items": [item_body(i) for i in found["items"]], "total": found["total"], "offset": offset,
                    "limit": limit}
        items = await service.read(catalog.list, offset, limit)
        total = await service.read(len, catalog)
        return {"items": [item_body(i) for i in items], "total": total, "offset": offset, "limit": limit}

    @app.get("/v1/items/{item_id}", response_model=Item, dependencies=[Depends(reads)], tags=["items"],
             responses=_errors(401, 403, 404, 422, 503), summary="One item")
    async def get_item(item_id: ItemId) -> dict[str, Any]:
        return item_body(await service.read(service.catalog.get, item_id))

    @app.patch("/v1/items/{item_id}", response_model=Item, dependencies=[Depends(writes)], tags=["items"],
               responses=_errors(401, 403, 404, 422, 503), summary="Change an item's metadata")
    async def patch_item(item_id: ItemId, patch: ItemPatch) -> dict[str, Any]:
        """Set sku / title / category / attributes; a field left out stays, null clears it."""
        fields = patch.model_dump(exclude_unset=True)
        return item_body(await service.write(service.catalog.update, item_id, **fields))

    @app.delete("/v1/items/{item_id}", status_code=204, response_class=Response, dependencies=[Depends(writes)],
                tags=["items"], responses=_errors(401, 403, 404, 422, 503), summary="Delete an item")
    async def delete_item(item_id: ItemId) -> Response:
        await service.write(service.remove_item, item_id)
        return Response(status_code=204)

    @app.get("/v1/items/{item_id}/image", response_class=Response, dependencies=[Depends(reads)], tags=["items"],
             responses={200: {"content": {t: {} for t in sorted(set(CONTENT_TYPES.values()))},
                              "description": "the stored image bytes"}, **_errors(401, 403, 404, 422, 503)},
             summary="An item's stored image")
    async def item_image(item_id: ItemId) -> Response:
        item = await service.read(service.catalog.get, item_id)
        data = await run_in_threadpool(_read_stored, item.get("image"))
        if data is None:
            raise ApiError(404, "no_image", f"item {item_id} has no stored image")
        ext = os.path.splitext(item["image"])[1].lstrip(".").lower()
        return Response(data, media_type=CONTENT_TYPES.get(ext, "application/octet-stream"),
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"})


def _label_field(value: str | None, meta: dict[str, Any]) -> str | None:
    """The ``label`` form field of POST /v1/items checked (422 ``invalid_label`` naming it)."""
    label = form_text("label", value, "invalid_label")
    if label is not None and label not in ("confirmed", "corrected"):
        raise ApiError(422, "invalid_label", f"label: expected confirmed or corrected (or no label), got {label!r}")
    if label == "corrected" and meta.get("category") is None and meta.get("attributes") is None:
        raise ApiError(422, "invalid_label", "label: corrected needs the right category or attributes in the form")
    return label


def _add_review_routes(app: FastAPI, service: Service, reads: Callable[..., None],
                       writes: Callable[..., None]) -> None:
    @app.post("/v1/items/{item_id}/answer", response_model=Item, dependencies=[Depends(writes)], tags=["review"],
              responses=_errors(401, 403, 404, 422, 503), summary="Record a person's answer to an item's label")
    async def answer_item(item_id: ItemId, body: AnswerBody) -> dict[str, Any]:
        """``yes``: the stored category and attributes are right (label ``confirmed``).  ``no``: ``category``
        and / or ``attributes`` are the right ones; the item takes them (label ``corrected``).  The history of
        labels is kept; the item's ``label`` is the latest."""
        fields = body.model_dump(exclude_unset=True)
        return item_body(await service.write(service.catalog.answer, item_id, fields.pop("verdict"), **fields))

    @app.get("/v1/review", response_model=ReviewQueue, dependencies=[Depends(reads)], tags=["review"],
             responses=_errors(401, 403, 422, 503), summary="The items the model is least sure of")
    async def review(offset: Annotated[int, Query(ge=0, le=MAX_ITEM_ID)] = 0,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """The label audit's suspects first (``fashionlens catalog audit``: the stored category is probably wrong;
        ``reason`` suspect, most certainly wrong first), then items whose label is still the model's answer
        (``predicted``; ``reason`` unsure), lowest ``margin`` first (best category probability minus the second
        best).  A person's answer takes an item out."""
        catalog = service.catalog
        queue = await service.read(catalog.review_queue, limit, offset)
        total = await service.read(catalog.review_count)
        return {"items": [review_body(e) for e in queue], "total": total, "offset": offset, "limit": limit}


def _docs_assets() -> str | None:
    """The folder of Swagger UI and ReDoc files (package ``fastapi-offline``), None when not installed."""
    try:
        folder = resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        return None
    with resources.as_file(folder) as path:
        return str(path) if (path / "swagger-ui-bundle.js").is_file() else None


def _add_docs(app: FastAPI, folder: str, prefix: str = "/docs-assets") -> None:
    """/docs (Swagger UI) and /redoc with their scripts, styles and icon served from ``folder``: FastAPI's
    recipe for self-hosted docs, so the pages work without the internet."""
    app.mount(prefix, StaticFiles(directory=folder), name="docs-assets")
    openapi = app.openapi_url or "/openapi.json"
    redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi, title=f"{app.title} - Swagger UI", oauth2_redirect_url=redirect,
                                   swagger_js_url=f"{prefix}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{prefix}/swagger-ui.css",
                                   swagger_favicon_url=f"{prefix}/favicon.png",
                                   swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{prefix}/redoc.standalone.js", redoc_favicon_url=f"{prefix}/favicon.png",
                              with_google_fonts=False)


def _read_stored(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:  # deleted meanwhile
        return None


def _add_ops_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness and what is loaded")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, "catalog_items": await run_in_threadpool(service.count)}

    @app.get("/metrics", response_class=Response, tags=["ops"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}})
    async def metrics() -> Response:
        count = await run_in_threadpool(service.count)
        text = service.metrics.render(count, service.batcher.pending())
        return Response(text, media_type=service.metrics.content_type)


def _add_web_page(app: FastAPI, folder: str) -> None:
    """The web page: index.html at GET /, its other files under / (after every API route)."""
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        page = os.path.join(folder, "index.html")
        if not os.path.isfile(page):
            raise ApiError(404, "no_web_page", "the web page is not installed (no index.html)")
        return FileResponse(page, media_type="text/html")

    if os.path.isdir(folder):
        app.mount("/", StaticFiles(directory=folder), name="static")


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the app with uvicorn (blocking); bind to 0.0.0.0 only behind a trusted network or proxy."""
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


__all__ = ["create_app", "serve"]
