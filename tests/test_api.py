"""The REST API over HTTP: round trips, jobs, assets, auth, errors, restart; TestClient and a real uvicorn."""

import json
import re
import socket
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inpaint.api import create_app
from inpaint.jobs import INTERRUPTED
from tests.support.api import (BAD_BODIES, CATALOG, FINAL, KEY, TINY, assert_error, b64_url, body, download,
                               listed_ids, make_engine, serve, submit, wait)
from tests.support.images import data_url, photo, rect_mask


# -- round trips ------------------------------------------------------------------------------------

@pytest.mark.torch
def test_round_trip_tiny_sd15_upload_generate_poll_download(client):
    image, mask = photo(128, 96, seed=1), rect_mask(128, 96, (40, 30, 80, 60))
    # A body must be declared JSON: a web page can post text/plain to any address without a preflight.
    assert_error(client.post("/assets", content=json.dumps({"image": data_url(image)})), 415, "body", "JSON")
    uploaded = client.post("/assets", content=json.dumps({"image": data_url(image)}),
                           headers={"Content-Type": "application/json; charset=utf-8"}).json()["asset"]
    assert (uploaded["width"], uploaded["height"], uploaded["kind"]) == (128, 96, "image")

    job = submit(client, {**TINY, "prompt": "a red ball", "image": uploaded["id"], "mask": data_url(mask),
                          "numSamples": 2, "seed": "1234"})
    assert job["status"] in ("queued", "in-progress") and job["jobId"].startswith("job_")
    job = wait(client, job["jobId"])

    assert job["status"] == "success" and job["progress"] == 1.0 and job["metadata"]["error"] is None
    meta = job["metadata"]
    assert meta["seeds"] == [1234, 1235] and meta["input"]["seed"] == 1234
    assert (meta["input"]["width"], meta["input"]["height"], meta["input"]["scheduler"]) == (64, 64, "PNDMScheduler")
    assert meta["input"]["image"] == uploaded["id"]
    assert [a["id"] for a in meta["assets"]] == meta["assetIds"] and len(meta["assetIds"]) == 2
    stored_mask = np.asarray(download(client, f"/assets/{meta['input']['maskId']}/file?original=true")) > 0
    for asset, seed in zip(meta["assets"], [1234, 1235]):
        assert (asset["seed"], asset["parentId"], asset["jobId"], asset["modelId"]) == \
            (seed, uploaded["id"], job["jobId"], "tiny-sd-1_5")
        assert asset["url"] == f"/assets/{asset['id']}/file"
        webp = download(client, asset["url"])
        assert (webp.format, webp.size) == ("WEBP", (128, 96))
        out_np = np.asarray(download(client, asset["url"] + "?original=true").convert("RGB"))
        # Merge mode: every pixel outside the stored mask comes back bit for bit.
        assert np.array_equal(out_np[~stored_mask], np.asarray(image)[~stored_mask])
        assert not np.array_equal(out_np[stored_mask], np.asarray(image)[stored_mask])
    assert set(meta["assetIds"]) <= listed_ids(client)

    # Sample 1 replays alone with its own seed.
    again = wait(client, submit(client, {**TINY, "prompt": "a red ball", "image": uploaded["id"],
                                         "mask": data_url(mask), "numSamples": 1, "seed": 1235})["jobId"])
    first = download(client, meta["assets"][1]["url"] + "?original=true")
    replay = download(client, again["metadata"]["assets"][0]["url"] + "?original=true")
    assert np.array_equal(np.asarray(first), np.asarray(replay))


