"""The HTTP API: every endpoint through a client, auth, bad input, batching, metrics, docs."""

import asyncio
import contextlib
import glob
import hmac
import io
import os
import random
import sqlite3
import struct
import threading
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_catalog import DIM, LABELS, make_run  # the tiny random-weight run of the catalog tests

from fashionlens.cli import main
from fashionlens.serving import ServeSettings, create_app
from fashionlens.serving.batcher import MicroBatcher
from fashionlens.serving.settings import resolve_api_key

KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}


def build_fixture(root, items=20, views=4, catalog_items=12):
    """Render a tiny data set, a random tiny_cnn run and a catalog of its first ``catalog_items`` images."""
    import torch

    from fashionlens.catalog import Catalog
    from fashionlens.inference import Predictor

    torch.set_num_threads(1)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(root / "g"), "--items", str(items), "--views", str(views), "--size", "64",
                     "--quiet"]) == 0
    images = sorted(glob.glob(str(root / "g" / "category" / "img" / "**" / "*.jpg"), recursive=True))
    run = make_run(root / "run", images[::3][:24])
    with Catalog.create(str(root / "catalog"), dim=DIM, model_run=run) as cat:
        ids = cat.add(images[:catalog_items], [{"sku": f"S{i}"} for i in range(catalog_items)], Predictor.load(run))
    return SimpleNamespace(images=images, run=run, catalog=str(root / "catalog"), ids=ids)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def client(world):
    app = create_app(ServeSettings(world.run, world.catalog, api_key=KEY))
    with TestClient(app) as c:
        yield c


@contextlib.contextmanager
def make_client(world, **kw):
    app = create_app(ServeSettings(world.run, **{"catalog_dir": world.catalog, **kw}))
    try:
        with TestClient(app) as c:
            yield c
    finally:
        app.state.service.close()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def upload(data, name="x.jpg", mime="image/jpeg"):
    return {"image": (name, data, mime)}


