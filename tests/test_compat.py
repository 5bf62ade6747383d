"""Existing clients against the app on loopback: the OpenAI SDK's images.edit and webuiapi's img2img, unchanged, plus
the raw HTTP shapes of their errors and the guards of their bodies."""

import base64
import io
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import webuiapi
from fastapi.testclient import TestClient
from PIL import Image

from inpaint.api import create_app
from tests.support.api import KEY, body, make_engine, serve
from tests.support.images import data_url, encoded, photo, rect_mask

BOX = (40, 30, 80, 60)  # the hole, in a 128x96 photo
SEAM = 8  # a diffusion model's seam band: the mask grows by it before the merge
TINY_SD = "tiny-sd-1_5"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline_cache):
    engine = make_engine(tmp_path_factory.mktemp("compat") / "data", pipeline_cache)
    with serve(create_app(engine, api_key=KEY, with_ui=False)) as url:
        yield url
    engine.store.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def webui(server, password=KEY) -> webuiapi.WebUIApi:
    host, port = server.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), username="any", password=password)


def with_hole(image: Image.Image, box=BOX) -> bytes:
    """OpenAI's convention: the fully transparent pixels are edited."""
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.eval(rect_mask(image.width, image.height, box), lambda value: 0 if value else 255))
    return encoded(rgba)


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def outside(box, margin: int, size=(128, 96)) -> np.ndarray:
    """Where the picture must be unchanged: everything `margin` px or more away from `box`."""
    keep = np.ones((size[1], size[0]), bool)
    keep[max(0, box[1] - margin):box[3] + margin, max(0, box[0] - margin):box[2] + margin] = False
    return keep


def assert_kept(result: Image.Image, image: Image.Image, margin: int = 0) -> None:
    result_np, image_np = np.asarray(result.convert("RGB")), np.asarray(image)
    keep = outside(BOX, margin, image.size)
    assert result.size == image.size
    assert np.array_equal(result_np[keep], image_np[keep])
    assert not np.array_equal(result_np[~keep], image_np[~keep])


# -- OpenAI ---------------------------------------------------------------------------------------------------

def test_openai_edit_of_a_transparent_hole_keeps_every_other_pixel(client, server):
    image = photo(128, 96, seed=1)
    answer = client.images.edit(image=("photo.png", with_hole(image), "image/png"), prompt="fill",
                                model="opencv-telea")
    assert len(answer.data) == 1 and answer.output_format == "png" and answer.size == "128x96"
    assert_kept(decoded(answer.data[0].b64_json), image)

    # A separate RGBA mask over an opaque picture; the result as this server's URL, and as WebP.
    mask = Image.new("RGBA", image.size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), BOX)
    by_url = client.images.edit(image=("photo.png", encoded(image), "image/png"),
                                mask=("mask.png", encoded(mask), "image/png"), prompt="fill", model="opencv-telea",
                                response_format="url")
    fetched = httpx.get(by_url.data[0].url, headers={"Authorization": f"Bearer {KEY}"})
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fetched.content))),
                          np.asarray(decoded(answer.data[0].b64_json)))
    webp = client.images.edit(image=("photo.png", with_hole(image), "image/png"), prompt="fill",
                              model="opencv-telea", output_format="webp", output_compression=90)
    assert decoded(webp.data[0].b64_json).format == "WEBP" and webp.output_format == "webp"


@pytest.mark.torch
def test_openai_edit_on_a_diffusion_model_each_image_replays_alone_with_seed_plus_i(client):
    image = photo(128, 96, seed=2)
    picture = ("photo.png", with_hole(image), "image/png")
    batch = client.images.edit(image=picture, prompt="a red ball", model=TINY_SD, n=2, size="64x64",
                               extra_body={"seed": 1234, "num_inference_steps": 2})
    assert [item.seed for item in batch.data] == [1234, 1235]
    alone = client.images.edit(image=picture, prompt="a red ball", model=TINY_SD, n=1, size="64x64",
                               extra_body={"seed": 1235, "num_inference_steps": 2})
    second = decoded(batch.data[1].b64_json)
    assert np.array_equal(np.asarray(second), np.asarray(decoded(alone.data[0].b64_json)))
    assert_kept(second, image, margin=SEAM)


