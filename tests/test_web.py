"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against the live app.

The app (uvicorn, in a thread on 127.0.0.1) serves a tiny random-weight model and a catalog of the
rendered garments' shop views.  The page is used as a person would: pick a photo (keyboard, camera
input), read the answer, confirm or correct the proposed labels, store the item, search again.
Screenshots (desktop 1280x800, phone 390x844) are written to test-artifacts/.

Needs ``pip install playwright`` (never ``playwright install``) and ``/usr/bin/chromium``
(``tools/install_browser.sh``); skipped with the reason when either is missing.
"""

import contextlib
import io
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from test_catalog import LABELS

from fashionlens.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("FASHIONLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
API_KEY = "web-test-key"
TIMEOUT_MS = 20_000


def humanise(name):
    """The page's display form of a label: "button-down" -> "Button down"."""
    text = re.sub(r"[_-]+", " ", str(name)).strip()
    return text[:1].upper() + text[1:]


def crumbs(path):
    """The page's breadcrumbs of a taxonomy path: repeated parts once ("lower.trousers.trousers": 2 crumbs)."""
    out = []
    for part in path:
        if not out or out[-1].lower() != humanise(part).lower():
            out.append(humanise(part))
    return out


def visible(attributes):
    """The attributes the page shows (and proposes): present ones ("no_length" says what is missing) that the
    model gives at least 50%."""
    return [a for a in attributes if not re.match(r"(no|non|without)[ _-]", a["name"], re.IGNORECASE) and a["score"] >= 0.5]


# -- fixtures: browser, data, model, catalog, server ------------------------------------------------------
@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the browser comes from "
                    "tools/install_browser.sh, never from `playwright install`)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: run tools/install_browser.sh (apt-get install chromium)")
    pytest.importorskip("uvicorn", reason="the web test serves the app with uvicorn")
    return sync_playwright


@pytest.fixture(scope="module")
def browser(sync_playwright):
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()




@pytest.fixture(scope="module")
def garments(tmp_path_factory, one_thread):
    """(shop samples, consumer samples) of 20 rendered items x 4 views, 64x64 pixels."""
    from fashionlens import read

    out = tmp_path_factory.mktemp("web") / "garments"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(out), "--items", "20", "--views", "4", "--size", "64", "--quiet"]) == 0
    samples = read(f"garments:{out}")
    shop = samples.where([s.domain == "shop" for s in samples])
    consumer = samples.where([s.domain == "consumer" for s in samples])
    assert len(shop) and len(consumer)
    return shop, consumer


@pytest.fixture(scope="module")
def server(garments, tmp_path_factory, sync_playwright):
    """Base URL of the app serving a tiny model and a catalog of the shop images."""
    from test_catalog import make_run

    from fashionlens.catalog import build
    from fashionlens.serving.app import create_app
    from fashionlens.serving.settings import ServeSettings

    shop, _ = garments
    root = tmp_path_factory.mktemp("web")
    run = make_run(root / "run", [s.image for s in shop][:24])
    summary = build(str(root / "catalog"), run, shop, batch_size=64, progress=False)
    assert summary["items"] == len(shop)
    app = create_app(ServeSettings(model_run=run, catalog_dir=str(root / "catalog"), api_key=API_KEY))
    with serve_in_thread(app) as base:
        yield base


