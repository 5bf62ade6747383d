"""The studio's handlers on the real engine with tiny models, and its API through gradio_client."""

import inspect
import io
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
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
from inpaint.events import Regions, Warned
from inpaint.generate import Engine
from inpaint.ui import device, examples, fields, handlers, masks, uploads
from tests.support.images import as_url, bomb_png, encoded, photo, rect_mask
from tests.support.studio import BOX, SIZE, handler, merged, painted

CATALOG = Catalog.load()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rotated_jpeg(displayed: Image.Image) -> bytes:
    """A JPEG stored on its side with EXIF Orientation 6: a viewer turns it back into `displayed`."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    displayed.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def stream(demo, session="s1", **given) -> list[dict]:
    """The generation handler's updates, one dict (keyed by component) per message to the page."""
    return list(handler(demo, "inpaint")(**given, request=SimpleNamespace(session_hash=session)))


def run(demo, picture: dict, *, state=None, session="s1", **given) -> tuple[dict, dict]:
    """Drives the generation handler like the page does (`picture`: its image and sketch); returns the effective
    parameters and the session."""
    args = dict(**picture, prompt="a red apple", modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2,
                seed=7, randomizeSeed=False, autoSize=False, width=64, height=64, state=state or {})
    page = merged(stream(demo, session, **{**args, **given}))
    ui = demo.studio.ui
    return page[ui.params], page[ui.session]


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
def files():
    # Where Gradio puts what a page uploads: the only folder the studio opens a file a client names in.
    folder = Path(tempfile.mkdtemp(prefix="ui-files-", dir=uploads.upload_folder()))
    photo(SIZE, SIZE).save(folder / "image.png")
    rect_mask(SIZE, SIZE, BOX).save(folder / "mask.png")
    Image.new("L", (SIZE, SIZE), 0).save(folder / "empty-mask.png")
    (folder / "huge.png").write_bytes(bomb_png(13300, 13300))
    # Stored 128 wide and 64 high, shown 64 wide and 128 high; the mask is drawn on what is shown.
    (folder / "rotated.jpg").write_bytes(rotated_jpeg(photo(64, 128, seed=5)))
    rect_mask(64, 128, (16, 72, 48, 112)).save(folder / "rotated-mask.png")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ---- pure helpers --------------------------------------------------------------------------------

def test_the_painted_mask_is_wherever_there_is_paint_whatever_the_colour():
    sketch = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    sketch.paste((0, 0, 0, 255), (0, 0, 10, 10))  # black paint: RGB is all zeros, alpha is not
    sketch.paste((255, 255, 255, 1), (50, 50, 64, 64))  # a barely visible edge still counts
    mask_np = np.asarray(masks.painted_mask(sketch)) > 0
    expected_np = np.zeros((64, 64), bool)
    expected_np[0:10, 0:10] = expected_np[50:64, 50:64] = True
    assert np.array_equal(mask_np, expected_np)
    assert masks.drawn_mask(None, None) == (None, [])  # nothing drawn, nothing uploaded
    # What the server puts on the canvas (an example's mask, an imported file) reads back as that mask.
    mask = rect_mask(30, 20, (3, 4, 17, 15))
    assert masks.painted_mask(masks.layer_from_mask(mask)).tobytes() == mask.tobytes()