@pytest.mark.torch
def test_openai_stream_sends_partial_images_then_each_completed_image(client):
    image = photo(128, 96, seed=3)
    stream = client.images.edit(image=("photo.png", with_hole(image), "image/png"), prompt="a red ball",
                                model=TINY_SD, n=2, size="64x64", stream=True, partial_images=2,
                                extra_body={"seed": 7, "num_inference_steps": 3})
    events = list(stream)
    kinds = [event.type for event in events]
    partials = [event for event in events if event.type == "image_edit.partial_image"]
    assert kinds == ["image_edit.partial_image"] * len(partials) + ["image_edit.completed"] * 2
    assert 1 <= len(partials) <= 2 and [p.partial_image_index for p in partials] == list(range(len(partials)))
    assert decoded(partials[0].b64_json).size == (64, 64)  # a preview of the region as it is generated
    completed = [decoded(event.b64_json) for event in events[len(partials):]]
    for result in completed:
        assert_kept(result, image, margin=SEAM)


def test_openai_errors_raise_the_sdk_exceptions_naming_the_parameter(client, server):
    picture = ("photo.png", with_hole(photo(128, 96)), "image/png")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).images.edit(image=picture, prompt="x")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.edit(image=picture, prompt="x", model="gpt-image-1")
    assert unknown.value.code == "model_not_found" and "opencv-telea" in unknown.value.message
    for fields, param in [({"size": "huge"}, "size"), ({"n": 0}, "n"), ({"output_format": "gif"}, "output_format"),
                          ({"background": "transparent"}, "background"), ({"partial_images": 9}, "partial_images")]:
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.edit(image=picture, prompt="x", model="opencv-telea", **fields)
        assert bad.value.param == param, (fields, bad.value.body)
    opaque = ("photo.png", encoded(photo(128, 96)), "image/png")
    with pytest.raises(openai.BadRequestError) as no_hole:
        client.images.edit(image=opaque, prompt="x", model="opencv-telea")
    assert no_hole.value.param == "image" and "transparent" in no_hole.value.message
    with pytest.raises(openai.BadRequestError) as too_small:  # the contract's own rule, named by OpenAI's name
        client.images.edit(image=picture, prompt="x", model=TINY_SD, size="60x64")
    assert too_small.value.param == "size" and "multiple of 8" in too_small.value.message

    raw = httpx.post(f"{server}/v1/images/edits", headers={"Authorization": f"Bearer {KEY}"},
                     files={"image": picture}, data={"prompt": "x", "model": "opencv-telea", "colour": "red"})
    assert raw.status_code == 400
    assert raw.json() == {"error": {"message": "Unrecognized request argument supplied: colour",
                                    "type": "invalid_request_error", "param": "colour", "code": "invalid_value"}}
    assert httpx.get(f"{server}/v1/images/edits", headers={"Authorization": f"Bearer {KEY}"}).status_code == 405
    models = client.models.list()
    assert "opencv-telea" in [model.id for model in models.data]


# -- AUTOMATIC1111 ---------------------------------------------------------------------------------------------

@pytest.mark.torch
def test_webuiapi_img2img_with_a_mask_replays_each_image_with_seed_plus_i(server):
    api = webui(server)
    image, mask = photo(128, 96, seed=4), rect_mask(128, 96, BOX)
    common = dict(images=[image], mask_image=mask, prompt="a red ball", steps=2, width=64, height=64,
                  denoising_strength=1.0, sampler_name="Euler a", override_settings={"sd_model_checkpoint": TINY_SD})
    batch = api.img2img(**common, seed=99, batch_size=2, restore_faces=True)
    assert len(batch.images) == 2 and batch.info["all_seeds"] == [99, 100]
    assert batch.info["sd_model_name"] == TINY_SD and "restore_faces" in batch.info["ignored_fields"]
    assert "Seed: 100" in batch.info["infotexts"][1] and batch.parameters["init_images"] is None
    alone = api.img2img(**common, seed=100)
    assert np.array_equal(np.asarray(batch.images[1]), np.asarray(alone.images[0]))
    assert_kept(batch.images[1], image, margin=SEAM)