@contextlib.contextmanager
def serve_in_thread(app):
    """The base URL of ``app`` served by uvicorn in a daemon thread on a free loopback port (stopped after)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def api(base, method, path, **kw):
    import httpx

    return httpx.request(method, base + path, timeout=30, **kw)


def classify(base, image):
    with open(image, "rb") as f:
        response = api(base, "POST", "/v1/classify", files={"image": (os.path.basename(image), f, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def open_page(browser, base, on_file_chooser=None, routes=None, **context):
    """(page at the app's root once its script ran, list collecting uncaught page errors); ``routes``:
    {URL pattern: handler} set before the page loads (it asks /v1/labels when it starts)."""
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if on_file_chooser is not None:
        page.on("filechooser", on_file_chooser)
    for pattern, handler in (routes or {}).items():
        page.route(pattern, handler)
    page.goto(base + "/")
    page.wait_for_selector("html[data-ready=true]")
    return page, errors


def wait_until(page, condition, timeout_s=TIMEOUT_MS / 1000):
    """Let the page run (and deliver its events) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the page"
        page.wait_for_timeout(50)


def wait_for_answer(page):
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_selector("#similar .card")
    page.wait_for_function("!document.querySelector('#status').classList.contains('busy')")


def screenshot(page, name, full_page=True):
    """test-artifacts/NAME.png in CSS pixels (the phone's view: full_page=False, as a viewport shot)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page, scale="css")


def stored_id(page):
    page.wait_for_selector("#add-message:has-text('item #')")
    return int(re.search(r"item #(\d+)", page.inner_text("#add-message")).group(1))


def fill_api_key(page, key=API_KEY):
    if not page.eval_on_selector("#api-key", "e => e.closest('details').open"):
        page.click("#add-panel details summary")
    page.fill("#api-key", key)


# -- checks of what the page shows --------------------------------------------------------------------
def check_answer(page, truth):
    """The category (name, icon, breadcrumbs), bars and chips match the API's answer ``truth``."""
    cat = truth["category"]
    assert page.get_attribute("#category-name", "data-name") == cat["name"]
    assert page.inner_text("#category-name") == humanise(cat["name"])
    expected_icon = {"upper": "upper", "lower": "lower", "full": "full"}[cat["path"][0]]
    assert page.get_attribute("#category-icon", "data-icon") == expected_icon
    assert page.get_attribute("#category-icon use", "href") == f"icons.svg#icon-{expected_icon}"
    icon_box = page.locator("#category-icon").bounding_box()
    assert icon_box["width"] >= 32 and icon_box["height"] >= 32
    assert page.locator("#breadcrumbs li").all_inner_texts() == crumbs(cat["path"])
    assert page.locator("#scores li").count() == len(truth["category_scores"])
    chips = page.locator("#attributes .chip")
    shown = visible(truth["attributes"])
    assert sorted(chips.nth(i).get_attribute("data-name") for i in range(chips.count())) == \
        sorted(a["name"] for a in shown)
    groups = page.locator("#attributes .group-name").all_inner_texts()  # chips grouped, one heading per group
    assert sorted(groups) == sorted({humanise(a["group"] or "other") for a in shown})
    assert page.is_hidden("#attributes-hidden") == (len(shown) == len(truth["attributes"]))


def check_overlay(page, truth):
    """The box is drawn where the API put it, scaled from original pixels to the displayed photo."""
    photo = page.locator("#photo").bounding_box()
    box = page.locator("#overlay rect.box").bounding_box()
    width, height = truth["image"]["width"], truth["image"]["height"]
    x1, y1, x2, y2 = truth["bbox"]
    sx, sy = photo["width"] / width, photo["height"] / height
    assert box["x"] == pytest.approx(photo["x"] + x1 * sx, abs=3)
    assert box["y"] == pytest.approx(photo["y"] + y1 * sy, abs=3)
    assert box["width"] == pytest.approx((x2 - x1) * sx, abs=4) and box["width"] > 0
    assert box["height"] == pytest.approx((y2 - y1) * sy, abs=4) and box["height"] > 0
    marks = page.locator("#overlay .lm")
    assert marks.count() == len(truth["landmarks"]) > 0
    for i, lm in enumerate(truth["landmarks"]):
        assert marks.nth(i).get_attribute("class") == f"lm lm-{lm['visibility']}"
        assert marks.nth(i).get_attribute("data-name") == lm["name"]


def check_similar(page, expected_count):
    cards = page.locator("#similar .card")
    assert cards.count() == expected_count
    page.wait_for_function("[...document.querySelectorAll('#similar .card img')].every(i => i.complete)")
    loaded = page.eval_on_selector_all("#similar .card img", "imgs => imgs.map(i => i.naturalWidth)")
    assert all(w > 0 for w in loaded)  # every catalog image was served by /v1/items/{id}/image
    assert all(page.locator("#similar .card img").nth(i).get_attribute("alt") for i in range(cards.count()))
    return [int(cards.nth(i).get_attribute("data-item-id")) for i in range(cards.count())]


# -- tests ------------------------------------------------------------------------------------------
def test_classify_search_confirm_and_find_the_new_item(browser, server, garments):
    _, consumer = garments
    photo = next(iter(consumer)).image
    truth = classify(server, photo)
    choosers = []  # file-chooser interception is switched on early: late, it can miss the dialog
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800},
                             on_file_chooser=lambda chooser: choosers.append(chooser))
    uploads = []
    page.on("request", lambda r: uploads.append(r.url.split("/v1/")[1]) if "/v1/" in r.url and r.method == "POST"
            else None)
    page.focus("#drop")  # the drop zone is keyboard-reachable and Enter opens the file picker
    page.keyboard.press("Enter")
    wait_until(page, lambda: choosers)
    choosers[0].set_files(photo)
    wait_for_answer(page)
    check_answer(page, truth)
    wait_until(page, lambda: page.locator("#similar .card").count() == 8)
    assert uploads == ["search"]  # one upload answers the classification and the similar items
    check_overlay(page, truth)
    assert page.locator("#photo").bounding_box()["width"] > 4 * truth["image"]["width"]  # a 64-pixel photo, enlarged
    ids = check_similar(page, 8)
    assert page.get_attribute("#photo", "alt").startswith("Your photo, recognised as")
    unlabelled = page.eval_on_selector_all("input, select, textarea", "els => els.filter(e => !e.labels.length)"
                                           ".map(e => e.id)")
    assert unlabelled == []  # every control has a label
    screenshot(page, "web-desktop")

    page.click("#add-button")  # Is this right? -> Yes, but first without the key: what to do is shown
    assert page.inner_text("#proposal-category") == humanise(truth["category"]["name"])
    page.click("#yes-button")
    page.wait_for_selector("#error:not([hidden])")
    with open(photo, "rb") as f:
        unauthorised = api(server, "POST", "/v1/items", files={"image": ("x.jpg", f, "image/jpeg")})
    assert unauthorised.status_code == 401 and unauthorised.json()["error"]["code"] == "missing_api_key"
    message = page.inner_text("#error")  # written for a person: where the key goes and whom to ask
    assert "Item details and API key" in message and "whoever runs" in message
    assert "Authorization" not in message and "X-API-Key" not in message
    assert page.evaluate("document.activeElement.id") == "api-key"  # the page leads to the missing key
    assert not page.is_disabled("#yes-button")
    fill_api_key(page)
    page.click("#yes-button")
    new_id = stored_id(page)
    assert new_id not in ids
    assert page.is_disabled("#yes-button") and page.is_disabled("#no-button")  # stored once, not twice
    item = api(server, "GET", f"/v1/items/{new_id}").json()
    assert item["category"] == truth["category"]["name"]
    assert sorted(item["attributes"]) == sorted(a["name"] for a in visible(truth["attributes"]))
    assert item["label"]["provenance"] == "confirmed"  # a person said yes

    page.reload()  # the key survives in localStorage; the same photo now finds the new item first
    page.wait_for_selector("html[data-ready=true]")
    assert page.input_value("#api-key") == API_KEY
    page.set_input_files("#file", photo)
    wait_for_answer(page)
    ids = check_similar(page, 8)
    assert ids[0] == new_id
    assert page.locator("#similar .card").first.inner_text().count(f"#{new_id}") == 1
    assert not errors


