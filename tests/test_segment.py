"""Selecting objects (POST /segment, the CLI's segment, the segmentation families): GrabCut on photographs whose
truth is exact, the tiny SAM 2.1 through every surface, the embedding cache, every bad input, and the real-weight
models refused clearly with downloads off."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from bench import photos
from inpaint import families
from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.errors import Busy, ModelUnavailable, RequestError
from inpaint.families import Prompt
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from inpaint.sam import Sam2Predictor
from inpaint.segment import segment
from tests.support.figures import figure_path
from tests.support.images import bomb_png, data_url, encoded, photo

ROOT = Path(__file__).resolve().parents[1]
CATALOG = Catalog.load()
KEY = "segment-key"


def composite(seed: int, side: int = 256, pair: int = 0) -> tuple[Image.Image, np.ndarray]:
    picture, truth = photos.composite(*photos.COMPOSITES[pair], side, np.random.default_rng(seed))
    return picture, np.asarray(truth) > 0


def inside(truth_np: np.ndarray) -> tuple[int, int]:
    """The object's pixel farthest from its outline: where a person clicks."""
    import cv2

    distance = cv2.distanceTransform(truth_np.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(distance.argmax(), distance.shape)
    return int(x), int(y)


def bounds(truth_np: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(truth_np)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def iou(mask: Image.Image, truth_np: np.ndarray) -> float:
    selected = np.asarray(mask) > 127
    return float((selected & truth_np).sum() / (selected | truth_np).sum())


@pytest.fixture(scope="module")
def sam_cache(tmp_path_factory) -> PipelineCache:
    # Its own cache: the session's keeps the tiny diffusion pipelines it holds for the other tests.
    return PipelineCache(CATALOG, tmp_path_factory.mktemp("segment-models"), max_pipelines=2, device="cpu")


@pytest.fixture
def engine(tmp_path, sam_cache):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"), sam_cache)
    yield engine
    engine.store.close()


# -- GrabCut on composites: an irregular piece of one photograph pasted onto another ------------------------------

@pytest.mark.parametrize("pair", range(len(photos.COMPOSITES)))
def test_grabcut_finds_a_pasted_object_from_a_box_and_from_one_click(pair):
    grabcut = families.get("grabcut")
    iterations = grabcut.load(CATALOG.get("grabcut"))
    picture, truth_np = composite(seed=pair, pair=pair)
    by_box = grabcut.select(iterations, picture, Prompt(box=tuple(bounds(truth_np))))
    by_click = grabcut.select(iterations, picture, Prompt(points=((*inside(truth_np), 1),)))
    assert by_box.mask.size == by_click.mask.size == picture.size
    assert set(np.unique(np.asarray(by_box.mask))) <= {0, 255}
    assert iou(by_box.mask, truth_np) >= 0.95
    assert iou(by_click.mask, truth_np) >= 0.8
    assert by_box.score is None  # GrabCut has no estimate of its own quality


def test_grabcut_keeps_only_the_part_under_the_click_and_a_negative_click_removes():
    grabcut = families.get("grabcut")
    iterations = grabcut.load(CATALOG.get("grabcut"))
    # Two pieces of the same photograph, far apart: alike in colour, only one clicked on.
    rng = np.random.default_rng(7)
    picture = photos.crop("brick", 256)
    left, right = Image.new("L", (256, 256), 0), Image.new("L", (256, 256), 0)
    left.paste(photos.blob((110, 256), rng), (0, 0))
    right.paste(photos.blob((110, 256), rng), (146, 0))
    both = Image.fromarray(np.maximum(np.asarray(left), np.asarray(right)))
    picture.paste(photos.crop("chelsea", 256), (0, 0), both)
    left_np, right_np = np.asarray(left) > 0, np.asarray(right) > 0
    clicked = grabcut.select(iterations, picture, Prompt(points=((*inside(left_np), 1),)))
    assert iou(clicked.mask, left_np) >= 0.8 and not (np.asarray(clicked.mask) > 0)[right_np].any()
    # A box over both, and a negative click on the right one: the left one stays, the right one goes.
    box = (0.0, 0.0, 256.0, 256.0)
    kept = grabcut.select(iterations, picture, Prompt(points=((*inside(left_np), 1), (*inside(right_np), 0)),
                                                          box=box))
    assert (np.asarray(kept.mask) > 0)[left_np].mean() > 0.8
    assert (np.asarray(kept.mask) > 0)[right_np].mean() < 0.5


def test_grabcut_with_a_box_on_the_border_of_a_large_picture_selects_nothing_and_fails_nothing():
    # At GrabCut's working size a 1 px box on the border is all border: nothing left to model as the object.
    grabcut = families.get("grabcut")
    iterations = grabcut.load(CATALOG.get("grabcut"))
    for box in [(0.0, 0.0, 1.0, 768.0), (0.0, 0.0, 0.5, 0.5)]:
        selection = grabcut.select(iterations, photo(1024, 768), Prompt(box=box))
        assert selection.mask.size == (1024, 768) and not np.asarray(selection.mask).any()


# -- the tiny SAM 2.1 through the engine; one embedding per picture -------------------------------------------------

@pytest.mark.torch
def test_tiny_sam2_selects_through_the_engine_and_encodes_each_picture_once(engine):
    picture = photo(320, 240, seed=3)
    first = segment(engine, {"image": data_url(picture), "modelId": "tiny-sam2", "points": [{"x": 100, "y": 80}]})
    predictor = engine.pipelines.get("tiny-sam2").pipe
    encoded_before = predictor.encoded
    assert first.mask.size == picture.size and first.mask.mode == "L"
    assert set(np.unique(np.asarray(first.mask))) <= {0, 255}
    assert isinstance(first.score, float)
    # Further prompts on the same picture (by its asset id, or sent again): the encoder does not run again.
    again = segment(engine, {"image": first.image_id, "modelId": "tiny-sam2", "multimask": True, "box": [10, 10, 200, 150],
                             "points": [{"x": 100, "y": 80}, {"x": 20, "y": 20, "label": 0}]})
    resent = segment(engine, {"image": data_url(picture), "modelId": "tiny-sam2", "points": [{"x": 100, "y": 80}]})
    assert predictor.encoded == encoded_before
    assert np.array_equal(np.asarray(resent.mask), np.asarray(first.mask))
    assert again.mask.size == picture.size
    segment(engine, {"image": data_url(photo(320, 240, seed=4)), "modelId": "tiny-sam2", "points": [{"x": 5, "y": 5}]})
    assert predictor.encoded == encoded_before + 1
    # The masks are children of the picture, stored as masks.
    stored = engine.store.get(first.mask_id)
    assert stored.kind == "mask" and stored.parent_id == first.image_id and stored.model_id == "tiny-sam2"


@pytest.mark.torch
def test_a_cached_embedding_gives_what_encoding_again_gives_and_the_cache_is_bounded(sam_cache):
    model = sam_cache.get("tiny-sam2").pipe.model
    cached, fresh = Sam2Predictor(model, pictures=2), Sam2Predictor(model, pictures=2)
    pictures = [photo(200, 150, seed=seed) for seed in range(3)]
    prompt = Prompt(points=((50.0, 60.0, 1),), box=(10.0, 10.0, 150.0, 120.0))
    first = cached.select(pictures[0], prompt)
    second = cached.select(pictures[0], prompt)
    assert cached.encoded == 1
    assert np.array_equal(np.asarray(first.mask), np.asarray(second.mask)) and first.score == second.score
    assert np.array_equal(np.asarray(fresh.select(pictures[0], prompt).mask), np.asarray(first.mask))
    # Least recently used out: after pictures 1 and 2, picture 0 is encoded again; 2 is still there.
    cached.select(pictures[1], prompt)
    cached.select(pictures[2], prompt)
    cached.select(pictures[0], prompt)
    assert cached.encoded == 4
    cached.select(pictures[2], prompt)
    assert cached.encoded == 4


@pytest.mark.torch
def test_tiny_sam3_selects_every_instance_a_text_names_and_encodes_each_picture_once(engine, monkeypatch):
    from inpaint import sam

    picture = photo(200, 150, seed=5)
    nothing = segment(engine, {"image": data_url(picture), "modelId": "tiny-sam3", "text": "the cat"})
    # The random detector's scores sit under the threshold: an empty selection, and how close it came.
    assert not np.asarray(nothing.mask).any() and 0 < nothing.score < sam.SAM3_SCORE
    predictor = engine.pipelines.get("tiny-sam3").pipe
    encoded = predictor.encoded
    monkeypatch.setattr(sam, "SAM3_SCORE", 0.0)  # every detection counts: the selection is their union
    every = segment(engine, {"image": nothing.image_id, "modelId": "tiny-sam3", "text": "all cups"})
    assert predictor.encoded == encoded
    assert every.mask.size == picture.size and set(np.unique(np.asarray(every.mask))) <= {0, 255}
    assert np.asarray(every.mask).any()
    assert engine.store.get(every.mask_id).parent_id == nothing.image_id


# -- REST ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def client(engine):
    with TestClient(create_app(engine, api_key=KEY, with_ui=False)) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client


def decoded(url: str) -> Image.Image:
    import base64

    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_segment_answers_the_mask_and_its_asset_which_inpaints(client):
    picture, truth_np = composite(seed=11)
    answer = client.post("/segment", json={"image": data_url(picture), "modelId": "grabcut", "box": bounds(truth_np)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"mask", "maskId", "imageId", "score", "modelId", "width", "height"}
    assert (body["width"], body["height"], body["modelId"], body["score"]) == (256, 256, "grabcut", None)
    mask = decoded(body["mask"])
    assert mask.size == picture.size and iou(mask.convert("L"), truth_np) >= 0.95
    asset = client.get(f"/assets/{body['maskId']}").json()["asset"]
    assert asset["parentId"] == body["imageId"] and asset["kind"] == "mask"
    job = client.post("/generate/inpaint?wait=30", json={"image": body["imageId"], "maskId": body["maskId"],
                                                         "modelId": "opencv-telea"}).json()["job"]
    assert job["status"] == "success", job
    result_np = np.asarray(Image.open(io.BytesIO(client.get(f"/assets/{job['metadata']['assetIds'][0]}/file",
                                                             params={"original": "true"}).content)).convert("RGB"))
    # The object is painted over; the rest of the picture is kept.
    assert np.abs(result_np[truth_np].astype(int) - np.asarray(picture)[truth_np]).mean() > 10
    assert np.array_equal(result_np[~truth_np], np.asarray(picture)[~truth_np])


@pytest.mark.torch
def test_segment_with_the_tiny_sam2_and_the_models_capabilities(client):
    picture = photo(160, 120)
    body = client.post("/segment", json={"image": data_url(picture), "modelId": "tiny-sam2",
                                         "points": [{"x": 80, "y": 60}]}).json()
    assert decoded(body["mask"]).size == (160, 120) and isinstance(body["score"], float)
    models = {m["id"]: m for m in client.get("/models").json()["models"]}
    picks = {model_id: {k: models[model_id]["capabilities"][k] for k in ("points", "box", "text")}
             for model_id in ("grabcut", "tiny-sam2", "sam2.1-hiera-tiny", "sam2.1-hiera-small", "tiny-sam3", "sam3",
                              "opencv-telea")}
    assert picks["grabcut"] == picks["tiny-sam2"] == picks["sam2.1-hiera-small"] == \
        {"points": True, "box": True, "text": False}
    assert picks["tiny-sam3"] == picks["sam3"] == {"points": False, "box": False, "text": True}
    assert picks["opencv-telea"] == {"points": False, "box": False, "text": False}
    assert models["grabcut"]["availability"] == models["tiny-sam2"]["availability"] == "offline"


def test_segment_needs_the_key(engine):
    with TestClient(create_app(engine, api_key=KEY, with_ui=False)) as client:
        refused = client.post("/segment", json={"image": data_url(photo(96, 96)), "modelId": "grabcut",
                                                "box": [1, 1, 50, 50]})
    assert refused.status_code == 401


BAD = {
    "outside": ({"points": [{"x": 500, "y": 10}]}, "points", "outside the 128x96 picture"),
    "negative only": ({"points": [{"x": 5, "y": 10, "label": 0}]}, "points", "nothing to select by"),
    "nothing": ({}, "points", "nothing to select by"),
    "label": ({"points": [{"x": 5, "y": 10, "label": 2}]}, "points.0.label", "0 or 1"),
    "text": ({"text": "the cat", "box": [1, 1, 20, 20]}, "text", "does not read text"),
    "points to a text model": ({"modelId": "tiny-sam3", "points": [{"x": 5, "y": 5}]}, "points",
                               "'tiny-sam3' does not read points; it reads text"),
    "box to a text model": ({"modelId": "tiny-sam3", "box": [1, 1, 20, 20], "text": "a cat"}, "box",
                            "does not read box"),
    "empty text": ({"modelId": "tiny-sam3", "text": ""}, "text", "at least 1 character"),
    "unknown model": ({"modelId": "no-such-model", "box": [1, 1, 20, 20]}, "modelId", "unknown model id"),
    "inpainter": ({"modelId": "opencv-telea", "box": [1, 1, 20, 20]}, "modelId", "selects nothing"),
    "box order": ({"box": [40, 1, 20, 20]}, "box", "left < right"),
    "box outside": ({"box": [0, 0, 200, 20]}, "box", "within the 128x96 picture"),
    "box length": ({"box": [0, 0, 20]}, "box", "at least 4"),
    "grow": ({"box": [1, 1, 20, 20], "grow": 65}, "grow", "less than or equal to 64"),
    "unknown field": ({"box": [1, 1, 20, 20], "clicks": []}, "clicks", "not a field of the segment request"),
    "not a data URL": ({"image": "hello", "box": [1, 1, 20, 20]}, "image", "asset id"),
    "not an image": ({"image": "data:image/png;base64,AAAA", "box": [1, 1, 20, 20]}, "image", "not a PNG"),
    "bomb": ({"image": "data:image/png;base64," + __import__("base64").b64encode(bomb_png(20000, 20000)).decode(),
              "box": [1, 1, 20, 20]}, "image", "MP"),
    "too small": ({"image": data_url(photo(32, 32)), "box": [1, 1, 20, 20]}, "image", "64..8192"),
}


@pytest.mark.parametrize("case", BAD)
def test_every_bad_input_is_a_400_naming_the_field(client, case):
    fields, field, words = BAD[case]
    body = {"image": data_url(photo(128, 96)), "modelId": "grabcut", **fields}
    answer = client.post("/segment", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and words in error["message"], error


def test_on_zerogpu_the_route_selects_with_the_models_without_weights(client, monkeypatch):
    from inpaint import zerogpu

    monkeypatch.setattr(zerogpu, "is_zerogpu", lambda: True)
    body = {"image": data_url(photo(96, 96)), "box": [10, 10, 60, 60]}
    refused = client.post("/segment", json={**body, "modelId": "tiny-sam2"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "modelId"
    assert "ZeroGPU" in refused.json()["error"]["message"] and "grabcut" in refused.json()["error"]["message"]
    assert client.post("/segment", json={**body, "modelId": "grabcut"}).status_code == 200


def test_a_picture_not_in_the_store_is_not_found(client):
    answer = client.post("/segment", json={"image": "asset_" + "A" * 22, "modelId": "grabcut", "box": [1, 1, 20, 20]})
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "image"


def test_grow_widens_the_selection_by_its_pixels(engine):
    picture, truth_np = composite(seed=3)
    body = {"image": data_url(picture), "modelId": "grabcut", "box": bounds(truth_np)}
    plain = np.asarray(segment(engine, body).mask) > 0
    grown = np.asarray(segment(engine, {**body, "grow": 5}).mask) > 0
    assert grown[plain].all() and grown.sum() > plain.sum()
    ys, xs = np.nonzero(grown & ~plain)
    # Every added pixel is within 5 px (a square's reach) of the plain selection, and nothing further.
    plain_ys, plain_xs = np.nonzero(plain)
    for y, x in zip(ys[::97], xs[::97]):
        assert np.max([np.abs(plain_ys - y), np.abs(plain_xs - x)], axis=0).min() <= 5


def test_the_pictures_decoding_waits_for_the_pixel_budget_like_an_inpaint_input(engine):
    from inpaint.limits import PixelBudget

    engine.decoding = PixelBudget(10_000_000, wait_s=0.1)
    with engine.decoding.hold(10_000_000), pytest.raises(Busy) as busy:  # another request decoding a large image
        segment(engine, {"image": data_url(photo(96, 96)), "modelId": "grabcut", "box": [1, 1, 50, 50]})
    assert busy.value.status == 503 and busy.value.field == "server"
    assert engine.store.list(include_hidden=True) == []


def test_a_selecting_model_cannot_inpaint(engine):
    with pytest.raises(RequestError) as refused:
        engine.prepare({"image": data_url(photo(96, 96)), "mask": data_url(Image.new("L", (96, 96), 255)),
                        "modelId": "grabcut"})
    assert refused.value.field == "modelId" and "POST /segment" in refused.value.message


# -- the real weights: in the catalog, refused at once without downloads -------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("model_id", ["sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam3"])
def test_real_sam_without_downloads_is_refused_at_once_saying_what_it_needs(engine, monkeypatch, model_id):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = CATALOG.get(model_id)
    assert entry.source == f"hub:facebook/{model_id}" and entry.availability() == "needs download"
    with pytest.raises(RequestError) as refused:
        segment(engine, {"image": data_url(photo(96, 96)), "modelId": model_id,
                         **({"text": "a cat"} if model_id == "sam3" else {"points": [{"x": 5, "y": 5}]})})
    assert refused.value.field == "modelId"
    assert f"facebook/{model_id}" in refused.value.message and "HF_HUB_OFFLINE" in refused.value.message
    assert engine.store.list(include_hidden=True) == []  # refused before the picture was stored
    # The loading code itself refuses too, naming the repo, without a network call.
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE"):
        PipelineCache(CATALOG, engine.pipelines.models_dir, device="cpu").get(model_id)


# -- the CLI --------------------------------------------------------------------------------------------------------

def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INPAINT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "inpaint", "segment", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.torch
def test_cli_writes_the_mask_of_a_click_and_exits_2_on_bad_input(tmp_path):
    picture, truth_np = composite(seed=5)
    (tmp_path / "picture.jpg").write_bytes(encoded(picture, "JPEG", quality=95))
    x, y = inside(truth_np)
    done = cli(str(tmp_path / "picture.jpg"), "--point", f"{x},{y}", "--point", "3,3,0", "--model", "grabcut",
               "--out", str(tmp_path / "mask.png"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["modelId"] == "grabcut" and (printed["width"], printed["height"]) == picture.size
    assert iou(Image.open(tmp_path / "mask.png").convert("L"), truth_np) >= 0.8
    tiny = cli(str(tmp_path / "picture.jpg"), "--box", "10,10,200,200", "--model", "tiny-sam2",
               "--out", str(tmp_path / "tiny.png"), tmp_path=tmp_path)
    assert tiny.returncode == 0, tiny.stderr
    assert Image.open(tmp_path / "tiny.png").size == picture.size
    outside = cli(str(tmp_path / "picture.jpg"), "--point", "999,3", "--model", "grabcut",
                  "--out", str(tmp_path / "bad.png"), tmp_path=tmp_path)
    assert outside.returncode == 2 and "Traceback" not in outside.stderr
    assert outside.stderr.strip() == "error: points: point 0 (999, 3) is outside the 256x256 picture"
    assert not (tmp_path / "bad.png").exists()


def test_cli_flags_that_do_not_parse_exit_2_naming_the_flag(capsys):
    from inpaint.__main__ import main

    for flag, value, words in [("--point", "3", "'3' must be X,Y or X,Y,0"),
                               ("--box", "1,2,x,4", "'1,2,x,4' must be X0,Y0,X1,Y1")]:
        with pytest.raises(SystemExit) as exited:
            main(["segment", "picture.png", flag, value, "--model", "grabcut", "--out", "mask.png"])
        assert exited.value.code == 2 and f"{flag}: {words}" in capsys.readouterr().err


# -- the README's commands, as written -----------------------------------------------------------------------------

def readme_commands() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("From the command line, a box and two clicks"):text.index("`--point X,Y[,0]` repeats")]
    return "\n".join(line[4:] for line in section.splitlines() if line.startswith("    "))


@pytest.mark.skipif(not shutil.which("jq"), reason="the README's commands use jq")
@pytest.mark.figure  # draws a README picture: `python -m bench.figures`
def test_the_readme_selects_the_rocket_and_removes_it(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "INPAINT_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-e", "-c", readme_commands()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "job.json").read_text())["status"] == "success"
    mask_np = np.asarray(Image.open(tmp_path / "rocket-mask.png")) > 0
    assert 0.01 < mask_np.mean() < 0.05  # the rocket, not the sky: about 2% of the photo
    assert mask_np[140, 320] and mask_np[250, 320] and not mask_np[100, 200]
    rocket_np = np.asarray(Image.open(tmp_path / "rocket.jpg").convert("RGB")).astype(int)
    [result] = (tmp_path / "removed").glob("*.png")
    result_np = np.asarray(Image.open(result).convert("RGB")).astype(int)
    assert np.abs(result_np - rocket_np)[mask_np].mean() > 40  # the white rocket is gone
    assert np.abs(result_np - rocket_np)[~mask_np].max() <= 2  # the rest is the photo (one JPEG decode apart)

    # The README's figure, from what the commands made: the box and clicks drawn in, the mask, the result.
    commands = readme_commands()
    box = [int(v) for v in re.search(r"--box (\S+)", commands)[1].split(",")]
    clicks = [tuple(int(v) for v in found.split(",")) for found in re.findall(r"--point (\S+)", commands)]
    shown = Image.open(tmp_path / "rocket.jpg").convert("RGB")
    draw = ImageDraw.Draw(shown)
    draw.rectangle(box, outline=(255, 220, 0), width=3)
    for x, y in clicks:
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), outline=(255, 220, 0), width=3)
    around = (160, 0, 480, shown.height)  # the rocket and its launch towers
    tiles = [image.convert("RGB").crop(around) for image in (shown, Image.open(tmp_path / "rocket-mask.png"),
                                                             Image.open(result))]
    figure = Image.new("RGB", (3 * tiles[0].width + 2 * 8, tiles[0].height), "white")
    for index, tile in enumerate(tiles):
        figure.paste(tile, (index * (tile.width + 8), 0))
    figure.save(figure_path("select-box-remove.png"), optimize=True)