def test_webuiapi_on_a_classical_model_with_raw_base64_and_the_checkpoint_of_options(server):
    api = webui(server)
    assert "opencv-telea" in api.util_get_model_names()
    assert {"Euler a", "DPM++ 2M"} <= set(api.util_get_sampler_names())
    api.util_set_model("opencv-telea")
    assert api.util_get_current_model() == "opencv-telea"
    image = photo(128, 96, seed=5)
    answer = httpx.post(f"{server}/sdapi/v1/img2img", auth=("any", KEY), json={
        "init_images": [base64.b64encode(encoded(image)).decode()],  # no data-URL head, as many scripts send
        "mask": base64.b64encode(encoded(rect_mask(128, 96, BOX))).decode(), "prompt": "", "script_name": "outpaint"})
    assert answer.status_code == 200, answer.text
    assert_kept(decoded(answer.json()["images"][0]), image)
    info = answer.json()["info"]
    assert isinstance(info, str) and "script_name" in json.loads(info)["ignored_fields"]
    # The mask inverted: all but the hole is repainted, and the hole kept.
    inverted = api.img2img(images=[image], mask_image=rect_mask(128, 96, BOX), inpainting_mask_invert=1)
    kept_np, image_np = np.asarray(inverted.images[0].convert("RGB")), np.asarray(image)
    left, top, right, bottom = BOX
    assert np.array_equal(kept_np[top:bottom, left:right], image_np[top:bottom, left:right])
    assert not np.array_equal(kept_np[:top], image_np[:top])


@pytest.mark.torch
def test_webuiapi_progress_shows_the_run_and_interrupt_stops_it(server):
    api = webui(server)
    image, mask = photo(128, 96, seed=6), rect_mask(128, 96, BOX)
    answers = []
    run = threading.Thread(target=lambda: answers.append(api.img2img(
        images=[image], mask_image=mask, prompt="x", steps=150, width=64, height=64, denoising_strength=1.0,
        batch_size=4, n_iter=8, seed=1, override_settings={"sd_model_checkpoint": TINY_SD})))
    run.start()
    deadline = time.monotonic() + 120
    while True:
        progress = api.get_progress()
        if progress["state"]["job_count"] and progress["current_image"]:
            break
        assert time.monotonic() < deadline and run.is_alive(), progress
        time.sleep(0.05)
    assert 0 <= progress["progress"] < 1 and progress["state"]["sampling_steps"] > 0
    assert decoded(progress["current_image"]).size == (64, 64)
    assert api.interrupt() == {}
    run.join(120)
    info = answers[0].info
    made = len(answers[0].images)
    assert info["interrupted"] and made < 32 and info["all_seeds"] == list(range(1, 1 + made))
    assert api.get_progress()["state"]["job_count"] == 0


