"""The REST API under test: an engine over tiny models, a TestClient or a real uvicorn in front of it, request
bodies, and the calls and checks the API's tests share."""

import base64
import io
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine
from tests.support.images import data_url, photo, rect_mask

CATALOG = Catalog.load()
FINAL = ("success", "failure", "canceled")
KEY = "test-key-7f3a"
# Diffusion requests stay tiny: a 64 px region, two steps.
TINY = {"modelId": "tiny-sd-1_5", "numInferenceSteps": 2, "width": 64, "height": 64, "strength": 1.0}


def make_engine(folder, pipeline_cache) -> Engine:
    # One sample per pipeline call, so a job's assets can be watched arriving one by one.
    return Engine(CATALOG, AssetStore(folder), pipeline_cache, max_batch=1)


@pytest.fixture
def engine(tmp_path, pipeline_cache):
    engine = make_engine(tmp_path / "data", pipeline_cache)
    yield engine
    engine.store.close()


@pytest.fixture
def client(engine):
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        yield client


def body(image=None, mask=None, **fields) -> dict:
    image = photo(128, 96) if image is None else image
    mask = rect_mask(image.width, image.height, (40, 30, 80, 60)) if mask is None else mask
    return {"modelId": "opencv-telea", "prompt": "fill", "image": data_url(image), "mask": data_url(mask), **fields}


def wait(client, job_id: str, *, until=lambda job: job["status"] in FINAL, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()["job"]
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job['status']} {job['progress']}"
        time.sleep(0.02)


def submit(client, request: dict, **params) -> dict:
    response = client.post("/generate/inpaint", json=request, params=params)
    assert response.status_code == 200, response.text
    return response.json()["job"]


def download(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def assert_error(response, status: int, field: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"field", "message", "status"} and error["status"] == status
    assert error["field"] == field, error
    for word in words:
        assert word in error["message"], error
    return error


def listed_ids(client) -> set[str]:
    return {asset["id"] for asset in client.get("/assets", params={"limit": 1000}).json()["assets"]}


@contextmanager
def serve(app, timeout: float = 60):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


# -- bad input: bodies each refused naming one field ---------------------------------------------

def png_declaring(width: int, height: int) -> bytes:
    """A PNG header claiming a size, with no pixels behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def b64_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


BAD_BODIES = {
    "malformed base64": ({"image": "data:image/png;base64,iVBOR*w0K"}, "image", "base64"),
    "non-image bytes": ({"image": b64_url(b"GIF89a this is not an image at all")}, "image", "not a PNG"),
    "1x1 image": ({"image": data_url(Image.new("RGB", (1, 1)))}, "image", "1x1"),
    "empty mask": ({"mask": data_url(Image.new("L", (128, 96), 0))}, "mask", "empty"),
    "huge declared size": ({"image": b64_url(png_declaring(100_000, 100_000))}, "image", "size"),
    "unknown model id": ({"modelId": "no-such-model"}, "modelId", "no-such-model", "opencv-telea", "tiny-sd-1_5"),
    "image id with ../": ({"image": "asset_../../../etc/passwd"}, "image", "asset id"),
    "mask id with ../": ({"mask": None, "maskId": "../inpaint.db"}, "maskId", "asset id"),
    "parent id with ../": ({"parentId": "asset_../../x"}, "parentId", "asset id"),
    "mask of another aspect": ({"mask": data_url(Image.new("L", (64, 64), 255))}, "mask", "aspect"),
    "blank prompt": ({"prompt": "   ", "modelId": "tiny-sd-1_5"}, "prompt", "empty", "sd-1_5"),
    "prompt missing": ({"prompt": None, "modelId": "tiny-sd-1_5"}, "prompt", "empty", "sd-1_5"),
    "steps over 150": ({"numInferenceSteps": 151}, "numInferenceSteps", "150"),
    "steps as a float": ({"numInferenceSteps": 2.5}, "numInferenceSteps", "integer"),
    "boolean as a string": ({"hideResults": "true"}, "hideResults", "boolean"),
    "width not a multiple of 8": ({"width": 100}, "width", "multiple of 8"),
    "seed not a number": ({"seed": "12abc"}, "seed", "digits"),
    "unknown field": ({"colour": "red"}, "colour", "not a field"),
    "unknown scheduler": ({"scheduler": "Nope"}, "scheduler", ""),
    "unknown concept": ({"concepts": [{"modelId": "nope"}]}, "concepts.0.modelId", "nope"),
    "epoch on a non-LoRA": ({"modelEpoch": "epoch-1"}, "modelEpoch", "LoRA"),
    "unknown asset": ({"image": f"asset_{'q' * 22}"}, "image", "no asset"),
}