def test_phone_camera_correct_category_and_attributes(browser, server, garments):
    _, consumer = garments
    photo = list(consumer)[1].image
    truth = classify(server, photo)
    page, errors = open_page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                             has_touch=True, device_scale_factor=2)
    assert page.is_visible("label[for=camera]")  # a touch phone gets the camera button
    assert page.get_attribute("#camera", "capture") == "environment"
    page.set_input_files("#camera", photo)
    wait_for_answer(page)
    check_answer(page, truth)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # one column, nothing wider than the phone
    assert page.is_visible("#drop .coarse") and page.is_hidden("#drop .fine")  # "tap", not "drop" on a phone
    screenshot(page, "web-phone", full_page=False)
    page.locator("#result-panel").scroll_into_view_if_needed()
    screenshot(page, "web-phone-answer", full_page=False)
    page.locator("#words-form").scroll_into_view_if_needed()
    screenshot(page, "web-phone-words", full_page=False)

    page.check("#same-category")  # only items of the predicted category
    page.wait_for_function("!document.querySelector('#status').classList.contains('busy')")
    categories = [c.split("\n")[1] for c in page.locator("#similar .card").all_inner_texts()]
    assert categories and set(categories) == {humanise(truth["category"]["name"])}
    page.uncheck("#same-category")
    page.wait_for_function("document.querySelectorAll('#similar .card').length === 8")

    page.click("#add-button")
    page.click("#no-button")  # Is this right? No: correct the category and the attributes
    options = page.eval_on_selector_all("#fix-category option", "os => os.map(o => o.value)")
    assert options[0] == truth["category"]["name"] and options[-1] == "__other__"
    assert set(LABELS["categories"]) <= set(options)  # every category the model knows, not only the top guesses
    corrected = next(o for o in options[1:-1] if o != truth["category"]["name"])
    page.select_option("#fix-category", corrected)
    toggles = page.locator("#fix-attributes button.chip")  # the shown attributes on, the model's others off
    assert toggles.count() == len(truth["attributes"]) > 0
    pressed = [t.get_attribute("aria-pressed") for t in toggles.all()]
    assert pressed == ["true"] * len(visible(truth["attributes"])) + \
        ["false"] * (len(truth["attributes"]) - len(visible(truth["attributes"])))
    was = toggles.first.get_attribute("aria-pressed")
    toggles.first.click()
    assert toggles.first.get_attribute("aria-pressed") != was
    kept = [t.get_attribute("data-name") for t in toggles.all() if t.get_attribute("aria-pressed") == "true"]
    assert page.eval_on_selector_all("#attribute-names option", "os => os.map(o => o.value)") == \
        [humanise(a) for a in LABELS["attributes"]]  # new attributes: the model's names are offered
    page.fill("#fix-attribute-new", "Hand made")
    page.keyboard.press("Enter")
    fill_api_key(page)
    page.fill("#item-title", "Corrected on a phone")
    page.locator("#correct-form").scroll_into_view_if_needed()
    screenshot(page, "web-phone-correct", full_page=False)
    page.click("#fix-submit")
    new_id = stored_id(page)
    item = api(server, "GET", f"/v1/items/{new_id}").json()
    assert item["category"] == corrected and item["title"] == "Corrected on a phone"
    assert sorted(item["attributes"]) == sorted(kept + ["hand_made"])
    assert item["label"]["provenance"] == "corrected"
    assert page.get_attribute("#category-name", "data-name") == corrected  # the stored label, not the guess
    assert "You corrected the model's answer" in page.inner_text("#stored-note")
    chips = [c.get_attribute("data-name") for c in page.locator("#attributes .chip").all()]
    assert sorted(chips) == sorted(item["attributes"])
    page.wait_for_selector(f"#similar .card[data-item-id='{new_id}']")
    assert page.input_value("#item-title") == "" and page.input_value("#item-sku") == ""
    assert not errors


