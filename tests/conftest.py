"""Shared fixtures: tiny models built once per test run, and one pipeline cache over them."""

import shutil
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / ".artifacts"


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
