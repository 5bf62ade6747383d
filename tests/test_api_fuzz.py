"""Property-based fuzzing of the REST API from its own OpenAPI schema: no 5xx, every answer as documented."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation import GenerationMode

from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine

OPERATIONS = [("POST", "/generate/inpaint"), ("GET", "/jobs/{jobId}"), ("POST", "/jobs/{jobId}/cancel"),
              ("GET", "/assets"), ("POST", "/assets"), ("GET", "/assets/{assetId}"),
              ("GET", "/assets/{assetId}/file"), ("GET", "/models"), ("DELETE", "/assets/{assetId}"),
              ("DELETE", "/jobs/{jobId}"), ("POST", "/segment"), ("GET", "/models/{modelId}")]
# Per operation and mode; 20 runs x 30 examples keep the run around a minute on two cores.
EXAMPLES = 30
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


@pytest.fixture
def api_schema(tmp_path, pipeline_cache):
    engine = Engine(Catalog.load(), AssetStore(tmp_path / "data"), pipeline_cache)
    app = create_app(engine, api_key=None, max_queue=4, with_ui=False)
    with TestClient(app):  # runs the lifespan: the job worker is live while the fuzzer calls the app
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    engine.store.close()


def test_the_fuzzed_operations_are_all_of_the_api(api_schema):
    assert {(result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()} == \
        set(OPERATIONS)


# GET /models takes no input at all, and GET /models/{modelId} and the DELETEs only an id in the path, which may be
# any string (a malformed one is simply not found): there is no invalid input to generate for them.
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
NOTHING_INVALID = {("GET", "/models"), ("GET", "/models/{modelId}"), ("DELETE", "/assets/{assetId}"),
                   ("DELETE", "/jobs/{jobId}")}
RUNS = [(method, path, mode) for method, path in OPERATIONS for mode in MODES
        if mode is GenerationMode.POSITIVE or (method, path) not in NOTHING_INVALID]


@pytest.mark.parametrize("method, path, mode", RUNS, ids=[f"{m} {p} {mode.value}" for m, p, mode in RUNS])
def test_fuzz_no_server_error_and_answers_conform(api_schema, method, path, mode):
    operation = api_schema[path][method]
    extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def answers_as_documented(case):
        case.validate_response(case.call(), checks=CHECKS + extra)

    answers_as_documented()
