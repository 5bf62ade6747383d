"""The studio's handlers on the real engine with tiny models, and its API through gradio_client."""

import base64
import io
import socket
import threading
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageOps
from skimage import data as photos

from inpaint import imageops, ui
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.errors import RequestError
from inpaint.generate import Engine
from tests.images import bomb_png, photo, rect_mask

CATALOG = Catalog.load()
SIZE = 128
BOX = (40, 40, 88, 88)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def handler(demo, name: str):
    """One of the Blocks' event functions, by its Python name (the private ones have no API route)."""
    for block_fn in demo.fns.values():
        if getattr(block_fn.fn, "__name__", None) == name:
            return block_fn.fn
    raise LookupError(name)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def editor_value(image: Image.Image, box=None) -> dict:
    """What the ImageEditor hands the handler from the page: the canvas's PNG bytes, the background
    plus one RGBA layer painted in `box` (a gradio_client caller's files come as paths instead)."""
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    if box:
        layer.paste((255, 45, 85, 255), box)
    return {"background": png(image.convert("RGBA")), "layers": [png(layer)], "composite": None}


def rotated_jpeg(displayed: Image.Image) -> bytes:
    """A JPEG stored on its side with EXIF Orientation 6: a viewer turns it back into `displayed`."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    displayed.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def run(fn, value, *, state=None, session="s1", **fields) -> tuple[dict, dict]:
    """Drives the generation handler like the page does; returns the effective parameters and the session."""
    args = dict(image=value, prompt="a red apple", modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2,
                seed=7, randomizeSeed=False, autoSize=False, width=64, height=64, state=state or {})
    args.update(fields)
    last = None
    for last in fn(**args, request=SimpleNamespace(session_hash=session)):
        pass
    gallery, preview, status, summary, seed, state = last
    return summary, state


@pytest.fixture(scope="module")
def engine(tmp_path_factory, pipeline_cache):
    return Engine(CATALOG, AssetStore(tmp_path_factory.mktemp("ui-store")), pipeline_cache)


@pytest.fixture(scope="module")
def demo(engine):
    return ui.build_demo(engine, default_model="opencv-telea")


@pytest.fixture(scope="module")
def client(engine):
    app = ui.build_demo(engine, default_model="opencv-telea")
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield Client(app.local_url, verbose=False)
    finally:
        app.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui-files")
    photo(SIZE, SIZE).save(folder / "image.png")
    rect_mask(SIZE, SIZE, BOX).save(folder / "mask.png")
    Image.new("L", (SIZE, SIZE), 0).save(folder / "empty-mask.png")
    (folder / "huge.png").write_bytes(bomb_png(13300, 13300))
    # Stored 128 wide and 64 high, shown 64 wide and 128 high; the mask is drawn on what is shown.
    (folder / "rotated.jpg").write_bytes(rotated_jpeg(photo(64, 128, seed=5)))
    rect_mask(64, 128, (16, 72, 48, 112)).save(folder / "rotated-mask.png")
    return folder


# ---- pure helpers --------------------------------------------------------------------------------

def test_mask_is_the_union_of_the_layers_alpha_whatever_the_colour():
    first, second = (Image.new("RGBA", (64, 64), (0, 0, 0, 0)) for _ in range(2))
    first.paste((0, 0, 0, 255), (0, 0, 10, 10))  # black brush: RGB is all zeros, alpha is not
    second.paste((255, 255, 255, 1), (50, 50, 64, 64))  # barely visible stroke still counts
    mask_np = np.asarray(ui.layers_alpha([first, None, second], (64, 64))) > 0
    expected_np = np.zeros((64, 64), bool)
    expected_np[0:10, 0:10] = expected_np[50:64, 50:64] = True
    assert np.array_equal(mask_np, expected_np)


def test_uploaded_mask_overrides_the_sketch_and_invert_grow_feather_apply():
    background = Image.new("RGB", (64, 64), "white")
    sketch = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    sketch.paste((255, 0, 0, 255), (0, 0, 8, 8))
    upload = rect_mask(64, 64, (20, 20, 40, 40))
    mask, _ = ui.effective_mask(background, [sketch], upload)
    assert mask.getbbox() == (20, 20, 40, 40)
    inverted, _ = ui.effective_mask(background, [sketch], None, invert=True)
    assert np.asarray(inverted)[0, 0] == 0 and np.asarray(inverted)[63, 63] == 255
    grown, _ = ui.effective_mask(background, [], upload, grow=4)
    assert grown.getbbox() == (16, 16, 44, 44)
    feathered, _ = ui.effective_mask(background, [], upload, feather=12)
    feathered_np = np.asarray(feathered)
    assert set(np.unique(feathered_np)) <= {0, 255}  # still binary: the contract thresholds masks
    assert feathered_np[20, 20] == 0 and feathered_np[30, 30] == 255  # corners rounded, centre kept


def test_uploaded_mask_reads_alpha_when_it_carries_the_mask():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (8, 8, 16, 16))
    assert imageops.read_mask(rgba)[0].getbbox() == (8, 8, 16, 16)
    assert imageops.read_mask(rect_mask(32, 32, (1, 2, 3, 4)).convert("RGB"))[0].getbbox() == (1, 2, 3, 4)


def test_empty_mask_is_the_contracts_error():
    with pytest.raises(RequestError) as caught:
        ui.effective_mask(Image.new("RGB", (64, 64)), [Image.new("RGBA", (64, 64))], None)
    assert caught.value.field == "mask" and "empty" in caught.value.message


def test_size_defaults_to_the_image_rounded_to_8_and_inside_the_models_range():
    assert ui.fit_size((203, 97), CATALOG.get("tiny-sd-1_5")) == (200, 96)
    assert ui.fit_size((3000, 40), CATALOG.get("tiny-sd-1_5")) == (1024, 64)
    assert ui.fit_size((300, 300), CATALOG.get("tiny-sd-xl")) == (512, 512)
    assert ui.fit_size(None, CATALOG.get("tiny-flux.1")) == (1024, 1024)


def test_concepts_table_becomes_the_requests_concepts():
    table = [["tiny-sd-1_5-lora", 0.5, "epoch-1"], ["", None, ""], ["tiny-sd-1_5-lora", "", ""]]
    assert ui.concepts_from_table(table) == [{"modelId": "tiny-sd-1_5-lora", "scale": 0.5, "modelEpoch": "epoch-1"},
                                             {"modelId": "tiny-sd-1_5-lora"}]
    assert ui.concepts_from_table({"headers": ui.CONCEPT_HEADERS, "data": [["tiny-sd-1_5-lora", 2, None]]}) == [
        {"modelId": "tiny-sd-1_5-lora", "scale": 2.0}]
    with pytest.raises(RequestError, match="concepts.0.scale"):
        ui.concepts_from_table([["tiny-sd-1_5-lora", "big", ""]])


def test_preview_strips_stay_within_webps_limit(tmp_path):
    # 2048x64 previews at latent size (1/8), a micro-batch of 4: enlarged 24x, the strip would be 24588 px wide.
    wide = [Image.new("RGB", (256, 8), colour) for colour in ("red", "green", "blue", "white")]
    strip = ui.preview_strip(wide)
    assert strip.width <= ui.WEBP_MAX_SIDE and strip.width > ui.WEBP_MAX_SIDE - 1024  # as large as fits
    assert strip.height == 8 * (strip.width - 3 * ui.PREVIEW_GAP_PX) // 1024  # every preview enlarged alike
    strip.save(tmp_path / "wide.webp", quality=80)
    # Too wide even at latent size (a big batch of 8192 px wide previews): shrunk to fit.
    widest = ui.preview_strip([Image.new("RGB", (1024, 8))] * 32)
    assert widest.width == ui.WEBP_MAX_SIDE and widest.height >= 1
    widest.save(tmp_path / "widest.webp", quality=80)
    # The usual case is unchanged: small previews enlarged to a readable height.
    assert ui.preview_strip([Image.new("RGB", (8, 8))] * 2).size == (2 * 192 + ui.PREVIEW_GAP_PX, 192)


def test_example_pictures_are_drawn_here(tmp_path):
    paths = ui.draw_example(tmp_path)
    image = Image.open(paths["image"])
    assert image.size == (320, 240) and len(np.unique(np.asarray(image.convert("L")))) > 10
    for name in ("sun", "house"):
        box = Image.open(paths[name]).getbbox()
        assert box is not None and Image.open(paths[name]).size == image.size


# ---- handlers on the real engine -----------------------------------------------------------------

def test_model_change_follows_the_catalog(demo):
    follow = handler(demo, "follow_model")
    sd = follow("tiny-sd-1_5", (320, 240), "opencv-telea", 1, None, True, [])
    guidance, width, height, scheduler, base, epoch, neg, pick, box, rows, samples = sd[:11]
    assert (guidance["minimum"], guidance["maximum"], guidance["value"]) == (0, 20, 7.5)
    assert (width["minimum"], width["maximum"], width["value"], height["value"]) == (64, 1024, 320, 240)
    assert scheduler["value"] == "PNDMScheduler" and "FlowMatchEulerDiscreteScheduler" not in scheduler["choices"]
    assert pick["choices"] == ["tiny-sd-1_5-lora"] and box["visible"] and samples["value"] == ui.DEFAULT_SAMPLES
    assert not base["visible"] and not epoch["visible"]

    flux = follow("tiny-flux.1", None, "tiny-sd-1_5", 2, None, True, [["tiny-sd-1_5-lora", 1.0, "epoch-2"]])
    guidance, width, height, scheduler, base, epoch, neg, pick, box, rows, samples = flux[:11]
    assert (guidance["maximum"], guidance["value"]) == (10, 3.5)
    assert (width["maximum"], width["value"]) == (2048, 1024)
    assert scheduler["choices"] == ["FlowMatchEulerDiscreteScheduler"] and neg["visible"]
    assert rows == [] and not box["visible"] and samples["value"] == 2  # the user's count survives

    lora = follow("tiny-sd-1_5-lora", None, "tiny-flux.1", 2, None, True, [])
    base, epoch = lora[4], lora[5]
    assert base["visible"] and base["value"] == "tiny-sd-1_5"
    assert epoch["visible"] and epoch["choices"] == ["epoch-1", "epoch-2"] and epoch["value"] == "epoch-2"

    classical = follow("opencv-telea", None, "tiny-sd-1_5", 4, None, True, [])
    assert classical[10]["value"] == 1 and classical[0]["interactive"] is False
    prompt_of = dict(zip(["steps", "strength", "negative", "previews", "prompt"], classical[11:16]))
    assert not any(update["interactive"] for update in prompt_of.values())  # greyed: the model ignores them
    assert prompt_of["prompt"]["placeholder"] == "opencv-telea needs no prompt"
    # PatchMatch is seeded: several samples differ, so their count stays the user's to choose.
    patch = follow("patchmatch", None, "opencv-telea", 1, None, True, [])
    assert patch[10]["value"] == ui.DEFAULT_SAMPLES and patch[10]["interactive"] and not patch[15]["interactive"]
    assert sd[15]["interactive"] and sd[15]["placeholder"] == ui.PROMPT_HINT


def test_the_studio_runs_patchmatch_with_an_empty_prompt(demo, engine):
    fn = handler(demo, "inpaint")
    image = Image.fromarray(photos.chelsea()).crop((100, 50, 100 + SIZE, 50 + SIZE))
    outputs = list(fn(image=editor_value(image, BOX), prompt="", modelId="patchmatch", numSamples=2, seed=5,
                      randomizeSeed=False, state={}, request=SimpleNamespace(session_hash="s-pm")))
    gallery, _, status, summary, _, _ = outputs[-1]
    assert "Done" in status and [caption for _, caption in gallery] == ["seed 5", "seed 6"]
    assert summary["input"]["prompt"] == "" and not any("prompt" in w for w in summary["warnings"])


def test_results_stream_with_seeds_and_previews(demo, engine):
    fn = handler(demo, "inpaint")
    outputs = list(fn(image=editor_value(photo(SIZE, SIZE), BOX), prompt="a red apple", modelId="tiny-sd-1_5",
                      numSamples=2, numInferenceSteps=3, seed=100, randomizeSeed=False, autoSize=False, width=64,
                      height=64, intermediateImages=True, state={}, request=SimpleNamespace(session_hash="s0")))
    galleries = [out[0] for out in outputs]
    # The gallery fills in one result at a time, and previews come before the first result.
    assert [len(g) for g in galleries if g][:2] == [1, 2]
    first_result = next(i for i, g in enumerate(galleries) if g)
    assert any(out[1]["value"] for out in outputs[:first_result])
    gallery, preview, status, summary, seed, state = outputs[-1]
    assert [caption for _, caption in gallery] == ["seed 100", "seed 101"]
    assert summary["seeds"] == [100, 101] and seed == 100 and "Done" in status
    for (path, _), asset_id in zip(gallery, summary["assetIds"]):
        assert Image.open(path).tobytes() == engine.store.open_image(asset_id).tobytes()  # the lossless PNG
        assert engine.store.get(asset_id).parent_id == summary["input"]["image"]


def test_same_image_reuses_its_asset_and_use_as_input_chains_results(demo, engine):
    fn, keep = handler(demo, "inpaint"), handler(demo, "keep_editing")
    image = photo(SIZE, SIZE, seed=3)
    first, state = run(fn, editor_value(image, BOX))
    again, state = run(fn, editor_value(image, (10, 10, 30, 30)), state=state)
    assert again["input"]["image"] == first["input"]["image"]  # the same upload is one asset

    with pytest.raises(Exception, match="Pick a result"):
        keep({**state, "selected": None})
    value, mask_upload, mask_preview, state = keep({**state, "selected": 0})
    result_id = again["assetIds"][0]
    assert state["source"] == result_id and mask_upload is None and mask_preview is None
    # The page sends the result back as the editor's background (through the browser, maybe re-encoded).
    background = Image.open(value).convert("RGBA")
    chained, state = run(fn, editor_value(background, BOX), state=state)
    assert chained["input"]["image"] == result_id
    assert engine.store.get(chained["assetIds"][0]).parent_id == result_id

    # Another picture is a new input asset, not the previous one.
    other, state = run(fn, editor_value(photo(SIZE, SIZE, seed=4), BOX), state=state)
    assert other["input"]["image"] not in (result_id, first["input"]["image"])


def test_bad_input_is_a_gr_error_with_the_contract_message(demo):
    fn = handler(demo, "inpaint")
    with pytest.raises(Exception) as caught:
        run(fn, editor_value(photo(SIZE, SIZE), BOX), prompt="   ")
    assert type(caught.value).__name__ == "Error"
    assert caught.value.message == "prompt: must not be empty or blank for sd-1_5 models"
    with pytest.raises(Exception) as caught:
        run(fn, None)
    assert caught.value.message.startswith("image: is required")
    with pytest.raises(Exception) as caught:
        run(fn, editor_value(photo(SIZE, SIZE)))
    assert caught.value.message.startswith("mask: mask is empty")


def test_stop_ends_a_run_midway_and_keeps_what_was_made(demo, engine):
    fn, stop = handler(demo, "inpaint"), handler(demo, "stop")
    session = SimpleNamespace(session_hash="stopper")
    assert stop(session) == "Nothing is running."
    outputs, previews = [], threading.Event()

    def consume():
        for out in fn(image=editor_value(photo(SIZE, SIZE), BOX), prompt="x", modelId="tiny-sd-1_5", numSamples=4,
                      numInferenceSteps=150, strength=1.0, intermediateImages=True, seed=1, randomizeSeed=False,
                      autoSize=False, width=64, height=64, state={}, request=session):
            outputs.append(out)
            if out[1]["value"]:
                previews.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert previews.wait(timeout=600)
    assert "Stopping" in stop(session)
    worker.join(timeout=600)
    assert not worker.is_alive()
    gallery, preview, status, summary, *_ = outputs[-1]
    assert "Stopped" in status and gallery == [] and summary["assetIds"] == []
    steps_seen = {int(p.rsplit("-", 1)[1].split(".")[0]) for p in [o[1]["value"] for o in outputs] if p}
    assert max(steps_seen) < 150  # it never reached the end of the first micro-batch


def test_a_wide_flux_run_streams_its_previews(demo, engine):
    # One micro-batch of 4 previews of a 2048x64 generation, side by side: past WebP's side before the bound.
    assert engine.max_batch >= 4
    fn = handler(demo, "inpaint")
    outputs = list(fn(image=editor_value(photo(SIZE, SIZE), BOX), prompt="a red apple", modelId="tiny-flux.1",
                      numSamples=4, numInferenceSteps=2, seed=3, randomizeSeed=False, autoSize=False, width=2048,
                      height=64, intermediateImages=True, state={}, request=SimpleNamespace(session_hash="wide")))
    gallery, preview, status, summary, *_ = outputs[-1]
    assert "Done" in status and len(summary["assetIds"]) == 4
    previews = {out[1]["value"] for out in outputs if out[1]["value"]}
    assert len(previews) == 2  # one per step
    for path in previews:
        with Image.open(path) as strip:
            assert strip.format == "WEBP" and strip.width <= ui.WEBP_MAX_SIDE and strip.width > 4 * 256


def test_warnings_found_while_generating_reach_the_status_and_the_summary(demo, engine, monkeypatch):
    real_generate = engine.generate
    found = "prompt: truncated to the text encoder's 77 tokens"

    def generate(request, *, on_warning=None, **hooks):
        if on_warning is not None:  # reported twice, shown once
            on_warning(found)
            on_warning(found)
        return real_generate(request, **hooks)

    monkeypatch.setattr(engine, "generate", generate)
    fn = handler(demo, "inpaint")
    outputs = list(fn(image=editor_value(photo(SIZE, SIZE), BOX), prompt="a red apple", modelId="tiny-sd-1_5",
                      numSamples=1, numInferenceSteps=2, seed=1, randomizeSeed=False, autoSize=False, width=64,
                      height=64, state={}, request=SimpleNamespace(session_hash="warned")))
    gallery, preview, status, summary, *_ = outputs[-1]
    assert "Done" in status and status.count(f"⚠️ {found}") == 1
    assert summary["warnings"].count(found) == 1 and len(summary["assetIds"]) == 1


def test_a_prompt_longer_than_the_text_encoder_reads_is_warned_in_the_studio(demo):
    outputs = list(handler(demo, "inpaint")(
        image=editor_value(photo(SIZE, SIZE), BOX), prompt="a" * 100, modelId="tiny-sd-1_5", numSamples=2,
        numInferenceSteps=2, seed=1, randomizeSeed=False, autoSize=False, width=64, height=64, state={},
        request=SimpleNamespace(session_hash="long-prompt")))
    gallery, preview, status, summary, *_ = outputs[-1]
    truncated = [w for w in summary["warnings"] if w.startswith("prompt is ") and "the rest was ignored" in w]
    assert len(truncated) == 1 and f"⚠️ {truncated[0]}" in status and "Done" in status


# ---- uploads: decoded once, through the project's guards -----------------------------------------

HUGE_REFUSED_S = 1.0  # a 13300x13300 PNG took 17 s and 2.8 GB when it was decoded before the guards


def guard_message(path, field: str) -> str:
    """What the contract answers for this file in `field`: the guard's own words."""
    with pytest.raises(RequestError) as caught:
        imageops.open_image(path.read_bytes(), field=field, min_side=imageops.MIN_SIDE if field == "image" else 1)
    return f"{field}: {caught.value.message}"