def test_round_trip_opencv_telea_with_data_urls(client):
    image = photo(128, 96, seed=2)
    job = wait(client, submit(client, body(image, prompt="ignored"))["jobId"])
    assert job["status"] == "success" and job["metadata"]["input"]["numSamples"] == 1
    assert "opencv-telea ignores prompt: opencv models do not read it" in job["metadata"]["warnings"]
    [result] = job["metadata"]["assets"]
    input_id = job["metadata"]["input"]["image"]
    assert result["parentId"] == input_id and {input_id, result["id"]} <= listed_ids(client)
    # The stored input is the uploaded image, pixel for pixel.
    assert np.array_equal(np.asarray(download(client, f"/assets/{input_id}/file?original=true")), np.asarray(image))
    # The mask is stored hidden, so it is not listed but can be fetched.
    mask_id = job["metadata"]["input"]["maskId"]
    assert mask_id not in listed_ids(client)
    assert client.get(f"/assets/{mask_id}").json()["asset"]["hidden"] is True


# -- hide, parentId, hideResults, originalAssets ---------------------------------------------------

def test_hide_and_parent_id_apply_to_the_input_image_asset(client):
    parent = client.post("/assets", json={"image": data_url(photo(64, 64))}).json()["asset"]
    job = wait(client, submit(client, body(hide=True, parentId=parent["id"]))["jobId"])
    input_asset = client.get(f"/assets/{job['metadata']['input']['image']}").json()["asset"]
    assert input_asset["hidden"] is True and input_asset["parentId"] == parent["id"]
    listed = listed_ids(client)
    assert input_asset["id"] not in listed and parent["id"] in listed
    # Results are not hidden by `hide` and chain onto the input.
    [result] = job["metadata"]["assets"]
    assert result["parentId"] == input_asset["id"] and result["id"] in listed

    uploaded = client.post("/assets", json={"image": data_url(photo(64, 64)), "hide": True,
                                            "parentId": parent["id"]}).json()["asset"]
    assert uploaded["hidden"] is True and uploaded["parentId"] == parent["id"]
    assert uploaded["id"] not in listed_ids(client)


def test_hide_results_keeps_the_ids_on_the_job_only(client):
    job = wait(client, submit(client, body(hideResults=True))["jobId"])
    assert job["status"] == "success"
    [result_id] = job["metadata"]["assetIds"]
    assert job["metadata"]["assets"] == []  # not in the job's image list
    assert result_id not in listed_ids(client)  # nor in listings
    hidden = client.get(f"/assets/{result_id}").json()["asset"]
    assert hidden["hidden"] is True and hidden["jobId"] == job["jobId"]
    assert download(client, hidden["url"]).size == (128, 96)


def test_original_assets_switches_urls_to_the_png_originals(client):
    image = photo(96, 64, seed=5)
    job = submit(client, body(image, mask=rect_mask(96, 64, (10, 10, 30, 30))), originalAssets="true")
    assert job["originalAssets"] is True
    job = wait(client, job["jobId"])
    [result] = job["metadata"]["assets"]
    assert result["url"] == f"/assets/{result['id']}/file?original=true"
    png = download(client, result["url"])
    assert png.format == "PNG"
    response = client.get(result["url"])
    assert response.headers["content-type"] == "image/png"
    # The job remembers it; other routes take it per request, WebP by default.
    assert client.get(f"/jobs/{job['jobId']}").json()["job"]["metadata"]["assets"][0]["url"].endswith("?original=true")
    assert client.get(f"/assets/{result['id']}").json()["asset"]["url"] == f"/assets/{result['id']}/file"
    assert client.get(f"/assets/{result['id']}", params={"originalAssets": True}).json()["asset"]["url"] == \
        result["url"]
    listing = client.get("/assets", params={"originalAssets": "true"}).json()["assets"]
    assert listing and all(asset["url"].endswith("/file?original=true") for asset in listing)
    webp = client.get(f"/assets/{result['id']}/file")
    assert webp.headers["content-type"] == "image/webp"
    # The rendition is lossy, the original exact.
    input_png = download(client, f"/assets/{job['metadata']['input']['image']}/file?original=true")
    assert np.array_equal(np.asarray(input_png), np.asarray(image))


