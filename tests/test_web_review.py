"""The web page's review queue in a real browser: Debian's headless Chromium, driven by Playwright, against the
live app (uvicorn in a thread, as in tests/test_web.py, whose browser and data fixtures it shares): a tiny
random-weight model and a catalog of the rendered garments' shop views stored with the model's answers (no data-set
labels), so every item waits for review, least sure first.

Used with the keyboard only, as a reviewer would: open "Review labels", read the entries least sure first, Y
confirms, N + a category + Enter corrects, J / K / arrows move, Esc cancels; the answers are checked in the
catalog (GET /v1/items/{id}: label provenance confirmed / corrected).  Routed answers (page.route) show the label
audit's suspects, paging, an empty queue and errors.  Screenshots go to test-artifacts/.

Needs ``pip install playwright`` (never ``playwright install``) and ``/usr/bin/chromium``; skipped otherwise.
"""

import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
import test_web
from test_catalog import LABELS
from test_web import API_KEY, api, crumbs, humanise, open_page, screenshot, serve_in_thread, wait_until

# tests/test_web.py's fixtures, used here by name: the browser, the rendered garments, playwright (or a skip)
browser, garments, sync_playwright = test_web.browser, test_web.garments, test_web.sync_playwright

pytestmark = pytest.mark.slow

SUSPECT = {"score": 0.03}  # the audited item: item_id, its stored category, the one the audit thinks (server)
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="module")
def server(garments, tmp_path_factory, sync_playwright):
    """Base URL of the app serving a tiny model and a catalog of the shop images labelled by the model itself
    (label provenance predicted: the review queue holds them all), one of them, the one the model is surest of,
    flagged by the label audit as `catalog audit` does (SUSPECT: the queue lists it first)."""
    from test_catalog import DIM, make_run

    from fashionlens.catalog import Catalog
    from fashionlens.inference import Predictor
    from fashionlens.serving.app import create_app
    from fashionlens.serving.settings import ServeSettings

    shop, _ = garments
    images = [s.image for s in shop][:30]
    root = tmp_path_factory.mktemp("web-review")
    run = make_run(root / "run", images[:24])
    with Catalog.create(str(root / "catalog"), dim=DIM, model_run=run) as catalog:
        catalog.add(images, [{"sku": f"R{i}"} for i in range(len(images))], Predictor.load(run))
        surest = catalog.review_queue(limit=500)[-1]["item"]
        thinks = next(c for c in LABELS["categories"] if c != surest["category"])
        catalog.store.replace_suspects([{"item_id": surest["item_id"], "category": surest["category"],  # the audit's
                                         "suggested": thinks, "confidence": 0.9, "p_given": SUSPECT["score"]}])  # row
        SUSPECT.update(item_id=surest["item_id"], category=surest["category"], thinks=thinks)
    app = create_app(ServeSettings(model_run=run, catalog_dir=str(root / "catalog"), api_key=API_KEY))
    with serve_in_thread(app) as base:
        yield base


def queue(base, limit=500):
    response = api(base, "GET", "/v1/review", params={"limit": limit})
    assert response.status_code == 200, response.text
    return response.json()


def page_ids(page):
    ids = page.eval_on_selector_all("#review-list .review-entry", "es => es.map(e => e.dataset.itemId)")
    return [int(i) for i in ids]


def focused_id(page):
    """The item id of the review entry holding the focus (None: the focus is elsewhere)."""
    return page.evaluate("(() => { const a = document.activeElement?.closest?.('.review-entry');"
                         " return a ? Number(a.dataset.itemId) : null; })()")


def current_id(page):
    return int(page.get_attribute("#review-list .review-entry[aria-current=true]", "data-item-id"))


def open_review(page):
    """From the photo page to the review queue by the keyboard: Tab to the nav's link, Enter."""
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "view-review":
            break
    assert page.evaluate("document.activeElement.id") == "view-review"
    page.keyboard.press("Enter")
    page.wait_for_selector("#review-view[data-state=ready], #review-view[data-state=empty]")


def wait_gone(page, item_id):
    page.wait_for_selector(f"#review-list .review-entry[data-item-id='{item_id}']", state="detached")