def test_not_an_image_shows_the_api_message(browser, server, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a photo\n")
    with open(fake, "rb") as f:
        answer = api(server, "POST", "/v1/classify", files={"image": ("holiday.jpg", f, "image/jpeg")})
    assert 400 <= answer.status_code < 500
    message = answer.json()["error"]["message"]
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == message
    assert page.get_attribute("#error", "role") == "alert"
    assert page.is_hidden("#result") and page.is_hidden("#preview")
    assert page.locator("#similar .card").count() == 0
    assert not errors


def test_drawing_follows_the_answer(browser, server, garments, tmp_path):
    """Every visibility's marker, the lower-body icon, a hedged answer and an empty search, from a fixed
    answer (the random test model rarely produces them); the box scales with a non-square photo."""
    from PIL import Image

    photo = tmp_path / "wide.png"
    Image.new("RGB", (300, 150), (200, 190, 180)).save(photo)
    answer = {"category": {"name": "Shorts", "path": ["lower", "shorts", "shorts"], "score": 0.61},
              "category_scores": [{"name": "Shorts", "score": 0.61}, {"name": "Skirt", "score": 0.3}],
              "attributes": [{"name": "denim", "score": 0.8, "group": "fabric"},
                             {"name": "no_length", "score": 0.98, "group": "length"},
                             {"name": "striped", "score": 0.7, "group": "texture"},
                             {"name": "leather", "score": 0.3, "group": "fabric"}],
              "landmarks": [{"name": "left_waistline", "x": 120, "y": 40, "visibility": "visible", "visible_prob": 0.9},
                            {"name": "right_waistline", "x": 180, "y": 40, "visibility": "occluded",
                             "visible_prob": 0.2},
                            {"name": "left_hem", "x": 0, "y": 149, "visibility": "truncated", "visible_prob": 0.1}],
              "bbox": [100, 30, 200, 120], "image": {"width": 300, "height": 150},
              "hedged": {"name": "lower", "path": ["lower"], "probability": 0.93, "target_accuracy": 0.9}}
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    page.route("**/v1/classify", lambda route: route.fulfill(json=answer))
    page.route("**/v1/search", lambda route: route.fulfill(json={"results": [], "query": {}, "classification": answer}))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_selector("#similar-status:has-text('No similar items')")
    assert page.get_attribute("#category-icon", "data-icon") == "lower"
    assert "A lower-body item — not sure which kind" in page.inner_text("#hedge")
    assert "Best guess: Shorts (61%)" in page.inner_text("#hedge")
    assert page.get_attribute("#hedge-icon use", "href") == "icons.svg#icon-lower"
    assert page.inner_text("#category-name") == "Lower" and page.inner_text("#category-score") == "93% sure"
    assert page.locator("#attributes .group-name").all_inner_texts() == ["Fabric", "Texture"]
    assert page.locator("#attributes .chip").evaluate_all("cs => cs.map(c => c.dataset.name)") == ["denim", "striped"]
    assert page.inner_text("#attributes-hidden").startswith("2 attributes")  # "no length 98%", "leather 30%"
    assert [m.get_attribute("class") for m in page.locator("#overlay .lm").all()] == \
        ["lm lm-visible", "lm lm-occluded", "lm lm-truncated"]
    assert page.locator("#overlay path.lm-truncated").count() == 1  # a diamond, as in the legend
    check_overlay(page, answer)
    screenshot(page, "web-drawing")
    assert not errors


def test_search_options_and_readable_results(browser, server, tmp_path):
    """The page's search options reach the API as form fields, and the answer is shown in words: a percentage
    and a judgement for the similarity, a badge on verified copies, the other photos of a grouped product;
    "garment only" is offered only when the model found a box."""
    from PIL import Image

    photo = tmp_path / "shirt.png"
    Image.new("RGB", (120, 160), (90, 120, 200)).save(photo)
    classification = {"category": {"name": "Tee", "path": ["upper", "tee"], "score": 0.9},
                      "category_scores": [{"name": "Tee", "score": 0.9}], "attributes": [], "landmarks": [],
                      "bbox": None, "image": {"width": 120, "height": 160}, "hedged": None}
    results = [{"item_id": 7, "score": 0.934, "category": "Tee", "category_path": ["upper", "tee"], "attributes": [],
                "sku": "A-1", "title": "Blue tee", "source": None, "image_url": None, "inliers": 80, "verified": True,
                "same_sku": [8, 9]},
               {"item_id": 3, "score": 0.31, "category": "Tee", "category_path": ["upper", "tee"], "attributes": [],
                "sku": None, "title": None, "source": None, "image_url": None, "inliers": 2, "verified": False,
                "same_sku": []}]
    forms = []

    def fulfil(route):
        forms.append(route.request.post_data or "")
        route.fulfill(json={"results": results, "query": {}, "classification": classification})

    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    page.route("**/v1/search", fulfil)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#similar .card")
    assert len(forms) == 1 and 'name="group_sku"' in forms[0] and 'name="crop"' not in forms[0]
    assert 'name="rerank"' not in forms[0]
    assert page.is_hidden("#crop-option")  # no box: nothing to crop to
    first, second = page.locator("#similar .card").all_inner_texts()
    assert "93% · very similar" in first and "Same picture" in first and "+2 more photos of this product" in first
    assert "31% · not alike" in second and "Same picture" not in second
    page.check("#rerank")
    wait_until(page, lambda: len(forms) == 2)
    assert 'name="rerank"' in forms[1]
    assert not errors


def form_field(body, name):
    """The value of a text field in a multipart/form-data body (bytes: ``post_data_buffer``; None when absent)."""
    text = body.decode("latin-1") if isinstance(body, bytes) else body or ""
    found = re.search(rf'name="{name}"\r\n\r\n(.*?)\r\n--', text, re.DOTALL)
    return found.group(1) if found else None


def wait_idle(page):
    page.wait_for_function("!document.querySelector('#status').classList.contains('busy')")


def test_add_flow_stores_once_clears_fields_and_warns_about_known_skus(browser, server, garments, tmp_path):
    _, consumer = garments
    photos = [s.image for s in list(consumer)[2:4]]
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    page.set_input_files("#file", photos[0])
    wait_for_answer(page)
    page.click("#add-button")
    fill_api_key(page)
    page.fill("#item-sku", "DUP-1")
    page.fill("#item-title", "First photo")
    page.dblclick("#yes-button")  # two clicks, one item: the button is off while storing and after
    first = stored_id(page)
    wait_idle(page)
    assert page.is_disabled("#yes-button") and page.is_disabled("#no-button")
    same = api(server, "GET", "/v1/items", params={"sku": "DUP-1"}).json()
    assert [i["item_id"] for i in same["items"]] == [first] and same["total"] == 1

    page.set_input_files("#file", photos[1])  # the next photo starts afresh: no SKU or title carried over
    wait_for_answer(page)
    assert page.input_value("#item-sku") == "" and page.input_value("#item-title") == ""
    assert page.is_hidden("#add-panel") and page.inner_text("#add-message") == ""
    page.click("#add-button")
    assert not page.is_disabled("#yes-button")
    assert page.evaluate("document.activeElement.id") == "confirm-question"
    page.keyboard.press("Escape")  # Escape closes the panel and gives the focus back to its button
    assert page.is_hidden("#add-panel")
    assert page.evaluate("document.activeElement.id") == "add-button"
    assert page.get_attribute("#add-button", "aria-expanded") == "false"

    page.click("#add-button")
    page.fill("#item-sku", "DUP-1")  # a SKU the catalog has: warned before anything is stored
    page.click("#yes-button")
    page.wait_for_selector("#sku-warning:not([hidden])")
    warning = page.inner_text("#sku-warning-text")
    assert f"item #{first}" in warning and "First photo" in warning and "DUP-1" in warning
    assert page.evaluate("document.activeElement.id") == "sku-store-anyway"
    assert api(server, "GET", "/v1/items", params={"sku": "DUP-1"}).json()["total"] == 1
    screenshot(page, "web-sku-warning")
    page.click("#sku-store-anyway")  # another photo of the same product, on purpose
    second = stored_id(page)
    wait_idle(page)
    assert second != first
    assert [i["item_id"] for i in api(server, "GET", "/v1/items", params={"sku": "DUP-1"}).json()["items"]] == \
        [first, second]

    fake = tmp_path / "broken.jpg"  # a failed upload leaves nothing of the previous photo on screen
    fake.write_text("not a photo")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#similar .card").count() == 0
    assert page.is_hidden("#result") and page.is_hidden("#preview")
    assert page.inner_text("#similar-status").startswith("No results")
    assert not errors


def test_cards_open_the_item(browser, server, garments):
    """Each result card opens its item (picture and metadata) in a dialog: on a phone, in the dark scheme."""
    _, consumer = garments
    page, errors = open_page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                             has_touch=True, color_scheme="dark")
    page.set_input_files("#file", list(consumer)[4].image)
    wait_for_answer(page)
    card = page.locator("#similar .card").first
    item_id = int(card.get_attribute("data-item-id"))
    name = card.locator(".card-open").inner_text()
    card.click(position={"x": 20, "y": 20})  # anywhere on the card: its picture
    page.wait_for_selector("#item-dialog[open]")
    assert page.inner_text("#item-dialog-title") == name
    page.wait_for_selector("#item-dialog-meta dt:has-text('Added')")  # the item's own record was fetched
    meta = dict(zip(page.locator("#item-dialog-meta dt").all_inner_texts(),
                    page.locator("#item-dialog-meta dd").all_inner_texts()))
    item = api(server, "GET", f"/v1/items/{item_id}").json()
    assert meta["Item"] == f"#{item_id}" and meta["SKU"] == item["sku"]
    assert meta["Category"] == " › ".join(crumbs(item["category_path"]))
    assert meta["Attributes"] == ", ".join(humanise(a) for a in item["attributes"])
    assert "Similarity" in meta
    page.wait_for_function("document.querySelector('#item-dialog-image').naturalWidth > 0")
    box = page.locator("#item-dialog").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390  # fits the phone
    background = page.eval_on_selector("#item-dialog", "d => getComputedStyle(d).backgroundColor")
    assert background == "rgb(25, 29, 35)"  # the dark scheme's panel colour
    screenshot(page, "web-item-phone-dark", full_page=False)
    page.keyboard.press("Escape")
    page.wait_for_selector("#item-dialog:not([open])", state="attached")
    assert page.evaluate("document.activeElement.closest('.card').dataset.itemId") == str(item_id)
    page.keyboard.press("Enter")  # the card's button, from the keyboard
    page.wait_for_selector("#item-dialog[open]")
    page.click("#item-dialog-close")
    page.wait_for_selector("#item-dialog:not([open])", state="attached")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert not errors


