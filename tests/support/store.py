"""An asset store in a test's own folder, and what tests put in it: noise pictures, job bodies as the queue saves
them; the files the store holds."""

import numpy as np
import pytest
from PIL import Image

from inpaint.assets import AssetStore, new_id


@pytest.fixture
def store(tmp_path):
    s = AssetStore(tmp_path / "data")
    yield s
    s.close()


def noise(width=40, height=24, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8), mode)


def job(status="queued", **extra):
    return {"jobId": new_id("job"), "jobType": "inpaint", "status": status, "progress": 0.0,
            "createdAt": "2025-01-01T00:00:00.000Z", "updatedAt": "2025-01-01T00:00:00.000Z",
            "metadata": {"input": {"prompt": "a cat"}, "assetIds": [], "error": None}, **extra}


def stored_files(store):
    return sorted(p.name for p in (store.root / "files").iterdir())


def files_of(store, *assets_):
    """The originals only: renditions are made on request."""
    return sorted(f"{a.id}.png" for a in assets_)


def saved_job(store, status="success", *, image=None, mask=None, results=(), previews=(), job_id=None):
    """A job as the queue saves it, naming its input, results and previews."""
    body = job(status)
    if job_id:
        body["jobId"] = job_id
    body["metadata"].update(input={"prompt": "a cat", "image": image and image.id, "maskId": mask and mask.id},
                            assetIds=[a.id for a in results], intermediateImages=[a.id for a in previews])
    store.save_job(body)
    return body["jobId"]