def test_uploaded_asset_keeps_alpha_and_serves_as_a_mask(client):
    image = photo(96, 96, seed=3)
    # A mask drawn as opaque strokes on a transparent layer: the alpha says where to repaint.
    mask_np = np.zeros((96, 96, 4), np.uint8)
    mask_np[30:60, 30:60] = (255, 0, 0, 255)
    mask_asset = client.post("/assets", json={"image": data_url(Image.fromarray(mask_np, "RGBA"))}).json()["asset"]
    stored = download(client, f"/assets/{mask_asset['id']}/file?original=true")
    assert stored.mode == "RGBA" and np.array_equal(np.asarray(stored), mask_np)

    job = wait(client, submit(client, {"modelId": "opencv-telea", "prompt": "x", "image": data_url(image),
                                       "maskId": mask_asset["id"]})["jobId"])
    assert job["status"] == "success", job["metadata"]["error"]
    used = np.asarray(download(client, f"/assets/{job['metadata']['input']['maskId']}/file?original=true"))
    assert used[45, 45] == 255 and used[5, 5] == 0


@pytest.mark.torch
def test_intermediate_images_are_exposed_on_the_job(client):
    # DDIM runs exactly numInferenceSteps steps (PNDM adds one), one preview each.
    request = body(**{**TINY, "numInferenceSteps": 3}, scheduler="DDIMScheduler", intermediateImages=True, numSamples=1)
    job = wait(client, submit(client, request)["jobId"])
    assert job["status"] == "success"
    previews = job["metadata"]["intermediateImages"]
    assert len(previews) == 3
    for preview_id in previews:
        preview = client.get(f"/assets/{preview_id}").json()["asset"]
        assert preview["kind"] == "preview" and preview["hidden"] is True and preview["jobId"] == job["jobId"]
        assert download(client, preview["url"]).format == "WEBP"
    assert not set(previews) & listed_ids(client)


# -- jobs: progress, cancel, queue -------------------------------------------------------------------

@pytest.mark.torch
def test_cancel_a_running_job_keeps_the_samples_already_made(client):
    job = submit(client, body(**{**TINY, "numInferenceSteps": 20}, numSamples=40))
    # Progress moves per denoising step, before the first sample is done...
    early = wait(client, job["jobId"], until=lambda j: j["status"] != "queued" and
                 (j["progress"] > 0 or j["status"] in FINAL), timeout=120)
    assert early["status"] == "in-progress", early
    # ...and the samples are appended one by one as they finish.
    running = wait(client, job["jobId"], until=lambda j: len(j["metadata"]["assetIds"]) >= 1 or j["status"] in FINAL)
    assert running["status"] == "in-progress" and 0 < running["progress"] < 1

    canceled = client.post(f"/jobs/{job['jobId']}/cancel").json()["job"]
    assert canceled["status"] in ("in-progress", "canceled")
    final = wait(client, job["jobId"])
    assert final["status"] == "canceled" and final["metadata"]["error"] is None
    made = final["metadata"]["assetIds"]
    assert 1 <= len(made) < 40 and final["metadata"]["seeds"] == [final["metadata"]["input"]["seed"] + i
                                                                  for i in range(len(made))]
    for asset_id in made:
        assert client.get(f"/assets/{asset_id}/file").status_code == 200
    # Canceling a finished job changes nothing.
    assert client.post(f"/jobs/{job['jobId']}/cancel").json()["job"]["status"] == "canceled"