def test_search_by_words(browser, server, garments):
    items = api(server, "GET", "/v1/items", params={"limit": 500}).json()["items"]
    target = next(i for i in items if i["attributes"] and i["category"])
    category, attribute = target["category"], target["attributes"][0]
    query = f"{humanise(attribute).upper()}, {category}s!"  # case, punctuation, plural
    expected = api(server, "GET", "/v1/items", params={"q": query, "limit": 24}).json()
    assert [m["label"] for m in expected["query"]["matched"]] == [attribute, category]
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    page.fill("#words", query)
    page.keyboard.press("Enter")  # no photo: the whole catalog
    page.wait_for_selector("#similar .card")
    wait_idle(page)
    ids = [int(c.get_attribute("data-item-id")) for c in page.locator("#similar .card").all()]
    assert ids == [i["item_id"] for i in expected["items"]]
    assert page.locator("#words-feedback .understood strong").evaluate_all(
        "ss => ss.map(s => s.dataset.label)") == [attribute, category]
    assert page.inner_text("#similar-status").startswith(f"{expected['total']} item")
    assert "matches every word" in page.locator("#similar .card").first.inner_text()
    screenshot(page, "web-words")

    page.fill("#words", "shrts zebra")  # unknown words: said so, with the close labels to pick
    page.click("#words-submit")
    page.wait_for_selector("#words-feedback .not-understood[data-word=zebra]")
    assert "Nothing found" in page.inner_text("#similar-status")
    assert page.locator("#similar .card").count() == 0
    suggestion = page.locator("#words-feedback .not-understood[data-word=shrts] button", has_text="Shorts")
    suggestion.click()
    page.wait_for_selector("#words-feedback .understood strong[data-label=Shorts]")
    assert page.input_value("#words") == "shorts zebra"

    page.click("#words-clear")  # a photo, then words narrow its similar items
    posts = []

    def search(route):  # a route sees the multipart body (a request event does not, for a file part)
        posts.append(route.request.post_data_buffer)
        route.continue_()

    page.route("**/v1/search", search)
    page.set_input_files("#file", list(garments[1])[5].image)
    wait_for_answer(page)
    assert form_field(posts[0], "q") is None
    page.fill("#words", category)
    page.keyboard.press("Enter")
    wait_until(page, lambda: len(posts) == 2)
    wait_idle(page)
    assert form_field(posts[1], "q") == category
    shown = [c.split("\n")[1] for c in page.locator("#similar .card").all_inner_texts()]
    assert shown and set(shown) == {humanise(category)}
    assert not errors


