"""The request schema: every field's bounds, and the defaults and rules of each model type."""

import pytest

from inpaint.catalog import Catalog
from inpaint.errors import RequestError
from inpaint.imageops import MAX_PIXELS
from inpaint.schema import SEED_MAX, parse_request, resolve

CATALOG = Catalog.load()
BASE = {"modelId": "tiny-sd-1_5", "prompt": "a red door", "image": "asset_x", "maskId": "asset_y"}


def resolved(image_size=(1024, 768), region_size=(300, 200), **fields):
    body = {**BASE, **fields}
    return resolve(parse_request(body), CATALOG, image_size=image_size, region_size=region_size,
                   image_asset_id="asset_x", mask_asset_id="asset_y", warnings=[])


def rejected(field: str, **fields) -> str:
    with pytest.raises(RequestError) as caught:
        resolved(**fields)
    assert caught.value.field == field, caught.value
    assert caught.value.status == 400
    return caught.value.message


@pytest.mark.parametrize("field, low, high, bad_low, bad_high", [
    ("strength", 0.01, 1.0, 0.0, 1.01),
    ("numInferenceSteps", 1, 150, 0, 151),
    ("numSamples", 1, 128, 0, 129),
    ("negativePromptStrength", 0, 10, -0.1, 10.1),
    ("seed", 0, SEED_MAX, -1, SEED_MAX + 1),
])
def test_numeric_bounds_are_inclusive(field, low, high, bad_low, bad_high):
    model = {"modelId": "tiny-flux.1"} if field == "negativePromptStrength" else {}
    if field == "strength":
        model = {"numInferenceSteps": 100}  # strength 0.01 leaves a denoising step only from 100 steps
    if field == "numInferenceSteps":
        model = {"strength": 1.0}  # one step at the default strength 0.75 would be no step at all
    if field == "seed":
        model = {"numSamples": 1}  # the largest seed leaves room for no second sample
    assert resolved(**model, **{field: low}).to_json()[field] == low
    assert resolved(**model, **{field: high}).to_json()[field] == high
    for bad in (bad_low, bad_high):
        message = rejected(field, **model, **{field: bad})
        assert str(bad) in message


@pytest.mark.parametrize("model_id, guidance, low, high, width_low, width_high, scheduler", [
    ("tiny-sd-1_5", 7.5, 0, 20, 64, 1024, "PNDMScheduler"),
    ("tiny-sd-xl", 6.0, 0, 20, 512, 2048, "EulerDiscreteScheduler"),
    ("tiny-flux.1", 3.5, 0, 10, 64, 2048, "FlowMatchEulerDiscreteScheduler"),
])
def test_defaults_and_ranges_follow_the_model_type(model_id, guidance, low, high, width_low, width_high, scheduler):
    request = resolved(modelId=model_id)
    assert (request.guidance, request.scheduler) == (guidance, scheduler)
    # 12 steps: the test models' own default (catalog `defaultSteps`); a model that names none takes the contract's.
    assert (request.strength, request.num_inference_steps, request.num_samples) == (0.75, 12, 4)
    assert resolved(modelId=model_id, guidance=high).guidance == high
    if high < 20:  # above 20 the field's own bound answers first (next test)
        assert "outside" in rejected("guidance", modelId=model_id, guidance=high + 0.5)
    for size in (width_low, width_high):
        assert resolved(modelId=model_id, width=size, height=size).width == size
    rejected("width", modelId=model_id, width=width_high + 8, height=width_low)
    if width_low > 64:
        rejected("height", modelId=model_id, width=width_low, height=width_low - 8)


def test_guidance_above_twenty_is_rejected_by_the_field_bound():
    assert "20" in rejected("guidance", guidance=20.5)


def test_strength_must_leave_at_least_one_denoising_step():
    assert resolved(strength=0.1, numInferenceSteps=10).strength == 0.1
    assert "at least 1" in rejected("strength", strength=0.1, numInferenceSteps=9)


def test_sizes_must_be_multiples_of_eight():
    assert "multiple of 8" in rejected("width", width=100, height=512)


def test_merge_mode_default_size_is_the_native_area_at_the_region_aspect():
    # The test models' native areas are their catalog rows' own (256x256 for tiny SD 1.5, 512x512 for tiny SDXL).
    request = resolved(region_size=(300, 200))  # a 3:2 region
    assert request.width * request.height == pytest.approx(256 * 256, rel=0.05)
    assert request.width / request.height == pytest.approx(1.5, rel=0.05)
    assert request.width % 8 == 0 and request.height % 8 == 0
    sdxl = resolved(modelId="tiny-sd-xl", region_size=(100, 100))
    assert (sdxl.width, sdxl.height) == (512, 512)