def test_a_mask_painted_on_another_picture_is_refused_by_the_run_naming_the_mask(demo):
    picture = painted(photo(SIZE, SIZE), BOX)
    other = Image.new("RGBA", (SIZE, SIZE // 2), (0, 0, 0, 0))
    other.paste((255, 45, 85, 255), (4, 4, 20, 20))
    with pytest.raises(gr.Error, match=f"{SIZE}x{SIZE // 2} px but the image is {SIZE}x{SIZE} px"):
        run(demo, {**picture, "sketch": as_url(encoded(other))}, modelId="opencv-telea")


def test_uploaded_mask_overrides_the_sketch_and_invert_grow_feather_apply():
    sketch = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    sketch.paste((255, 0, 0, 255), (0, 0, 8, 8))
    upload = rect_mask(64, 64, (20, 20, 40, 40))
    mask, _ = masks.drawn_mask(sketch, upload)
    assert mask.getbbox() == (20, 20, 40, 40)
    inverted, _ = masks.drawn_mask(sketch, None, invert=True)
    assert np.asarray(inverted)[0, 0] == 0 and np.asarray(inverted)[63, 63] == 255
    grown, _ = masks.drawn_mask(None, upload, grow=4)
    assert grown.getbbox() == (16, 16, 44, 44)
    feathered, _ = masks.drawn_mask(None, upload, feather=12)
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
        masks.drawn_mask(Image.new("RGBA", (64, 64)), None)
    assert caught.value.field == "mask" and "empty" in caught.value.message


def test_size_defaults_to_the_image_rounded_to_8_and_inside_the_models_range():
    assert fields.fit_size((203, 97), CATALOG.get("tiny-sd-1_5")) == (200, 96)
    assert fields.fit_size((3000, 40), CATALOG.get("tiny-sd-1_5")) == (1024, 64)
    assert fields.fit_size((300, 300), CATALOG.get("tiny-sd-xl")) == (512, 512)
    assert fields.fit_size(None, CATALOG.get("tiny-flux.1")) == (256, 256)  # the test model's native square


def test_concepts_table_becomes_the_requests_concepts():
    table = [["tiny-sd-1_5-lora", 0.5, "epoch-1"], ["", None, ""], ["tiny-sd-1_5-lora", "", ""]]
    assert fields.concepts_from_table(table) == [{"modelId": "tiny-sd-1_5-lora", "scale": 0.5, "modelEpoch": "epoch-1"},
                                             {"modelId": "tiny-sd-1_5-lora"}]
    assert fields.concepts_from_table({"headers": fields.CONCEPT_HEADERS, "data": [["tiny-sd-1_5-lora", 2, None]]}) == [
        {"modelId": "tiny-sd-1_5-lora", "scale": 2.0}]
    with pytest.raises(RequestError, match="concepts.0.scale"):
        fields.concepts_from_table([["tiny-sd-1_5-lora", "big", ""]])


def test_preview_strips_stay_within_webps_limit(tmp_path):
    # 2048x64 previews at latent size (1/8), a micro-batch of 4: enlarged 24x, the strip would be 24588 px wide.
    wide = [Image.new("RGB", (256, 8), colour) for colour in ("red", "green", "blue", "white")]
    strip = device.preview_strip(wide)
    assert strip.width <= device.WEBP_MAX_SIDE and strip.width > device.WEBP_MAX_SIDE - 1024  # as large as fits
    assert strip.height == 8 * (strip.width - 3 * device.PREVIEW_GAP_PX) // 1024  # every preview enlarged alike
    strip.save(tmp_path / "wide.webp", quality=80)
    # Too wide even at latent size (a big batch of 8192 px wide previews): shrunk to fit.
    widest = device.preview_strip([Image.new("RGB", (1024, 8))] * 32)
    assert widest.width == device.WEBP_MAX_SIDE and widest.height >= 1
    widest.save(tmp_path / "widest.webp", quality=80)
    # The usual case is unchanged: small previews enlarged to a readable height.
    assert device.preview_strip([Image.new("RGB", (8, 8))] * 2).size == (2 * 192 + device.PREVIEW_GAP_PX, 192)


def test_example_pictures_are_drawn_here(tmp_path):
    paths = examples.draw_example(tmp_path)
    image = Image.open(paths["image"])
    assert image.size == (320, 240) and len(np.unique(np.asarray(image.convert("L")))) > 10
    for name in ("sun", "house"):
        box = Image.open(paths[name]).getbbox()
        assert box is not None and Image.open(paths[name]).size == image.size


# ---- handlers on the real engine -----------------------------------------------------------------

def follow(demo, model_id, *, size=None, chosen=None, table=(), busy=False) -> dict:
    """The page's updates when the model changes, by component name (`chosen`: what the user set by hand)."""
    ui = demo.studio.ui
    out = handler(demo, "follow_model")({ui.model: model_id, ui.image_size: size, ui.chosen: chosen or {},
                                        ui.busy: busy, ui.base_model: None, ui.auto_size: True,
                                        ui.concepts: list(table)})
    names = {id(component): name for name, component in vars(ui).items()}
    return {names[id(component)]: update for component, update in out.items()}


def test_model_change_follows_the_catalog(demo, monkeypatch):
    sd = follow(demo, "tiny-sd-1_5", size=(320, 240))
    guidance, width = sd["guidance"], sd["width"]
    assert (guidance["minimum"], guidance["maximum"], guidance["value"]) == (0, 20, 7.5)
    assert (width["minimum"], width["maximum"], width["value"], sd["height"]["value"]) == (64, 1024, 320, 240)
    assert sd["scheduler"]["value"] == "PNDMScheduler" and "FlowMatchEulerDiscreteScheduler" not in sd["scheduler"]["choices"]
    assert sd["concept_pick"]["choices"] == ["tiny-sd-1_5-lora"] and sd["concept_box"]["visible"]
    assert sd["num_samples"]["value"] == ui.DEFAULT_SAMPLES
    assert not sd["base_model"]["visible"] and not sd["model_epoch"]["visible"]

    flux = follow(demo, "tiny-flux.1", chosen={"num_samples": 2}, table=[["tiny-sd-1_5-lora", 1.0, "epoch-2"]])
    assert (flux["guidance"]["maximum"], flux["guidance"]["value"]) == (10, 3.5)
    assert (flux["width"]["maximum"], flux["width"]["value"]) == (2048, 256)  # a test model's own native size
    assert flux["scheduler"]["choices"] == ["FlowMatchEulerDiscreteScheduler"] and flux["negative_strength"]["visible"]
    assert flux["concepts"] == [] and not flux["concept_box"]["visible"]
    assert flux["num_samples"]["value"] == 2  # the user's count survives

    lora = follow(demo, "tiny-sd-1_5-lora", chosen={"num_samples": 2})
    assert lora["base_model"]["visible"] and lora["base_model"]["value"] == "tiny-sd-1_5"
    assert lora["model_epoch"]["visible"] and lora["model_epoch"]["choices"] == ["epoch-1", "epoch-2"]
    assert lora["model_epoch"]["value"] == "epoch-2"

    classical = follow(demo, "opencv-telea", chosen={"num_samples": 4})
    assert classical["num_samples"]["value"] == 1 and classical["guidance"]["interactive"] is False
    for name in ("steps", "strength", "negative_prompt", "intermediate", "prompt"):  # greyed: the model ignores them
        assert classical[name]["interactive"] is False, name
    assert classical["prompt"]["placeholder"] == "opencv-telea needs no prompt"
    assert "Samples 1 (not your 4)" in classical["status"]  # said, and taken back with the next seeded model
    # Switched during a run: a toast says the run keeps its model; the run's own line stays in the status line.
    said = []
    monkeypatch.setattr(gr, "Info", lambda message, **options: said.append(message))
    assert "status" not in follow(demo, "opencv-telea", chosen={"num_samples": 4}, busy=True)
    assert said == ["The run going on keeps its model; opencv-telea makes the next one."]
    # PatchMatch is seeded: several samples differ, so their count stays the user's to choose.
    patch = follow(demo, "patchmatch", chosen={"num_samples": 4})
    assert patch["num_samples"]["value"] == 4 and patch["num_samples"]["interactive"] and "status" not in patch
    assert follow(demo, "patchmatch")["num_samples"]["value"] == ui.DEFAULT_SAMPLES
    assert not patch["prompt"]["interactive"]
    assert sd["prompt"]["interactive"] and sd["prompt"]["placeholder"] == ui.PROMPT_HINT


def test_a_setting_emptied_on_the_way_to_a_new_value_is_not_remembered(demo):
    ui = demo.studio.ui
    chosen = {"guidance": 15, "num_samples": 3}
    assert handlers.remember(demo.studio, {ui.guidance: None, ui.chosen: chosen}, "guidance") == {}
    assert handlers.remember(demo.studio, {ui.guidance: 9.5, ui.chosen: chosen}, "guidance") == {
        ui.chosen: {"guidance": 9.5, "num_samples": 3}}
    assert follow(demo, "tiny-sd-1_5", chosen=chosen)["guidance"]["value"] == 15


def test_every_field_has_a_component_and_the_api_its_parameter(demo):
    # Adding a request field is one row of the table: its component, its API parameter, its request key.
    ui = demo.studio.ui
    api = handler(demo, "inpaint")
    params = list(inspect.signature(api).parameters)
    assert params[:len(fields.FIELDS)] == [f.param for f in fields.FIELDS]
    for row in fields.FIELDS:
        assert isinstance(ui[row.component], gr.components.Component), row.component
    entry = CATALOG.get("tiny-sd-1_5")
    body = fields.request_fields({f.param: f.default for f in fields.FIELDS} | {
        "prompt": "an apple", "numSamples": 2.0, "seed": 5.0, "negativePrompt": "  ", "modelId": entry.id}, entry)
    assert body == {"prompt": "an apple", "modelId": "tiny-sd-1_5", "numSamples": 2, "seed": 5,
                    "disableMerging": False, "intermediateImages": False}
    telea = fields.request_fields({"prompt": "ignored", "steps": 3, "modelId": "opencv-telea", "seed": 4,
                                   "randomizeSeed": True}, CATALOG.get("opencv-telea"))
    assert telea == {"modelId": "opencv-telea"}  # a model that reads no prompt is sent none; the seed is random


def test_the_studio_runs_patchmatch_with_an_empty_prompt(demo, engine):
    ui = demo.studio.ui
    image = Image.fromarray(photos.chelsea()).crop((100, 50, 100 + SIZE, 50 + SIZE))
    page = merged(stream(demo, "s-pm", **painted(image, BOX), prompt="", modelId="patchmatch", numSamples=2,
                         seed=5, randomizeSeed=False, state={}))
    assert "Done" in page[ui.status] and [caption for _, caption in page[ui.gallery]] == ["seed 5", "seed 6"]
    summary = page[ui.params]
    assert summary["input"]["prompt"] == "" and not any("prompt" in w for w in summary["warnings"])


def test_results_stream_with_full_seeds_previews_and_names_that_say_what_they_are(demo, engine):
    ui = demo.studio.ui
    outputs = stream(demo, "s0", **painted(photo(SIZE, SIZE), BOX), prompt="A red apple, on a plate!",
                     modelId="tiny-sd-1_5", numSamples=2, numInferenceSteps=3, seed=1234567, randomizeSeed=False,
                     autoSize=False, width=64, height=64, intermediateImages=True, state={})
    # The status speaks first, before anything is decoded; the gallery is left alone until a result comes.
    assert set(outputs[0]) == {ui.status} and "Preparing" in outputs[0][ui.status]
    galleries = [out[ui.gallery] for out in outputs if ui.gallery in out]
    assert [len(g) for g in galleries][:2] == [1, 2]
    first_result = next(i for i, out in enumerate(outputs) if ui.gallery in out)
    assert any(out.get(ui.preview) for out in outputs[:first_result])
    # Counted from 1 as the pipeline runs them; when strength skips part of the schedule, the line says so.
    statuses = [out[ui.status] for out in outputs[:first_result]]
    counted = [(text, re.search(r"step (\d+) of (\d+)", text)) for text in statuses]
    counted = [(text, int(m.group(1)), int(m.group(2))) for text, m in counted if m]
    assert counted and counted[0][1] == 1, statuses
    for text, _, runs in counted:
        assert (f"strength runs {runs} of 3 steps" in text) == (runs < 3), text
    page = merged(outputs)
    summary = page[ui.params]
    assert [caption for _, caption in page[ui.gallery]] == ["seed 1234567", "seed 1234568"]
    assert summary["seeds"] == [1234567, 1234568] and page[ui.seed] == 1234567 and "Done" in page[ui.status]
    for (path, _), asset_id, seed in zip(page[ui.gallery], summary["assetIds"], summary["seeds"]):
        assert Path(path).name == f"a-red-apple-on-a-plate-{seed}.png"
        assert Image.open(path).tobytes() == engine.store.open_image(asset_id).tobytes()  # the lossless PNG
        assert engine.store.get(asset_id).parent_id == summary["input"]["image"]


def test_the_status_line_is_sent_when_it_says_something_new_and_steps_at_most_every_0_4_s(demo):
    # 60 quick steps: one message a step kept the browser busy redrawing the line, on the cores the run needs.
    ui = demo.studio.ui
    updates = handler(demo, "inpaint")(**painted(photo(SIZE, SIZE), BOX), prompt="a red apple", modelId="tiny-sd-1_5",
                                       numSamples=1, numInferenceSteps=60, strength=1.0, seed=7, randomizeSeed=False,
                                       autoSize=False, width=64, height=64, state={},
                                       request=SimpleNamespace(session_hash="steps"))
    sent = [(time.monotonic(), out) for out in updates]
    lines = [(at, out[ui.status]) for at, out in sent if ui.status in out]
    assert "**Done** · 1 image in" in lines[-1][1]
    assert all(before != after for (_, before), (_, after) in zip(lines, lines[1:]))  # nothing said twice
    steps = [(at, text) for at, out in sent if set(out) == {ui.status} and (text := out[ui.status]).endswith("%")]
    assert steps, lines
    for (at, text), (next_at, next_text) in zip(steps, steps[1:]):
        if text.split(" · ")[0] == next_text.split(" · ")[0]:  # the same stage: only the count moved on
            assert next_at - at >= handlers.STEP_LINE_EVERY_S - 0.05, (text, next_text, next_at - at)


def test_a_run_ends_with_the_first_sample_selected_and_joins_the_history(demo):
    ui = demo.studio.ui
    _, state = run(demo, painted(photo(SIZE, SIZE, seed=8), BOX), numSamples=2, modelId="patchmatch", seed=40)
    after = handler(demo, "finish")({ui.session: state, ui.status: "**Done**"})
    assert after[ui.busy] is False  # then show_mask makes Generate live again, when nothing is missing
    assert after[ui.status] == "**Done**"  # written again as it was: it clears gradio's mark of a failed run
    assert after[ui.params]["seed"] == 40 and after[ui.download].endswith("-40.png")
    assert [label for _, label in after[ui.history]] == ["patchmatch · 2"]
    _, state2 = run(demo, painted(photo(SIZE, SIZE, seed=9), BOX), modelId="opencv-telea",
                    state=after[ui.session])
    later = handler(demo, "finish")({ui.session: state2, ui.status: "**Done**"})
    assert len(later[ui.history]) == 2
    # The earlier run comes back: its gallery, its first sample selected, its parameters.
    back = handler(demo, "bring_back")({ui.session: later[ui.session]}, SimpleNamespace(index=1))
    assert [caption for _, caption in back[ui.gallery]] == ["seed 40", "seed 41"]
    assert back[ui.params]["modelId"] == "patchmatch" and back[ui.params]["seed"] == 40


def out_of_paint(engine, monkeypatch, model_id: str = "opencv-telea") -> None:
    """Every run of `model_id` fails in the middle, as a bug or a broken device would make it."""
    def broken(*args, **kwargs):
        raise RuntimeError("out of paint")

    monkeypatch.setattr(type(engine.catalog.get(model_id).family), "run", broken)


def test_a_failed_run_says_so_and_leaves_the_last_results(demo, engine, monkeypatch):
    ui = demo.studio.ui
    out_of_paint(engine, monkeypatch)
    outputs = []
    with pytest.raises(gr.Error) as toast:
        for out in handler(demo, "inpaint")(**painted(photo(SIZE, SIZE), BOX), modelId="opencv-telea", state={},
                                            request=SimpleNamespace(session_hash="broken")):
            outputs.append(out)
    assert toast.value.message == "generation failed: RuntimeError: out of paint"
    # The previous run's results stay on the page: the gallery and the session are left as they are.
    assert all(out.get(ui.gallery, gr.skip()) == gr.skip() for out in outputs)
    assert outputs[-1][ui.session] == gr.skip()
    assert outputs[-1][ui.status].startswith("**Failed** · generation failed: RuntimeError: out of paint")
    assert "out of paint" in outputs[-1][ui.status] and "the results above are the last run's" in outputs[-1][ui.status]


def test_same_image_reuses_its_asset_and_use_as_input_chains_results(demo, engine):
    ui, keep = demo.studio.ui, handler(demo, "keep_editing")
    image = photo(SIZE, SIZE, seed=3)
    first, state = run(demo, painted(image, BOX))
    again, state = run(demo, painted(image, (10, 10, 30, 30)), state=state)
    assert again["input"]["image"] == first["input"]["image"]  # the same upload is one asset

    with pytest.raises(gr.Error, match="Pick a result"):
        keep({ui.session: {**state, "selected": None}})
    out = keep({ui.session: {**state, "selected": 0}})
    state = out[ui.session]
    result_id = again["assetIds"][0]
    assert state["source"] == result_id and out[ui.mask_upload] is None and out[ui.mask_preview] is None
    # The page sends the result back as its picture, a copy of the result's file; the painter starts empty.
    assert out[ui.painter] == ""
    chained, state = run(demo, {**painted(photo(SIZE, SIZE), BOX), "image": Path(out[ui.picture]).read_bytes()},
                         state=state)
    assert chained["input"]["image"] == result_id
    assert engine.store.get(chained["assetIds"][0]).parent_id == result_id

    # Another picture is a new input asset, not the previous one.
    other, state = run(demo, painted(photo(SIZE, SIZE, seed=4), BOX), state=state)
    assert other["input"]["image"] not in (result_id, first["input"]["image"])


def test_bad_input_is_a_gr_error_in_plain_words_and_the_status_says_it(demo):
    ui = demo.studio.ui
    cases = [(dict(prompt="   "), "Prompt: must not be empty or blank for tiny-sd-1_5: it paints what the prompt says"),
             (dict(image=None), "Picture: upload or paste a picture first"),
             (painted(photo(SIZE, SIZE)), "Mask: nothing is painted: paint over what should change"),
             (dict(sketch=painted(photo(SIZE // 2, SIZE), BOX)["sketch"]), "Painted mask: mask is 64x128 px but the image is 128x128 px"),
             # An API caller's mistake, in the API's words: a file name is not read.
             (dict(sketch="/etc/hostname"), "Painted mask: must be a PNG data URL")]
    for given, message in cases:
        outputs = []
        with pytest.raises(gr.Error) as caught:
            args = painted(photo(SIZE, SIZE), BOX) | dict(prompt="a red apple", modelId="tiny-sd-1_5", numSamples=1,
                                                          state={}) | given
            for out in handler(demo, "inpaint")(**args, request=SimpleNamespace(session_hash="bad")):
                outputs.append(out)
        assert caught.value.message.startswith(message) and caught.value.title == "Please check"
        assert outputs[-1][ui.status] == f"**Not started** · {caught.value.message}"
        assert "`" not in caught.value.message
        assert "data URL" not in caught.value.message or given.get("sketch") == "/etc/hostname"


def mask_inputs(ui, **given) -> dict:
    """What the mask preview reads from the page, by component; nothing painted, no extension."""
    values = {ui.picture: None, ui.painter: "", ui.mask_upload: None, ui.invert: False, ui.grow: 0, ui.feather: 0, ui.mask_mode: None,
              ui.model: "opencv-telea", ui.busy: False}
    values.update({ui[f"outpaint_{side}"]: 0 for side in fields.OUTPAINT_SIDES})
    return values | {ui[name]: value for name, value in given.items()}


def test_the_mask_preview_is_small_and_says_what_a_run_lacks(demo):
    ui, show = demo.studio.ui, handler(demo, "show_mask")
    values = mask_inputs(ui)
    empty = show(values)
    assert "Upload" in empty[ui.reason] and empty[ui.generate_btn]["interactive"] is False
    big = photo(1200, 900)
    page = lambda box=None: {ui[name]: value for name, value in zip(("picture", "painter"), painted(big, box).values())}
    unpainted = show({**values, **page()})
    assert "Paint over" in unpainted[ui.reason] and unpainted[ui.generate_btn]["interactive"] is False
    shown = show({**values, **page((100, 100, 300, 300))})
    assert shown[ui.reason] == "" and shown[ui.generate_btn]["interactive"] is True
    assert max(shown[ui.mask_preview].size) <= masks.PREVIEW_MAX_SIDE and shown[ui.image_size] == (1200, 900)
    assert Image.open(shown[ui.mask_download]).getbbox() == (100, 100, 300, 300)  # the mask, at full size
    grown = show({**values, **page((100, 100, 300, 300)), ui.grow: 10})
    assert Image.open(grown[ui.mask_download]).getbbox() == (90, 90, 310, 310)
    busy = show({**values, **page((100, 100, 300, 300)), ui.busy: True})
    assert "Stop" in busy[ui.reason] and busy[ui.generate_btn]["interactive"] is False
    # An answer computed before this page's click and arriving after it: the server knows of the run.
    demo.studio.running["clicked"] = threading.Event()
    try:
        late = show({**values, **page((100, 100, 300, 300))}, SimpleNamespace(session_hash="clicked"))
    finally:
        del demo.studio.running["clicked"]
    assert late[ui.generate_btn]["interactive"] is False


def test_an_example_loads_its_picture_and_its_mask_on_the_canvas(demo):
    ui = demo.studio.ui
    out = handler(demo, "load_example")(0)
    example = demo.studio.examples[0]
    assert out[ui.prompt] == example["prompt"] and out[ui.mask_upload] is None
    assert out[ui.picture] == str(example["image"])
    assert out[ui.model] == example["model"] == "patchmatch"  # a removal, on the model made for it
    # The painter's value: the mask at the picture's size, opaque (the page shows its canvas see-through).
    layer = Image.open(io.BytesIO(imageops.decode_data_url(out[ui.painter], field="sketch")))
    assert layer.size == Image.open(example["image"]).size
    assert layer.getchannel("A").getbbox() == Image.open(example["mask"]).getbbox()
    assert set(np.unique(np.asarray(layer.getchannel("A")))) == {0, 255}
    mask, _ = masks.drawn_mask(layer, None)
    assert mask.getbbox() == Image.open(example["mask"]).getbbox()


def test_stop_ends_a_run_midway_and_keeps_what_was_made(demo, engine):
    ui, stop = demo.studio.ui, handler(demo, "stop")
    session = SimpleNamespace(session_hash="stopper")
    assert stop(session) == "Nothing is running."
    outputs, previews = [], threading.Event()

    def consume():
        for out in handler(demo, "inpaint")(
                **painted(photo(SIZE, SIZE), BOX), prompt="x", modelId="tiny-sd-1_5", numSamples=4,
                numInferenceSteps=150, strength=1.0, intermediateImages=True, seed=1, randomizeSeed=False,
                autoSize=False, width=64, height=64, state={}, request=session):
            outputs.append(out)
            if isinstance(out.get(ui.preview), str):  # a preview's file: it is denoising
                previews.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert previews.wait(timeout=600)
    assert "Stopping" in stop(session)
    worker.join(timeout=600)
    assert not worker.is_alive()
    page = merged(outputs)
    assert "Stopped" in page[ui.status] and page[ui.gallery] == [] and page[ui.params]["assetIds"] == []
    paths = [out[ui.preview] for out in outputs if isinstance(out.get(ui.preview), str)]
    steps_seen = {int(p.rsplit("-", 1)[1].split(".")[0]) for p in paths}
    assert max(steps_seen) < 150  # it never reached the end of the first micro-batch


def test_a_wide_flux_run_streams_its_previews(demo, engine, monkeypatch):
    # One micro-batch of 4 previews of a 2048x64 generation, side by side: past WebP's side before the bound.
    monkeypatch.setattr(engine, "max_batch", 4)  # as on a GPU (a CPU makes one sample a call)
    ui = demo.studio.ui
    outputs = stream(demo, "wide", **painted(photo(SIZE, SIZE), BOX), prompt="a red apple",
                     modelId="tiny-flux.1", numSamples=4, numInferenceSteps=2, seed=3, randomizeSeed=False,
                     autoSize=False, width=2048, height=64, intermediateImages=True, state={})
    page = merged(outputs)
    assert "Done" in page[ui.status] and len(page[ui.params]["assetIds"]) == 4
    previews = {out[ui.preview] for out in outputs if isinstance(out.get(ui.preview), str)}
    assert len(previews) == 2  # one per step
    for path in previews:
        with Image.open(path) as strip:
            assert strip.format == "WEBP" and strip.width <= device.WEBP_MAX_SIDE and strip.width > 4 * 256


def test_warnings_found_while_generating_reach_the_status_and_the_summary(demo, engine, monkeypatch):
    real_run = engine.run
    found = "prompt: truncated to the text encoder's 77 tokens"

    def run_(request, *args, **kwargs):
        yield from (Warned(found), Warned(found))  # reported twice, shown once
        yield from real_run(request, *args, **kwargs)

    monkeypatch.setattr(engine, "run", run_)
    ui = demo.studio.ui
    page = merged(stream(demo, "warned", **painted(photo(SIZE, SIZE), BOX), prompt="a red apple",
                         modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2, seed=1, randomizeSeed=False,
                         autoSize=False, width=64, height=64, state={}))
    assert "Done" in page[ui.status] and page[ui.status].count(f"⚠️ {found}") == 1
    assert page[ui.params]["warnings"].count(found) == 1 and len(page[ui.params]["assetIds"]) == 1


def test_a_prompt_longer_than_the_text_encoder_reads_is_warned_in_the_studio(demo):
    ui = demo.studio.ui
    page = merged(stream(demo, "long-prompt", **painted(photo(SIZE, SIZE), BOX), prompt="a" * 100,
                         modelId="tiny-sd-1_5", numSamples=2, numInferenceSteps=2, seed=1, randomizeSeed=False,
                         autoSize=False, width=64, height=64, state={}))
    truncated = [w for w in page[ui.params]["warnings"] if w.startswith("prompt is ") and "the rest was ignored" in w]
    assert len(truncated) == 1 and f"⚠️ {truncated[0]}" in page[ui.status] and "Done" in page[ui.status]


# ---- uploads: decoded once, through the project's guards -----------------------------------------



LABELS = {"image": "Picture", "mask": "Mask file", "sketch": "Painted mask"}  # the page's words for the fields


def guard_message(path, field: str) -> str:
    """What the studio answers for this file in `field`: the guard's own words, after the field's label."""
    with pytest.raises(RequestError) as caught:
        imageops.open_image(path.read_bytes(), field=field, min_side=imageops.MIN_SIDE if field == "image" else 1)
    return f"{LABELS[field]}: {caught.value.message}"


def component(demo, elem_id: str):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_picture_and_mask_upload_hand_files_over_undecoded(demo, files, monkeypatch):
    from gradio.data_classes import ImageData

    def decoded(*args, **kwargs):
        raise AssertionError("an upload was opened before the project's guards")

    monkeypatch.setattr(Image, "open", decoded)
    picture, mask_upload = component(demo, "inpaint-picture"), component(demo, "inpaint-mask-upload")
    huge = str(files / "huge.png")
    assert picture.preprocess(ImageData(path=huge)) == huge
    assert mask_upload.preprocess(ImageData(path=huge)) == huge
    # An API caller may send a data URL in place of a file: it is decoded as the contract decodes one.
    url = as_url(encoded(Image.new("L", (8, 8), 255)))
    assert mask_upload.preprocess(ImageData(url=url)) == url
    assert uploads.upload_bytes(url, field="mask") == encoded(Image.new("L", (8, 8), 255))


def test_huge_upload_is_refused_by_the_guard_undecoded(demo, files, decoded_sizes):
    # A 13300x13300 PNG took 17 s and 2.8 GB when it was decoded before the guards (its speed now:
    # `huge_picture_refusal` in bench/).
    huge, image, mask = str(files / "huge.png"), str(files / "image.png"), str(files / "mask.png")
    huge_url = as_url((files / "huge.png").read_bytes())
    cases = [(dict(image=huge, sketch=""), mask, guard_message(files / "huge.png", "image")),
             (dict(image=image, sketch=""), huge, guard_message(files / "huge.png", "mask")),
             (dict(image=image, sketch=huge_url), None, guard_message(files / "huge.png", "sketch"))]
    for picture, mask_file, expected in cases:
        def refuse(picture=picture, mask_file=mask_file):
            with pytest.raises(Exception) as caught:
                run(demo, picture, mask=mask_file)
            return caught.value
        refusal = refuse()
        assert type(refusal).__name__ == "Error" and refusal.message == expected
    # The previews shown beside the picture simply show nothing, and decode nothing either.
    ui = demo.studio.ui
    values = mask_inputs(ui, picture=huge)
    shown = handler(demo, "show_mask")(values)
    assert shown[ui.mask_preview] is None and shown[ui.image_size] is None
    shown = handler(demo, "show_mask")({**values, ui.picture: image, ui.mask_upload: huge})
    assert shown[ui.mask_preview] is None and "Paint over" in shown[ui.reason]
    shown = handler(demo, "show_mask")({**values, ui.picture: image, ui.painter: huge_url})
    assert shown[ui.mask_preview] is None and "Paint over" in shown[ui.reason]
    assert handler(demo, "follow_image")({ui.picture: huge, ui.model: "tiny-sd-1_5"})[ui.image_size] is None
    assert all(width * height <= imageops.MAX_PIXELS for width, height in decoded_sizes), decoded_sizes


@pytest.mark.parametrize("model_id, mode, crops", [("tiny-sd-1_5", "binary", 1), ("opencv-telea", "binary", 2),
                                                   ("tiny-sd-1_5", "soft", None)])
def test_the_mask_preview_draws_the_plan_of_the_run_it_previews(demo, model_id, mode, crops, monkeypatch):
    """Two 40 px marks 78 px apart: grown by SD 1.5's seam band their crops merge into one; a classical model takes
    the mask as drawn. The preview shows the engine's own plan of the run (its mask and its crops, outlined), and
    the run then generates exactly those crops."""
    ui, engine = demo.studio.ui, demo.studio.engine
    planned, generated = [], []
    real_plan, real_run = engine.plan, engine.run

    def plan(*args, **kwargs):
        planned.append(real_plan(*args, **kwargs))
        return planned[-1]

    def run_(request, *args, **kwargs):
        for event in real_run(request, *args, **kwargs):
            if isinstance(event, Regions):
                generated.append([region for region in event.regions])
            yield event

    monkeypatch.setattr(engine, "plan", plan)
    monkeypatch.setattr(engine, "run", run_)
    picture = photo(512, 384)
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    for box in ((100, 150, 140, 190), (218, 150, 258, 190)):
        layer.paste((255, 45, 85, 255), box)
    drawn = {"image": encoded(picture), "sketch": as_url(encoded(layer))}
    outlined = []
    monkeypatch.setattr(handlers, "draw_regions", lambda preview, boxes, scale: outlined.append(boxes) or preview)
    values = mask_inputs(ui, picture=drawn["image"], painter=drawn["sketch"], model=model_id, mask_mode=mode)
    shown = handler(demo, "show_mask")(values)
    assert shown[ui.mask_preview] is not None and shown[ui.image_size] == (512, 384)
    [preview] = planned
    assert outlined == [[region.box for region in preview.regions]]
    if crops is not None:
        assert len(preview.regions) == crops
    run(demo, drawn, modelId=model_id, maskMode=mode, width=None, height=None, autoSize=True)
    assert generated == [[region.to_json() for region in preview.regions]]
    seam = demo.studio.catalog.get(model_id).family.seam_px if mode == "binary" else 0
    assert preview.mask.getbbox() == (100 - seam, 150 - seam, 258 + seam, 190 + seam)  # the run's mask


def test_studio_events_decode_only_with_room_in_the_pixel_budget(demo, files, monkeypatch):
    """The preview, a mask file's import and a new picture reserve their pixels before decoding, as a REST request
    does: while the server decodes as much as it may, each says so and decodes nothing."""
    ui, budget = demo.studio.ui, demo.studio.engine.decoding
    monkeypatch.setattr(budget, "wait_s", 0.05)
    image, mask = str(files / "image.png"), str(files / "mask.png")
    values = mask_inputs(ui, picture=image, mask_upload=mask)
    with budget.hold(budget.capacity):
        shown = handler(demo, "show_mask")(values)
        assert shown[ui.mask_preview] is None and "busy decoding other large images" in shown[ui.reason]
        assert shown[ui.generate_btn]["interactive"] is False
        with pytest.raises(gr.Error, match="busy decoding other large images"):
            handler(demo, "import_mask")({ui.picture: image, ui.mask_upload: mask})
        assert handler(demo, "follow_image")({ui.picture: image, ui.model: "opencv-telea"})[ui.image_size] is None
    shown = handler(demo, "show_mask")(values)  # room again: the same change is drawn
    assert shown[ui.mask_preview] is not None and shown[ui.image_size] == (SIZE, SIZE)


def test_a_file_the_page_did_not_upload_is_refused_alike_whether_it_exists_or_not(demo, tmp_path):
    ui = demo.studio.ui
    secret = tmp_path / "secret.png"
    photo(SIZE, SIZE).save(secret)
    inside = uploads.upload_folder() / "x"
    # Outside the upload folder, through a link, or back out of it with `..`: all the same refusal.
    (tmp_path / "link").symlink_to(secret)
    named = [str(secret), str(tmp_path / "missing.png"), f"{inside}/../../{secret}", str(tmp_path / "link")]
    for path in named:
        with pytest.raises(RequestError) as refused:
            uploads.upload_bytes(path, field="image")
        assert refused.value.message == "is not a file this page uploaded: upload it again", path
        shown = handler(demo, "show_mask")(mask_inputs(ui, picture=path))
        assert shown[ui.image_size] is None and shown[ui.reason] == "Picture: is not a file this page uploaded: " \
                                                                   "upload it again"


def test_what_decoding_the_picture_lost_is_said_once(demo):
    deep = Image.fromarray((np.asarray(photo(SIZE, SIZE).convert("L"), dtype=np.uint16) * 257), "I;16")
    summary, _ = run(demo, {**painted(photo(SIZE, SIZE), BOX), "image": encoded(deep)}, modelId="opencv-telea")
    assert [w for w in summary["warnings"] if "16 bits" in w] == ["image is 16 bits per channel; it was reduced to 8 bits"]


def test_a_rotated_jpeg_is_repainted_as_it_is_shown(demo, engine, files):
    # The mask is painted on the picture as shown (64 wide, 128 high), as the page and the mask file are.
    layer = Image.new("RGBA", (64, 128), (0, 0, 0, 0))
    layer.paste((255, 45, 85, 255), (16, 72, 48, 112))
    picture = {"image": str(files / "rotated.jpg"), "sketch": as_url(encoded(layer))}
    summary, _ = run(demo, picture, modelId="opencv-telea", width=None, height=None, autoSize=True)
    shown = ImageOps.exif_transpose(Image.open(files / "rotated.jpg")).convert("RGB")
    assert engine.store.open_image(summary["input"]["image"]).tobytes() == shown.tobytes()
    result = np.asarray(engine.store.open_image(summary["assetIds"][0]).convert("RGB"))
    assert result.shape == (128, 64, 3)
    assert np.array_equal(result[:56], np.asarray(shown)[:56])  # far from the mask: untouched


# ---- the API through gradio_client ---------------------------------------------------------------

def test_only_the_generation_is_public_with_the_contracts_parameter_names(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/inpaint", "/segment"} and not api["unnamed_endpoints"]
    names = {p["parameter_name"] for p in api["named_endpoints"]["/inpaint"]["parameters"]}
    assert {"image", "mask", "prompt", "negativePrompt", "modelId", "modelEpoch", "baseModelId", "seed",
            "strength", "guidance", "numInferenceSteps", "numSamples", "width", "height", "scheduler",
            "intermediateImages", "concepts", "disableMerging", "negativePromptStrength"} <= names


def test_client_gets_images_whose_seeds_reproduce(client, files):
    image = handle_file(str(files / "image.png"))
    # colorMatch "none": with the default "mean-std" a sample made in a batch of 2 differs by 1 level from the
    # same seed made alone (the matching's rounding, outside this module: reported, not hidden here).
    common = dict(image=image, mask=handle_file(str(files / "mask.png")), prompt="a red apple",
                  modelId="tiny-sd-1_5", numInferenceSteps=3, randomizeSeed=False, width=64, height=64,
                  colorMatch="none", api_name="/inpaint")
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
    image = handle_file(str(files / "image.png"))
    *_, summary, _ = client.predict(image=image, mask=handle_file(str(files / "mask.png")), prompt="an apple",
                                    modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2, api_name="/inpaint")
    used = summary["input"]
    assert (used["guidance"], used["scheduler"], used["strength"]) == (7.5, "PNDMScheduler", 0.75)
    assert (used["width"], used["height"]) == (256, 256)  # the test model's native area around a square mask
    *_, summary, _ = client.predict(image=image, mask=handle_file(str(files / "mask.png")), prompt="an apple",
                                    modelId="opencv-telea", api_name="/inpaint")
    # A model that reads no prompt gets none from the studio: nothing to warn about.
    assert summary["input"]["numSamples"] == 1 and summary["input"]["prompt"] == "" and summary["warnings"] == []


def test_client_huge_upload_is_refused_by_the_guard_undecoded(client, files, decoded_sizes):
    args = dict(prompt="an apple", modelId="tiny-sd-1_5", numSamples=1, numInferenceSteps=2, randomizeSeed=False,
                width=64, height=64, api_name="/inpaint")
    for background, mask, field in (("huge.png", "mask.png", "image"), ("image.png", "huge.png", "mask")):
        def refuse(background=background, mask=mask):
            with pytest.raises(AppError) as caught:
                client.predict(image=handle_file(str(files / background)), mask=handle_file(str(files / mask)),
                               **args)
            return caught.value
        assert str(refuse()) == guard_message(files / "huge.png", field)
    assert all(width * height <= imageops.MAX_PIXELS for width, height in decoded_sizes), decoded_sizes


def test_client_gets_an_error_with_the_pages_words_when_the_generation_fails(client, files, engine, monkeypatch):
    out_of_paint(engine, monkeypatch)
    with pytest.raises(AppError) as caught:
        client.predict(image=handle_file(str(files / "image.png")), mask=handle_file(str(files / "mask.png")),
                       modelId="opencv-telea", api_name="/inpaint")
    assert str(caught.value) == "generation failed: RuntimeError: out of paint"


def test_client_rotated_jpeg_is_repainted_as_it_is_shown(client, files):
    image = handle_file(str(files / "rotated.jpg"))
    gallery, _, status, summary, _ = client.predict(image=image, mask=handle_file(str(files / "rotated-mask.png")),
                                                    prompt="an apple", modelId="opencv-telea", api_name="/inpaint")
    assert "Done" in status and not any("resized" in w for w in summary["warnings"])
    result = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(files / "rotated.jpg")).convert("RGB"))
    assert result.shape == (128, 64, 3)
    assert np.array_equal(result[:56], shown[:56])  # far from the mask: untouched
    assert not np.array_equal(result[72:112, 16:48], shown[72:112, 16:48])  # the masked area was repainted


@pytest.mark.parametrize("fields, message", [
    (dict(prompt=""), "Prompt: must not be empty or blank for tiny-sd-1_5: it paints what the prompt says"),
    (dict(mask="empty-mask.png"), "Mask: nothing is painted"),
    (dict(modelId="nope"), "Model: unknown model id 'nope'"),
    (dict(modelId="tiny-flux.1", guidance=15), "Guidance: 15.0 is outside"),
    (dict(width=100, height=64), "Width: 100 must be a multiple of 8"),
    (dict(scheduler="FlowMatchEulerDiscreteScheduler"), "Scheduler: FlowMatchEulerDiscreteScheduler cannot drive"),
    (dict(modelId="tiny-sd-1_5-lora", modelEpoch="epoch-9"), "Epoch: epoch 'epoch-9'"),
    (dict(concepts={"headers": fields.CONCEPT_HEADERS, "data": [["tiny-sd-1_5-lora", 5, ""]]}),
     "Concepts, row 1, scale"),
    (dict(seed=-1), "Seed: -1 must be within"),
])
def test_bad_input_reaches_the_client_with_the_contract_message(client, files, fields, message):
    fields = dict(fields)
    mask = files / fields.pop("mask", "mask.png")
    image = handle_file(str(files / "image.png"))
    args = dict(image=image, mask=handle_file(str(mask)), prompt="an apple", modelId="tiny-sd-1_5", numSamples=1,
                numInferenceSteps=2, randomizeSeed=False, width=64, height=64)
    args.update(fields)
    with pytest.raises(AppError) as caught:
        client.predict(**args, api_name="/inpaint")
    assert str(caught.value).startswith(message)


def test_studio_runs_decode_under_the_engines_pixel_budget(demo, engine):
    stored = len(engine.store.list(include_hidden=True, limit=1000))
    with engine.decoding.hold(engine.decoding.capacity):  # REST requests are decoding all the budget allows
        with pytest.raises(gr.Error, match="the server is busy"):
            run(demo, painted(photo(96, 96), (20, 20, 60, 60)), modelId="opencv-telea")
    assert len(engine.store.list(include_hidden=True, limit=1000)) == stored  # refused before storing anything


def test_before_and_after_start_where_the_change_is_at_one_scale(demo, tmp_path):
    before = photo(400, 200)
    after = before.copy()
    after.paste((255, 0, 0), (300, 50, 360, 120))  # the change, right of the middle
    before.save(tmp_path / "before.png")
    after.save(tmp_path / "after.png")
    shown, divider = handlers.comparison(demo.studio, str(tmp_path / "before.png"), str(tmp_path / "after.png"), None)
    assert shown == str(tmp_path / "before.png") and 70 <= divider <= 85  # across the red square (75-90% wide)
    # An extended picture: its input on the grown canvas, the result's size, not stretched over it.
    grown = Image.new("RGB", (480, 200), (10, 200, 10))
    grown.paste(before, (80, 0))
    grown.save(tmp_path / "grown.png")
    shown, divider = handlers.comparison(demo.studio, str(tmp_path / "before.png"), str(tmp_path / "grown.png"),
                                         {"left": 80, "right": 0, "top": 0, "bottom": 0})
    with Image.open(shown) as canvas:
        assert canvas.size == (480, 200) and canvas.getpixel((200, 100)) == before.getpixel((120, 100))
    assert divider < 15  # the new strip on the left