KNIT_LABELS = {"categories": [{"name": "Tee", "path": ["upper", "tops", "tee"]},
                              {"name": "Sweater", "path": ["upper", "knitwear", "sweater"]},
                              {"name": "Hoodie", "path": ["upper", "knitwear", "hoodie"]},
                              {"name": "Trousers", "path": ["lower", "trousers", "trousers"]},
                              {"name": "Leggings", "path": ["lower", "trousers", "leggings"]},
                              {"name": "Dress", "path": ["full", "dresses", "dress"]}],
               "attributes": [{"name": "striped", "group": "texture"}, {"name": "long_sleeve", "group": "sleeve"},
                              {"name": "no_sleeve", "group": "sleeve"}],
               "hedging": {"calibrated": True, "targets": [0.9, 0.95]}}


def test_hedged_answers_and_the_sureness_control(browser, server, tmp_path):
    """A calibrated model (answers fixed here: the test model is not calibrated): the page offers the
    accuracies it is calibrated for, says a hedged answer in words with the node's icon, and proposes the node."""
    from PIL import Image

    photo = tmp_path / "knit.png"
    Image.new("RGB", (120, 160), (150, 40, 40)).save(photo)
    sweater = {"category": {"name": "Sweater", "path": ["upper", "knitwear", "sweater"], "score": 0.41},
               "category_scores": [{"name": "Sweater", "score": 0.41}, {"name": "Hoodie", "score": 0.38},
                                   {"name": "Tee", "score": 0.1}],
               "attributes": [{"name": "striped", "score": 0.8, "group": "texture"}], "landmarks": [], "bbox": None,
               "image": {"width": 120, "height": 160}, "hedged": None}
    knitwear = {"name": "knitwear", "path": ["upper", "knitwear"], "probability": 0.96, "target_accuracy": 0.95}
    searches, stores = [], []

    def search(route):
        searches.append(route.request.post_data_buffer)
        hedged = knitwear if form_field(searches[-1], "target_accuracy") else None
        route.fulfill(json={"results": [], "query": {}, "classification": {**sweater, "hedged": hedged}})

    def store(route):
        stores.append(route.request.post_data_buffer)
        route.fulfill(status=201, json={
            "item_id": 999, "sku": None, "title": None, "category": form_field(stores[-1], "category"),
            "category_path": None, "attributes": ["striped"], "source": None, "image_url": None,
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z", "extra": {}})

    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800},
                             routes={"**/v1/labels": lambda r: r.fulfill(json=KNIT_LABELS), "**/v1/search": search,
                                     "**/v1/items": store})
    assert page.is_visible("#target-accuracy")
    offered = page.eval_on_selector_all("#target-accuracy option", "os => os.filter(o => !o.hidden).map(o => o.value)")
    assert offered == ["", "0.9", "0.95"]  # only the accuracies the model is calibrated for
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])")
    assert form_field(searches[0], "target_accuracy") is None  # best guess
    assert page.inner_text("#category-name") == "Sweater" and page.is_hidden("#hedge")
    assert page.locator("#breadcrumbs li").all_inner_texts() == ["Upper", "Knitwear", "Sweater"]

    page.select_option("#target-accuracy", "0.95")  # the same photo, answered again at 95%
    page.wait_for_selector("#category-name[data-hedged=true]")
    assert form_field(searches[1], "target_accuracy") == "0.95"
    assert page.inner_text("#category-name") == "Knitwear" and page.inner_text("#category-score") == "96% sure"
    assert page.inner_text("#hedge-text") == "A knitwear item — not sure which kind. Best guess: Sweater (41%)."
    assert page.get_attribute("#hedge-icon use", "href") == "icons.svg#icon-upper"
    assert page.get_attribute("#category-icon", "data-icon") == "upper"
    assert page.locator("#breadcrumbs li").all_inner_texts() == ["Upper", "Knitwear"]
    assert "a knitwear item — not sure which kind" in page.inner_text("#status-text")
    screenshot(page, "web-hedged")

    page.click("#add-button")  # the add flow proposes the node, not the guess
    assert page.inner_text("#proposal-category") == "Knitwear (not sure which kind)"
    page.click("#no-button")
    options = page.eval_on_selector_all("#fix-category option", "os => os.map(o => o.value)")
    assert options[0] == "knitwear" and options[-1] == "__other__"
    assert {c["name"] for c in KNIT_LABELS["categories"]} <= set(options)  # every category, grouped
    assert page.eval_on_selector_all("#fix-category optgroup", "gs => gs.map(g => g.label)") == \
        ["Top guesses", "All upper", "All lower", "All full"]
    page.fill("#fix-attribute-new", "Long sleeve")  # typed as the page shows it: stored as the model names it
    page.keyboard.press("Enter")
    assert page.get_attribute("#fix-attributes [data-name=long_sleeve]", "aria-pressed") == "true"
    page.click("#fix-cancel")
    fill_api_key(page)
    page.click("#yes-button")
    assert stored_id(page) == 999
    assert form_field(stores[0], "category") == "knitwear" and form_field(stores[0], "attributes") == '["striped"]'
    assert form_field(stores[0], "label") == "confirmed"
    assert page.inner_text("#category-name") == "Knitwear" and page.is_hidden("#hedge")
    assert page.inner_text("#stored-note").startswith("Stored as item #999.")
    assert not errors


