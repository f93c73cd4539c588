"""The page while its catalog is re-embedded with a new model (``catalog reindex``), in a real browser: searches
keep answering with the old model while the new embeddings are staged, a search caught by the switch (503
``model_changed``) is asked again by the page without a word to the person, and the answer after it is the new
model's.  The live app in a thread (as tests/test_web.py), test_reindex's two tiny models and catalog."""

import pytest
import test_reindex
import test_web
from test_web import open_page

from fashionlens.catalog import Catalog

browser, sync_playwright = test_web.browser, test_web.sync_playwright
world = test_reindex.world  # twelve images, the old run (dim 32), the new run (dim 24), a catalog built with the old
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def served(world, tmp_path, sync_playwright):
    """(base URL, catalog directory, the app) of the app serving a copy of the reindex tests' catalog."""
    from fashionlens.serving import ServeSettings, create_app

    directory = test_reindex.copy_catalog(world, tmp_path)
    app = create_app(ServeSettings(catalog_dir=directory, api_key="k"))
    with test_web.serve_in_thread(app) as base:
        yield base, directory, app
    app.state.service.close()


def scores_on_page(page):
    return page.eval_on_selector_all("#similar .card", "cs => cs.map(c => c.dataset.score || c.innerText)")


def test_the_page_searches_through_a_reindex_and_its_switch(browser, served, world):
    base, directory, app = served
    query = world["files"][2]
    posts = []
    page, errors = open_page(browser, base, viewport={"width": 1280, "height": 800})
    page.on("response", lambda r: posts.append(r.status) if r.url.endswith("/v1/search") else None)

    def search():
        page.set_input_files("#file", query)
        test_web.wait_for_answer(page)
        return scores_on_page(page)

    before = search()
    assert before and posts == [200]
    with Catalog.open(directory) as cat:  # new embeddings staged: the catalog still serves the old model
        cat.reindex(world["new"], switch=False, progress=False)
    assert search() == before and posts == [200, 200]

    service = app.state.service
    analyse = service.batcher.fn

    def switch_after_the_forward(requests):  # this query is embedded by the old model, then the switch lands
        answers = analyse(requests)
        service.batcher.fn = analyse
        with Catalog.open(directory) as other:
            other.reindex(world["new"], progress=False)
        return answers

    service.batcher.fn = switch_after_the_forward
    after = search()
    assert posts[2:] == [503, 200]  # refused (never two models' vectors in one answer), then asked again
    assert page.is_hidden("#error") and not errors
    assert after != before  # the new model's neighbours and scores
    assert service.predictor.run == world["new"]
    with Catalog.open(directory) as cat:
        assert cat.model_run == world["new"] and cat.dim == test_reindex.NEW_DIM
