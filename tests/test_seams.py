"""Invisible seams: one crop per mask region, colour matching, soft masks, outpainting and the seam report, on
every family (classical, erasers and the tiny diffusion models) and every surface that takes a request."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from skimage import data as photos
from skimage.color import deltaE_ciede2000

from inpaint import families, regions, seams
from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.errors import RequestError
from inpaint.families.diffusion import Diffusers
from inpaint.generate import Engine
from inpaint.jobs import Job, record, run_job
from inpaint.events import Regions, results
from tests.support.catalog import one_model_per_family
from tests.support.figures import figure_path
from tests.support.images import data_url, rect_mask

ROOT = Path(__file__).resolve().parents[1]
CATALOG = Catalog.load()
MODES = [{"colorMatch": "none"}, {"colorMatch": "mean-std"}, {"colorMatch": "histogram"}, {"maskMode": "soft"},
         {"outpaint": {"left": 24, "right": 0, "top": 16, "bottom": 8}},
         {"maskMode": "soft", "colorMatch": "histogram", "outpaint": {"right": 32}}]


def chelsea(width: int = 160, height: int = 120) -> Image.Image:
    """A real photograph (a cat, from scikit-image's data folder), cropped."""
    return Image.fromarray(photos.chelsea()).crop((60, 30, 60 + width, 30 + height))


def ellipse_mask(size: tuple[int, int], box: tuple[int, int, int, int], fill: int = 255) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=fill)
    return mask