def check_entry(page, entry):
    """An entry shows the stored category (humanised, its path), why it is here and the model's guesses."""
    item = entry["item"]
    article = page.locator(f"#review-list .review-entry[data-item-id='{item['item_id']}']")
    assert article.locator(".review-title").inner_text().startswith(humanise(item["category"]))
    assert f"#{item['item_id']}" in article.locator(".review-title").inner_text()
    path = crumbs(item["category_path"])
    if len(path) > 1:
        assert article.locator(".review-path").inner_text() == " › ".join(path)
    guesses = entry["guesses"][:3]
    assert article.locator(".review-guesses li").evaluate_all("ls => ls.map(l => l.dataset.name)") == \
        [g["name"] for g in guesses]
    pcts = article.locator(".review-guesses .pct").all_inner_texts()
    assert pcts == [f"{int(g['score'] * 100 + 0.5)}%" if g["score"] >= 0.01 else "<1%" for g in guesses]
    why = article.locator(".review-why").inner_text()
    assert humanise(guesses[0]["name"]) in why and humanise(guesses[1]["name"]) in why  # what it hesitates between
    assert article.locator("img").get_attribute("alt").startswith(f"Item #{item['item_id']}")


# -- tests ------------------------------------------------------------------------------------------
def test_review_queue_by_keyboard_confirms_and_corrects(browser, server):
    before = queue(server)
    expected = [e["item"]["item_id"] for e in before["items"]]
    assert before["total"] == len(expected) >= 6
    suspect, *unsure = before["items"]  # the audit's suspect first, then the model's answers least sure first
    assert suspect["reason"] == "suspect" and suspect["item"]["item_id"] == SUSPECT["item_id"]
    assert suspect["suspect"]["model_category"] == SUSPECT["thinks"]
    assert suspect["margin"] >= max(e["margin"] for e in unsure)  # the one the model is surest of, first
    assert [e["margin"] for e in unsure] == sorted(e["margin"] for e in unsure)
    assert {e["reason"] for e in unsure} == {"unsure"}
    page, errors = open_page(browser, server, **DESKTOP)
    posts = []
    page.on("request", lambda r: posts.append((r.url.split("/v1/")[1], r.post_data)) if r.method == "POST" else None)
    assert page.is_visible("#drop") and page.is_hidden("#review-view")  # the photo page comes first
    open_review(page)
    assert page.is_hidden("#drop") and page.get_attribute("#view-review", "aria-current") == "page"
    assert page.url.endswith("#review")

    shown = page_ids(page)
    assert shown == expected[:len(shown)] and len(shown) == min(20, len(expected))  # as GET /v1/review ranks them
    assert page.inner_text("#review-count").startswith(f"{len(expected)} left to review")
    assert focused_id(page) == expected[0] == current_id(page)  # the first entry has the focus
    first = page.locator("#review-list .review-entry").first
    assert first.get_attribute("data-reason") == "suspect" and first.locator(".badge").inner_text() == "Suspect label"
    assert first.locator(".review-why").inner_text().endswith(
        f"The label audit gives {humanise(SUSPECT['category'])} only 3%; it thinks {humanise(SUSPECT['thinks'])}.")
    for entry in before["items"][1:4]:
        check_entry(page, entry)
        assert page.locator(f".review-entry[data-item-id='{entry['item']['item_id']}'] .badge").inner_text() == \
            "Model unsure"
    page.wait_for_function("document.querySelector('#review-list .review-entry img').naturalWidth > 0")
    outline = page.eval_on_selector("#review-list .review-entry[aria-current=true]",
                                    "e => getComputedStyle(e).outlineStyle")
    assert outline != "none"  # the focus is visible
    unlabelled = page.eval_on_selector_all("#review-view input, #review-view select",
                                           "els => els.filter(e => !e.labels.length).map(e => e.id)")
    assert unlabelled == []
    screenshot(page, "web-review", full_page=False)

    # Y without the key: the page's words for a person, the list as it was, the focus on the key field
    assert page.eval_on_selector("#review-key-details", "d => d.open")  # no key yet: where it goes is shown
    page.keyboard.press("y")
    page.wait_for_selector("#review-error:not([hidden])")
    message = page.inner_text("#review-error")
    assert f"Item #{expected[0]}" in message and "API key" in message and "whoever runs" in message
    assert "X-API-Key" not in message and "Authorization" not in message
    assert page_ids(page) == shown and page.evaluate("document.activeElement.id") == "review-api-key"
    assert api(server, "GET", f"/v1/items/{expected[0]}").json()["label"]["provenance"] == "predicted"
    page.keyboard.type(API_KEY)
    page.keyboard.press("Enter")  # back to the entry
    assert focused_id(page) == expected[0]

    # Y on the suspect: confirmed (the stored label was right after all), the entry leaves the list, a polite
    # message, the next one has the focus
    page.keyboard.press("y")
    wait_gone(page, expected[0])
    assert page.is_hidden("#review-error")
    assert page.inner_text("#review-status").startswith(f"Item #{expected[0]} confirmed")
    assert page.get_attribute("#review-status", "aria-live") == "polite"
    confirmed = api(server, "GET", f"/v1/items/{expected[0]}").json()
    assert confirmed["label"]["provenance"] == "confirmed"
    assert confirmed["category"] == before["items"][0]["item"]["category"]
    assert focused_id(page) == expected[1]
    assert page.inner_text("#review-count").startswith(f"{len(expected) - 1} left to review")
    assert json.loads(posts[-1][1]) == {"verdict": "yes"} and posts[-1][0] == f"items/{expected[0]}/answer"

    # J / K and the arrows move; the current entry is highlighted
    page.keyboard.press("j")
    assert focused_id(page) == expected[2] == current_id(page)
    page.keyboard.press("k")
    assert focused_id(page) == expected[1]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert focused_id(page) == expected[3]
    page.keyboard.press("ArrowUp")
    assert focused_id(page) == expected[2]
    highlighted = page.eval_on_selector_all("#review-list .review-entry[aria-current=true]", "es => es.length")
    assert highlighted == 1

    # N, then Esc: nothing stored, the focus back on the entry
    page.keyboard.press("n")
    page.wait_for_selector("#review-fix-category")
    assert page.evaluate("document.activeElement.id") == "review-fix-category"
    page.keyboard.press("Escape")
    page.wait_for_selector("#review-fix-category", state="detached")
    assert focused_id(page) == expected[2]

    # N, a category chosen by typing its name, Enter: corrected
    entry = before["items"][2]
    stored = entry["item"]["category"]
    target = next(c for c in reversed(LABELS["categories"]) if c != stored)
    page.keyboard.press("n")
    page.wait_for_selector("#review-fix-category")
    options = page.eval_on_selector_all("#review-fix-category option", "os => os.map(o => o.value)")
    assert set(LABELS["categories"]) <= set(options) and options[-1] == "__other__"  # every category it knows
    groups = page.eval_on_selector_all("#review-fix-category optgroup", "gs => gs.map(g => g.label)")
    assert groups[0] == "Top guesses" and len(groups) == 1 + len({p.split(".")[0] for p in LABELS["category_paths"]})
    assert page.input_value("#review-fix-category") == next(g["name"] for g in entry["guesses"] if g["name"] != stored)
    assert page.eval_on_selector_all("#review-fix-attributes .chip[aria-pressed=true]",
                                     "cs => cs.map(c => c.dataset.name)") == entry["item"]["attributes"]
    page.keyboard.type(humanise(target).lower())  # a select jumps to the option whose name is typed
    assert page.input_value("#review-fix-category") == target
    screenshot(page, "web-review-correct", full_page=False)
    page.keyboard.press("Enter")
    wait_gone(page, expected[2])
    assert page.inner_text("#review-status").startswith(f"Item #{expected[2]} corrected to {humanise(target)}")
    corrected = api(server, "GET", f"/v1/items/{expected[2]}").json()
    assert corrected["label"]["provenance"] == "corrected" and corrected["category"] == target
    assert corrected["attributes"] == entry["item"]["attributes"]  # not changed, so not sent
    assert json.loads(posts[-1][1]) == {"verdict": "no", "category": target}
    assert focused_id(page) == expected[3]  # the next one

    after = [e["item"]["item_id"] for e in queue(server)["items"]]
    assert after == [i for i in expected if i not in (expected[0], expected[2])]  # the answers left the queue
    assert page_ids(page)[:5] == after[:5]
    page.reload()  # the queue again from the address (#review), the key from localStorage
    page.wait_for_selector("#review-view[data-state=ready]")
    assert page.input_value("#review-api-key") == API_KEY and page.input_value("#api-key") == API_KEY
    assert page_ids(page) == after[:20] and focused_id(page) == after[0]
    page.click("#view-photo")  # and back to the photo page, as it was
    page.wait_for_selector("#review-view", state="hidden")
    assert page.is_visible("#drop") and page.is_visible("#result-panel") and page.url.endswith("#identify")
    assert not errors