def encode(image, fmt, **kw):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_header(width, height):
    """A PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def catalog_state(directory):
    """(every row id + status straight from items.db, stored image files): what a failed write must not touch."""
    with sqlite3.connect(os.path.join(directory, "items.db")) as db:
        rows = db.execute("SELECT id, status FROM items ORDER BY id").fetchall()
    return rows, sorted(os.listdir(os.path.join(directory, "images")))


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"].strip()
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


# -- model endpoints -----------------------------------------------------------------------------------------
def test_classify_matches_the_predictor(client, world):
    from fashionlens.inference import Predictor

    r = client.post("/v1/classify", files=upload(read(world.images[5])))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    expected = Predictor.load(world.run).predict([Image.open(world.images[5]).convert("RGB")])[0]
    assert body["category"]["name"] == expected["category"]
    assert body["category"]["path"] == expected["category_path"].split(".")
    assert body["category"]["score"] == pytest.approx(expected["category_scores"][0]["score"], abs=1e-4)
    assert [s["name"] for s in body["category_scores"]] == [s["name"] for s in expected["category_scores"]]
    assert len(body["category_scores"]) == len(LABELS["categories"])  # top-5 of 3 categories
    assert body["bbox"] == pytest.approx(expected["bbox"], abs=0.2)
    assert {a["group"] for a in body["attributes"]} <= {"texture"} and len(body["attributes"]) == 1
    assert body["landmarks"] and set(body["landmarks"][0]) == {"name", "x", "y", "visibility", "visible_prob"}
    assert body["image"] == {"width": 64, "height": 64} and body["hedged"] is None


def test_classify_decodes_formats_frames_and_orientation(client, world):
    base = Image.open(world.images[7]).convert("RGB")
    as_png = client.post("/v1/classify", files=upload(encode(base, "PNG"), "a.png", "image/png")).json()
    webp = client.post("/v1/classify", files=upload(encode(base, "WEBP", lossless=True), "a.webp", "image/webp"))
    assert webp.status_code == 200 and webp.json()["category_scores"] == as_png["category_scores"]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    animated = encode(base, "WEBP", save_all=True, append_images=[noise], lossless=True, duration=100)
    assert Image.open(io.BytesIO(animated)).n_frames == 2
    first = client.post("/v1/classify", files=upload(animated, "anim.webp", "image/webp")).json()
    assert first["category_scores"] == as_png["category_scores"] and first["bbox"] == as_png["bbox"]  # frame 1
    tall = base.crop((0, 0, 40, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    rotated = client.post("/v1/classify", files=upload(encode(tall, "JPEG", exif=exif.tobytes()))).json()
    assert rotated["image"] == {"width": 64, "height": 40}


def test_search_finds_each_item_first(client, world):
    for i in (0, 4, 9):
        r = client.post("/v1/search", files=upload(read(world.images[i])), data={"k": "3"})
        assert r.status_code == 200
        body = r.json()
        hits = body["results"]
        assert len(hits) == 3 and hits[0]["item_id"] == world.ids[i] and hits[0]["score"] == pytest.approx(1, abs=1e-3)
        assert hits[0]["sku"] == f"S{i}" and hits[0]["image_url"] == f"/v1/items/{world.ids[i]}/image"
        assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
        assert body["query"]["category"]["name"] in LABELS["categories"] and len(body["query"]["bbox"]) == 4
    name = hits[0]["category"]
    filtered = client.post("/v1/search", files=upload(read(world.images[9])), data={"k": "100", "category": name})
    assert filtered.status_code == 200 and {h["category"] for h in filtered.json()["results"]} == {name}
    assert filtered.json()["query"]["filter_hint"] is None  # it matched: no hint
    typo = client.post("/v1/search", files=upload(read(world.images[9])), data={"category": name.lower() + "x"}).json()
    hint = typo["query"]["filter_hint"]["category"]
    assert typo["results"] == [] and hint["known"] is False and name in hint["suggestions"]  # said, with the fix
    missing = client.post("/v1/search", files=upload(read(world.images[9])), data={"attribute": "no-such-attr"}).json()
    assert missing["results"] == [] and missing["query"]["filter_hint"]["attribute"]["known"] is False
    path = hits[0]["category_path"][0]
    by_path = client.post("/v1/search", files=upload(read(world.images[9])), data={"category": path}).json()
    assert all(h["category_path"][0] == path for h in by_path["results"])
    cropped = client.post("/v1/search", files=upload(read(world.images[9])), data={"crop": "true", "k": "2"})
    assert cropped.status_code == 200 and len(cropped.json()["results"]) == 2
    plain = client.post("/v1/search", files=upload(read(world.images[9])), data={"k": "3"}).json()["results"]
    assert all(h["inliers"] is None and h["verified"] is None for h in plain)
    checked = client.post("/v1/search", files=upload(read(world.images[9])), data={"k": "3", "rerank": "true"})
    assert checked.status_code == 200
    hits = checked.json()["results"]
    assert len(hits) == 3 and all(isinstance(h["inliers"], int) for h in hits)
    assert hits[0]["item_id"] == world.ids[9] and hits[0]["verified"]  # its own stored image: all points agree
    one = client.post("/v1/search", files=upload(read(world.images[9])),
                      data={"k": "100", "same_category": "true", "group_sku": "true"}).json()
    predicted = one["classification"]["category"]["name"]
    assert one["query"]["category"]["name"] == predicted  # the classification comes with the search
    assert one["classification"]["category_scores"] and one["classification"]["image"]["width"] > 0
    assert one["results"] and {h["category"] for h in one["results"]} == {predicted}
    assert all(h["same_sku"] == [] for h in one["results"])  # every item has its own SKU here
    auto = client.post("/v1/search", files=upload(read(world.images[9])), data={"k": "5", "category": "auto"}).json()
    scope = auto["query"]["scope"]
    assert set(scope) == {"category", "probability", "items", "hedged"} and scope["items"] >= 5
    assert all(scope["category"] is None or scope["category"] in (h["category"], *h["category_path"])
               or ".".join(h["category_path"]).startswith(scope["category"]) for h in auto["results"])


# -- items -------------------------------------------------------------------------------------------------------
def test_add_get_search_patch_delete(client, world):
    data = read(world.images[50])
    r = client.post("/v1/items", files=upload(data, "../../etc/passwd.jpg"), headers=AUTH,
                    data={"sku": "NEW-1", "title": "new shirt", "attributes": '["striped", "solid"]'})
    assert r.status_code == 201, r.text
    item = r.json()
    new = item["item_id"]
    assert r.headers["location"] == f"/v1/items/{new}" and new > max(world.ids)
    assert item["sku"] == "NEW-1" and item["title"] == "new shirt" and item["attributes"] == ["striped", "solid"]
    assert item["category"] in LABELS["categories"] and item["category_path"] == \
        LABELS["category_paths"][LABELS["categories"].index(item["category"])].split(".")  # predicted
    assert item["source"] == "upload:passwd.jpg" and item["image_url"] == f"/v1/items/{new}/image"
    stored = os.listdir(os.path.join(world.catalog, "images"))
    assert f"{new}.jpg" in stored and not any("passwd" in f for f in stored)  # the catalog chose the name
    assert client.get(f"/v1/items/{new}").json() == item
    image = client.get(f"/v1/items/{new}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg" and image.content == data

    hits = client.post("/v1/search", files=upload(data), data={"k": "2"}).json()["results"]
    assert hits[0]["item_id"] == new and hits[0]["sku"] == "NEW-1"

    patched = client.patch(f"/v1/items/{new}", headers={"Authorization": f"Bearer {KEY}"},
                           json={"title": "renamed", "category": "Shorts", "attributes": ["dotted"], "sku": None})
    assert patched.status_code == 200, patched.text
    p = patched.json()
    assert (p["title"], p["category"], p["category_path"], p["attributes"], p["sku"]) == \
        ("renamed", "Shorts", ["lower", "shorts", "shorts"], ["dotted"], None)
    listing = client.get("/v1/items", params={"offset": 0, "limit": 500}).json()
    assert listing["total"] == len(listing["items"]) and new in [i["item_id"] for i in listing["items"]]
    page = client.get("/v1/items", params={"offset": 2, "limit": 3}).json()
    assert [i["item_id"] for i in page["items"]] == world.ids[2:5] and (page["offset"], page["limit"]) == (2, 3)

    assert client.delete(f"/v1/items/{new}", headers=AUTH).status_code == 204
    assert_error(client.get(f"/v1/items/{new}"), 404, "not_found")
    assert_error(client.get(f"/v1/items/{new}/image"), 404, "not_found")
    assert_error(client.delete(f"/v1/items/{new}", headers=AUTH), 404, "not_found")
    assert all(h["item_id"] != new for h in client.post("/v1/search", files=upload(data)).json()["results"])
    assert f"{new}.jpg" not in os.listdir(os.path.join(world.catalog, "images"))


def test_item_ids_and_patch_bodies_are_validated(client):
    for method in ("get", "delete"):
        assert_error(client.request(method.upper(), "/v1/items/999999", headers=AUTH), 404, "not_found")
    assert_error(client.patch("/v1/items/999999", json={"title": "x"}, headers=AUTH), 404, "not_found")
    assert_error(client.get("/v1/items/0"), 422)
    assert_error(client.get(f"/v1/items/{2 ** 70}"), 422)
    assert_error(client.get("/v1/items/abc"), 422)
    message = assert_error(client.patch("/v1/items/1", json={"colour": "red"}, headers=AUTH), 422, "invalid_request")
    assert "colour" in message
    assert_error(client.patch("/v1/items/1", content=b"{not json", headers={**AUTH, "content-type": "application/json"}),
                 422)
    assert_error(client.get("/v1/items", params={"limit": 0}), 422)
    surrogate = {**AUTH, "content-type": "application/json"}  # valid JSON, but not storable text
    assert "surrogate" in assert_error(client.patch("/v1/items/1", content=b'{"title": "\\ud800"}', headers=surrogate),
                                       422, "invalid_request")


# -- authentication ----------------------------------------------------------------------------------------------
def test_writes_need_the_key(client, world, monkeypatch):
    before = catalog_state(world.catalog)
    image = upload(read(world.images[60]))
    message = assert_error(client.post("/v1/items", files=image), 401, "missing_api_key")
    assert "X-API-Key" in message
    assert client.post("/v1/items", files=image).headers["www-authenticate"] == "Bearer"
    assert_error(client.post("/v1/items", files=image, headers={"X-API-Key": KEY + "x"}), 401, "invalid_api_key")
    assert_error(client.post("/v1/items", files=image, headers={"Authorization": "Bearer nope"}), 401)
    assert_error(client.post("/v1/items", files=image, headers={"Authorization": f"Basic {KEY}"}), 401)
    assert_error(client.patch(f"/v1/items/{world.ids[0]}", json={"title": "x"}), 401)
    assert_error(client.delete(f"/v1/items/{world.ids[0]}"), 401)
    assert catalog_state(world.catalog) == before

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    r = client.patch(f"/v1/items/{world.ids[0]}", json={"title": "keyed"}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["title"] == "keyed"
    assert calls == [(KEY.encode(), KEY.encode())]  # the constant-time comparison decided


def test_no_key_configured_refuses_writes(world, monkeypatch):
    monkeypatch.delenv("FASHIONLENS_API_KEY", raising=False)
    with make_client(world) as c:
        message = assert_error(c.post("/v1/items", files=upload(read(world.images[61])), headers=AUTH), 403,
                               "no_api_key_configured")
        assert "FASHIONLENS_API_KEY" in message
        assert_error(c.delete(f"/v1/items/{world.ids[0]}", headers=AUTH), 403)
        assert c.get(f"/v1/items/{world.ids[0]}").status_code == 200  # reads stay public


def test_key_from_environment_or_file_and_private_reads(world, monkeypatch, tmp_path):
    monkeypatch.setenv("FASHIONLENS_API_KEY", "from-the-environment")
    with make_client(world, public_reads=False) as c:
        image = upload(read(world.images[3]))
        assert_error(c.post("/v1/classify", files=image), 401, "missing_api_key")
        assert_error(c.get("/v1/items"), 401)
        assert c.post("/v1/classify", files=image, headers={"X-API-Key": "from-the-environment"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200  # always public
    monkeypatch.delenv("FASHIONLENS_API_KEY")
    (tmp_path / "key").write_text("from-a-file\n")
    with make_client(world, api_key_file=str(tmp_path / "key")) as c:
        r = c.patch(f"/v1/items/{world.ids[1]}", json={"sku": "S1"}, headers={"Authorization": "Bearer from-a-file"})
        assert r.status_code == 200
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        create_app(ServeSettings(world.run, api_key_file=str(tmp_path / "empty")))


# -- bad input ----------------------------------------------------------------------------------------------------
def bad_uploads(world):
    """name -> (request keyword arguments, expected status, expected code)."""
    base = Image.open(world.images[2]).convert("RGB")
    jpeg = read(world.images[2])
    big = 10 * 1024 * 1024
    return {
        "zero_bytes": (dict(files=upload(b"")), 422, "empty_file"),
        "truncated": (dict(files=upload(jpeg[: len(jpeg) // 3])), 422, "corrupt_image"),
        "text": (dict(files=upload(b"name,price\nshirt,10\n", "a.csv", "text/csv")), 415, "unsupported_format"),
        "noise": (dict(files=upload(random.Random(0).randbytes(5000))), 415, "unsupported_format"),
        "gif": (dict(files=upload(encode(base, "GIF"), "a.gif", "image/gif")), 415, "unsupported_format"),
        "bmp": (dict(files=upload(encode(base, "BMP"), "a.bmp", "image/bmp")), 415, "unsupported_format"),
        "tiff": (dict(files=upload(encode(base, "TIFF"), "a.tif", "image/tiff")), 415, "unsupported_format"),
        "pixels": (dict(files=upload(png_header(7000, 7000), "a.png", "image/png")), 413, "too_many_pixels"),
        "bomb": (dict(files=upload(png_header(40000, 40000), "a.png", "image/png")), 413, "too_many_pixels"),
        "file_size": (dict(files=upload(jpeg + b"\0" * (big + 1 - len(jpeg)))), 413, "file_too_large"),
        "content_length": (dict(files=upload(jpeg + b"\0" * (big + 2 ** 20))), 413, "payload_too_large"),
        "wrong_field": (dict(files={"file": ("a.jpg", jpeg, "image/jpeg")}), 422, "missing_image"),
        "no_body": ({}, 422, "missing_image"),
        "image_as_text": (dict(data={"image": "not a file"}), 422, None),
        "torn_multipart": (dict(content=b"--xx\r\nrubbish", headers={
            "content-type": "multipart/form-data; boundary=xx"}), 422, "missing_image"),
        "no_boundary": (dict(content=b"rubbish", headers={"content-type": "multipart/form-data"}), 400, "bad_request"),
    }


BAD = ["zero_bytes", "truncated", "text", "noise", "gif", "bmp", "tiff", "pixels", "bomb", "file_size",
       "content_length", "wrong_field", "no_body", "image_as_text", "torn_multipart", "no_boundary"]


@pytest.mark.parametrize("endpoint", ["/v1/items", "/v1/classify", "/v1/search"])
def test_bad_uploads_are_clear_4xx_and_change_nothing(client, world, endpoint):
    cases = bad_uploads(world)
    before = catalog_state(world.catalog)
    for name in BAD:
        kw, status, code = cases[name]
        headers = {**AUTH, **kw.pop("headers", {})}
        message = assert_error(client.post(endpoint, headers=headers, **kw), status, code)
        if name in ("gif", "bmp", "tiff"):
            assert name.upper() in message and "JPEG, PNG or WebP" in message
        assert catalog_state(world.catalog) == before, name
    assert client.get("/v1/items").json()["total"] == len(before[0])


def test_bad_metadata_and_parameters(client, world):
    before = catalog_state(world.catalog)
    image = upload(read(world.images[20]))
    for attributes in ("[1, 2]", '["a",', '{"a": 1}', '["\\udc00"]'):
        assert_error(client.post("/v1/items", files=image, data={"attributes": attributes}, headers=AUTH), 422,
                     "invalid_attributes")
    assert_error(client.post("/v1/items", files=image, data={"title": "x" * 3000}, headers=AUTH), 422,
                 "invalid_request")
    for k in ("0", "101", "ten"):
        assert "k" in assert_error(client.post("/v1/search", files=image, data={"k": k}), 422, "invalid_request")
    assert catalog_state(world.catalog) == before


def test_chunked_upload_is_counted(client, world):
    """No Content-Length: the bytes are counted as they arrive and reading stops past the limit."""
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        for _ in range(12):
            yield b"\0" * 2 ** 20
        yield b"\r\n--b--\r\n"
    r = client.post("/v1/classify", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")


def test_failed_write_leaves_no_half_item(world, monkeypatch):
    import fashionlens.catalog.catalog

    def disk_full(*args, **kw):
        raise OSError(28, "No space left on device")
    before = catalog_state(world.catalog)
    monkeypatch.setattr(fashionlens.catalog.catalog, "write_images", disk_full)
    app = create_app(ServeSettings(world.run, world.catalog, api_key=KEY))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/items", files=upload(read(world.images[70])), headers=AUTH)
        assert_error(r, 500, "internal_error")
        assert "No space" not in r.text  # no internals in the answer
    assert catalog_state(world.catalog) == before


def test_no_catalog_answers_503_but_classifies(world, tmp_path):
    (tmp_path / "index.html").write_text("<html><body>fashionlens page</body></html>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    with make_client(world, catalog_dir=None, static_dir=str(tmp_path)) as c:
        assert_error(c.post("/v1/search", files=upload(read(world.images[1]))), 503, "no_catalog")
        assert_error(c.get("/v1/items"), 503, "no_catalog")
        assert_error(c.post("/v1/items", files=upload(read(world.images[1])), headers=AUTH), 403)
        assert c.post("/v1/classify", files=upload(read(world.images[1]))).status_code == 200
        assert c.get("/healthz").json() == {"status": "ok", "model": "run", "catalog_items": None}
        page = c.get("/")
        assert page.status_code == 200 and "fashionlens page" in page.text and "text/html" in page.headers["content-type"]
        assert c.get("/app.js").text == "console.log('hi')"
        assert_error(c.get("/missing.js"), 404)
    os.remove(tmp_path / "index.html")
    with make_client(world, catalog_dir=None, static_dir=str(tmp_path)) as c:
        assert_error(c.get("/"), 404, "no_web_page")


# -- operations --------------------------------------------------------------------------------------------------
def test_healthz_metrics_docs(client, world):
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "model": "run", "catalog_items": len(catalog_state(world.catalog)[0])}
    client.post("/v1/classify", files=upload(read(world.images[0])))
    client.post("/v1/classify", files=upload(b""))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    counts = {(s.labels["endpoint"], s.labels["status"]): s.value
              for s in families["fashionlens_http_requests"].samples if s.name.endswith("_total")}
    assert counts[("/v1/classify", "200")] >= 1 and counts[("/v1/classify", "422")] >= 1
    assert ("/v1/items/{item_id}", "404") in counts or ("/v1/items", "201") in counts  # route templates as labels
    latency = [s for s in families["fashionlens_http_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["endpoint"] == "/v1/classify"]
    assert latency and latency[0].value >= 2
    assert families["fashionlens_catalog_items"].samples[0].value == health["catalog_items"]
    assert any(s.name == "fashionlens_batch_size_count" and s.value >= 1 for s in families["fashionlens_batch_size"].samples)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/search", "/v1/items", "/v1/items/{item_id}", "/v1/items/{item_id}/image",
            "/healthz", "/metrics"} <= set(schema["paths"])
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")


# -- batching and timeouts ---------------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_with_the_same_answers(client, world):
    chosen = [world.images[i] for i in (1, 6, 11, 17, 23, 31, 44, 58)]
    single = [client.post("/v1/classify", files=upload(read(p))).json() for p in chosen]
    app = create_app(ServeSettings(world.run, batch_max=8, batch_wait_ms=300))

    async def together():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            return await asyncio.gather(*(c.post("/v1/classify", files=upload(read(p))) for p in chosen))
    try:
        answers = [r.json() for r in asyncio.run(together())]
        metrics = asyncio.run(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
                              .get("/metrics")).text
    finally:
        app.state.service.close()
    for a, b in zip(answers, single):
        assert a["category"]["name"] == b["category"]["name"] and a["bbox"] == pytest.approx(b["bbox"], abs=0.2)
        assert [s["score"] for s in a["category_scores"]] == pytest.approx([s["score"] for s in b["category_scores"]],
                                                                             abs=1e-3)
    samples = {(s.name, s.labels.get("le")): s.value for f in text_string_to_metric_families(metrics)
               if f.name == "fashionlens_batch_size" for s in f.samples}
    assert samples[("fashionlens_batch_size_sum", None)] == 8  # every image went through a batch
    assert samples[("fashionlens_batch_size_count", None)] < 8  # ... in fewer forward passes than requests
    assert samples[("fashionlens_batch_size_bucket", "1.0")] < samples[("fashionlens_batch_size_count", None)]


def test_batcher_isolates_failures_and_skips_cancelled():
    sizes = []

    def double(items):
        sizes.append(len(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [x * 2 for x in items]
    batcher = MicroBatcher(double, max_batch=4, max_wait_s=0.2)
    futures = [batcher.submit(x) for x in (1, 2, "bad", 3, 4)]
    assert [f.result(5) for f in futures if f is not futures[2]] == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="bad item"):
        futures[2].result(5)
    assert sizes[0] == 4  # collected into one batch, then the failing batch retried one item at a time
    gate = threading.Event()
    slow = MicroBatcher(lambda items: gate.wait(5) and items, max_batch=1, max_wait_s=0)
    first, second = slow.submit("a"), slow.submit("b")
    time.sleep(0.05)
    assert second.cancel()  # its caller gave up while it waited
    gate.set()
    assert first.result(5) == "a" and second.cancelled()
    batcher.close()
    slow.close()


def test_timeouts_and_a_full_queue_answer_json(world):
    with make_client(world, catalog_dir=None, request_timeout_s=0.2) as c:
        service = c.app.state.service
        predict = service.batcher.fn
        service.batcher.fn = lambda images: time.sleep(0.6) or predict(images)
        message = assert_error(c.post("/v1/classify", files=upload(read(world.images[0]))), 504, "timeout")
        assert "0.2 s" in message
        service.batcher.fn, service.batcher.max_queue = predict, 0
        assert_error(c.post("/v1/classify", files=upload(read(world.images[0]))), 503, "busy")


def test_settings_are_checked(world, tmp_path):
    with pytest.raises(ValueError, match="batch_max"):
        create_app(ServeSettings(world.run, batch_max=0))
    with pytest.raises(ValueError, match="formats"):
        create_app(ServeSettings(world.run, formats=("JPEG", "JPG2")))
    with pytest.raises(ValueError, match="model_run or a catalog_dir"):
        create_app(ServeSettings())
    from fashionlens.catalog import Catalog

    Catalog.create(str(tmp_path / "other"), dim=DIM + 8).close()
    with pytest.raises(ValueError, match="dimensions"):
        create_app(ServeSettings(world.run, str(tmp_path / "other")))
    defaults = ServeSettings()
    assert (defaults.max_upload_bytes, defaults.max_pixels, defaults.batch_max, defaults.public_reads) == \
        (10 * 2 ** 20, 40_000_000, 16, True)
    env = {"FASHIONLENS_API_KEY": "from-env"}
    assert resolve_api_key(ServeSettings(api_key="explicit"), env) == "explicit"  # settings first, then env, file
    assert resolve_api_key(ServeSettings(api_key_file=str(tmp_path / "missing")), env) == "from-env"
    assert resolve_api_key(ServeSettings(), {}) is None
    with pytest.raises(FileNotFoundError, match="missing"):
        resolve_api_key(ServeSettings(api_key_file=str(tmp_path / "missing")), {})