def soft_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A radial gradient: 255 in the middle of `box`, falling to 0 at its edge, as a soft brush paints."""
    left, top, right, bottom = box
    y, x = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    r = np.hypot((x - (left + right) / 2) / ((right - left) / 2), (y - (top + bottom) / 2) / ((bottom - top) / 2))
    return Image.fromarray(np.clip(np.rint((1 - r) * 2 * 255), 0, 255).astype(np.uint8), "L")


def body(image: Image.Image, mask: Image.Image | None, model_id: str = "opencv-telea", **fields) -> dict:
    sizes = {"tiny-sd-xl": 512, "tiny-sd-1_5": 64, "tiny-flux.1": 64}
    out = {"modelId": model_id, "prompt": "fill", "image": data_url(image), "seed": 5, "numSamples": 1,
           "numInferenceSteps": 2}
    if model_id in sizes:
        out.update(width=sizes[model_id], height=sizes[model_id])
    if mask is not None:
        out["mask"] = data_url(mask)
    return {**out, **fields}


@pytest.fixture
def engine(tmp_path, pipeline_cache):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"), pipeline_cache)
    yield engine
    engine.store.close()


def run_as_job(engine: Engine, request_body: dict) -> tuple[object, dict]:
    request = engine.prepare(request_body)
    job = run_job(engine, Job(request))
    assert job.status == "success", job.error
    return request, record(job)["metadata"]


def pixels(engine: Engine, asset_id: str) -> np.ndarray:
    return np.asarray(engine.store.open_image(asset_id).convert("RGB"))


def stored_mask(engine: Engine, request) -> np.ndarray:
    return np.asarray(engine.store.open_image(request.mask_asset_id).convert("L"))


# ---- every mode on every family ------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", one_model_per_family())
@pytest.mark.parametrize("mode", MODES, ids=lambda mode: "-".join(f"{k}={v}" for k, v in mode.items()))
def test_every_mode_on_every_family_keeps_the_original_bit_exact_outside_the_mask(engine, model_id, mode):
    image, mask = chelsea(), ellipse_mask((160, 120), (50, 30, 100, 80))
    request, metadata = run_as_job(engine, body(image, mask, model_id, **mode))
    [asset_id] = metadata["assetIds"]
    result_np, mask_np = pixels(engine, asset_id), stored_mask(engine, request)
    sides = {"left": 0, "right": 0, "top": 0, "bottom": 0, **mode.get("outpaint", {})}
    # The original sits at its offset on the result; outside the stored mask it is there bit for bit.
    assert result_np.shape == (120 + sides["top"] + sides["bottom"], 160 + sides["left"] + sides["right"], 3)
    assert mask_np.shape == result_np.shape[:2]
    at_offset_np = result_np[sides["top"]:sides["top"] + 120, sides["left"]:sides["left"] + 160]
    outside_np = mask_np[sides["top"]:sides["top"] + 120, sides["left"]:sides["left"] + 160] == 0
    assert np.array_equal(at_offset_np[outside_np], np.asarray(image)[outside_np])
    assert not np.array_equal(at_offset_np[~outside_np], np.asarray(image)[~outside_np])
    # The new area of an outpaint is repainted; the metadata lists the regions and one seam report per result.
    if sides["left"]:
        assert (mask_np[:, :sides["left"]] > 0).all()
    [report] = metadata["seamReports"]
    assert report["outsideMaskMaxDiff"] == 0 and report["seamDeltaE"] >= 0
    assert metadata["regions"] and all(set(region) == {"box", "size"} for region in metadata["regions"])
    assert metadata["input"]["colorMatch"] == mode.get("colorMatch", "mean-std")
    assert metadata["input"]["maskMode"] == mode.get("maskMode", "binary")


def test_whole_image_mode_is_one_region_at_width_by_height(engine):
    _, metadata = run_as_job(engine, body(chelsea(), ellipse_mask((160, 120), (50, 30, 100, 80)), "tiny-sd-1_5",
                                          disableMerging=True, width=96, height=64))
    assert metadata["regions"] == [{"box": [0, 0, 160, 120], "size": [96, 64]}]
    assert metadata["seamReports"][0]["outsideMaskMaxDiff"] > 0  # everything may change, and the report says so


# ---- one crop per region ---------------------------------------------------------------------------------

def two_marks(side: int = 1024, mark: int = 32) -> tuple[Image.Image, Image.Image]:
    photo = Image.fromarray(photos.astronaut()).resize((side, side), Image.Resampling.LANCZOS)
    mask = rect_mask(side, side, (40, 40, 40 + mark, 40 + mark))
    mask.paste(255, (side - 40 - mark, side - 40 - mark, side - 40, side - 40))
    return photo, mask


def test_two_far_marks_are_two_regions_in_one_batch_each_at_the_native_area(engine, monkeypatch):
    calls = []
    original_run = Diffusers.run

    def counting_run(self, model, request, regions_, masks, seeds, on_step):
        calls.append(seeds)
        return original_run(self, model, request, regions_, masks, seeds, on_step)

    monkeypatch.setattr(Diffusers, "run", counting_run)
    monkeypatch.setattr(engine, "max_batch", 4)  # both samples' regions in one pipeline call
    photo, mask = two_marks()
    defaults = {k: v for k, v in body(photo, mask, "tiny-sd-1_5").items() if k not in ("width", "height")}
    request = engine.prepare({**defaults, "numSamples": 2})
    assert (request.width, request.height) == (256, 256)  # the test model's native area, the regions' aspect
    events = list(engine.run(request))
    assets = results(events)
    reported = [list(event.regions) for event in events if isinstance(event, Regions)]
    # The marks grown by 8 px (48x48) with 32 px of context each side: two boxes of 112x112, each generated at
    # 256x256 (the one box around both would be the whole image, at 256x256).
    assert reported == [[{"box": [0, 0, 112, 112], "size": [256, 256]},
                         {"box": [912, 912, 1024, 1024], "size": [256, 256]}]]
    # Both regions of both samples in one pipeline call, each region under its sample's seed.
    assert calls == [[request.seed, request.seed, request.seed + 1, request.seed + 1]]
    result_np, photo_np = pixels(engine, assets[0].id), np.asarray(photo)
    mask_np = stored_mask(engine, request) > 0
    assert np.array_equal(result_np[~mask_np], photo_np[~mask_np])
    for box in ((48, 48, 64, 64), (968, 968, 984, 984)):  # the middle of each mark is the model's
        assert not np.array_equal(result_np[box[1]:box[3], box[0]:box[2]], photo_np[box[1]:box[3], box[0]:box[2]])


def test_a_sample_with_two_regions_is_reproduced_alone_with_its_seed(engine):
    photo, mask = two_marks(512, 24)
    fields = {"colorMatch": "none", "width": 64, "height": 64}
    batch = results(engine.run(engine.prepare({**body(photo, mask, "tiny-sd-1_5", **fields), "numSamples": 2})))
    alone = results(engine.run(engine.prepare({**body(photo, mask, "tiny-sd-1_5", **fields), "seed": 6})))
    assert np.abs(pixels(engine, batch[1].id).astype(int) - pixels(engine, alone[0].id)).max() <= 1


def test_regions_whose_boxes_overlap_merge_and_many_specks_become_one_box():
    mask = rect_mask(400, 300, (100, 100, 130, 130))
    mask.paste(255, (150, 100, 180, 130))  # 20 px apart: their context boxes overlap
    mask.paste(255, (340, 240, 360, 260))
    boxes = [region.box for region in regions.plan(mask, families.PATCHMATCH)]
    assert len(boxes) == 2 and boxes[0][0] <= 100 and boxes[0][2] >= 180
    specks = Image.fromarray(((np.indices((300, 400)).sum(axis=0) % 40 == 0) * 255).astype(np.uint8), "L")
    assert len(regions.components(specks)) > regions.MAX_REGIONS
    [one] = regions.plan(specks, families.PATCHMATCH)
    assert one.box == (0, 0, 400, 300)




def test_a_box_is_widened_to_the_generation_aspect_and_stays_inside_the_image():
    mask = rect_mask(1000, 800, (400, 300, 420, 500))  # tall and thin: a 220x400 box, widened to 400x400
    [region] = regions.plan(mask, families.SD15, size=(512, 512))
    left, top, right, bottom = region.box
    assert right - left == bottom - top and 0 <= left and right <= 1000 and 0 <= top and bottom <= 800
    assert region.size == (512, 512)
    corner = rect_mask(300, 200, (0, 0, 10, 10))
    [region] = regions.plan(corner, families.SD15)
    assert region.box[:2] == (0, 0) and region.box[2] <= 300 and region.box[3] <= 200


# ---- soft masks --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", ["opencv-telea", "patchmatch"])
def test_a_soft_mask_is_the_results_opacity_pixel_by_pixel(engine, model_id):
    image = chelsea()
    soft = soft_mask(image.size, (40, 20, 120, 100))
    soft_np = np.asarray(soft).astype(np.float32)
    hard = Image.fromarray(((soft_np > 0) * 255).astype(np.uint8), "L")
    request = engine.prepare(body(image, soft, model_id, maskMode="soft"))
    [blended] = results(engine.run(request))
    assert np.array_equal(stored_mask(engine, request), np.asarray(soft))  # grey levels kept
    # The same fill at full opacity: the binary mask of everything above 0, with the same seed.
    [full] = results(engine.run(engine.prepare(body(image, hard, model_id))))
    original_np, fill_np = np.asarray(image).astype(np.float32), pixels(engine, full.id).astype(np.float32)
    expected_np = np.rint(original_np + (fill_np - original_np) * (soft_np[..., None] / 255)).astype(np.uint8)
    assert np.array_equal(pixels(engine, blended.id), expected_np)
    assert (soft_np == 0).any() and ((soft_np > 0) & (soft_np < 255)).sum() > 1000


def test_a_soft_alpha_mask_keeps_its_grey_levels_and_an_empty_one_is_refused(engine):
    image = chelsea()
    alpha = soft_mask(image.size, (40, 20, 120, 100))
    rgba = Image.new("RGBA", image.size, (255, 0, 0, 0))
    rgba.putalpha(alpha)
    request = engine.prepare(body(image, rgba, maskMode="soft"))
    assert np.array_equal(stored_mask(engine, request), np.asarray(alpha))
    with pytest.raises(RequestError) as caught:
        engine.prepare(body(image, Image.new("L", image.size, 0), maskMode="soft"))
    assert caught.value.field == "mask" and "empty" in caught.value.message


# ---- colour matching and the seam report ------------------------------------------------------------------

def cast(image: Image.Image, shift=(18, -10, 12)) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image).astype(int) + shift, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("method", ["mean-std", "histogram"])
def test_colour_matching_removes_a_cast_measured_on_the_known_ring(method):
    image = chelsea()
    mask = ellipse_mask(image.size, (50, 30, 110, 90))
    generated = cast(image)  # a model that gives the picture back with a colour cast
    matched = seams.match_colors(generated, image, mask, method)
    before = seams.seam_delta_e(Image.composite(generated, image, mask), image, mask)
    after = seams.seam_delta_e(Image.composite(matched, image, mask), image, mask)
    assert after < 0.3 * before and before > 3
    # A fill that kept every known pixel has no drift: the identity, bit for bit.
    assert seams.match_colors(image, image, mask, method) is image


def test_seam_delta_e_is_ciede2000_and_zero_for_the_original_itself():
    rng = np.random.default_rng(3)
    lab1, lab2 = rng.uniform([0, -60, -60], [100, 60, 60], (500, 3)), rng.uniform([0, -60, -60], [100, 60, 60], (500, 3))
    assert np.allclose(seams.ciede2000(lab1, lab2), deltaE_ciede2000(lab1, lab2), atol=1e-9)
    image = chelsea()
    mask = ellipse_mask(image.size, (50, 30, 110, 90))
    # The photo itself has a small step across any line (its own texture and light); a cast stands out of it.
    natural = seams.report(image, seams.reference(image, mask))
    assert natural["outsideMaskMaxDiff"] == 0 and 0 < natural["seamDeltaE"] < 6
    assert seams.seam_delta_e(Image.composite(cast(image), image, mask), image, mask) > 2 * natural["seamDeltaE"]
    assert seams.seam_delta_e(image, image, Image.new("L", image.size, 255)) == 0.0  # nothing outside to compare


def test_a_report_reads_only_the_merged_boxes_and_says_what_the_whole_image_says():
    image = chelsea(400, 300)
    mask = ellipse_mask(image.size, (30, 30, 80, 70))
    mask.paste(ellipse_mask(image.size, (300, 200, 360, 260)), mask=ellipse_mask(image.size, (300, 200, 360, 260)))
    result = Image.composite(cast(image), image, mask)  # merged: a cast inside the mask, the photo outside it
    boxes = [region.box for region in regions.plan(mask, families.PATCHMATCH)]
    assert len(boxes) == 2  # two marks far apart
    in_boxes = seams.report(result, seams.reference(image, mask, boxes=boxes))
    whole = seams.report(result, seams.reference(image, mask))
    assert in_boxes == whole and whole["outsideMaskMaxDiff"] == 0
    assert whole["seamDeltaE"] == pytest.approx(seams.seam_delta_e(result, image, mask), abs=1e-3)
    assert whole["seamDeltaE"] > 2 * seams.report(image, seams.reference(image, mask))["seamDeltaE"]
    # A result that changed a pixel outside the mask, inside a box, says by how much.
    changed = result.copy()
    changed.putpixel((boxes[1][0] + 1, boxes[1][1] + 1), (0, 0, 0))
    expected = int(np.abs(np.asarray(image, int)[boxes[1][1] + 1, boxes[1][0] + 1]).max())
    assert seams.report(changed, seams.reference(image, mask, boxes=boxes))["outsideMaskMaxDiff"] == expected


def test_outside_mask_max_diff_counts_every_channel_outside_the_mask_and_nothing_inside():
    image = chelsea()
    mask = ellipse_mask(image.size, (50, 30, 110, 90))
    changed = np.array(image)
    changed[80, 80] = 255 - changed[80, 80]  # inside the mask: allowed
    changed[5, 150, 2] = changed[5, 150, 2] ^ 0x25  # one channel of one pixel outside: a change of its own size
    expected = abs(int(changed[5, 150, 2]) - int(np.asarray(image)[5, 150, 2]))
    assert seams.outside_mask_max_diff(Image.fromarray(changed), image, mask) == expected > 0
    assert seams.outside_mask_max_diff(Image.fromarray(changed), image, mask.point(lambda v: 255)) == 0


def test_colour_matching_lowers_the_seam_of_a_model_with_a_cast(engine, monkeypatch):
    original_run = Diffusers.run

    def with_cast(self, model, request, regions_, masks, seeds, on_step):
        return [cast(output) for output in original_run(self, model, request, regions_, masks, seeds, on_step)]

    monkeypatch.setattr(Diffusers, "run", with_cast)
    image = chelsea()
    mask = ellipse_mask(image.size, (50, 30, 110, 90))
    delta = {}
    for method in ("none", "mean-std", "histogram"):
        _, metadata = run_as_job(engine, body(image, mask, "tiny-sd-1_5", colorMatch=method))
        delta[method] = metadata["seamReports"][0]["seamDeltaE"]
    assert delta["mean-std"] < delta["none"] and delta["histogram"] < delta["none"]


# ---- outpainting --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", ["opencv-telea", "patchmatch", "tiny-sd-1_5"])
def test_outpaint_grows_the_image_without_a_mask_and_keeps_the_original_at_its_offset(engine, model_id):
    image = chelsea(128, 96)
    sides = {"left": 40, "right": 8, "top": 0, "bottom": 24}
    _, metadata = run_as_job(engine, body(image, None, model_id, outpaint=sides))
    result_np = pixels(engine, metadata["assetIds"][0])
    assert result_np.shape == (96 + 24, 128 + 48, 3)
    band = CATALOG.get(model_id).family.seam_px  # the blend band into the original: the family's seam
    kept_np = result_np[0:96 - band, 40 + band:40 + 128 - band]
    assert np.array_equal(kept_np, np.asarray(image)[0:96 - band, band:128 - band])
    assert metadata["input"]["outpaint"] == sides and metadata["seamReports"][0]["outsideMaskMaxDiff"] == 0
    # The new area is filled from the photo's colours, not left grey or black.
    assert result_np[:, :40].std() > 5


def test_an_outpaint_mask_is_drawn_on_the_image_or_on_the_canvas(engine):
    image = chelsea(128, 96)
    sides = {"left": 32, "right": 0, "top": 0, "bottom": 0}
    on_image = engine.prepare(body(image, rect_mask(128, 96, (60, 40, 80, 60)), outpaint=sides))
    on_canvas = engine.prepare(body(image, rect_mask(160, 96, (92, 40, 112, 60)), outpaint=sides))
    assert np.array_equal(stored_mask(engine, on_image), stored_mask(engine, on_canvas))
    assert stored_mask(engine, on_image)[50, 100] == 255 and stored_mask(engine, on_image)[50, 20] == 255


def test_the_preview_canvas_and_mask_for_an_outpaint():
    image = chelsea(128, 96)
    sides = {"left": 16, "right": 16, "top": 8, "bottom": 0}
    grey = regions.outpaint_canvas(image, sides, prefill=False)
    assert grey.size == (160, 104) and grey.getpixel((0, 0)) == (128, 128, 128)
    assert np.array_equal(np.asarray(grey)[8:, 16:144], np.asarray(image))
    mask_np = np.asarray(regions.outpaint_mask(image.size, sides, band=4))
    assert mask_np[50, 19] == 255 and mask_np[50, 20] == 0 and mask_np[11, 50] == 255 and mask_np[103, 50] == 0


# ---- bad input, as a REST client sends it --------------------------------------------------------------------

@pytest.mark.parametrize("fields, field, needle", [
    ({"outpaint": {"left": -1}}, "outpaint.left", "greater than or equal to 0"),
    ({"outpaint": {"right": 2049}}, "outpaint.right", "less than or equal to 2048"),
    ({"outpaint": {"middle": 10}}, "outpaint.middle", "not a field"),
    ({"outpaint": {"left": "10"}}, "outpaint.left", "integer"),
    ({"outpaint": 64}, "outpaint", "dictionary"),
    ({"colorMatch": "auto"}, "colorMatch", "'none', 'mean-std' or 'histogram'"),
    ({"maskMode": "grey"}, "maskMode", "'binary' or 'soft'"),
    ({"maskMode": "soft", "mask": data_url(Image.new("L", (128, 96), 0))}, "mask", "empty"),
    ({"mask": None}, "mask", "required"),
    ({"mask": None, "outpaint": {"left": 0}}, "mask", "required"),
])
def test_bad_fields_are_a_4xx_naming_the_field_and_nothing_is_stored(engine, fields, field, needle):
    request_body = {k: v for k, v in {**body(chelsea(128, 96), rect_mask(128, 96, (40, 30, 80, 60))),
                                      **fields}.items() if v is not None}
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        answer = client.post("/generate/inpaint", json=request_body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and needle in error["message"], error
    assert engine.store.list(include_hidden=True) == []


@pytest.mark.parametrize("image_size, sides, needle", [
    ((4200, 64), {"left": 2048, "right": 2048, "top": 0, "bottom": 0}, "at most 8192 px"),
    ((6000, 6000), {"left": 2048, "right": 0, "top": 0, "bottom": 0}, "at most 40 MP"),
])
def test_an_outpaint_past_the_size_limits_is_refused_naming_it(engine, image_size, sides, needle):
    image = Image.new("RGB", image_size, (90, 120, 150))
    mask = rect_mask(*image_size, (10, 10, 50, 50))
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        answer = client.post("/generate/inpaint", json=body(image, mask, outpaint=sides))
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "outpaint" and needle in answer.json()["error"]["message"]
    assert engine.store.list(include_hidden=True) == []


def test_the_new_fields_are_in_the_openapi_schema_with_descriptions_and_bounds(engine):
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    fields = schema["InpaintRequest"]["properties"]
    assert fields["colorMatch"]["enum"] == ["none", "mean-std", "histogram"] and fields["colorMatch"]["description"]
    assert fields["maskMode"]["enum"] == ["binary", "soft"] and fields["maskMode"]["description"]
    assert fields["outpaint"]["description"]
    sides = schema["Outpaint"]["properties"]
    assert all(sides[name]["minimum"] == 0 and sides[name]["maximum"] == 2048 for name in sides)


def test_the_cli_takes_the_new_fields_as_flags(tmp_path):
    image = chelsea(128, 96)
    request_body = {"modelId": "opencv-telea", "image": data_url(image), "mask": data_url(soft_mask(image.size,
                                                                                                  (40, 20, 90, 70)))}
    done = subprocess.run([sys.executable, "-m", "inpaint", "generate", "-", "--out", str(tmp_path / "out"),
                           "--mask-mode", "soft", "--color-match", "histogram", "--outpaint", "16,0,8,0"],
                          input=json.dumps(request_body), cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, env={**__import__("os").environ, "INPAINT_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["metadata"]["input"]["maskMode"] == "soft" and job["metadata"]["input"]["colorMatch"] == "histogram"
    [result] = (tmp_path / "out").glob("*.png")
    assert Image.open(result).size == (144, 104)
    bad = subprocess.run([sys.executable, "-m", "inpaint", "generate", "-", "--out", str(tmp_path / "out"),
                          "--outpaint", "3000,0,0,0"], input=json.dumps(request_body), cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False, env={**__import__("os").environ,
                                                      "INPAINT_DATA_DIR": str(tmp_path / "data2")})
    assert bad.returncode == 2 and "outpaint.left" in bad.stderr


# ---- the README's pictures, made by the engine on real photographs ------------------------------------------

def row(*images: Image.Image, gap: int = 8) -> Image.Image:
    height = max(image.height for image in images)
    figure = Image.new("RGB", (sum(image.width for image in images) + gap * (len(images) - 1), height), "white")
    x = 0
    for image in images:
        figure.paste(image.convert("RGB"), (x, 0))
        x += image.width + gap
    return figure


def marked(image: Image.Image, mask: Image.Image, colour=(255, 45, 85)) -> Image.Image:
    out = image.copy()
    out.paste(colour, mask=mask)
    return out


def save_figure(figure: Image.Image, name: str) -> None:
    figure.save(figure_path(name), optimize=True)


@pytest.mark.figure  # draws a README picture: `python -m bench.figures`
def test_the_readme_figures_are_drawn_by_the_engine(engine, monkeypatch):
    """One picture per new field, each made through the engine on a photograph from scikit-image's data folder."""
    # Regions: two marks far apart, each filled in its own crop (the boxes the job lists, drawn in).
    photo = Image.fromarray(photos.astronaut()).resize((384, 384), Image.Resampling.LANCZOS)
    marks = ellipse_mask(photo.size, (40, 300, 80, 340))
    ImageDraw.Draw(marks).ellipse((300, 60, 330, 100), fill=255)
    _, metadata = run_as_job(engine, body(photo, marks, "patchmatch"))
    assert len(metadata["regions"]) == 2
    filled = Image.fromarray(pixels(engine, metadata["assetIds"][0]))
    boxes = filled.copy()
    for region in metadata["regions"]:
        ImageDraw.Draw(boxes).rectangle([c - (i >= 2) for i, c in enumerate(region["box"])], outline=(255, 210, 0),
                                        width=3)
    save_figure(row(marked(photo, marks), boxes), "seams-regions.png")

    # Soft mask: a radial gradient is the fill's opacity.
    image = chelsea(256, 192)
    soft = soft_mask(image.size, (70, 30, 200, 170))
    hard = Image.fromarray(((np.asarray(soft) > 0) * 255).astype(np.uint8), "L")
    _, binary = run_as_job(engine, body(image, hard, "patchmatch"))
    _, blended = run_as_job(engine, body(image, soft, "patchmatch", maskMode="soft"))
    save_figure(row(image, soft, Image.fromarray(pixels(engine, binary["assetIds"][0])),
                    Image.fromarray(pixels(engine, blended["assetIds"][0]))), "seams-soft-mask.png")

    # Outpaint: the canvas a diffusion model starts from (pre-filled), and PatchMatch's own fill of it.
    image = chelsea(256, 192)
    sides = {"left": 96, "right": 96, "top": 0, "bottom": 0}
    _, outpainted = run_as_job(engine, body(image, None, "patchmatch", outpaint=sides))
    result_np = pixels(engine, outpainted["assetIds"][0])
    assert np.array_equal(result_np[:, 96:352], np.asarray(image))
    save_figure(row(regions.outpaint_canvas(image, sides, prefill=False), regions.outpaint_canvas(image, sides),
                    Image.fromarray(result_np)), "seams-outpaint.png")

    # Colour matching: a stand-in diffusion model that fills like PatchMatch but shifts every colour of its crop (as
    # a VAE round trip can), merged with each colorMatch.
    def drifting(self, model, request, regions_, masks, seeds, on_step):
        fills = families.PATCHMATCH.run(3, request, regions_, masks, seeds, on_step)
        return [Image.fromarray(np.clip(np.asarray(fill).astype(int) + (22, -8, -18), 0, 255).astype(np.uint8))
                for fill in fills]

    monkeypatch.setattr(Diffusers, "run", drifting)
    image = Image.fromarray(photos.coffee()).crop((150, 60, 450, 285))
    hole = ellipse_mask(image.size, (90, 50, 220, 170))
    panels, delta = [marked(image, hole)], {}
    for method in ("none", "mean-std", "histogram"):
        _, metadata = run_as_job(engine, body(image, hole, "tiny-sd-1_5", colorMatch=method, width=None,
                                              height=None))
        panels.append(Image.fromarray(pixels(engine, metadata["assetIds"][0])))
        delta[method] = metadata["seamReports"][0]["seamDeltaE"]
    # What remains is the fill's own structure across the edge (the cup's rim), which no colour transform removes.
    assert delta["mean-std"] < 0.75 * delta["none"] and delta["histogram"] < 0.75 * delta["none"]
    save_figure(row(*panels), "seams-color-match.png")
