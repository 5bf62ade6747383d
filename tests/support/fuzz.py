"""The REST API as schemathesis fuzzes it: the operations (read from the app's OpenAPI schema), the runs over
them and the checks every answer must pass. The live schema is the `api_schema` fixture (tests/conftest.py)."""

import tempfile
from pathlib import Path

from schemathesis import checks
from schemathesis.generation import GenerationMode

from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache


def _documented_operations() -> dict[tuple[str, str], dict]:
    """Each operation of the API's OpenAPI schema, read from an app over a throwaway store: a route added to the
    API is fuzzed without a list here to update."""
    with tempfile.TemporaryDirectory() as folder:
        catalog = Catalog.load()
        engine = Engine(catalog, AssetStore(Path(folder)), PipelineCache(catalog, Path(folder) / "models", device="cpu"))
        try:
            paths = create_app(engine, api_key=None, with_ui=False).openapi()["paths"]
        finally:
            engine.store.close()
    return {(method.upper(), path): operation for path, item in paths.items() for method, operation in item.items()}


def _takes_invalid_input(operation: dict) -> bool:
    # A body or a query parameter can be malformed; an id in the path may be any string (a malformed one is
    # simply not found): for GET /models and the DELETEs there is no invalid input to generate.
    return "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", []))


DOCUMENTED = _documented_operations()
OPERATIONS = sorted(DOCUMENTED)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
RUNS = [(method, path, mode) for method, path in OPERATIONS for mode in MODES
        if mode is GenerationMode.POSITIVE or _takes_invalid_input(DOCUMENTED[method, path])]
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]