def component(demo, elem_id: str):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_editor_and_mask_upload_hand_files_over_undecoded(demo, files, monkeypatch):
    from gradio.components.image_editor import EditorData, EditorDataBlobs
    from gradio.data_classes import FileData, ImageData

    def decoded(*args, **kwargs):
        raise AssertionError("an upload was opened before the project's guards")

    monkeypatch.setattr(Image, "open", decoded)
    editor, mask_upload = component(demo, "inpaint-editor"), component(demo, "inpaint-mask-upload")
    huge = str(files / "huge.png")
    value = editor.preprocess(EditorData(background=FileData(path=huge), layers=[FileData(path=huge)],
                                         composite=FileData(path=huge)))
    assert value == {"background": huge, "layers": [huge], "composite": huge}
    assert mask_upload.preprocess(ImageData(path=huge)) == huge
    # An API caller may send a data URL in place of a file: it is decoded as the contract decodes one.
    url = "data:image/png;base64," + base64.b64encode(png(Image.new("L", (8, 8), 255))).decode()
    assert mask_upload.preprocess(ImageData(url=url)) == url
    assert ui.upload_bytes(url, field="mask") == png(Image.new("L", (8, 8), 255))
    # The page sends its canvas as blobs under an id: their bytes, once.
    editor.blob_storage["canvas"] = EditorDataBlobs(background=b"background", layers=[b"layer", None], composite=None)
    assert editor.preprocess(EditorData(id="canvas")) == {"background": b"background", "layers": [b"layer"],
                                                          "composite": None}
    assert "canvas" not in editor.blob_storage