def test_queue_full_is_429_and_stores_nothing_and_cancel_frees_a_place(engine):
    # No lifespan: the worker never starts, so the jobs stay queued.
    client = TestClient(create_app(engine, api_key=None, max_queue=2, with_ui=False))
    first, second = submit(client, body()), submit(client, body())
    assert first["status"] == second["status"] == "queued"
    before = len(engine.store.list(include_hidden=True, limit=1000))

    full = client.post("/generate/inpaint", json=body())
    assert_error(full, 429, "job", "queue is full", "retry later")
    assert len(engine.store.list(include_hidden=True, limit=1000)) == before

    canceled = client.post(f"/jobs/{first['jobId']}/cancel").json()["job"]
    assert canceled["status"] == "canceled"
    assert client.get(f"/jobs/{first['jobId']}").json()["job"]["status"] == "canceled"
    assert submit(client, body())["status"] == "queued"
    assert_error(client.post(f"/jobs/job_{'x' * 22}/cancel"), 404, "jobId")


def test_a_job_left_running_by_a_crash_is_a_failure_after_restart(tmp_path, pipeline_cache):
    first = make_engine(tmp_path / "data", pipeline_cache)
    # Never started and never stopped: as if the process died with the job in the store.
    job = submit(TestClient(create_app(first, api_key=None, with_ui=False)), body())
    first.store.close()

    second = make_engine(tmp_path / "data", pipeline_cache)
    with TestClient(create_app(second, api_key=None, with_ui=False)) as client:
        after = client.get(f"/jobs/{job['jobId']}").json()["job"]
    second.store.close()
    assert after["status"] == "failure" and after["metadata"]["error"] == INTERRUPTED


# -- a real server: the round trip over HTTP, then a restart on the same data folder ----------------


