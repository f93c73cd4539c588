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
    import uvicorn
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
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
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


def open_page(browser, base, on_file_chooser=None, **context):
    """(page at the app's root once its script ran, list collecting uncaught page errors)."""
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if on_file_chooser is not None:
        page.on("filechooser", on_file_chooser)
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
    assert page.locator("#breadcrumbs li").all_inner_texts() == [humanise(p) for p in cat["path"]]
    assert page.locator("#scores li").count() == len(truth["category_scores"])
    chips = page.locator("#attributes .chip")
    assert sorted(chips.nth(i).get_attribute("data-name") for i in range(chips.count())) == \
        sorted(a["name"] for a in truth["attributes"])
    groups = page.locator("#attributes .group-name").all_inner_texts()  # chips grouped, one heading per group
    assert sorted(groups) == sorted({humanise(a["group"] or "other") for a in truth["attributes"]})


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

    page.click("#add-button")  # Is this right? -> Yes, but first without the key: the API's 401 is shown
    assert page.inner_text("#proposal-category") == humanise(truth["category"]["name"])
    page.click("#yes-button")
    page.wait_for_selector("#error:not([hidden])")
    with open(photo, "rb") as f:
        unauthorised = api(server, "POST", "/v1/items", files={"image": ("x.jpg", f, "image/jpeg")})
    assert unauthorised.status_code == 401
    assert page.inner_text("#error") == unauthorised.json()["error"]["message"]
    assert page.evaluate("document.activeElement.id") == "api-key"  # the page leads to the missing key
    fill_api_key(page)
    page.click("#yes-button")
    new_id = stored_id(page)
    assert new_id not in ids
    item = api(server, "GET", f"/v1/items/{new_id}").json()
    assert item["category"] == truth["category"]["name"]
    assert sorted(item["attributes"]) == sorted(a["name"] for a in truth["attributes"])

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
    corrected = next(o for o in options[1:-1] if o != truth["category"]["name"])
    page.select_option("#fix-category", corrected)
    toggles = page.locator("#fix-attributes button.chip")
    assert toggles.count() == len(truth["attributes"]) > 0
    dropped = toggles.first.get_attribute("data-name")
    toggles.first.click()
    assert toggles.first.get_attribute("aria-pressed") == "false"
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
    kept = [a["name"] for a in truth["attributes"] if a["name"] != dropped]
    assert sorted(item["attributes"]) == sorted(kept + ["hand_made"])
    page.wait_for_selector(f"#similar .card[data-item-id='{new_id}']")
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
                             {"name": "striped", "score": 0.7, "group": "texture"}],
              "landmarks": [{"name": "left_waistline", "x": 120, "y": 40, "visibility": "visible", "visible_prob": 0.9},
                            {"name": "right_waistline", "x": 180, "y": 40, "visibility": "occluded",
                             "visible_prob": 0.2},
                            {"name": "left_hem", "x": 0, "y": 149, "visibility": "truncated", "visible_prob": 0.1}],
              "bbox": [100, 30, 200, 120], "image": {"width": 300, "height": 150},
              "hedged": {"name": "lower", "path": ["lower"]}}
    page, errors = open_page(browser, server, viewport={"width": 1280, "height": 800})
    page.route("**/v1/classify", lambda route: route.fulfill(json=answer))
    page.route("**/v1/search", lambda route: route.fulfill(json={"results": [], "query": {}, "classification": answer}))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_selector("#similar-status:has-text('No similar items')")
    assert page.get_attribute("#category-icon", "data-icon") == "lower"
    assert "at least Lower" in page.inner_text("#hedge")
    assert page.locator("#attributes .group-name").all_inner_texts() == ["Fabric", "Texture"]
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