def test_one_given_side_keeps_the_region_aspect():
    request = resolved(region_size=(400, 200), width=512)
    assert (request.width, request.height) == (512, 256)


def test_whole_image_mode_defaults_to_the_input_size_rounded_down_and_clamped():
    request = resolved(image_size=(1001, 767), disableMerging=True)
    assert (request.width, request.height) == (1000, 760)
    clamped = resolved(image_size=(3000, 2000), disableMerging=True)
    assert (clamped.width, clamped.height) == (1024, 1024)  # SD 1.5 tops at 1024


def test_seed_accepts_numeric_strings_and_is_returned_when_random():
    assert resolved(seed="1234").seed == 1234
    assert rejected("seed", seed="12a")
    first, second = resolved(), resolved()
    assert 0 <= first.seed <= SEED_MAX and first.seed != second.seed
    assert resolved(seed=7, numSamples=3).seeds == [7, 8, 9]


def test_required_and_unknown_fields_are_named():
    with pytest.raises(RequestError) as caught:
        parse_request({"prompt": "x"})
    assert caught.value.field == "modelId"
    assert rejected("prompt", prompt="   ")
    assert "not a field" in rejected("numSample", numSample=3)
    assert rejected("strength", strength=float("nan"))
    assert rejected("intermediateImages", intermediateImages="yes")
    assert rejected("numInferenceSteps", numInferenceSteps=2.5)


def test_unknown_model_lists_the_valid_ids():
    message = rejected("modelId", modelId="nope")
    assert "'nope'" in message and "opencv-telea" in message and "tiny-sd-1_5" in message


def test_lora_only_fields_are_rejected_elsewhere():
    assert "LoRA" in rejected("modelEpoch", modelEpoch="epoch-1")
    assert "LoRA" in rejected("baseModelId", baseModelId="tiny-sd-1_5")


def test_lora_model_runs_on_its_base_with_the_chosen_epoch():
    request = resolved(modelId="tiny-sd-1_5-lora", modelEpoch="epoch-1")
    assert request.pipeline_model_id == "tiny-sd-1_5" and request.model_epoch == "epoch-1"
    assert request.concepts[0].model_id == "tiny-sd-1_5-lora"
    assert resolved(modelId="tiny-sd-1_5-lora").model_epoch == "epoch-2"  # the last epoch by default
    assert "epoch-1, epoch-2" in rejected("modelEpoch", modelId="tiny-sd-1_5-lora", modelEpoch="epoch-9")
    assert rejected("baseModelId", modelId="tiny-sd-1_5-lora", baseModelId="tiny-sd-xl")


def test_concepts_must_be_compliant_loras():
    request = resolved(concepts=[{"modelId": "tiny-sd-1_5-lora", "scale": 0.5}])
    assert request.to_json()["concepts"] == [{"modelId": "tiny-sd-1_5-lora", "scale": 0.5, "modelEpoch": "epoch-2"}]
    assert "cannot be applied" in rejected("concepts.0.modelId", modelId="tiny-sd-xl",
                                           concepts=[{"modelId": "tiny-sd-1_5-lora"}])
    assert "not a LoRA" in rejected("concepts.0.modelId", concepts=[{"modelId": "tiny-sd-xl"}])
    assert rejected("concepts.0.scale", concepts=[{"modelId": "tiny-sd-1_5-lora", "scale": 2.5}])
    assert rejected("concepts.0.junk", concepts=[{"modelId": "tiny-sd-1_5-lora", "junk": {"a": [1]}}])
    assert rejected("concepts.0", concepts=[["nested", ["junk"]]])


def test_negative_prompt_rules():
    assert resolved(negativePrompt="blur").negative_prompt == "blur"
    low = resolved(negativePrompt="blur", guidance=0.5)
    assert low.negative_prompt is None and any("guidance < 1" in w for w in low.warnings)
    assert rejected("negativePromptStrength", modelId="tiny-flux.1", negativePrompt="blur")
    flux = resolved(modelId="tiny-flux.1", negativePrompt="blur", negativePromptStrength=2)
    assert flux.negative_prompt is None and any("not active in inpaint mode" in w for w in flux.warnings)
    assert "Flux" in rejected("negativePromptStrength", negativePromptStrength=1)


