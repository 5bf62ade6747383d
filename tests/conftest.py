"""Shared fixtures: tiny models built once per test run, and one pipeline cache over them; the engine and the API
in front of it (tests/support); the opt-in long runs."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# TestClient sends `Host: testserver`; by default the server answers loopback names only. Set before
# the server's settings are first read (the fixtures below import them).
os.environ.setdefault("INPAINT_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

from inpaint.assets import AssetStore  # noqa: E402
from tests.support.api import client, engine  # noqa: E402,F401 (fixtures for every test module)
from tests.support.images import decoded_sizes  # noqa: E402,F401 (a fixture)
from tests.support.store import store  # noqa: E402,F401 (a fixture)

ARTIFACTS = Path(__file__).parent / ".artifacts"
LONG_TESTS = os.environ.get("INPAINT_LONG_TESTS") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "long: minutes-long hardening runs (the big load, the long fuzz); "
                                       "skipped unless INPAINT_LONG_TESTS=1")
    config.addinivalue_line("markers", "figure: draws a picture the README shows, into a git-ignored folder unless "
                                       "`python -m bench.figures` runs it")
    config.addinivalue_line("markers", "torch: needs torch and the diffusion libraries (the others run without them)")


def pytest_collection_modifyitems(config, items):
    if LONG_TESTS:
        return
    skip = pytest.mark.skip(reason="a long run: set INPAINT_LONG_TESTS=1")
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    # A fresh folder per run (a stale tiny model from older code must not pass the tests), shared by the session.
    root = ARTIFACTS / "models"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pipeline_cache(models_dir):
    from inpaint.catalog import Catalog
    from inpaint.pipelines import PipelineCache

    # Room for the three tiny families, so tests never reload one another's pipelines.
    return PipelineCache(Catalog.load(), models_dir, max_pipelines=3, device="cpu")


@pytest.fixture
def api_schema(tmp_path, pipeline_cache):
    """The API's OpenAPI schema as schemathesis reads it from a live app (tests/support/fuzz.py)."""
    import schemathesis
    from fastapi.testclient import TestClient

    from inpaint.api import create_app
    from inpaint.catalog import Catalog
    from inpaint.generate import Engine

    fuzzed = Engine(Catalog.load(), AssetStore(tmp_path / "data"), pipeline_cache)
    app = create_app(fuzzed, api_key=None, max_queue=4, with_ui=False)
    with TestClient(app):  # runs the lifespan: the job worker is live while the fuzzer calls the app
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    fuzzed.store.close()
