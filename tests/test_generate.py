"""The generation flow end to end on the real store: classical models, then the tiny diffusion models."""

import base64
import io
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.errors import JobCanceled, RequestError
from inpaint.events import Failed, Preview, Regions, Result, Waiting, Warned, results
from inpaint.families.diffusion import Diffusers
from inpaint import regions
from inpaint.generate import Engine
from inpaint.jobs import Job, record, run_job
from inpaint.pipelines import PipelineCache
from inpaint.schema import SEED_MAX
from tests.support.catalog import one_model_per_family, tiny_diffusion_ids
from tests.support.images import cmyk_profile, data_url, photo, rect_mask, srgb_profile

CATALOG = Catalog.load()


@pytest.fixture
def engine(tmp_path, models_dir):
    return Engine(CATALOG, AssetStore(tmp_path / "data"), PipelineCache(CATALOG, models_dir, max_pipelines=3))


def body(image, mask, **fields):
    return {"modelId": "opencv-telea", "prompt": "fill", "image": data_url(image), "mask": data_url(mask), **fields}


def pixels(engine: Engine, asset) -> np.ndarray:
    return np.asarray(engine.store.open_image(asset.id).convert("RGB"))


def run(engine: Engine, request_body: dict):
    request = engine.prepare(request_body)
    return request, results(engine.run(request))


# -- classical models: the merge semantics hold without any weights ---------------------------------

@pytest.mark.parametrize("model_id", ["opencv-telea", "opencv-ns"])
def test_merge_keeps_every_pixel_outside_the_mask_bit_for_bit(engine, model_id):
    image = photo(1024, 768)
    request, [result] = run(engine, body(image, rect_mask(1024, 768, (400, 300, 520, 380)), modelId=model_id))
    out_np, in_np = pixels(engine, result), np.asarray(image)
    stored_mask_np = np.asarray(engine.store.open_image(request.mask_asset_id)) > 0
    assert out_np.shape == in_np.shape
    assert np.array_equal(out_np[~stored_mask_np], in_np[~stored_mask_np])
    # The painted rectangle itself was repainted (inside it the feathered alpha is full).
    assert not np.array_equal(out_np[320:360, 420:500], in_np[320:360, 420:500])


def test_whole_image_mode_returns_width_by_height(engine):
    image = photo(300, 200)
    request, [result] = run(engine, body(image, rect_mask(300, 200, (100, 50, 200, 150)), disableMerging=True,
                                         width=256, height=128))
    assert (result.width, result.height) == (256, 128) == (request.width, request.height)
    request, [result] = run(engine, body(image, rect_mask(300, 200, (100, 50, 200, 150)), disableMerging=True))
    assert (result.width, result.height) == (296, 200)  # the input size rounded down to a multiple of 8


def test_same_request_gives_identical_bytes(engine):
    image, mask = photo(256, 256, seed=3), rect_mask(256, 256, (64, 64, 160, 160))
    _, [first] = run(engine, body(image, mask))
    _, [second] = run(engine, body(image, mask))
    assert engine.store.file_path(first.id).read_bytes() == engine.store.file_path(second.id).read_bytes()


def test_results_are_children_of_the_stored_input(engine):
    image, mask = photo(128, 128), rect_mask(128, 128, (32, 32, 96, 96))
    parent = engine.store.put(photo(64, 64))
    request, [result] = run(engine, body(image, mask, parentId=parent.id, hide=True))
    stored_input = engine.store.get(request.image_asset_id)
    assert stored_input.parent_id == parent.id and stored_input.hidden
    assert result.parent_id == stored_input.id and result.kind == "result" and result.seed == request.seed
    assert np.array_equal(np.asarray(engine.store.open_image(stored_input.id)), np.asarray(image))


def test_asset_id_inputs_and_aliases(engine):
    image, mask = photo(128, 128), rect_mask(128, 128, (32, 32, 96, 96))
    image_asset, mask_asset = engine.store.put(image), engine.store.put(mask.convert("RGB"))
    by_alias = engine.prepare({"modelId": "opencv-telea", "prompt": "x", "imageId": image_asset.id,
                               "maskId": mask_asset.id})
    assert by_alias.image_asset_id == image_asset.id
    other = engine.store.put(photo(128, 128, seed=9))
    both = engine.prepare({"modelId": "opencv-telea", "prompt": "x", "image": other.id, "imageId": image_asset.id,
                           "maskId": mask_asset.id})
    assert both.image_asset_id == other.id  # `image` wins over the deprecated `imageId`
    # `mask` wins over `maskId`: an all-black maskId would be rejected as empty.
    black = engine.store.put(Image.new("RGB", (128, 128)))
    chosen = engine.prepare({"modelId": "opencv-telea", "prompt": "x", "image": other.id, "maskId": black.id,
                             "mask": data_url(mask)})
    assert np.asarray(engine.store.open_image(chosen.mask_asset_id)).max() == 255


