"""Search by words (catalog/words.py): parsing against the label vocabulary, ranking against a plain
reference on a hand-built item list, and the API: GET /v1/items?q= / ?sku=, POST /v1/search with q,
GET /v1/labels."""

import math

import numpy as np
import pytest

from fashionlens.catalog.words import (
    FLOOR,
    MIN_PROBABILITY,
    Vocabulary,
    matches_all,
    rank,
    singular,
    vocabulary_from_labels,
    words_of,
)
from fashionlens.data.garments.shapes import ATTRIBUTE_GROUPS, CATEGORIES


@pytest.fixture(scope="module")
def garments_vocabulary():
    """The rendered garments' labels: 14 categories under upper / lower / full, 7 attribute groups."""
    return Vocabulary([(c.name, c.path) for c in CATEGORIES],
                      [(a, group) for _, group, values in ATTRIBUTE_GROUPS for a in values])


def understood(parsed):
    return [(m.words, m.term.kind, m.term.name) for m in parsed.matches]


# -- words ------------------------------------------------------------------------------------------------
def test_words_fold_case_accents_and_punctuation():
    assert words_of("  Red, STRIPED!  t-shirt's (crêpe)") == ["red", "striped", "t", "shirts", "crepe"]
    assert words_of("T-Shirt") == ["t", "shirt"]
    assert [singular(w) for w in ["dresses", "shorts", "jeans", "hoodies", "hoodie", "dress", "sleeveless",
                                  "blouses", "watches", "tee"]] == \
        ["dress", "short", "jean", "hoody", "hoody", "dress", "sleeveless", "blouse", "watch", "tee"]


@pytest.mark.parametrize("query, matched", [
    ("red striped dress", [("red", "attribute", "red"), ("striped", "attribute", "striped"),
                           ("dress", "category", "Dress")]),
    ("RED Striped Dresses.", [("red", "attribute", "red"), ("striped", "attribute", "striped"),
                              ("dresses", "category", "Dress")]),
    ("t-shirts", [("t shirts", "category", "Tee")]),  # synonym + plural + punctuation
    ("tee", [("tee", "category", "Tee")]),
    ("pants", [("pants", "category", "Trousers")]),  # trousers / pants
    ("jumpers", [("jumpers", "category", "Sweater")]),  # jumper / sweater
    ("hoodies", [("hoodies", "category", "Hoodie")]),
    ("button-down shirt", [("button down", "category", "Button-Down"), ("shirt", "category", "Button-Down")]),
    ("knitwear", [("knitwear", "node", "knitwear")]),  # a taxonomy node above the leaves
    ("upper body", [("upper body", "node", "upper")]),
    ("long sleeved gray jumper", [("long sleeved", "attribute", "long_sleeve"), ("gray", "attribute", "grey"),
                                  ("jumper", "category", "Sweater")]),  # longest phrase first
    ("mini dress", [("mini", "attribute", "mini_length"), ("dress", "category", "Dress")]),  # group word left out
    ("v neck tee", [("v neck", "attribute", "v_neckline"), ("tee", "category", "Tee")]),
    ("red colour", [("red colour", "attribute", "red")]),  # an attribute named with its group
    ("knit fabric", [("knit fabric", "attribute", "knit")]),
    ("no sleeve", [("no sleeve", "attribute", "no_sleeve")]),
    ("checkered plaid", [("checkered", "attribute", "checked"), ("plaid", "attribute", "checked")]),
    ("shorts", [("shorts", "category", "Shorts")]),  # the leaf wins over its node lower.shorts
])
def test_parse_names_labels(garments_vocabulary, query, matched):
    parsed = garments_vocabulary.parse(query)
    assert understood(parsed) == matched
    assert parsed.unknown == []


def test_parse_reports_unknown_and_filler_words_with_close_labels(garments_vocabulary):
    parsed = garments_vocabulary.parse("a stripped shrts with zebra")
    assert parsed.matches == []
    assert parsed.unknown == ["stripped", "shrts", "zebra"] and parsed.ignored == ["a", "with"]
    assert parsed.suggestions["stripped"][0] == "striped" and "Shorts" in parsed.suggestions["shrts"]
    assert "zebra" not in parsed.suggestions
    body = parsed.as_dict()
    assert body["unknown"] == ["stripped", "shrts", "zebra"] and body["matched"] == []


