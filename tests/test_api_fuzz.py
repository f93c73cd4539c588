"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis, in process over
ASGI): no generated request, fitting the schema or not, with or without the key, may make the
server fail (5xx).

The operations are driven through ``APIOperation.as_strategy`` with plain hypothesis rather than the
schemathesis pytest plugin, whose fixture-based loader does not run on this pytest."""

import io
from types import SimpleNamespace

import pytest
from PIL import Image

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from test_api import KEY, build_fixture

from fashionlens.serving import ServeSettings, create_app

MAX_EXAMPLES = 30  # per run: 28 runs x 30 requests
OPERATIONS = [("POST", "/v1/classify"), ("POST", "/v1/search"), ("POST", "/v1/items"), ("GET", "/v1/items"),
              ("GET", "/v1/items/{item_id}"), ("PATCH", "/v1/items/{item_id}"), ("DELETE", "/v1/items/{item_id}"),
              ("GET", "/v1/items/{item_id}/image"), ("POST", "/v1/items/{item_id}/answer"), ("GET", "/v1/review"),
              ("GET", "/v1/labels"), ("GET", "/healthz"), ("GET", "/metrics")]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The app's schema, a few real images and the catalog's item ids (to mix into generated requests)."""
    world = build_fixture(tmp_path_factory.mktemp("fuzz"), items=14, views=3, catalog_items=6)
    app = create_app(ServeSettings(world.run, world.catalog, api_key=KEY, batch_wait_ms=0))
    with open(world.images[7], "rb") as f:
        jpeg = f.read()
    png = io.BytesIO()
    Image.open(world.images[8]).save(png, format="PNG")
    yield SimpleNamespace(schema=schemathesis.openapi.from_asgi("/openapi.json", app), images=[jpeg, png.getvalue()],
                          ids=world.ids)
    app.state.service.close()


def test_every_operation_is_fuzzed(api):
    found = {(op.ok().method.upper(), op.ok().path) for op in api.schema.get_all_operations()}
    assert found == set(OPERATIONS)


PARAMETERLESS = {"/healthz", "/metrics", "/v1/labels"}  # nothing to get wrong: no negative cases exist
WRITES = {("POST", "/v1/items"), ("PATCH", "/v1/items/{item_id}"), ("DELETE", "/v1/items/{item_id}"),
          ("POST", "/v1/items/{item_id}/answer")}
RUNS = [(m, p, mode, (m, p) in WRITES) for m, p in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (p in PARAMETERLESS and mode == GenerationMode.NEGATIVE)]
RUNS += [(m, p, GenerationMode.POSITIVE, False) for m, p in OPERATIONS if (m, p) in WRITES]  # the key check itself


@pytest.mark.parametrize("method,path,mode,keyed", RUNS,
                         ids=[f"{m} {p} {mode}{' keyed' if k else ''}" for m, p, mode, k in RUNS])
def test_no_server_errors(api, method, path, mode, keyed):
    operation = api.schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode), image=st.sampled_from([None, *api.images]), item_id=st.sampled_from([None, *api.ids]))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case, image, item_id):
        if keyed:  # past the key check, the write endpoints meet the generated bodies themselves
            case.headers = {**(case.headers or {}), "X-API-Key": KEY}
        if image is not None and isinstance(case.body, dict) and "image" in case.body:
            case.body["image"] = image  # a real picture: the generated fields reach the model and the catalog
        if item_id is not None and "item_id" in (case.path_parameters or {}):
            case.path_parameters["item_id"] = item_id  # an existing item
        case.validate_response(case.call(), checks=[not_a_server_error])

    check()