def test_schedulers_by_family():
    assert resolved(scheduler="LCMScheduler").scheduler == "LCMScheduler"
    assert "FlowMatchEulerDiscreteScheduler" in rejected("scheduler", modelId="tiny-flux.1", scheduler="DDIMScheduler")
    assert rejected("scheduler", scheduler="FlowMatchEulerDiscreteScheduler")
    assert rejected("scheduler", scheduler="NotAScheduler")


def test_every_last_seed_of_a_request_is_a_valid_seed():
    assert resolved(seed=SEED_MAX - 3, numSamples=4).seeds[-1] == SEED_MAX
    message = rejected("seed", seed=SEED_MAX - 2, numSamples=4)
    assert f"{SEED_MAX - 2} + numSamples 4 - 1 is over {SEED_MAX}" in message
    assert f"must be at most {SEED_MAX - 3}" in message
    assert f"at most {SEED_MAX - 127}" in rejected("seed", seed=str(SEED_MAX), numSamples=128)
    # The default numSamples (4) counts too.
    assert f"at most {SEED_MAX - 3}" in rejected("seed", seed=SEED_MAX)


def test_a_random_seed_leaves_room_for_every_sample(monkeypatch):
    bounds = []
    monkeypatch.setattr("inpaint.schema.random.randint", lambda low, high: bounds.append((low, high)) or high)
    request = resolved(numSamples=128)
    assert bounds == [(0, SEED_MAX - 127)] and request.seeds[-1] == SEED_MAX


def test_classical_models_take_the_same_size_range_and_pixel_budget():
    # From a small image, disableMerging with the largest sides would be a 67 MP job for a 64x64 input.
    message = rejected("width", modelId="opencv-telea", image_size=(64, 64), disableMerging=True,
                       width=8192, height=8192)
    assert "8192x8192 px = 67.1 MP" in message and f"at most {MAX_PIXELS / 1e6:.0f} MP" in message
    assert "40 MP" in rejected("width", modelId="opencv-ns", width=8192, height=8192)  # merge mode too
    assert "[64, 8192]" in rejected("width", modelId="opencv-telea", disableMerging=True, width=32, height=64)
    assert "[64, 8192]" in rejected("height", modelId="opencv-telea", disableMerging=True, width=64, height=56)
    largest = resolved(modelId="opencv-telea", disableMerging=True, width=8000, height=5000)
    assert (largest.width, largest.height) == (8000, 5000)
    assert "8000x5008 px = 40.1 MP" in rejected("width", modelId="opencv-telea", disableMerging=True,
                                               width=8000, height=5008)
    # Only height given: the other side is the input's, and the given one is named.
    assert "8000x8000 px = 64.0 MP" in rejected("height", modelId="opencv-telea", image_size=(8000, 5000),
                                                disableMerging=True, height=8000)


def test_classical_models_store_one_result_whatever_numSamples_asks():
    request = resolved(modelId="opencv-telea", numSamples=4, seed=10)
    assert request.num_samples == 1 and request.seeds == [10]
    assert "opencv-telea is deterministic: one result is stored for the 4 samples asked" in request.warnings
    # The largest seed is valid: the one sample stored uses it.
    assert resolved(modelId="opencv-ns", numSamples=128, seed=SEED_MAX).seeds == [SEED_MAX]
    assert not any("deterministic" in w for w in resolved(modelId="opencv-ns", numSamples=1).warnings)
    assert not any("deterministic" in w for w in resolved(modelId="opencv-ns").warnings)


def test_classical_models_warn_about_ignored_fields():
    request = resolved(modelId="opencv-telea", guidance=3, numInferenceSteps=10, region_size=(120, 90))
    assert request.num_samples == 1 and (request.width, request.height) == (120, 90)
    assert any("guidance" in w and "numInferenceSteps" in w for w in request.warnings)
    assert rejected("concepts.0.modelId", modelId="opencv-telea", concepts=[{"modelId": "tiny-sd-1_5-lora"}])


def test_resolved_input_is_camel_case_with_every_default():
    out = resolved(seed=5).to_json()
    for key in ("seed", "width", "height", "guidance", "scheduler", "strength", "numInferenceSteps", "numSamples",
                "disableMerging", "hideResults", "intermediateImages", "image", "maskId", "modelId"):
        assert out[key] is not None, key
