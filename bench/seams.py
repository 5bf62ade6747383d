"""Invisible seams: one crop per mask region, colour matching and the seam report, measured through the engine on
real photographs (scikit-image's) with the tiny and classical models of the shipped catalog."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from inpaint import imageops, schema, seams
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Regions, Result, results
from inpaint.families.diffusion import Diffusers
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from tests.support.images import data_url, rect_mask

from . import models, photos
from .timing import Metric, interleaved, median_ratio, summary

TINY = "tiny-sd-1_5"
CAST_RGB = (18, -10, 12)  # the known colour cast given to the tiny model's output: warm, a little magenta
SEAM_PHOTOS = ("chelsea", "coffee", "rocket")
MASKS_PER_PHOTO = 4


def _engine(work_dir: Path) -> Engine:
    catalog = Catalog.load()
    return Engine(catalog, AssetStore(work_dir / "seams"), PipelineCache(catalog, models.CACHE_DIR / "models",
                                                                          max_pipelines=1, device="cpu"))


def _body(image: Image.Image, mask: Image.Image | None, model_id: str, **fields) -> dict:
    out = {"modelId": model_id, "prompt": "a photograph", "image": data_url(image), "seed": 7, "numSamples": 1,
           "numInferenceSteps": 4, **fields}
    if mask is not None:
        out["mask"] = data_url(mask)
    return out


def two_marks(side: int, mark: int = 64) -> tuple[Image.Image, Image.Image]:
    """A real photo enlarged to `side` x `side` with two `mark` x `mark` marks in opposite corners."""
    mask = rect_mask(side, side, (64, 64, 64 + mark, 64 + mark))
    mask.paste(255, (side - 64 - mark, side - 64 - mark, side - 64, side - 64))
    return photos.crop("astronaut", side), mask


# ---- region_resolution ----------------------------------------------------------------------------------

def region_resolution(profile, work_dir: Path) -> Metric:
    engine = _engine(work_dir)
    photo, mask = two_marks(2048)
    request = engine.prepare(_body(photo, mask, TINY, numInferenceSteps=2))
    events = list(engine.run(request))
    results(events)  # raises what ended it, if it failed
    [planned] = [event.regions for event in events if isinstance(event, Regions)]

    def per_mark_pixel(box, size) -> float:  # generated pixels per pixel of the image inside the box
        return size[0] * size[1] / ((box[2] - box[0]) * (box[3] - box[1]))

    ours = min(per_mark_pixel(region["box"], region["size"]) for region in planned)
    # What one box around the whole mask gives (the engine before regions): its crop at the native area.
    stored = engine.store.open_image(request.mask_asset_id).convert("L")
    box = imageops.crop_box(stored)
    family = engine.catalog.get(TINY).family
    one_size = schema.generation_size((box[2] - box[0], box[3] - box[1]), family.native_resolution, family.size)
    one = per_mark_pixel(box, one_size)
    engine.store.close()
    crops = ", ".join("{}x{} at {}x{}".format(r["box"][2] - r["box"][0], r["box"][3] - r["box"][1], *r["size"])
                      for r in planned)
    detail = (f"astronaut (scikit-image) enlarged to 2048x2048, two 64x64 marks in opposite corners, {TINY} "
              f"(SD 1.5 family, native 512): per region {len(planned)} crops {crops} = {ours:.2f} generated pixels "
              f"per mark pixel; one box {box[2] - box[0]}x{box[3] - box[1]} at "
              f"{one_size[0]}x{one_size[1]} = {one:.4f}; regions from the job's on_regions, through the engine")
    return Metric("region_resolution", round(ours / one, 1), ">= 16", "x", detail)


# ---- seam_delta_e -----------------------------------------------------------------------------------------

def _cases() -> list[tuple[str, Image.Image, Image.Image]]:
    rng = np.random.default_rng(11)
    cases = []
    for name in SEAM_PHOTOS:
        photo = photos.load(name)
        cases += [(name, photo, photos.hole(photo.size, rng, area=(0.03, 0.08))) for _ in range(MASKS_PER_PHOTO)]
    return cases


def seam_delta_e(profile, work_dir: Path) -> Metric:
    engine = _engine(work_dir)
    original_run = Diffusers.run

    def with_cast(self, model, request, regions, masks, seeds, on_step):
        outputs = original_run(self, model, request, regions, masks, seeds, on_step)
        return [Image.fromarray(np.clip(np.asarray(out).astype(np.int16) + CAST_RGB, 0, 255).astype(np.uint8))
                for out in outputs]

    cases = _cases()
    means: dict[tuple[str, str], float] = {}
    Diffusers.run = with_cast
    try:
        for model_id in ("patchmatch", TINY):
            for method in ("none", "mean-std", "histogram"):
                values = []
                for _, photo, mask in cases:
                    request = engine.prepare(_body(photo, mask, model_id, colorMatch=method))
                    events = list(engine.run(request))
                    results(events)
                    [report] = [event.seam_report for event in events if isinstance(event, Result)]
                    assert report["outsideMaskMaxDiff"] == 0
                    values.append(report["seamDeltaE"])
                means[model_id, method] = statistics.fmean(values)
    finally:
        Diffusers.run = original_run
        engine.store.close()
    natural = statistics.fmean(seams.seam_delta_e(photo, photo, mask) for _, photo, mask in cases)
    kept = {method: statistics.fmean(_content_error(photo, mask, method) for _, photo, mask in cases)
            for method in ("none", "mean-std", "histogram")}

    def ratio(model_id: str, method: str) -> float:
        return means[model_id, method] / means[model_id, "none"]

    default = schema.DEFAULT_COLOR_MATCH
    figures = "; ".join(f"{model_id}: none {means[model_id, 'none']:.2f}, mean-std {means[model_id, 'mean-std']:.2f} "
                        f"({ratio(model_id, 'mean-std'):.2f}x), histogram {means[model_id, 'histogram']:.2f} "
                        f"({ratio(model_id, 'histogram'):.2f}x)" for model_id in ("patchmatch", TINY))
    detail = (f"mean seamDeltaE (CIEDE2000 between the local mean colour just inside the mask's edge, past the blend "
              f"band, and just outside it) over {len(cases)} elliptical holes (3-8% of the photo) in "
              f"{', '.join(SEAM_PHOTOS)} (scikit-image), merge mode, 1 sample; {TINY} at its default 512-area size, "
              f"4 steps, its output given a known cast of RGB {CAST_RGB}; {figures}; the photos scored against "
              f"themselves {natural:.2f} (a photo's own step across a line: the floor). New content kept: a red disk painted in each hole under the same cast comes out at a mean "
              f"CIEDE2000 of {kept['none']:.1f} from its true colour unmatched, {kept['mean-std']:.1f} with mean-std, "
              f"{kept['histogram']:.1f} with histogram. Value: {TINY} with the default "
              f"colorMatch ({default}) / none. PatchMatch keeps every known pixel, so the ring shows no drift and "
              f"matching is the identity for it by design (1.00x)")
    return Metric("seam_delta_e", round(ratio(TINY, default), 3), "<= 0.5", "ratio", detail)


def _content_error(photo: Image.Image, mask: Image.Image, method: str) -> float:
    """How far colour matching moves new content: a red disk painted in the hole of a crop given the known
    cast, matched, against the disk's true colour (mean CIEDE2000 over the disk)."""
    painted = photo.copy()
    left, top, right, bottom = mask.getbbox()
    inset = (right - left) // 4, (bottom - top) // 4
    disk = Image.new("L", photo.size, 0)
    ImageDraw.Draw(disk).ellipse((left + inset[0], top + inset[1], right - inset[0], bottom - inset[1]), fill=255)
    painted.paste((200, 30, 40), mask=disk)
    generated = Image.fromarray(np.clip(np.asarray(painted).astype(np.int16) + CAST_RGB, 0, 255).astype(np.uint8))
    matched = seams.match_colors(generated, photo, mask, method)
    inside_np = np.asarray(disk) > 0
    return float(seams.ciede2000(seams.to_lab(np.asarray(matched))[inside_np],
                                 seams.to_lab(np.asarray(painted))[inside_np]).mean())