def test_an_uncalibrated_model_hides_the_sureness_control(browser, server, garments):
    labels = api(server, "GET", "/v1/labels").json()
    assert labels["hedging"] == {"calibrated": False, "targets": [], "default": None}
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    assert page.is_hidden("#sureness")
    page.close()

    searches = []  # a page that believes the model calibrated: the API's 422 not_calibrated hides the control

    def search(route):
        searches.append(route.request.post_data_buffer)
        if form_field(searches[-1], "target_accuracy"):
            route.fulfill(status=422, json={"error": {"code": "not_calibrated", "message": "run calibrate"}})
        else:
            route.continue_()

    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800}, routes={
        "**/v1/labels": lambda r: r.fulfill(json={**labels, "hedging": {"calibrated": True, "targets": [0.9]}}),
        "**/v1/search": search})
    page.select_option("#target-accuracy", "0.9")
    page.set_input_files("#file", list(garments[1])[6].image)
    wait_for_answer(page)
    assert [form_field(b, "target_accuracy") for b in searches] == ["0.9", None]  # asked again without it
    assert page.is_hidden("#sureness") and page.is_hidden("#error")
    assert not errors


def test_repeated_path_parts_are_shown_once(browser, server, tmp_path):
    from PIL import Image

    photo = tmp_path / "trousers.png"
    Image.new("RGB", (80, 160), (40, 40, 90)).save(photo)
    answer = {"category": {"name": "Trousers", "path": ["lower", "trousers", "trousers"], "score": 0.8},
              "category_scores": [{"name": "Trousers", "score": 0.8}], "attributes": [], "landmarks": [],
              "bbox": None, "image": {"width": 80, "height": 160}, "hedged": None}
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800}, routes={
        "**/v1/search": lambda r: r.fulfill(json={"results": [], "query": {}, "classification": answer})})
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])")
    assert page.locator("#breadcrumbs li").all_inner_texts() == ["Lower", "Trousers"]
    assert page.get_attribute("#breadcrumbs li:last-child", "aria-current") == "page"
    assert not errors