def test_huge_upload_is_refused_by_the_guard_in_under_a_second(demo, files):
    fn = handler(demo, "inpaint")
    huge, image, mask = str(files / "huge.png"), str(files / "image.png"), str(files / "mask.png")
    cases = [({"background": huge, "layers": [], "composite": None}, mask, guard_message(files / "huge.png", "image")),
             ({"background": image, "layers": [], "composite": None}, huge, guard_message(files / "huge.png", "mask")),
             ({"background": image, "layers": [huge], "composite": None}, None,
              guard_message(files / "huge.png", "image.layers.0"))]
    for value, mask_file, expected in cases:
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            run(fn, value, mask=mask_file)
        elapsed = time.monotonic() - started
        assert type(caught.value).__name__ == "Error" and caught.value.message == expected
        assert elapsed < HUGE_REFUSED_S, f"{expected}: refused in {elapsed:.2f} s"
    # The previews shown beside the editor simply show nothing, as fast.
    started = time.monotonic()
    value = {"background": huge, "layers": [], "composite": None}
    assert handler(demo, "show_mask")(value, None, False, 0, 0) == (None, None)
    assert handler(demo, "show_mask")(cases[1][0], huge, False, 0, 0) == (None, (SIZE, SIZE))
    assert handler(demo, "follow_image")(value, "tiny-sd-1_5")[2] is None
    assert time.monotonic() - started < HUGE_REFUSED_S