@pytest.mark.parametrize("fields, field", [
    ({"image": "data:image/png;base64,!!!notbase64"}, "image"),
    ({"image": "data:image/png;base64," + "aGVsbG8gd29ybGQ="}, "image"),  # "hello world"
    ({"image": data_url(photo(1, 1))}, "image"),
    ({"mask": data_url(Image.new("L", (128, 128), 0))}, "mask"),
    ({"mask": data_url(Image.new("L", (200, 100), 255))}, "mask"),
    ({"modelId": "no-such-model"}, "modelId"),
    ({"image": "asset_../../etc/passwd"}, "image"),
    ({"maskId": "../../etc/passwd", "mask": None}, "maskId"),
    ({"parentId": "asset_AAAAAAAAAAAAAAAAAAAAAA"}, "parentId"),
])
def test_bad_inputs_name_the_field_and_store_nothing(engine, fields, field):
    request_body = {k: v for k, v in {**body(photo(128, 128), rect_mask(128, 128, (10, 10, 50, 50))),
                                      **fields}.items() if v is not None}
    with pytest.raises(RequestError) as caught:
        engine.prepare(request_body)
    assert caught.value.field == field and 400 <= caught.value.status < 500
    assert engine.store.list(include_hidden=True) == []


def test_mask_of_another_size_with_the_same_aspect_is_resized_with_a_warning(engine):
    request = engine.prepare(body(photo(256, 128), rect_mask(128, 64, (10, 10, 50, 50))))
    assert any("128x64" in warning for warning in request.warnings)


def test_a_classical_model_computes_and_stores_one_result_for_many_samples(engine):
    request, assets = run(engine, body(photo(128, 96), rect_mask(128, 96, (40, 30, 80, 60)), numSamples=3, seed=7))
    assert request.num_samples == 1 and [asset.seed for asset in assets] == [7]
    assert "opencv-telea is deterministic: one result is stored for the 3 samples asked" in request.warnings
    assert [a.id for a in engine.store.list(include_hidden=True) if a.kind == "result"] == [assets[0].id]


@pytest.mark.parametrize("fields, field, needle", [
    ({"disableMerging": True, "width": 8192, "height": 8192}, "width", "8192x8192 px = 67.1 MP"),
    ({"modelId": "opencv-ns", "disableMerging": True, "width": 8, "height": 64}, "width", "[64, 8192]"),
    ({"seed": SEED_MAX - 1, "numSamples": 3, "modelId": "tiny-sd-1_5"}, "seed", f"at most {SEED_MAX - 2}"),
])
def test_sizes_and_seeds_over_the_budget_are_refused_before_anything_is_stored(engine, fields, field, needle):
    with pytest.raises(RequestError) as caught:
        engine.prepare(body(photo(64, 64), rect_mask(64, 64, (16, 16, 48, 48)), **fields))
    assert caught.value.field == field and caught.value.status == 400 and needle in caught.value.message
    assert engine.store.list(include_hidden=True) == []


def bbox(mask_np: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask_np)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def almost_opaque_mask(width: int, height: int, box: tuple[int, int, int, int], alpha: int) -> Image.Image:
    """Opaque, white in `box`, and one pixel far from it at `alpha`."""
    mask = rect_mask(width, height, box).convert("RGBA")
    mask.putpixel((width - 1, height - 1), (0, 0, 0, alpha))
    return mask


@pytest.mark.parametrize("alpha", [254, 127, 0])
def test_a_mask_whose_alpha_marks_nothing_is_read_from_its_luminance_with_a_warning(engine, alpha):
    image, mask = photo(256, 192), almost_opaque_mask(256, 192, (100, 80, 140, 120), alpha)
    for fields in ({"mask": data_url(mask)}, {"mask": None, "maskId": engine.store.put(mask).id}):
        request_body = {k: v for k, v in {**body(image, mask), **fields}.items() if v is not None}
        request, [result] = run(engine, request_body)
        stored_mask_np = np.asarray(engine.store.open_image(request.mask_asset_id))
        # The painted rectangle as drawn (a classical model takes the mask as drawn): not the whole image.
        assert bbox(stored_mask_np) == (100, 80, 140, 120)
        field = "mask" if fields.get("mask") else "maskId"
        assert any(w.startswith(f"{field}'s alpha channel was ignored") for w in request.warnings), request.warnings
        assert np.array_equal(pixels(engine, result)[:40], np.asarray(image)[:40])


