"""The REST API as schemathesis fuzzes it: the operations, the runs over them, the checks every answer must pass,
and the schema read from a live app."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import checks
from schemathesis.generation import GenerationMode

from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine

OPERATIONS = [("POST", "/generate/inpaint"), ("GET", "/jobs/{jobId}"), ("POST", "/jobs/{jobId}/cancel"),
              ("GET", "/assets"), ("POST", "/assets"), ("GET", "/assets/{assetId}"),
              ("GET", "/assets/{assetId}/file"), ("GET", "/models"), ("DELETE", "/assets/{assetId}"),
              ("DELETE", "/jobs/{jobId}"), ("POST", "/segment")]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# GET /models takes no input at all, and the DELETEs only an id in the path, which may be any string (a
# malformed one is simply not found): there is no invalid input to generate for them.
NOTHING_INVALID = {("GET", "/models"), ("DELETE", "/assets/{assetId}"), ("DELETE", "/jobs/{jobId}")}
RUNS = [(method, path, mode) for method, path in OPERATIONS for mode in MODES
        if mode is GenerationMode.POSITIVE or (method, path) not in NOTHING_INVALID]
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


@pytest.fixture
def api_schema(tmp_path, pipeline_cache):
    engine = Engine(Catalog.load(), AssetStore(tmp_path / "data"), pipeline_cache)
    app = create_app(engine, api_key=None, max_queue=4, with_ui=False)
    with TestClient(app):  # runs the lifespan: the job worker is live while the fuzzer calls the app
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    engine.store.close()