def test_a_node_name_under_two_parents_covers_both(garments_vocabulary):
    (match,) = garments_vocabulary.parse("outerwear").matches
    assert match.term.kind == "node" and match.term.paths == ("full.outerwear", "upper.outerwear")
    assert match.term.categories == {"coat", "jacket"}
    assert match.as_dict()["paths"] == [["full", "outerwear"], ["upper", "outerwear"]]


def test_vocabulary_without_taxonomy_or_groups():
    vocabulary = vocabulary_from_labels({"categories": ["Kimono", "Parka"], "attributes": ["Silk", "quilted"],
                                         "attribute_groups": [1, 1]})  # numbered groups without names: no group
    assert understood(vocabulary.parse("silk kimonos")) == [("silk", "attribute", "Silk"),
                                                             ("kimonos", "category", "Kimono")]
    assert vocabulary.parse("quilted parka").matches[0].term.group is None
    assert vocabulary.parse("1 quilted").unknown == ["1"]


def test_labels_items_store_join_the_model_labels():
    vocabulary = vocabulary_from_labels({"categories": ["Tee"], "category_paths": ["upper.tee"],
                                         "attributes": ["striped"]},
                                        extra_categories=[("knitwear", None)], extra_attributes=["hand_made", "Striped"])
    assert understood(vocabulary.parse("hand made knitwear striped")) == [
        ("hand made", "attribute", "hand_made"), ("knitwear", "category", "knitwear"),
        ("striped", "attribute", "striped")]  # the model's spelling of an attribute wins


# -- ranking against a plain reference ------------------------------------------------------------------------
MODEL = {"categories": ["Tee", "Sweater", "Hoodie", "Trousers", "Leggings", "Dress"],
         "category_paths": ["upper.tops.tee", "upper.knitwear.sweater", "upper.knitwear.hoodie",
                            "lower.trousers.trousers", "lower.trousers.leggings", "full.dresses.dress"],
         "attributes": ["striped", "solid", "dotted", "red", "blue", "long_sleeve", "no_sleeve"],
         "attribute_groups": [1, 1, 1, 2, 2, 3, 3], "group_names": {"1": "texture", "2": "colour", "3": "sleeve"}}
PATHS = dict(zip(MODEL["categories"], MODEL["category_paths"]))


def item(item_id, category, attributes, scores=None, predicted=None):
    """A catalog row as Catalog.find_words ranks it; ``scores``: the stored top categories, ``predicted``:
    the stored predicted attributes (both None: the labels were given, no prediction is stored)."""
    row = {"item_id": item_id, "category": category, "category_path": PATHS.get(category),
           "attributes": attributes, "extra": {}}
    if scores is not None:
        row["extra"]["prediction"] = {
            "category": max(scores, key=scores.get),
            "category_scores": [{"name": n, "score": s} for n, s in sorted(scores.items(), key=lambda kv: -kv[1])],
            "attributes": [{"name": n, "score": s} for n, s in (predicted or {}).items()]}
    return row


ITEMS = [
    item(1, "Dress", ["red", "striped"], {"Dress": 0.7, "Tee": 0.2, "Sweater": 0.05}, {"red": 0.9, "striped": 0.8}),
    item(2, "Dress", ["blue", "striped"], {"Dress": 0.6, "Tee": 0.3}, {"blue": 0.7, "striped": 0.6}),
    item(3, "Tee", ["red", "striped"], {"Tee": 0.5, "Dress": 0.3, "Hoodie": 0.15}, {"red": 0.8, "striped": 0.9}),
    item(4, "Dress", ["red", "striped"]),  # labels given (a data set's annotation): no prediction
    item(5, "Sweater", ["red"], {"Sweater": 0.4, "Hoodie": 0.3, "Dress": 0.25}, {"red": 0.6, "solid": 0.7}),
    item(6, "Trousers", ["solid"]),
    item(7, "Dress", ["red", "striped"], {"Tee": 0.8, "Dress": 0.1}, {"red": 0.5, "dotted": 0.6}),  # corrected
    item(8, "Leggings", ["dotted"], {"Leggings": 0.95, "Trousers": 0.05}, {"dotted": 0.9}),
    item(9, "knitwear", ["blue"], {"Sweater": 0.45, "Hoodie": 0.45, "Tee": 0.1}, {"blue": 0.8}),  # a stored node
]