def test_a_16_bit_image_says_it_was_reduced(engine):
    rgb_np = (np.asarray(photo(96, 64), dtype=np.uint16) * 257).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in rgb_np)  # unfiltered rows: Pillow writes no 16-bit RGB

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 96, 64, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    request_body = {**body(photo(96, 64), rect_mask(96, 64, (30, 20, 60, 40))),
                    "image": "data:image/png;base64," + base64.b64encode(png).decode()}
    request = engine.prepare(request_body)
    assert "image is 16 bits per channel; it was reduced to 8 bits" in request.warnings
    assert np.array_equal(np.asarray(engine.store.open_image(request.image_asset_id)), np.asarray(photo(96, 64)))
    assert not any("16 bits" in w for w in engine.prepare(body(photo(96, 64), rect_mask(96, 64, (30, 20, 60, 40))))
                   .warnings)


def profile_of(path) -> bytes | None:
    with Image.open(path) as img:
        return img.info.get("icc_profile")


def test_results_carry_the_input_colour_profile_in_both_files(engine):
    icc = srgb_profile()
    image, mask = photo(128, 96), rect_mask(128, 96, (40, 30, 80, 60))
    request, [result] = run(engine, {**body(image, mask), "image": data_url(image, icc_profile=icc)})
    for asset_id in (request.image_asset_id, result.id):
        assert profile_of(engine.store.file_path(asset_id)) == icc
        assert profile_of(engine.store.file_path(asset_id, original=False)) == icc  # the WebP rendition
    # From the stored input by id, in whole-image mode too.
    _, [again] = run(engine, {**body(image, mask, disableMerging=True), "image": request.image_asset_id})
    assert profile_of(engine.store.file_path(again.id)) == icc
    _, [untagged] = run(engine, body(image, mask))
    assert profile_of(engine.store.file_path(untagged.id)) is None


def test_a_cmyk_jpeg_is_converted_through_its_profile_and_the_result_carries_no_cmyk_profile(engine):
    cmyk = Image.new("CMYK", (128, 96), (0, 255, 255, 0))
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=95, icc_profile=cmyk_profile((200, 30, 40)))
    jpeg = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    request, [result] = run(engine, {**body(photo(128, 96), rect_mask(128, 96, (40, 30, 80, 60))), "image": jpeg})
    for asset_id in (request.image_asset_id, result.id):
        for original in (True, False):
            assert profile_of(engine.store.file_path(asset_id, original=original)) is None
    assert np.abs(pixels(engine, result).astype(int) - [200, 30, 40]).max() <= 6


# -- tiny diffusion models ----------------------------------------------------------------------------

def tiny_body(model_id="tiny-sd-1_5", size=(96, 80), **fields):
    image, mask = photo(*size, seed=1), rect_mask(*size, (24, 16, 64, 56))
    fields = {"numInferenceSteps": 2, "numSamples": 1, "seed": 11, "width": 64, "height": 64, **fields}
    return body(image, mask, modelId=model_id, **fields)


@pytest.mark.parametrize("model_id", tiny_diffusion_ids())
def test_every_family_merges_bit_exact_outside_the_mask(engine, model_id):
    extra = {"width": 512, "height": 512} if model_id == "tiny-sd-xl" else {}
    request, [result] = run(engine, tiny_body(model_id, **extra))
    out_np, in_np = pixels(engine, result), np.asarray(engine.store.open_image(request.image_asset_id))
    outside_np = np.asarray(engine.store.open_image(request.mask_asset_id)) == 0
    assert np.array_equal(out_np[outside_np], in_np[outside_np])
    assert not np.array_equal(out_np[~outside_np], in_np[~outside_np])


