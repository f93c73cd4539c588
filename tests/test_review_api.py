"""The loop back over HTTP: item labels and their provenance, POST /v1/items/{id}/answer, GET /v1/review, the
``label`` form field, server paths kept from readers, and the self-hosted /docs and /redoc."""

import os
import re
import sqlite3

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from test_api import AUTH, KEY, assert_error, build_fixture, make_client, read, upload
from test_catalog import LABELS

from fashionlens.serving import ServeSettings, create_app

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def client(world):
    app = create_app(ServeSettings(world.run, world.catalog, api_key=KEY))
    with TestClient(app) as c:
        yield c


def label_count(directory):
    with sqlite3.connect(os.path.join(directory, "items.db")) as db:
        return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]


def other_category(name):
    return next(c for c in LABELS["categories"] if c != name)


def margin_of(item):
    scores = [s["score"] for s in item["extra"]["prediction"]["category_scores"]]
    return round(scores[0] - (scores[1] if len(scores) > 1 else 0.0), 5)


# -- review queue ------------------------------------------------------------------------------------------------
def test_review_lists_the_least_sure_predictions_first_and_drops_answered_ones(client, world):
    items = client.get("/v1/items", params={"limit": 500}).json()["items"]
    assert all(i["label"]["provenance"] == "predicted" and i["label"]["model"] == "run" for i in items)
    r = client.get("/v1/review", params={"limit": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = sorted(world.ids, key=lambda i: (margin_of(next(x for x in items if x["item_id"] == i)), i))
    assert [e["item"]["item_id"] for e in body["items"]] == expected and body["total"] == len(world.ids)
    assert [e["margin"] for e in body["items"]] == sorted(e["margin"] for e in body["items"])
    first = body["items"][0]
    assert first["guesses"][0]["name"] == first["item"]["category"]
    assert first["margin"] == pytest.approx(first["guesses"][0]["score"] - first["guesses"][1]["score"], abs=1e-5)
    page = client.get("/v1/review", params={"offset": 2, "limit": 3}).json()
    assert [e["item"]["item_id"] for e in page["items"]] == expected[2:5] and (page["offset"], page["limit"]) == (2, 3)

    sure_yes, sure_no = expected[0], expected[1]
    assert client.post(f"/v1/items/{sure_yes}/answer", json={"verdict": "yes"}, headers=AUTH).status_code == 200
    wrong = other_category(first["item"]["category"])
    assert client.post(f"/v1/items/{sure_no}/answer", json={"verdict": "no", "category": wrong},
                       headers=AUTH).status_code == 200
    after = client.get("/v1/review", params={"limit": 500}).json()
    assert [e["item"]["item_id"] for e in after["items"]] == expected[2:] and after["total"] == len(expected) - 2
    assert_error(client.get("/v1/review", params={"limit": 0}), 422)
    assert_error(client.get("/v1/review", params={"offset": -1}), 422)


# -- answers -----------------------------------------------------------------------------------------------------
def test_answers_confirm_or_correct_an_item(client, world):
    item_id = world.ids[5]
    old = client.get(f"/v1/items/{item_id}").json()
    yes = client.post(f"/v1/items/{item_id}/answer", json={"verdict": "yes"}, headers=AUTH)
    assert yes.status_code == 200, yes.text
    label = yes.json()["label"]
    assert label["provenance"] == "confirmed" and label["model"] == "run" and label["category"] == old["category"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", label["at"])  # ISO 8601, UTC

    wrong = other_category(old["category"])
    no = client.post(f"/v1/items/{item_id}/answer", json={"verdict": "no", "category": wrong, "attributes": ["dotted"]},
                     headers={"Authorization": f"Bearer {KEY}"})
    assert no.status_code == 200, no.text
    item = no.json()
    assert (item["category"], item["attributes"], item["label"]["provenance"]) == (wrong, ["dotted"], "corrected")
    assert item["category_path"] == LABELS["category_paths"][LABELS["categories"].index(wrong)].split(".")
    assert client.get(f"/v1/items/{item_id}").json()["label"] == item["label"]


def test_bad_answers_are_refused_and_write_nothing(client, world):
    item_id = world.ids[6]
    before, rows = client.get(f"/v1/items/{item_id}", headers=AUTH).json(), label_count(world.catalog)
    assert_error(client.post(f"/v1/items/{item_id}/answer", json={"verdict": "yes"}), 401, "missing_api_key")
    assert_error(client.post(f"/v1/items/{item_id}/answer", json={"verdict": "yes"}, headers={"X-API-Key": "nope"}),
                 401, "invalid_api_key")
    assert "verdict" in assert_error(client.post(f"/v1/items/{item_id}/answer", json={"verdict": "maybe"},
                                                 headers=AUTH), 422, "invalid_request")
    assert "verdict" in assert_error(client.post(f"/v1/items/{item_id}/answer", json={}, headers=AUTH), 422)
    assert "colour" in assert_error(client.post(f"/v1/items/{item_id}/answer", json={"verdict": "yes", "colour": "red"},
                                                headers=AUTH), 422, "invalid_request")
    assert "attributes" in assert_error(client.post(f"/v1/items/{item_id}/answer",
                                                    json={"verdict": "no", "attributes": "a,b"}, headers=AUTH), 422)
    assert "category" in assert_error(client.post(f"/v1/items/{item_id}/answer", json={"verdict": "no"},
                                                  headers=AUTH), 422, "invalid_item")
    assert "confirms the stored category" in assert_error(client.post(
        f"/v1/items/{item_id}/answer", json={"verdict": "yes", "category": other_category(before["category"])},
        headers=AUTH), 422, "invalid_item")
    assert_error(client.post("/v1/items/999999/answer", json={"verdict": "yes"}, headers=AUTH), 404, "not_found")
    assert_error(client.post("/v1/items/0/answer", json={"verdict": "yes"}, headers=AUTH), 422)
    assert client.get(f"/v1/items/{item_id}", headers=AUTH).json() == before and label_count(world.catalog) == rows


def test_the_label_form_field_of_a_new_item(client, world):
    data = read(world.images[40])
    plain = client.post("/v1/items", files=upload(data), headers=AUTH).json()
    assert plain["label"]["provenance"] == "predicted" and plain["label"]["category"] == plain["category"]
    given = client.post("/v1/items", files=upload(data), data={"category": "Tee", "label": ""}, headers=AUTH).json()
    assert given["label"]["provenance"] == "given" and given["label"]["model"] is None
    confirmed = client.post("/v1/items", files=upload(data), data={"label": "confirmed"}, headers=AUTH)
    assert confirmed.status_code == 201 and confirmed.json()["label"]["provenance"] == "confirmed"
    corrected = client.post("/v1/items", files=upload(data), data={"label": "corrected", "category": "Dress"},
                            headers=AUTH).json()
    assert (corrected["category"], corrected["label"]["provenance"]) == ("Dress", "corrected")
    review = [e["item"]["item_id"] for e in client.get("/v1/review", params={"limit": 500}).json()["items"]]
    assert plain["item_id"] in review and not {given["item_id"], corrected["item_id"]} & set(review)

    rows, listed = label_count(world.catalog), client.get("/v1/items", params={"limit": 500}).json()["total"]
    message = assert_error(client.post("/v1/items", files=upload(data), data={"label": "corrected"}, headers=AUTH),
                           422, "invalid_label")
    assert "label" in message and "category" in message
    assert "confirmed or corrected" in assert_error(client.post("/v1/items", files=upload(data),
                                                                data={"label": "sure"}, headers=AUTH), 422)
    assert label_count(world.catalog) == rows
    assert client.get("/v1/items", params={"limit": 500}).json()["total"] == listed


# -- privacy -----------------------------------------------------------------------------------------------------
def test_readers_see_file_names_not_server_paths(client, world):
    stored = world.ids[0]
    full = client.get(f"/v1/items/{stored}", headers=AUTH).json()["source"]
    assert full == os.path.abspath(world.images[0])  # the writer's view: the path it was added from
    public = client.get(f"/v1/items/{stored}").json()
    assert public["source"] == os.path.basename(world.images[0])
    assert client.get(f"/v1/items/{stored}", headers={"X-API-Key": "wrong"}).json()["source"] == public["source"]
    assert client.get(f"/v1/items/{stored}", headers={"Authorization": f"Bearer {KEY}"}).json()["source"] == full
    basic = client.get(f"/v1/items/{stored}", headers={"Authorization": f"Basic {KEY}"})
    assert basic.json()["source"] == public["source"]
    listed = client.get("/v1/items", params={"limit": 500}).json()["items"]
    assert not any(os.sep in (i["source"] or "") for i in listed if not (i["source"] or "").startswith("http"))
    hits = client.post("/v1/search", files=upload(read(world.images[0])), data={"k": "3"}).json()["results"]
    assert hits[0]["item_id"] == stored and hits[0]["source"] == public["source"]
    hits = client.post("/v1/search", files=upload(read(world.images[0])), data={"k": "3"}, headers=AUTH).json()
    assert hits["results"][0]["source"] == full
    queue = client.get("/v1/review", params={"limit": 500}).json()["items"]
    assert queue and all("/" not in e["item"]["source"] for e in queue)

    data = read(world.images[41])
    for sent, seen in [("/home/x/photos/a.jpg", "a.jpg"), ("https://shop.example/p/b.jpg?v=2", None),
                       ("file:///srv/c.jpg", "c.jpg"), ("C:\\photos\\d.png", "d.png"),
                       ("s3://bucket/e.jpg", None), ("upload:f.jpg", None)]:
        made = client.post("/v1/items", files=upload(data), data={"source": sent}, headers=AUTH)
        assert made.status_code == 201 and made.json()["source"] == sent  # the writer's own answer: in full
        assert client.get(f"/v1/items/{made.json()['item_id']}").json()["source"] == (seen or sent)
    with make_client(world, api_key=KEY, public_reads=False) as private:  # every reader holds the key there
        assert private.get(f"/v1/items/{stored}", headers=AUTH).json()["source"] == full


# -- self-hosted docs --------------------------------------------------------------------------------------------
def test_docs_load_their_scripts_from_this_server(client):
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", r.text)
        urls += re.findall(r"""\burl: ?['"]([^'"]+)""", r.text)
        assert "/openapi.json" in urls and any(u.endswith(".js") for u in urls)
        assert not [u for u in urls if not u.startswith("/")], urls  # no CDN, no other host
        assert not re.search(r"https?://", r.text)
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200, url
            if url.endswith(".js"):
                assert "javascript" in asset.headers["content-type"] and len(asset.content) > 100_000
            if url.endswith(".css"):
                assert asset.headers["content-type"].startswith("text/css")
    assert "SwaggerUIBundle" in client.get("/docs").text
    assert client.get("/docs/oauth2-redirect").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/review", "/v1/items/{item_id}/answer"} <= set(paths)
    assert not any(p.startswith("/docs") for p in paths)