def reference(items, query):
    """The ranking spelt out: per term, stored = the item's own labels say so; p = the stored prediction's
    probability (a node: summed over its categories; an unlisted category: the top list's leftover shared
    evenly); no prediction: 1 when stored, else FLOOR.  Order: most stored terms, then the largest product."""
    leaves = {"red": None, "striped": None, "dress": ["Dress"], "knitwear": ["Sweater", "Hoodie"],
              "trousers": ["Trousers"], "lower": ["Trousers", "Leggings"]}
    out = []
    for it in items:
        prediction = it["extra"].get("prediction")
        exact, product, likely = 0, 1.0, False
        for word in query.split():
            covered = leaves[word]
            if covered is None:
                stored = word in it["attributes"]
                listed = {a["name"]: a["score"] for a in prediction["attributes"]} if prediction else {}
                p = listed.get(word)
            else:
                stored = it["category"] in covered or it["category"] == word
                p = None
                if prediction:
                    listed = {s["name"]: s["score"] for s in prediction["category_scores"]}
                    share = (1 - sum(listed.values())) / (len(MODEL["categories"]) - len(listed))
                    p = sum(listed.get(c, share) for c in covered)
            likely = likely or (p is not None and p >= MIN_PROBABILITY)
            if p is None:
                p = 1.0 if stored else FLOOR
            exact += stored
            product *= max(p, FLOOR)
        if exact or likely:
            out.append((it["item_id"], exact, product))
    out.sort(key=lambda r: (-r[1], -r[2], r[0]))
    return out


@pytest.mark.parametrize("query", ["red striped dress", "knitwear", "lower", "red dress", "trousers", "striped"])
def test_rank_matches_the_reference(query):
    vocabulary = vocabulary_from_labels(MODEL, [("knitwear", None)])
    parsed = vocabulary.parse(query)
    assert len(parsed.terms) == len(query.split()) and not parsed.unknown
    ranked = rank(ITEMS, parsed.terms, vocabulary)
    expected = reference(ITEMS, query)
    assert [(r.item_id, r.exact) for r in ranked] == [(i, e) for i, e, _ in expected]
    for r, (_, _, product) in zip(ranked, expected):
        assert r.log_probability == pytest.approx(math.log(product))


def test_rank_puts_exact_matches_first_then_the_model_s_belief():
    vocabulary = vocabulary_from_labels(MODEL)
    ranked = rank(ITEMS, vocabulary.parse("red striped dress").terms, vocabulary)
    assert [r.item_id for r in ranked] == [4, 1, 7, 3, 2, 5]
    assert [r.as_dict()["exact"] for r in ranked[:3]] == [True] * 3 and not ranked[3].as_dict()["exact"]
    assert ranked[3].as_dict()["matched_terms"] == 2 and ranked[3].as_dict()["terms"] == 3
    assert {6, 8, 9}.isdisjoint(r.item_id for r in ranked)  # no stored label matches, the model is not close
    assert rank(ITEMS, [], vocabulary) == []


def test_matches_all_is_the_filter():
    vocabulary = vocabulary_from_labels(MODEL, [("knitwear", None)])
    keep = lambda q: [it["item_id"] for it in ITEMS if matches_all(it, vocabulary.parse(q).terms)]
    assert keep("red striped dress") == [1, 4, 7]
    assert keep("knitwear") == [5, 9]  # a category under the node, or the node stored as the category
    assert keep("upper") == [3, 5]  # by path prefix (item 9's "knitwear" has no path)
    assert keep("zebra") == []  # nothing understood: nothing matches


# -- the API ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_world(tmp_path_factory, one_thread):
    """A tiny random-weight run (Tee / Shorts / Dress; solid / striped / dotted) and a catalog of 12 items:
    6 with given labels and SKUs, 6 labelled by the model."""
    from PIL import Image
    from test_catalog import DIM, make_run

    from fashionlens.catalog import Catalog
    from fashionlens.inference import Predictor

    root = tmp_path_factory.mktemp("words")
    rng = np.random.default_rng(0)
    images = []
    for i in range(12):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    run = make_run(root / "run", images)
    given = [{"sku": "A-1", "category": "Dress", "attributes": ["striped"]},
             {"sku": "A-1", "category": "Dress", "attributes": ["striped"]},
             {"sku": "B-2", "category": "Dress", "attributes": ["dotted"]},
             {"sku": "C-3", "category": "Tee", "attributes": ["striped"]},
             {"sku": "D-4", "category": "Shorts", "attributes": ["solid"]},
             {"sku": "E-5", "category": "Tee", "attributes": ["solid"]}]
    with Catalog.create(str(root / "catalog"), dim=DIM, model_run=run) as catalog:
        ids = catalog.add(images, given + [{} for _ in range(6)], Predictor.load(run))
    return {"run": run, "catalog": str(root / "catalog"), "ids": ids, "images": images}