def test_a_rotated_jpeg_is_repainted_as_it_is_shown(demo, engine, files):
    # The sketch is drawn on the picture as shown (64 wide, 128 high), as the page and the mask file are.
    layer = Image.new("RGBA", (64, 128), (0, 0, 0, 0))
    layer.paste((255, 45, 85, 255), (16, 72, 48, 112))
    value = {"background": str(files / "rotated.jpg"), "layers": [png(layer)], "composite": None}
    summary, _ = run(handler(demo, "inpaint"), value, modelId="opencv-telea", width=None, height=None, autoSize=True)
    shown = ImageOps.exif_transpose(Image.open(files / "rotated.jpg")).convert("RGB")
    assert engine.store.open_image(summary["input"]["image"]).tobytes() == shown.tobytes()
    result = np.asarray(engine.store.open_image(summary["assetIds"][0]).convert("RGB"))
    assert result.shape == (128, 64, 3)
    assert np.array_equal(result[:56], np.asarray(shown)[:56])  # far from the mask: untouched


# ---- the API through gradio_client ---------------------------------------------------------------

def test_only_the_generation_is_public_with_the_contracts_parameter_names(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/inpaint"} and not api["unnamed_endpoints"]
    names = {p["parameter_name"] for p in api["named_endpoints"]["/inpaint"]["parameters"]}
    assert {"image", "mask", "prompt", "negativePrompt", "modelId", "modelEpoch", "baseModelId", "seed",
            "strength", "guidance", "numInferenceSteps", "numSamples", "width", "height", "scheduler",
            "intermediateImages", "concepts", "disableMerging", "negativePromptStrength"} <= names


def test_client_gets_images_whose_seeds_reproduce(client, files):
    image = {"background": handle_file(str(files / "image.png")), "layers": [], "composite": None}
    common = dict(image=image, mask=handle_file(str(files / "mask.png")), prompt="a red apple",
                  modelId="tiny-sd-1_5", numInferenceSteps=3, randomizeSeed=False, width=64, height=64,
                  api_name="/inpaint")
    gallery, _, status, summary, seed = client.predict(numSamples=2, seed=1234, **common)
    assert [item["caption"] for item in gallery] == ["seed 1234", "seed 1235"]
    assert summary["seeds"] == [1234, 1235] and seed == 1234 and "Done" in status
    first, second = (np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery)
    assert first.shape == (SIZE, SIZE, 3) and not np.array_equal(first, second)

    alone, *_ = client.predict(numSamples=1, seed=1235, **common)
    assert np.array_equal(np.asarray(Image.open(alone[0]["image"]).convert("RGB")), second)
    # Outside the mask the input comes back unchanged (merge mode).
    input_np, mask_np = np.asarray(photo(SIZE, SIZE)), np.asarray(rect_mask(SIZE, SIZE, BOX)) == 0
    assert np.array_equal(second[mask_np][:100], input_np[mask_np][:100])


def test_parameters_left_out_take_the_contracts_defaults(client, files):
    image = {"background": handle_file(str(files / "image.png")), "layers": [], "composite": None}
    *_, summary, _ = client.predict(image=image, mask=handle_file(str(files / "mask.png")), prompt="an apple",
                                    modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2, api_name="/inpaint")
    used = summary["input"]
    assert (used["guidance"], used["scheduler"], used["strength"]) == (7.5, "PNDMScheduler", 0.75)
    assert (used["width"], used["height"]) == (512, 512)  # the native resolution around a square mask
    *_, summary, _ = client.predict(image=image, mask=handle_file(str(files / "mask.png")), prompt="an apple",
                                    modelId="opencv-telea", api_name="/inpaint")
    # A model that reads no prompt gets none from the studio: nothing to warn about.
    assert summary["input"]["numSamples"] == 1 and summary["input"]["prompt"] == "" and summary["warnings"] == []


def test_client_huge_upload_is_refused_by_the_guard_in_under_a_second(client, files):
    args = dict(prompt="an apple", modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2, randomizeSeed=False,
                width=64, height=64, api_name="/inpaint")
    for background, mask, field in (("huge.png", "mask.png", "image"), ("image.png", "huge.png", "mask")):
        image = {"background": handle_file(str(files / background)), "layers": [], "composite": None}
        started = time.monotonic()
        with pytest.raises(AppError) as caught:
            client.predict(image=image, mask=handle_file(str(files / mask)), **args)
        elapsed = time.monotonic() - started
        assert str(caught.value) == guard_message(files / "huge.png", field)
        assert elapsed < HUGE_REFUSED_S, f"{field}: refused in {elapsed:.2f} s"


def test_client_rotated_jpeg_is_repainted_as_it_is_shown(client, files):
    image = {"background": handle_file(str(files / "rotated.jpg")), "layers": [], "composite": None}
    gallery, _, status, summary, _ = client.predict(image=image, mask=handle_file(str(files / "rotated-mask.png")),
                                                    prompt="an apple", modelId="opencv-telea", api_name="/inpaint")
    assert "Done" in status and not any("resized" in w for w in summary["warnings"])
    result = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(files / "rotated.jpg")).convert("RGB"))
    assert result.shape == (128, 64, 3)
    assert np.array_equal(result[:56], shown[:56])  # far from the mask: untouched
    assert not np.array_equal(result[72:112, 16:48], shown[72:112, 16:48])  # the masked area was repainted