# ---- multi_region_cost ------------------------------------------------------------------------------------

def multi_region_cost(profile, work_dir: Path) -> Metric:
    engine = _engine(work_dir)
    try:
        return multi_region_metric(
            "multi_region_cost", engine, TINY, steps=profile.steps, samples=profile.samples, rounds=profile.rounds,
            note="On a CPU the batch costs what its pixels cost (2x the pixels here): batching pays where a device "
                 "is under-used by one crop")
    finally:
        engine.store.close()


def multi_region_metric(name: str, engine: Engine, model_id: str, *, steps: int, samples: int, rounds: int,
                        note: str) -> Metric:
    """Two separate marks (two regions, one micro-batch) against one mark of the same area, through `engine`."""
    side = 1024
    photo, two = two_marks(side)
    one = rect_mask(side, side, (448, 416, 448 + 64, 416 + 128))  # the same 8192 mark pixels in one region
    fields = {"numInferenceSteps": steps, "numSamples": samples, "colorMatch": "none"}
    requests = {"two": _body(photo, two, model_id, **fields), "one": _body(photo, one, model_id, **fields)}
    counted = {}
    for label, body in requests.items():
        events = list(engine.run(engine.prepare(body)))
        results(events)
        [counted[label]] = [event.regions for event in events if isinstance(event, Regions)]
    times = interleaved({label: (lambda body=body: results(engine.run(engine.prepare(body))))
                         for label, body in requests.items()}, rounds)
    value = median_ratio(times, "two", "one")
    pixels = {label: sum(r["size"][0] * r["size"][1] for r in regions) for label, regions in counted.items()}
    detail = (f"{model_id}, astronaut enlarged to {side}x{side}, {steps} steps x 0.75, {samples} sample(s): two "
              f"64x64 marks in opposite corners ({len(counted['two'])} regions, {pixels['two']} px generated, one "
              f"pipeline call per micro-batch) / one 64x128 mark of the same area ({len(counted['one'])} region, "
              f"{pixels['one']} px); both at SD 1.5's native area per region; medians of {rounds} interleaved "
              f"rounds; {summary(times)}. {note}")
    return Metric(name, round(value, 3), "<= 1.3", "ratio", detail)