@pytest.fixture(scope="module")
def client(api_world):
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    app = create_app(ServeSettings(api_world["run"], api_world["catalog"], api_key="k"))
    with TestClient(app) as c:
        yield c


def test_items_by_words(client, api_world):
    from fashionlens.catalog import Catalog

    body = client.get("/v1/items", params={"q": "Striped DRESSES please"}).json()
    assert [(m["words"], m["kind"], m["label"]) for m in body["query"]["matched"]] == [
        ("striped", "attribute", "striped"), ("dresses", "category", "Dress")]
    assert body["query"]["unknown"] == ["please"]
    assert body["query"]["matched"][1]["paths"] == [["full", "dresses", "dress"]]
    assert body["query"]["matched"][0]["group"] == "texture"
    items = body["items"]
    exact = [i for i in items if i["match"]["exact"]]
    assert [i["item_id"] for i in exact[:2]] == api_world["ids"][:2]  # given labels: certain, first
    assert all(i["category"] == "Dress" and "striped" in i["attributes"] for i in exact)
    assert items[:len(exact)] == exact  # exact matches first
    counts = [i["match"]["matched_terms"] for i in items]
    assert counts == sorted(counts, reverse=True)
    with Catalog.open(api_world["catalog"]) as catalog:  # the library's answer, by rank
        direct = catalog.find_words("striped dresses please", limit=500)
    assert [i["item_id"] for i in items] == [i["item_id"] for i in direct["items"]][:50]
    assert body["total"] == direct["total"]
    page = client.get("/v1/items", params={"q": "striped dresses", "offset": 1, "limit": 2}).json()
    assert [i["item_id"] for i in page["items"]] == [i["item_id"] for i in items[1:3]]


def test_items_by_words_nothing_understood(client):
    body = client.get("/v1/items", params={"q": "dres zebra"}).json()
    assert body["items"] == [] and body["total"] == 0
    assert body["query"]["unknown"] == ["dres", "zebra"]
    assert body["query"]["suggestions"]["dres"][0] == "Dress"
    assert client.get("/v1/items", params={"q": "x" * 501}).status_code == 422


def test_items_by_sku(client, api_world):
    body = client.get("/v1/items", params={"sku": "A-1"}).json()
    assert [i["item_id"] for i in body["items"]] == api_world["ids"][:2] and body["total"] == 2
    assert body.get("query") is None and body["items"][0]["match"] is None
    assert client.get("/v1/items", params={"sku": "nope"}).json()["items"] == []
    both = client.get("/v1/items", params={"sku": "C-3", "q": "striped"}).json()
    assert [i["item_id"] for i in both["items"]] == [api_world["ids"][3]]
    everything = client.get("/v1/items").json()
    assert everything["total"] == 12 and everything.get("query") is None


def test_search_with_words(client, api_world):
    with open(api_world["images"][7], "rb") as f:
        data = f.read()
    plain = client.post("/v1/search", files={"image": ("q.png", data, "image/png")}, data={"k": "12"}).json()
    assert plain["query"]["words"] is None and len(plain["results"]) == 12
    body = client.post("/v1/search", files={"image": ("q.png", data, "image/png")},
                       data={"k": "12", "q": "striped dress"}).json()
    assert [m["label"] for m in body["query"]["words"]["matched"]] == ["striped", "Dress"]
    results = body["results"]
    assert results and all(r["category"] == "Dress" and "striped" in r["attributes"] for r in results)
    expected = [r["item_id"] for r in plain["results"] if r["category"] == "Dress" and "striped" in r["attributes"]]
    assert [r["item_id"] for r in results] == expected  # the same ranking, filtered
    grouped = client.post("/v1/search", files={"image": ("q.png", data, "image/png")},
                          data={"q": "striped dress", "group_sku": "true", "category": "full"}).json()
    assert len([r for r in grouped["results"] if r["sku"] == "A-1"]) == 1
    none = client.post("/v1/search", files={"image": ("q.png", data, "image/png")}, data={"q": "zebra"}).json()
    assert none["results"] == [] and none["query"]["words"]["unknown"] == ["zebra"]


def test_labels(client):
    from test_catalog import LABELS

    body = client.get("/v1/labels").json()
    assert [c["name"] for c in body["categories"]] == LABELS["categories"]
    assert body["categories"][0]["path"] == ["upper", "tops", "tee"]
    assert body["attributes"] == [{"name": a, "group": "texture"} for a in LABELS["attributes"]]
    assert body["hedging"] == {"calibrated": False, "targets": [], "default": None}  # the test run is not calibrated