@pytest.mark.parametrize("fields, message", [
    (dict(prompt=""), "prompt: must not be empty or blank for sd-1_5 models"),
    (dict(mask="empty-mask.png"), "mask: mask is empty"),
    (dict(modelId="nope"), "modelId: unknown model id 'nope'"),
    (dict(modelId="tiny-flux.1", guidance=15), "guidance: 15.0 is outside"),
    (dict(width=100, height=64), "width: 100 must be a multiple of 8"),
    (dict(scheduler="FlowMatchEulerDiscreteScheduler"), "scheduler: FlowMatchEulerDiscreteScheduler cannot drive"),
    (dict(modelId="tiny-sd-1_5-lora", modelEpoch="epoch-9"), "modelEpoch: epoch 'epoch-9'"),
    (dict(concepts={"headers": ui.CONCEPT_HEADERS, "data": [["tiny-sd-1_5-lora", 5, ""]]}),
     "concepts.0.scale"),
    (dict(seed=-1), "seed: -1 must be within"),
])
def test_bad_input_reaches_the_client_with_the_contract_message(client, files, fields, message):
    fields = dict(fields)
    mask = files / fields.pop("mask", "mask.png")
    image = {"background": handle_file(str(files / "image.png")), "layers": [], "composite": None}
    args = dict(image=image, mask=handle_file(str(mask)), prompt="an apple", modelId="tiny-sd-1_5", numSamples=1,
                numInferenceSteps=2, randomizeSeed=False, width=64, height=64)
    args.update(fields)
    with pytest.raises(AppError) as caught:
        client.predict(**args, api_name="/inpaint")
    assert str(caught.value).startswith(message)


def test_studio_runs_decode_under_the_engines_pixel_budget(demo, engine):
    stored = len(engine.store.list(include_hidden=True, limit=1000))
    with engine.decoding.hold(engine.decoding.capacity):  # REST requests are decoding all the budget allows
        with pytest.raises(gr.Error, match="server: the server is busy"):
            run(handler(demo, "inpaint"), editor_value(photo(96, 96), (20, 20, 60, 60)), modelId="opencv-telea")
    assert len(engine.store.list(include_hidden=True, limit=1000)) == stored  # refused before storing anything