@pytest.mark.parametrize("model_id, fields, expected", [
    # The tiny CLIP tokenizer has no merges: a 100-letter word is 100 tokens, plus start and end.
    ("tiny-sd-1_5", {"prompt": "a" * 100}, ["prompt is 102 tokens; the text encoder reads the first 77, "
                                           "the rest was ignored"]),
    ("tiny-sd-1_5", {"prompt": "a" * 75, "negativePrompt": "b" * 80},
     ["negativePrompt is 82 tokens; the text encoder reads the first 77, the rest was ignored"]),
    ("tiny-sd-1_5", {"prompt": "a" * 75}, []),  # 77 tokens: all read
    # Flux reads the prompt with T5 (512 tokens); its tiny tokenizer reads a word start, a piece per character
    # and the end.
    ("tiny-flux.1", {"prompt": "a" * 600}, ["prompt is 602 tokens; the text encoder reads the first 512, "
                                           "the rest was ignored"]),
    ("tiny-flux.1", {"prompt": "a" * 300}, []),  # over CLIP's 77, but T5 reads it whole
])
def test_a_prompt_longer_than_the_text_encoder_reads_is_reported(engine, model_id, fields, expected):
    request = engine.prepare(tiny_body(model_id, **fields))
    events = list(engine.run(request))
    results(events)
    assert [event.message for event in events if isinstance(event, Warned)] == expected


def test_a_job_keeps_the_warnings_of_its_request_and_of_its_generation(engine):
    request = engine.prepare(tiny_body(prompt="a" * 100, negativePrompt="blurry", guidance=0.5))
    saved = []
    job = run_job(engine, Job(request), on_change=lambda job, durable: saved.append(record(job)))
    warnings = record(job)["metadata"]["warnings"]
    assert job.status == "success" and warnings[:len(request.warnings)] == list(request.warnings)
    assert any("guidance < 1" in w for w in warnings)
    assert warnings[-1] == "prompt is 102 tokens; the text encoder reads the first 77, the rest was ignored"
    assert saved[-1]["metadata"]["warnings"] == warnings


def test_same_request_twice_gives_identical_bytes(engine):
    _, [first] = run(engine, tiny_body())
    _, [second] = run(engine, tiny_body())
    assert engine.store.file_path(first.id).read_bytes() == engine.store.file_path(second.id).read_bytes()


@pytest.mark.parametrize("model_id", tiny_diffusion_ids())
def test_sample_i_of_a_batch_equals_a_single_run_with_seed_plus_i(engine, model_id):
    # Without colour matching: its gain may scale the batch's one-level numeric difference (tests/test_seams.py).
    size = {"width": 512, "height": 512, "colorMatch": "none"} if model_id == "tiny-sd-xl" else {"colorMatch": "none"}
    _, batch = run(engine, tiny_body(model_id, numSamples=3, seed=100, **size))
    _, [alone] = run(engine, tiny_body(model_id, numSamples=1, seed=102, **size))
    assert [asset.seed for asset in batch] == [100, 101, 102]
    assert np.abs(pixels(engine, batch[2]).astype(int) - pixels(engine, alone)).max() <= 1
    assert not np.array_equal(pixels(engine, batch[0]), pixels(engine, batch[1]))


@pytest.mark.parametrize("fields", [
    {"strength": 1.0}, {"guidance": 1.5}, {"negativePrompt": "blurry"}, {"numInferenceSteps": 3},
    {"scheduler": "EulerAncestralDiscreteScheduler"}, {"prompt": "another prompt"},
])
def test_each_diffusion_field_changes_the_output(engine, fields):
    _, [reference] = run(engine, tiny_body())
    _, [changed] = run(engine, tiny_body(**fields))
    assert not np.array_equal(pixels(engine, reference), pixels(engine, changed))


def test_concepts_scale_zero_is_the_bare_model_and_the_next_request_is_bare_again(engine):
    _, [bare] = run(engine, tiny_body())
    _, [zero] = run(engine, tiny_body(concepts=[{"modelId": "tiny-sd-1_5-lora", "scale": 0}]))
    _, [one] = run(engine, tiny_body(concepts=[{"modelId": "tiny-sd-1_5-lora", "scale": 1}]))
    _, [after] = run(engine, tiny_body())
    assert np.array_equal(pixels(engine, bare), pixels(engine, zero))
    assert not np.array_equal(pixels(engine, bare), pixels(engine, one))
    assert np.array_equal(pixels(engine, bare), pixels(engine, after))


def test_lora_epochs_differ(engine):
    _, [first] = run(engine, tiny_body("tiny-sd-1_5-lora", modelEpoch="epoch-1"))
    _, [second] = run(engine, tiny_body("tiny-sd-1_5-lora", modelEpoch="epoch-2"))
    assert not np.array_equal(pixels(engine, first), pixels(engine, second))