def test_what_the_model_knows_and_photos_it_does_not(browser, server, tmp_path):
    """The demo's serving (answers fixed here): the page says what the model was trained on, asks for the
    server's default sureness first, and says "shoes: not among this model's categories" / "not a garment I
    know" instead of a garment label."""
    from PIL import Image

    photo = tmp_path / "shoe.png"
    Image.new("RGB", (120, 90), (30, 30, 30)).save(photo)
    labels = {**KNIT_LABELS, "hedging": {"calibrated": True, "targets": [0.9, 0.95], "default": 0.9},
              "trained_on": {"data": "rendered garments (fashionlens synth)", "categories": 6, "kinds": ["garment"],
                             "guide": True}}
    base = {"category": {"name": "Trousers", "path": ["lower", "trousers", "trousers"], "score": 0.31},
            "category_scores": [{"name": "Trousers", "score": 0.31}, {"name": "Tee", "score": 0.2}],
            "attributes": [], "landmarks": [], "bbox": None, "image": {"width": 120, "height": 90}, "hedged": None}
    scopes = [{"verdict": "outside", "kind": "footwear", "looks_like": "running shoe", "familiar": False,
               "message": "shoes (running shoe): not among this model's categories", "fused": 0.0,
               "model_category": "Trousers", "masses": {"footwear": 0.8}},
              {"verdict": "unknown", "kind": None, "looks_like": "tabby", "familiar": False, "fused": 0.0,
               "message": "not a garment I know (looks like: tabby)", "model_category": "Trousers", "masses": {}}]
    searches = []

    def search(route):
        searches.append(route.request.post_data_buffer)
        scope = scopes[min(len(searches), 2) - 1]
        route.fulfill(json={"results": [], "query": {}, "classification": {**base, "scope": scope}})

    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800},
                             routes={"**/v1/labels": lambda r: r.fulfill(json=labels), "**/v1/search": search})
    note = page.inner_text("#trained-on")
    assert note == ("This model was trained on rendered garments (fashionlens synth): 6 categories. It has no "
                    "categories for shoes, hats, bags or accessories, and says so when a photo shows one.")
    assert page.input_value("#target-accuracy") == "0.9"  # the server's first choice
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#outside:not([hidden])")
    assert form_field(searches[0], "target_accuracy") == "0.9"
    assert page.inner_text("#category-name") == "Shoes"
    assert page.inner_text("#category-score") == "not among this model's categories"
    assert page.inner_text("#outside-text") == ("Shoes (running shoe): not among this model's categories. This "
                                                "model's best guess anyway: Trousers (31%) — likely wrong.")
    assert page.get_attribute("#category-icon", "data-icon") == "footwear" and page.is_hidden("#hedge")
    assert page.locator("#breadcrumbs li").count() == 0
    assert "shoes (running shoe)" in page.inner_text("#status-text")
    page.click("#add-button")
    assert "not sure what it is: check the category" in page.inner_text("#proposal-attributes")
    page.keyboard.press("Escape")
    page.set_input_files("#file", str(photo))  # the next photo: something else entirely
    page.wait_for_selector("#outside[data-verdict=unknown]")
    assert page.inner_text("#category-name") == "Not a garment I know"
    assert page.get_attribute("#category-icon", "data-icon") == "generic"
    assert page.inner_text("#status-text").startswith("This does not look like a garment I know (it looks like: tabby)")
    screenshot(page, "web-not-a-garment")
    assert not errors