# ---- outside_mask_drift_modes -----------------------------------------------------------------------------

def outside_mask_drift_modes(profile, work_dir: Path) -> Metric:
    """The largest change outside the stored mask, read from the stored results (not the seam report), for
    every new mode on each kind of family."""
    engine = _engine(work_dir)
    photo = photos.load("coffee")
    mask = photos.hole(photo.size, np.random.default_rng(3), area=(0.03, 0.06))
    soft = Image.fromarray(np.asarray(mask.filter(ImageFilter.GaussianBlur(6))), "L")
    two = mask.copy()
    two.paste(255, (20, 20, 60, 60))
    modes = {"colorMatch none": {"colorMatch": "none"}, "mean-std": {"colorMatch": "mean-std"},
             "histogram": {"colorMatch": "histogram"}, "soft": {"maskMode": "soft", "mask": data_url(soft)},
             "two regions": {"mask": data_url(two)},
             "outpaint": {"outpaint": {"left": 64, "right": 0, "top": 32, "bottom": 0}}}
    worst: dict[str, int] = {}
    for model_id in ("opencv-telea", "patchmatch", TINY):
        for name, fields in modes.items():
            request = engine.prepare({**_body(photo, mask, model_id), **fields})
            [asset] = results(engine.run(request))
            result_np = np.asarray(engine.store.open_image(asset.id).convert("RGB")).astype(np.int16)
            stored_np = np.asarray(engine.store.open_image(request.mask_asset_id).convert("L"))
            left, top = (request.outpaint["left"], request.outpaint["top"]) if request.outpaint else (0, 0)
            at_offset_np = result_np[top:top + photo.height, left:left + photo.width]
            outside_np = stored_np[top:top + photo.height, left:left + photo.width] == 0
            drift = int(np.abs(at_offset_np - np.asarray(photo).astype(np.int16))[outside_np].max())
            worst[f"{model_id} {name}"] = drift
    engine.store.close()
    value = max(worst.values())
    detail = (f"coffee (scikit-image, 600x400) with an elliptical hole; max |difference| from the photo (at its "
              f"offset when outpainting) outside the stored mask, read from the stored PNGs, over "
              f"{len(worst)} runs: opencv-telea, patchmatch and {TINY} x colorMatch none / mean-std / histogram, "
              f"maskMode soft (a blurred mask), two regions, outpaint 64 left + 32 top; worst: "
              f"{max(worst, key=worst.get)} {value}")
    return Metric("outside_mask_drift_modes", value, "== 0", "max |px diff|", detail)