def fake_entries(base, n):
    """``n`` review entries shaped as GET /v1/review answers them, made from the catalog's real items (their
    pictures load), with made-up ids so that nothing is written by mistake."""
    items = api(base, "GET", "/v1/items", params={"limit": 500}).json()["items"]
    entries = []
    for i in range(n):
        item = dict(items[i % len(items)], item_id=9000 + i)
        item["image_url"] = items[i % len(items)]["image_url"]
        first = next(c for c in LABELS["categories"] if c == item["category"])
        second = next(c for c in LABELS["categories"] if c != first)
        entries.append({"item": item, "margin": round(0.01 * i, 5),
                        "guesses": [{"name": first, "score": 0.4 + 0.005 * i},
                                    {"name": second, "score": 0.4 - 0.005 * i}]})
    return entries


def test_suspects_paging_and_errors_on_a_phone_in_the_dark(browser, server):
    entries = fake_entries(server, 26)
    item = entries[0]["item"]
    thinks = next(c for c in LABELS["categories"] if c != item["category"])
    entries[0] = {**entries[0], "reason": "suspect", "margin": None,
                  "suspect": {"score": 0.03, "model_category": thinks, "confidence": 0.9, "at": "2024-01-01T00:00:00Z"}}
    entries[1] = {**entries[1], "reason": "unsure", "suspect": None}  # entries[2:]: an older server, no reason
    asked, answers = [], []

    def review(route):
        query = parse_qs(urlparse(route.request.url).query)
        offset, limit = int(query["offset"][0]), int(query["limit"][0])
        asked.append((offset, limit))
        left = [e for e in entries if e["item"]["item_id"] not in answers]
        route.fulfill(json={"items": left[offset:offset + limit], "total": len(left), "offset": offset, "limit": limit})

    def answer(route):
        item_id = int(re.search(r"/items/(\d+)/answer", route.request.url).group(1))
        body = json.loads(route.request.post_data)
        if item_id == entries[1]["item"]["item_id"]:
            route.fulfill(status=422, json={"error": {"code": "invalid_answer", "message": "item 9001 has no label"}})
            return
        answers.append(item_id)
        entry = next(e for e in entries if e["item"]["item_id"] == item_id)
        route.fulfill(json={**entry["item"], "category": body.get("category", entry["item"]["category"])})

    context = browser.new_context(color_scheme="dark", **PHONE)
    context.add_init_script(f"localStorage.setItem('fashionlens.apiKey', {json.dumps(API_KEY)})")  # a key kept
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/v1/review?*", review)
    page.route("**/v1/items/*/answer", answer)
    page.goto(server + "/#review")  # the address opens the review queue
    page.wait_for_selector("#review-view[data-state=ready]")
    assert asked == [(0, 20)] and page_ids(page) == [e["item"]["item_id"] for e in entries[:20]]
    assert page.inner_text("#review-count") == "26 left to review (20 shown)"

    suspect = page.locator("#review-list .review-entry").first
    assert suspect.get_attribute("data-reason") == "suspect"
    assert suspect.locator(".badge.suspect").inner_text() == "Suspect label"
    assert suspect.locator(".review-why").inner_text().endswith(
        f"The label audit gives {humanise(item['category'])} only 3%; it thinks {humanise(thinks)}.")
    unsure = page.locator("#review-list .review-entry").nth(1)
    assert unsure.locator(".badge").inner_text() == "Model unsure"
    assert page.locator("#review-list .review-entry").nth(2).locator(".badge").inner_text() == "Model unsure"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # one column, nothing wider than the phone
    box = suspect.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    background = page.eval_on_selector("#review-view", "e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(25, 29, 35)"  # the dark scheme's panel colour
    assert page.is_hidden("#review-keys")  # no key hints on a touch phone
    assert page.eval_on_selector("#review-list .review-entry button[data-action=yes]",
                                 "b => b.getBoundingClientRect().height") >= 44  # a finger-sized button
    page.wait_for_function("document.querySelector('#review-list .review-entry img').naturalWidth > 0")
    screenshot(page, "web-review-phone-dark", full_page=False)

    assert focused_id(page) == entries[0]["item"]["item_id"]
    page.keyboard.press("n")  # the suspect: the audit's category comes first
    page.wait_for_selector("#review-fix-category")
    assert page.input_value("#review-fix-category") == thinks
    page.keyboard.press("Enter")
    wait_gone(page, entries[0]["item"]["item_id"])
    assert answers == [entries[0]["item"]["item_id"]]
    assert page.inner_text("#review-status").startswith(f"Item #{entries[0]['item']['item_id']} corrected to "
                                                        f"{humanise(thinks)}. 25 left to review")

    page.keyboard.press("y")  # a 4xx: its message, the list as it was
    page.wait_for_selector("#review-error:not([hidden])")
    assert "item 9001 has no label" in page.inner_text("#review-error")
    assert len(page_ids(page)) == 19 and focused_id(page) == entries[1]["item"]["item_id"]

    page.keyboard.press("End")  # the last entry loaded, then one more: the next page comes
    assert focused_id(page) == entries[19]["item"]["item_id"]
    page.keyboard.press("j")
    wait_until(page, lambda: focused_id(page) == entries[20]["item"]["item_id"])
    assert (19, 20) in asked and page_ids(page) == [e["item"]["item_id"] for e in entries[1:]]
    assert page.is_hidden("#review-more")  # everything is loaded
    assert not errors


def test_scrolling_down_loads_the_next_page(browser, server):
    entries = fake_entries(server, 45)
    asked = []

    def review(route):
        query = parse_qs(urlparse(route.request.url).query)
        offset, limit = int(query["offset"][0]), int(query["limit"][0])
        asked.append(offset)
        route.fulfill(json={"items": entries[offset:offset + limit], "total": len(entries), "offset": offset,
                            "limit": limit})

    page, errors = open_page(browser, server, routes={"**/v1/review?*": review}, **DESKTOP)
    open_review(page)
    assert asked == [0] and len(page_ids(page)) == 20 and page.is_visible("#review-more")
    page.mouse.wheel(0, 100_000)  # near the end of the list: the next page comes by itself
    wait_until(page, lambda: len(page_ids(page)) == 40)
    assert asked == [0, 20] and page.inner_text("#review-count") == "45 left to review (40 shown)"
    page.click("#review-more")  # or by the button
    wait_until(page, lambda: len(page_ids(page)) == 45)
    assert asked == [0, 20, 40] and page_ids(page) == [e["item"]["item_id"] for e in entries]
    assert page.is_hidden("#review-more") and page.inner_text("#review-count") == "45 left to review"
    positions = page.eval_on_selector_all("#review-list .review-entry", "es => es.map(e => e.ariaPosInSet)")
    assert positions == [str(i + 1) for i in range(45)]
    assert not errors


def test_an_empty_queue_says_so(browser, server):
    page, errors = open_page(browser, server, routes={
        "**/v1/review?*": lambda r: r.fulfill(json={"items": [], "total": 0, "offset": 0, "limit": 20})}, **DESKTOP)
    open_review(page)
    assert page.get_attribute("#review-view", "data-state") == "empty"
    assert page.inner_text("#review-empty").startswith("Nothing to review")
    assert page.evaluate("document.activeElement.id") == "review-empty"
    assert page.inner_text("#review-count") == "" and page.is_hidden("#review-nav-count")
    assert not errors


def test_no_catalog_and_private_reads_are_said_in_words(browser, server):
    calls = []

    def review(route):
        calls.append(route.request.headers.get("x-api-key"))
        if len(calls) == 1:
            route.fulfill(status=401, json={"error": {"code": "missing_api_key", "message": "send X-API-Key"}})
        else:
            route.fulfill(status=503, json={"error": {"code": "no_catalog", "message": "no catalog configured"}})

    page, errors = open_page(browser, server, routes={"**/v1/review?*": review}, **DESKTOP)
    page.click("#view-review")
    page.wait_for_selector("#review-view[data-state=error]")
    message = page.inner_text("#review-error")
    assert "API key" in message and "whoever runs" in message and "X-API-Key" not in message
    assert page.evaluate("document.activeElement.id") == "review-api-key"
    page.keyboard.type(API_KEY)
    page.keyboard.press("Tab")  # the key is set: the queue is asked again, with it
    page.wait_for_selector("#review-view[data-state=empty]")
    assert calls == [None, API_KEY]
    assert page.inner_text("#review-empty") == "No catalog is configured on this server, so there is nothing to review."
    assert not errors