@pytest.mark.torch
def test_real_server_round_trip_survives_a_restart(tmp_path, pipeline_cache):
    folder = tmp_path / "data"
    image = photo(128, 96, seed=7)
    first = make_engine(folder, pipeline_cache)
    with serve(create_app(first, api_key=KEY, with_ui=False)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            uploaded = http.post("/assets", json={"image": data_url(image)}).json()["asset"]
            done = wait(http, submit(http, {**TINY, "prompt": "x", "image": uploaded["id"], "numSamples": 2,
                                            "mask": data_url(rect_mask(128, 96, (40, 30, 80, 60)))})["jobId"])
            assert done["status"] == "success"
            originals = {a: http.get(f"/assets/{a}/file?original=true").content for a in done["metadata"]["assetIds"]}
            # A long job, stopped by the server's shutdown once its first sample is stored.
            long = submit(http, body(image, **{**TINY, "numInferenceSteps": 20}, numSamples=40))
            wait(http, long["jobId"], until=lambda j: len(j["metadata"]["assetIds"]) >= 1 or j["status"] in FINAL)
            queued = submit(http, body(image))
    first.store.close()

    second = make_engine(folder, pipeline_cache)
    with serve(create_app(second, api_key=KEY, with_ui=False)) as url:
        with httpx.Client(base_url=url, auth=("anyone", KEY), timeout=60) as http:
            again = http.get(f"/jobs/{done['jobId']}").json()["job"]
            assert again["status"] == "success" and again["metadata"]["assetIds"] == done["metadata"]["assetIds"]
            for asset_id, content in originals.items():
                assert http.get(f"/assets/{asset_id}/file?original=true").content == content
            assert set(done["metadata"]["assetIds"]) | {uploaded["id"]} <= listed_ids(http)
            stopped = http.get(f"/jobs/{long['jobId']}").json()["job"]
            assert stopped["status"] == "failure" and stopped["metadata"]["error"] == INTERRUPTED
            assert stopped["metadata"]["assetIds"]  # what it made before the stop is kept
            for asset_id in stopped["metadata"]["assetIds"]:
                assert http.get(f"/assets/{asset_id}/file").status_code == 200
            never_run = http.get(f"/jobs/{queued['jobId']}").json()["job"]
            assert never_run["status"] == "failure" and never_run["metadata"]["error"] == INTERRUPTED
    second.store.close()


def answer_length(reply: bytes) -> int:
    match = re.search(rb"(?im)^content-length: *(\d+)", reply)
    return int(match.group(1)) if match else 0


def test_real_server_refuses_a_lying_content_length_before_reading(engine):
    with serve(create_app(engine, api_key=None, max_body_bytes=1000, with_ui=False)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(b"POST /generate/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 999999999999\r\n\r\n{}")
            reply = b""
            while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < answer_length(reply):
                chunk = conn.recv(65536)
                assert chunk, f"the connection closed after {reply!r}"
                reply += chunk
    head, _, payload = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert json.loads(payload)["error"]["field"] == "body"


# -- auth ------------------------------------------------------------------------------------------

def test_auth_on_protects_every_rest_route_and_file(engine):
    asset = engine.store.put(photo(64, 64))
    # Many wrong keys on purpose: the throttle of repeated failures is tested on its own.
    with TestClient(create_app(engine, api_key=KEY, max_auth_failures=1000, with_ui=False)) as client:
        for method, path in [("GET", "/models"), ("GET", "/assets"), ("GET", f"/assets/{asset.id}"),
                             ("GET", f"/assets/{asset.id}/file"), ("GET", f"/jobs/job_{'a' * 22}"),
                             ("POST", "/generate/inpaint"), ("POST", "/assets"), ("GET", "/jobs/nope/nope")]:
            response = client.request(method, path)
            assert_error(response, 401, "authorization", "API key")
            # Bearer only: a Basic challenge makes browsers cache the credentials and send them cross-site.
            assert response.headers["www-authenticate"] == 'Bearer realm="inpaint"'
        assert_error(client.get("/models", headers={"Authorization": "Bearer wrong"}), 401, "authorization", "wrong")
        assert_error(client.get("/models", auth=("admin", "wrong")), 401, "authorization")
        assert_error(client.get("/models", headers={"Authorization": "Basic %%%"}), 401, "authorization")
        assert client.get("/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get(f"/assets/{asset.id}/file", auth=("anyone", KEY)).status_code == 200
        assert client.get("/openapi.json").json()["components"]["securitySchemes"].keys() == {"HTTPBasic", "HTTPBearer"}


def test_auth_off_needs_no_header(client):
    assert client.get("/models").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_ui_is_served_at_the_root_beside_the_api(engine):
    pytest.importorskip("inpaint.ui")
    from inpaint.ui.head import FIRST_SCRIPT

    with TestClient(create_app(engine, api_key=None, with_ui=True)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        # The studio's first script comes before gradio's own (they keep the requestAnimationFrame it sets).
        assert page.content.index(b"<head>" + FIRST_SCRIPT) < page.content.index(b'<script type="module"')
        assert int(page.headers["content-length"]) == len(page.content)
        # The UI's own bundle lives under /assets/ too: the API must not shadow it.
        bundle = re.search(r'src="\./(assets/[^"]+\.js)"', page.text).group(1)
        assert client.get(f"/{bundle}").status_code == 200
        assert client.get("/models").status_code == 200
        assert_error(client.get("/no/such/page"), 404, "path")
        assert_error(client.get(f"/assets/asset_{'z' * 22}"), 404, "assetId")


def test_ui_asks_for_a_login_with_the_key(engine):
    pytest.importorskip("inpaint.ui")
    with TestClient(create_app(engine, api_key=KEY, with_ui=True)) as client:
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "me", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        assert client.get("/config").status_code == 200
        assert client.get("/models").status_code == 401  # the UI's cookie is not the API's key


# -- bad input through HTTP ------------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_bad_inputs_are_4xx_naming_the_field(client, engine, case):
    changes, field, *words = BAD_BODIES[case]
    request = {k: v for k, v in {**body(), **changes}.items() if v is not None}
    response = client.post("/generate/inpaint", json=request)
    assert 400 <= response.status_code < 500
    assert_error(response, 404 if case == "unknown asset" else 400, field, *words)
    assert engine.store.list(include_hidden=True) == []  # a rejected request stores nothing


@pytest.mark.parametrize("raw, words", [
    (b"{", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "not valid JSON"), (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested"), (b'{"seed": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (b'{"strength": NaN, "modelId": "opencv-telea", "prompt": "x"}', "finite"),
])
def test_bodies_that_are_not_requests(client, raw, words):
    response = client.post("/generate/inpaint", content=raw, headers={"Content-Type": "application/json"})
    error = assert_error(response, 400, response.json()["error"]["field"], words)
    assert error["field"] in ("body", "strength")


def test_upload_errors(client):
    assert_error(client.post("/assets", json={"image": "data:image/png;base64,@@@"}), 400, "image", "base64")
    assert_error(client.post("/assets", json={"image": data_url(Image.new("RGB", (1, 1)))}), 400, "image", "1x1")
    assert_error(client.post("/assets", json={"image": b64_url(b"<svg/>")}), 400, "image")
    assert_error(client.post("/assets", json={"image": data_url(photo(64, 64)), "hide": 1}), 400, "hide")
    assert_error(client.post("/assets", json={"image": data_url(photo(64, 64)), "x": 1}), 400, "x", "not a field")
    assert_error(client.post("/assets", json={}), 400, "image", "required")
    assert_error(client.post("/assets", json=[{"image": "x"}]), 400, "body", "JSON object")
    assert_error(client.post("/assets", content=b"{", headers={"Content-Type": "application/json"}), 400, "body")
    assert_error(client.post("/assets", json={"image": data_url(photo(64, 64)), "parentId": "../../etc"}),
                 400, "parentId", "asset id")
    assert_error(client.post("/assets", json={"image": data_url(photo(64, 64)), "parentId": f"asset_{'n' * 22}"}),
                 404, "parentId", "no asset")
    assert listed_ids(client) == set()


def test_unknown_routes_ids_and_methods(client):
    assert_error(client.get("/jobs/../../etc/passwd"), 404, "path")
    assert_error(client.get("/jobs/..%2F..%2Fetc%2Fpasswd"), 404, "path")
    assert_error(client.get("/jobs/job_..%5C..%5Cinpaint.db"), 404, "jobId", "no job")
    assert_error(client.get("/assets/asset_..%2F..%2Finpaint.db"), 404, "path")
    assert_error(client.get(f"/assets/asset_{'a' * 22}"), 404, "assetId", "no asset")
    assert_error(client.get(f"/assets/asset_{'a' * 22}/file"), 404, "assetId")
    assert_error(client.get(f"/assets/asset_{'a' * 21}%2E"), 404, "assetId")
    assert_error(client.get(f"/jobs/job_{'a' * 22}"), 404, "jobId", "no job")
    assert_error(client.get("/nope"), 404, "path", "/nope")
    assert_error(client.get("/models/extra"), 404, "modelId", "no model 'extra'")
    assert_error(client.get("/models/extra/more"), 404, "path")
    response = client.delete("/models")
    assert_error(response, 405, "method", "GET")
    assert response.headers["allow"] == "GET, HEAD"
    assert_error(client.put("/assets"), 405, "method")
    assert_error(client.get("/generate/inpaint"), 405, "method", "POST")
    assert_error(client.get("/assets", params={"limit": 0}), 400, "limit")
    assert_error(client.get("/assets", params={"originalAssets": "maybe"}), 400, "originalAssets")


def test_body_size_limit(engine):
    with TestClient(create_app(engine, api_key=None, max_body_bytes=2000, with_ui=False)) as client:
        as_json = {"Content-Type": "application/json"}
        assert_error(client.post("/generate/inpaint", content=b"x" * 3000, headers=as_json), 413, "body", "2000 bytes")
        # A streamed body with no Content-Length is counted as it arrives.
        chunks = (b"{" + b" " * 999 for _ in range(5))
        assert_error(client.post("/generate/inpaint", content=chunks, headers=as_json), 413, "body")
        chunks = (b" " * 1000 for _ in range(5))
        assert_error(client.post("/assets", content=chunks, headers={"Content-Type": "application/json"}), 413, "body")


def test_text_that_is_not_unicode_is_refused(client):
    # A lone surrogate is valid JSON but no text: echoing it back would not encode.
    raw = json.dumps(body(prompt="a \ud800 cat")).encode()
    response = client.post("/generate/inpaint", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "prompt", "unicode")


# -- models and the schema -------------------------------------------------------------------------

def test_models_lists_the_catalog(client):
    models = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert set(models) == set(CATALOG.ids)
    lora = models["tiny-sd-1_5-lora"]
    assert lora["compliantModelIds"] == ["tiny-sd-1_5"] and lora["epochs"] == ["epoch-1", "epoch-2"]
    assert "epochs" not in models["tiny-sd-1_5"] and models["opencv-telea"]["availability"] == "offline"
    assert models["tiny-sd-xl"]["ranges"]["width"] == {"min": 512, "max": 2048}
    assert models["tiny-sd-1_5"]["defaults"]["guidance"] == 7.5
    # One model by id, as listed.
    for model_id in ("tiny-sd-1_5-lora", "opencv-telea"):
        assert client.get(f"/models/{model_id}").json() == {"model": models[model_id]}


def test_openapi_describes_the_camel_case_request_with_bounds(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/generate/inpaint"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/InpaintRequest"}
    request = schema["components"]["schemas"]["InpaintRequest"]
    props = request["properties"]
    assert {"modelId", "numInferenceSteps", "hideResults", "negativePromptStrength", "parentId"} <= set(props)
    assert not any("_" in name for name in props)
    [steps] = [option for option in props["numInferenceSteps"]["anyOf"] if option["type"] == "integer"]
    assert (steps["minimum"], steps["maximum"]) == (1, 150)
    assert (props["strength"]["minimum"], props["strength"]["maximum"]) == (0.01, 1.0)
    assert all(p.get("description") for p in props.values())
    assert set(request["required"]) == {"modelId"} and request["additionalProperties"] is False  # prompt: by family
    assert schema["components"]["schemas"]["Concept"]["properties"]["scale"]["maximum"] == 2
    assert {"200", "400", "404", "413", "429"} <= set(operation["responses"])
    upload = schema["paths"]["/assets"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert upload == {"$ref": "#/components/schemas/AssetUpload"}
    assert "parentId" in schema["components"]["schemas"]["AssetUpload"]["properties"]
    assert "422" not in json.dumps(schema["paths"]) and "HTTPValidationError" not in schema["components"]["schemas"]
    # The REST API's own routes (a new one joins them), not the compatible APIs' nor the docs'.
    assert {"/generate/inpaint", "/jobs/{jobId}", "/jobs/{jobId}/cancel", "/assets", "/assets/{assetId}",
            "/assets/{assetId}/file", "/models", "/models/{modelId}", "/segment"} <= set(schema["paths"])
    assert not [path for path in schema["paths"] if path.startswith(("/v1/", "/sdapi/", "/docs"))]


# -- long-poll ------------------------------------------------------------------------------------------------

@pytest.mark.torch
def test_long_poll_answers_when_the_job_changes_and_at_its_timeout(client):
    job = submit(client, body(**(TINY | {"numInferenceSteps": 40, "width": 128, "height": 128}), numSamples=2))
    followed, seen = [], (job["status"], 0)
    while job["status"] not in FINAL:
        asked = time.monotonic()
        job = client.get(f"/jobs/{job['jobId']}", params={"wait": 30}).json()["job"]
        state = (job["status"], len(job["metadata"]["assetIds"]))
        if state == seen and job["status"] not in FINAL:  # no change: only its wait being over answers it
            assert time.monotonic() - asked >= 29.5, "a long-poll answered without a change"
            continue
        followed.append(state)
        seen = state
    # One answer per change: in progress, each result, done; nothing in between.
    assert followed[-1] == ("success", 2) and len(followed) <= 4, followed
    # A finished job answers without waiting: long before the 30 s it may wait (a generous bound, not a speed goal).
    waited = time.monotonic()
    assert client.get(f"/jobs/{job['jobId']}", params={"wait": 30}).json()["job"]["status"] == "success"
    assert time.monotonic() - waited < 29


def test_a_dry_run_answers_the_plan_and_stores_nothing(client, engine):
    image = photo(320, 192)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (60, 60, 100, 100))
    mask.paste(255, (178, 60, 218, 100))
    planned = client.post("/generate/inpaint", json=body(image, mask, modelId="patchmatch", seed=9),
                          params={"dryRun": "true"})
    assert planned.status_code == 200, planned.text
    plan = planned.json()["plan"]
    assert plan["input"]["modelId"] == "patchmatch" and plan["seeds"] == [9, 10, 11, 12]
    assert len(plan["regions"]) == 2 and plan["gpuSeconds"] >= 1
    assert engine.store.list(include_hidden=True) == [] and client.get("/assets").json()["assets"] == []
    # The job then generates the very regions planned.
    job = wait(client, submit(client, body(image, mask, modelId="patchmatch", seed=9, numSamples=1))["jobId"])
    assert job["metadata"]["regions"] == plan["regions"]
    assert_error(client.post("/generate/inpaint", json=body(image, mask, strength=3), params={"dryRun": "true"}),
                 400, "strength")


@pytest.mark.torch
def test_long_poll_times_out_on_a_job_that_does_not_change(engine):
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        blocker = submit(client, body(**(TINY | {"numInferenceSteps": 150, "width": 256, "height": 256}), numSamples=1))
        queued = submit(client, body())
        started = time.monotonic()
        answer = client.get(f"/jobs/{queued['jobId']}", params={"wait": 1.5}).json()["job"]
        assert answer["status"] == "queued" and time.monotonic() - started >= 1.4  # it waited its 1.5 s
        client.post(f"/jobs/{blocker['jobId']}/cancel")


def test_a_post_with_wait_answers_the_ended_job_with_its_result(client):
    request = body()
    job = submit(client, request, wait=30, originalAssets="true")
    assert job["status"] == "success" and len(job["metadata"]["assetIds"]) == 1
    # The same result as the job followed by long-poll: waiting changes when the answer comes, not what it says.
    followed = submit(client, request)
    while followed["status"] not in FINAL:
        followed = client.get(f"/jobs/{followed['jobId']}", params={"wait": 30}).json()["job"]
    [ours], [theirs] = job["metadata"]["assets"], followed["metadata"]["assets"]
    assert client.get(ours["url"]).content == client.get(theirs["url"], params={"original": "true"}).content


@pytest.mark.torch
def test_a_post_with_wait_answers_a_job_still_waiting_at_its_timeout(engine):
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        blocker = submit(client, body(**(TINY | {"numInferenceSteps": 150, "width": 256, "height": 256}), numSamples=1))
        started = time.monotonic()
        queued = submit(client, body(), wait=1.5)
        assert queued["status"] == "queued" and time.monotonic() - started >= 1.4  # it waited its 1.5 s
        client.post(f"/jobs/{blocker['jobId']}/cancel")


def test_long_poll_wait_out_of_range_is_a_400_naming_it(client):
    for bad in (31, -1, "soon"):  # on the POST, refused before anything is stored
        assert_error(client.post("/generate/inpaint", json=body(), params={"wait": bad}), 400, "wait")
    assert client.get("/assets").json()["assets"] == []
    job = submit(client, body())
    assert_error(client.get(f"/jobs/{job['jobId']}", params={"wait": 31}), 400, "wait", "30")
    assert_error(client.get(f"/jobs/{job['jobId']}", params={"wait": -1}), 400, "wait")
    assert_error(client.get(f"/jobs/{job['jobId']}", params={"wait": "soon"}), 400, "wait")