def test_a1111_errors_take_its_shapes_and_name_the_field(server):
    url, auth = f"{server}/sdapi/v1/img2img", ("any", KEY)
    body = {"init_images": [base64.b64encode(encoded(photo(128, 96))).decode()],
            "mask": base64.b64encode(encoded(rect_mask(128, 96, BOX))).decode(), "prompt": "x",
            "override_settings": {"sd_model_checkpoint": "opencv-telea"}}
    wrong_type = httpx.post(url, auth=auth, json={**body, "steps": "many"})
    assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"] == ["body", "steps"]
    for fields, loc in [({"cfg_scale": 50, "override_settings": {"sd_model_checkpoint": TINY_SD}}, "cfg_scale"),
                        ({"override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}},
                         "override_settings.sd_model_checkpoint"),
                        ({"init_images": ["bm90IGFuIGltYWdl"]}, "init_images.0"),
                        ({"sampler_name": "Nope", "override_settings": {"sd_model_checkpoint": TINY_SD}},
                         "sampler_name")]:
        answer = httpx.post(url, auth=auth, json={**body, **fields})
        assert answer.status_code == 422, (fields, answer.text)
        where = [int(part) if part.isdigit() else part for part in loc.split(".")]
        assert answer.json()["detail"][0]["loc"] == ["body", *where], answer.json()
    wrong_key = httpx.post(url, auth=("any", "wrong"), json=body)
    assert wrong_key.status_code == 401 and wrong_key.json()["error"] == "HTTPException"
    assert "wrong" in wrong_key.json()["detail"]
    not_json = httpx.post(url, auth=auth, content=b"{}", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415 and "application/json" in not_json.json()["detail"]
    missing = httpx.get(f"{server}/sdapi/v1/txt2img", auth=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "HTTPException"
    options = httpx.post(f"{server}/sdapi/v1/options", auth=auth, json={"sd_model_checkpoint": "nope"})
    assert options.status_code == 422 and options.json()["detail"][0]["loc"] == ["body", "sd_model_checkpoint"]


def test_a_full_queue_is_a_429_in_each_hosts_shape(engine):
    # No lifespan: the worker never starts, so the queued jobs stay queued.
    client = TestClient(create_app(engine, api_key=None, max_queue=1, with_ui=False))
    picture = ("photo.png", with_hole(photo(128, 96)), "image/png")
    queued = client.post("/generate/inpaint", json=body()).json()["job"]
    assert queued["status"] == "queued"
    edit = client.post("/v1/images/edits", files={"image": picture}, data={"prompt": "x", "model": "opencv-telea"},
                       headers={"Authorization": "Bearer x"})
    assert edit.status_code == 429 and edit.headers["Retry-After"]
    assert edit.json()["error"]["code"] == "rate_limit_exceeded" and "queue is full" in edit.json()["error"]["message"]
    img2img = client.post("/sdapi/v1/img2img", json={"init_images": [data_url(photo(128, 96))],
                                                     "mask": data_url(rect_mask(128, 96, BOX))})
    assert img2img.status_code == 429 and img2img.json()["error"] == "HTTPException"


# -- the guards of the bodies, without a key ------------------------------------------------------------------

def test_without_a_key_a_cross_site_form_post_stays_refused(tmp_path, pipeline_cache):
    engine = make_engine(tmp_path / "data", pipeline_cache)
    picture = ("photo.png", with_hole(photo(128, 96)), "image/png")
    form = {"prompt": "x", "model": "opencv-telea"}
    try:
        with serve(create_app(engine, api_key=None, with_ui=False, max_body_bytes=2**20)) as url:
            edits = f"{url}/v1/images/edits"
            # A form of another site's page: its browser sends that site's Origin, or none at all.
            foreign = httpx.post(edits, files={"image": picture}, data=form, headers={"Origin": "https://evil.example"})
            # Refused by the server's guard, in OpenAI's shape all the same: the SDK reads its message.
            assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]["message"]
            bare = httpx.post(edits, files={"image": picture}, data=form)
            assert bare.status_code == 403 and bare.json()["error"]["param"] == "authorization"
            # The SDK sends a Bearer token, a page of this server its own Origin.
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            assert sdk.images.edit(image=picture, prompt="x", model="opencv-telea").data[0].b64_json
            own = httpx.post(edits, files={"image": picture}, data=form, headers={"Origin": url})
            assert own.status_code == 200, own.text
            as_text = httpx.post(f"{url}/sdapi/v1/img2img", content=b"{}", headers={"Content-Type": "text/plain"})
            assert as_text.status_code == 415
            huge = httpx.post(edits, files={"image": ("big.png", b"\x89PNG" + bytes(2**21), "image/png")}, data=form,
                              headers={"Authorization": "Bearer x"})
            assert huge.status_code == 413 and "INPAINT_MAX_BODY_MB" in huge.json()["error"]["message"]
            foreign_a1111 = httpx.post(f"{url}/sdapi/v1/img2img", json={}, headers={"Origin": "https://evil.example"})
            assert foreign_a1111.status_code == 403 and foreign_a1111.json()["error"] == "HTTPException"
    finally:
        engine.store.close()


# -- the README's examples, as written --------------------------------------------------------------------------

def readme_example(title: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index(f"### {title}"):]
    return section[section.index("```python\n") + 10:section.index("```\n", section.index("```python"))]


@pytest.mark.parametrize("title", ["Use it from the OpenAI SDK", "Use it as an AUTOMATIC1111 backend"])
def test_the_readme_examples_run_as_written(title, tmp_path, monkeypatch, capsys, tmp_path_factory, pipeline_cache):
    image = photo(128, 96, seed=8)
    image.save(tmp_path / "photo.png")
    rect_mask(128, 96, BOX).save(tmp_path / "mask.png")
    (tmp_path / "hole.png").write_bytes(with_hole(Image.new("RGB", (128, 96))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INPAINT_API_KEY", KEY)
    engine = make_engine(tmp_path_factory.mktemp("readme") / "data", pipeline_cache)
    try:
        with serve(create_app(engine, api_key=KEY, with_ui=False)) as url:
            port = url.rsplit(":", 1)[1]
            script = readme_example(title).replace("127.0.0.1:7860", f"127.0.0.1:{port}").replace("7860", port)
            exec(compile(script, title, "exec"), {})
    finally:
        engine.store.close()
    printed = capsys.readouterr().out
    result = Image.open(tmp_path / ("edited.png" if "OpenAI" in title else "inpainted.png"))
    assert_kept(result, image)
    assert "1234" in printed