def test_previews_arrive_every_step_and_cancel_stops_within_one_step(engine, monkeypatch):
    monkeypatch.setattr(engine, "max_batch", 2)  # both samples in one pipeline call: a preview shows each
    steps = []
    cancel = threading.Event()
    request = engine.prepare(tiny_body(numInferenceSteps=8, intermediateImages=True, numSamples=2))
    for event in engine.run(request, cancel):
        if isinstance(event, Preview):
            steps.append(event.step)
            assert len(event.images) == 2 and all(isinstance(p, Image.Image) for p in event.images)
            if event.step == 2:
                cancel.set()
    assert event == Failed("canceled", "stopped")
    # The generation checks the token after each step: it may have begun step 3 when the token was set.
    assert steps in ([1, 2], [1, 2, 3])
    assert engine.store.list(include_hidden=True, job_id=None)  # the inputs are still there


def test_one_diffusion_run_holds_the_device_and_one_stopped_while_waiting_never_starts(engine):
    waiting = engine.prepare(tiny_body(numSamples=1))
    cancel, outcome = threading.Event(), []

    def generate():
        try:
            outcome.append(results(engine.run(waiting, cancel)))
        except JobCanceled as exc:
            outcome.append(exc)

    with engine.device_lock:  # a generation from elsewhere (the studio, a REST job) runs
        worker = threading.Thread(target=generate)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not outcome  # it waits for the device
        # A classical model needs no device: it runs meanwhile.
        _, [result] = run(engine, body(photo(64, 64), rect_mask(64, 64, (16, 16, 48, 48))))
        cancel.set()  # Stop: it gives up waiting at once, while the other generation still runs
        worker.join(timeout=10)
        assert not worker.is_alive() and isinstance(outcome[0], JobCanceled)
    assert [a.id for a in engine.store.list(include_hidden=True) if a.kind == "result"] == [result.id]


def test_the_crops_are_planned_once_when_the_request_is_prepared(engine, monkeypatch):
    planned = []
    plan = regions.plan
    monkeypatch.setattr(regions, "plan", lambda *args, **kwargs: planned.append(plan(*args, **kwargs)) or planned[-1])
    mask = rect_mask(400, 300, (8, 8, 24, 24))
    mask.paste(255, (360, 260, 390, 290))  # two marks far apart: two crops
    request = engine.prepare(body(photo(400, 300), mask))
    assert len(planned) == 1 and len(request.regions) == 2
    events = list(engine.run(request))
    assert len(planned) == 1  # the run follows the request's plan
    assert next(event.regions for event in events if isinstance(event, Regions)) == tuple(
        region.to_json() for region in request.regions)


def test_runs_one_after_another_reuse_a_thread_and_runs_at_once_each_have_one(engine, monkeypatch):
    # A new thread per run would pay torch's per-thread setup on every run (threads.py); one run waiting for
    # the device must still never hold up another.
    threads, generate = [], engine._generate

    def recorded(*args):
        threads.append(threading.current_thread())
        return generate(*args)

    monkeypatch.setattr(engine, "_generate", recorded)
    request_body = body(photo(64, 64), rect_mask(64, 64, (16, 16, 48, 48)))
    for _ in range(3):
        run(engine, request_body)
    assert threads[0] is threads[1] is threads[2] and threads[0] is not threading.current_thread()
    assert threads[0].daemon  # a call that cannot be interrupted must not hold up the process's exit

    events = []
    with engine.device_lock:  # a diffusion run waits for the device on the kept thread...
        waiting = engine.prepare(tiny_body(numSamples=1))
        consumer = threading.Thread(target=lambda: events.extend(engine.run(waiting)))
        consumer.start()
        while len(threads) < 4:
            consumer.join(timeout=0.01)
        run(engine, request_body)  # ...while a classical run gets a thread of its own
        assert threads[3] is threads[0] and threads[4] is not threads[0]
    consumer.join()
    assert isinstance(events[0], Waiting) and any(isinstance(event, Result) for event in events)


