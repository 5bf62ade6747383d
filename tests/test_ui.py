"""The studio's handlers on the real engine with tiny models, and its API through gradio_client."""

import socket
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from inpaint import imageops, ui
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.errors import RequestError
from inpaint.generate import Engine
from tests.images import photo, rect_mask

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


def editor_value(image: Image.Image, box=None) -> dict:
    """What the ImageEditor hands the handler: the background plus one RGBA layer painted in `box`."""
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    if box:
        layer.paste((255, 45, 85, 255), box)
    return {"background": image.convert("RGBA"), "layers": [layer], "composite": image.convert("RGBA")}


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
    assert imageops.mask_from(rgba).getbbox() == (8, 8, 16, 16)
    assert imageops.mask_from(rect_mask(32, 32, (1, 2, 3, 4)).convert("RGB")).getbbox() == (1, 2, 3, 4)


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
    assert caught.value.message == "prompt: must not be empty or blank"
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
    assert summary["input"]["numSamples"] == 1 and any("classical" in w for w in summary["warnings"])


@pytest.mark.parametrize("fields, message", [
    (dict(prompt=""), "prompt: must not be empty or blank"),
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