def test_out_of_memory_halves_the_batch_and_keeps_the_results(engine, monkeypatch):
    engine.max_batch = 4
    calls = []
    real = Diffusers.run

    def flaky(self, model, request, region, mask, seeds, on_step):
        calls.append(len(seeds))
        if len(seeds) > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(self, model, request, region, mask, seeds, on_step)

    monkeypatch.setattr(Diffusers, "run", flaky)
    request, assets = run(engine, tiny_body(numSamples=3))
    assert [asset.seed for asset in assets] == [11, 12, 13]
    assert calls == [3, 2, 1, 1, 1]


def test_a_failure_mid_batch_keeps_the_samples_already_stored(engine, monkeypatch):
    engine.max_batch = 1
    real = Diffusers.run

    def failing_third(self, model, request, region, mask, seeds, on_step):
        if seeds == [13]:
            raise RuntimeError("simulated failure")
        return real(self, model, request, region, mask, seeds, on_step)

    monkeypatch.setattr(Diffusers, "run", failing_third)
    events = list(engine.run(engine.prepare(tiny_body(numSamples=4))))
    assert events[-1] == Failed("error", "generation failed: RuntimeError: simulated failure")
    stored = [event.asset for event in events if isinstance(event, Result)]
    assert [asset.seed for asset in stored] == [11, 12]
    assert all(engine.store.exists(asset.id) for asset in stored)


@pytest.mark.parametrize("model_id, flag", [("opencv-telea", "INPAINT_TELEA"), ("opencv-ns", "INPAINT_NS")])
def test_a_classical_result_is_opencvs_own_output_on_the_mask_as_drawn(engine, model_id, flag):
    image = photo(640, 480, seed=3)
    # An ellipse with an anti-aliased edge, as a brush draws it: the contract reads grey >= 128 as repaint.
    drawn = Image.new("L", (1280, 960), 0)
    ImageDraw.Draw(drawn).ellipse((500, 380, 760, 600), fill=255)
    drawn = drawn.resize((640, 480), Image.Resampling.LANCZOS)
    request, [result] = run(engine, body(image, drawn, modelId=model_id))
    as_drawn_np = (np.asarray(drawn) >= 128).astype(np.uint8) * 255
    # No grow and no feather for classical models: the stored mask is the drawn one.
    assert np.array_equal(np.asarray(engine.store.open_image(request.mask_asset_id)), as_drawn_np)
    bgr_np = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    expected_np = cv2.cvtColor(cv2.inpaint(bgr_np, as_drawn_np, 3, getattr(cv2, flag)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(pixels(engine, result), expected_np)


# -- the plan (a dry run) is what the job does ---------------------------------------------------------------

def two_marks(width: int, height: int) -> Image.Image:
    """Two 40 px marks 78 px apart: separate as drawn, one region once a diffusion family grows the mask."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (60, 60, 100, 100))
    mask.paste(255, (178, 60, 218, 100))
    return mask


@pytest.mark.parametrize("model_id", one_model_per_family())
@pytest.mark.parametrize("case", ["binary", "soft", "outpaint", "whole image"])
def test_the_plan_is_what_the_job_generates_and_stores_nothing(tmp_path, pipeline_cache, model_id, case):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"), pipeline_cache)  # the session's loaded models
    image = photo(320, 192)
    mask = two_marks(*image.size)
    fields = {"binary": {}, "soft": {"maskMode": "soft"}, "whole image": {"disableMerging": True},
              "outpaint": {"outpaint": {"left": 0, "right": 64, "top": 0, "bottom": 0}}}[case]
    if case == "soft":
        mask = mask.filter(ImageFilter.GaussianBlur(6))
    entry = CATALOG.get(model_id)
    # Diffusion at the smallest size its family takes (the regions are planned for any size alike); the others
    # at the size they choose themselves.
    small = max(64, entry.size_range.low)
    sizes = {"width": small, "height": small} if entry.family.denoises else {}
    request_body = body(image, mask, modelId=model_id, numSamples=2, numInferenceSteps=2, seed=5, **sizes, **fields)
    plan = engine.plan(request_body)
    assert engine.store.list(include_hidden=True) == []  # nothing stored

    request = engine.prepare(request_body)
    events = engine.run(request)
    reported = next(event.regions for event in events if isinstance(event, Regions))  # before the first sample
    events.close()  # the regions are all this compares: the run stops within a step
    assert [region.to_json() for region in plan.regions] == list(reported)
    planned = plan.to_json()
    assert planned["input"] == {k: v for k, v in request.to_json().items() if k not in ("image", "maskId")}
    assert planned["seeds"] == request.seeds and planned["seeds"][0] == 5 and planned["gpuSeconds"] >= 1
