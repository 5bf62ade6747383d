"""The classical models on real photographs: how well they fill a scratch or a removed object (`classical_quality`:
closeness to the lost pixels and whether the fill keeps the photo's texture or blurs it), what the
command line costs over a script calling the library (`cli_classical_overhead`), and what the engine costs over a
direct PatchMatch call (`patchmatch_engine_overhead`).

The photographs come with scikit-image's wheel (bench/photos.py). A model missing from the shipped catalog is
skipped with a note in the log and in the metric's detail: the metric still runs for the others.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from inpaint import imageops
from inpaint.assets import PNG_LEVEL, AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from inpaint.events import results
from tests.support.images import data_url

from . import photos
from .timing import Metric, interleaved, log, median_ratio, summary

ROOT = Path(__file__).resolve().parent.parent
PATCHMATCH_ID = "patchmatch"
MODELS = ("opencv-telea", "opencv-ns", PATCHMATCH_ID)
# Patch size of the direct PatchMatch calls when the catalog entry does not say it (source `patchmatch:<size>`).
PATCH_SIZE = 3
TELEA_RADIUS = 3  # as the engine runs the OpenCV models
PROMPT = "remove it"  # ignored by the classical models
SEED = 1234
# Smooth scenes and a regular texture (brick), where OpenCV's fills blur and PatchMatch copies patches.
QUALITY_PHOTOS = {"quick": ("chelsea", "coffee", "rocket", "brick"), "full": photos.NAMES}
HOLES_PER_PHOTO = {"quick": 3, "full": 4}  # per class
# Fractions of the image. Small holes are where a fill's pixels can be right; in object holes only plausible.
SMALL_AREA = (0.005, 0.03)  # a scratch, a wire, a blemish
OBJECT_AREA = (0.05, 0.15)  # an object one removes
HOLE_CLASSES = {"small": "scratch/small", "object": "object"}
RING_PX = 12  # width of the known ring the texture measure compares the hole with
CLI_SIDE = 512
CLI_PHOTO = "astronaut"
OVERHEAD_ROUNDS = {"quick": 5, "full": 11}

# What a user writes without the project: read the files, call the library, write a PNG (at the store's level).
SCRIPT = """
import sys
import numpy as np
from PIL import Image
kind, image_path, mask_path, out_path, seed, patch_size, radius, level = sys.argv[1:9]
image = np.asarray(Image.open(image_path).convert("RGB"))
mask = np.asarray(Image.open(mask_path).convert("L"))
if kind == "patchmatch":
    import patchmatch
    patchmatch.set_random_seed(int(seed))
    filled = np.asarray(patchmatch.inpaint(image, mask, patch_size=int(patch_size)))
else:
    import cv2
    bgr = cv2.inpaint(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask, int(radius), cv2.INPAINT_TELEA)
    filled = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
Image.fromarray(filled).save(out_path, "PNG", compress_level=int(level))
"""


def classical_engine(data_dir: Path) -> Engine:
    """An engine over the shipped catalog and a fresh asset store: the classical models need no weights."""
    catalog = Catalog.load()
    return Engine(catalog, AssetStore(data_dir), PipelineCache(catalog, data_dir / "models", max_pipelines=1))


def patch_size(engine: Engine) -> int:
    """The patch size the engine's PatchMatch model runs with: its catalog source is `patchmatch:<size>`."""
    if PATCHMATCH_ID in engine.catalog:
        _, _, size = engine.catalog.get(PATCHMATCH_ID).source.partition(":")
        if size.isdigit():
            return int(size)
    return PATCH_SIZE


def _present(engine: Engine, model_ids) -> tuple[list[str], list[str]]:
    present = [model_id for model_id in model_ids if model_id in engine.catalog]
    missing = [model_id for model_id in model_ids if model_id not in engine.catalog]
    for model_id in missing:
        log.info("  %s is not in the catalog: skipped", model_id)
    return present, missing


def _body(model_id: str, image_url: str, mask_url: str) -> dict:
    return {"modelId": model_id, "prompt": PROMPT, "image": image_url, "mask": mask_url, "numSamples": 1,
            "seed": SEED}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _result_np(engine: Engine, assets) -> np.ndarray:
    [asset] = assets
    return np.asarray(engine.store.open_image(asset.id).convert("RGB"))


# ---- classical_quality ---------------------------------------------------------------------------

def psnr(truth_np: np.ndarray, filled_np: np.ndarray, hole_np: np.ndarray) -> float:
    """PSNR in dB over the hole's pixels only (all three channels), 0..255."""
    diff_np = truth_np[hole_np].astype(np.float64) - filled_np[hole_np].astype(np.float64)
    mse = float(np.mean(diff_np ** 2))
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


def ssim(truth_np: np.ndarray, filled_np: np.ndarray, hole_np: np.ndarray) -> float:
    """SSIM over the hole's bounding box (the known pixels in it are equal in both: they count as matches)."""
    from skimage.metrics import structural_similarity

    rows, cols = np.flatnonzero(hole_np.any(axis=1)), np.flatnonzero(hole_np.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return float(structural_similarity(truth_np[box], filled_np[box], data_range=255, channel_axis=-1))


def texture(image_np: np.ndarray, hole_np: np.ndarray) -> float:
    """High-frequency energy inside the hole relative to a ring of known pixels around it: the mean absolute
    Laplacian of the grey image in each. A blurred fill scores well below the photo's own value there.

    The Laplacian reaches one pixel, so the inside drops the hole's edge (it would see the seam with the known
    pixels) and the ring starts two pixels out (it would see the fill): each side measures only itself.
    """
    from scipy import ndimage

    grey = image_np.astype(np.float64) @ (0.299, 0.587, 0.114)
    laplacian = np.abs(ndimage.laplace(grey, mode="nearest"))
    inside = ndimage.binary_erosion(hole_np)
    if not inside.any():  # a hole two pixels thin: its edge is all there is
        inside = hole_np
    near = ndimage.binary_dilation(hole_np, iterations=1)
    ring = ndimage.binary_dilation(hole_np, iterations=1 + RING_PX) & ~near
    return float(laplacian[inside].mean() / max(laplacian[ring].mean(), 1e-6))


def texture_ratio(truth_np: np.ndarray, filled_np: np.ndarray, hole_np: np.ndarray) -> float:
    """The fill's texture() over the photo's: 1.0 = as much fine detail as the lost pixels had, relative to the
    same surroundings; a blur well below 1, noise above it."""
    return texture(filled_np, hole_np) / max(texture(truth_np, hole_np), 1e-6)


def holes(profile) -> list[tuple[str, str, Image.Image, Image.Image]]:
    """(hole class, photo name, photo, mask): seeded holes of each class on each photo of the profile."""
    cases, count = [], HOLES_PER_PHOTO[profile.name]
    for index, name in enumerate(QUALITY_PHOTOS[profile.name]):
        image = photos.load(name)
        # One generator per photo and class: adding a class or a photo leaves the others' holes as they were.
        small = np.random.default_rng([SEED, index, 0])
        # Half thin scratches, half small round blemishes: both are what one retouches away.
        cases += [("small", name, image, photos.scratch(image.size, small, area=SMALL_AREA) if i % 2 == 0
                   else photos.hole(image.size, small, area=SMALL_AREA)) for i in range(count)]
        large = np.random.default_rng(SEED + index)  # the object holes of earlier runs: results stay comparable
        cases += [("object", name, image, photos.hole(image.size, large, area=OBJECT_AREA)) for _ in range(count)]
    return cases


def classical_quality(profile, work_dir: Path) -> Metric:
    engine = classical_engine(work_dir / "classical-quality")
    try:
        models, missing = _present(engine, MODELS)
        cases = holes(profile)
        # (hole class, photo, PSNR, SSIM, texture ratio, texture error, seconds) per model
        scores: dict[str, list[tuple]] = {model_id: [] for model_id in models}
        for model_id in models:  # untimed: the first call of each model loads its library
            _, _, image, mask = cases[0]
            results(engine.run(engine.prepare(_body(model_id, data_url(image), data_url(mask)))))
        for kind, name, image, mask in cases:
            image_url, mask_url = data_url(image), data_url(mask)
            truth_np, hole_np = np.asarray(image), np.asarray(mask) > 0
            for model_id in models:
                start = time.perf_counter()
                assets = results(engine.run(engine.prepare(_body(model_id, image_url, mask_url))))
                seconds = time.perf_counter() - start
                filled_np = _result_np(engine, assets)
                ratio = texture_ratio(truth_np, filled_np, hole_np)
                scores[model_id].append((kind, name, psnr(truth_np, filled_np, hole_np),
                                         ssim(truth_np, filled_np, hole_np),
                                         ratio, abs(math.log2(max(ratio, 1e-3))), seconds))  # a flat fill: 0
    finally:
        engine.store.close()

    def column(model_id: str, kind: str, index: int) -> list[float]:
        return [row[index] for row in scores[model_id] if row[0] == kind]

    def mean(model_id: str, kind: str, index: int) -> float:
        return statistics.fmean(column(model_id, kind, index))

    names = QUALITY_PHOTOS[profile.name]
    fractions = {kind: [float(np.mean(np.asarray(mask) > 0)) * 100 for k, _, _, mask in cases if k == kind]
                 for kind in HOLE_CLASSES}
    classes = "; ".join(f"{HOLE_CLASSES[kind]}: {len(share)} holes, {min(share):.1f}-{max(share):.1f}% of the image"
                        for kind, share in fractions.items())
    table = " | ".join(
        f"{model_id} {kind}: PSNR {mean(model_id, kind, 2):.2f} dB, SSIM {mean(model_id, kind, 3):.3f}, "
        f"texture {mean(model_id, kind, 4):.2f} (error {mean(model_id, kind, 5):.2f}), "
        f"{statistics.median(column(model_id, kind, 6)) * 1000:.0f} ms"
        for model_id in models for kind in HOLE_CLASSES)
    detail = (f"Seeded holes on {len(names)} real photographs from scikit-image ({', '.join(names)}), "
              f"{HOLES_PER_PHOTO[profile.name]} per photo and class ({classes}; the small ones alternate thin "
              f"scratches at an angle and small round ellipses), filled through the engine (prepare + generate, "
              f"merge mode, data URLs in) and compared with the original. Means over the holes of each class: PSNR "
              f"over the hole's pixels and SSIM over its bounding box (both reward closeness to the lost pixels: "
              f"a blur can outscore a plausible texture shifted by a few pixels); texture = the fill's mean "
              f"|Laplacian| inside the hole over that in a {RING_PX} px ring of known pixels around it, divided by "
              f"the same for the original (1.0 = as much fine detail as the photo had there, a blur well below), its "
              f"error = |log2 texture| (0 = the photo's, 1 = half or double); "
              f"ms = median prepare + generate per image. {table}")
    if missing:
        detail += f"; not in the catalog, skipped: {', '.join(missing)}"
    value = None
    if PATCHMATCH_ID in scores and "opencv-telea" in scores:
        # Object holes are where the models part: PSNR/SSIM there favour a blur, and what one sees is whether the
        # fill has the photo's grain. The texture error, not the ratio, so that too much texture (PatchMatch
        # copying a busier neighbour into a smooth spot) counts against a model as too little does.
        value = round(mean(PATCHMATCH_ID, "object", 5) - mean("opencv-telea", "object", 5), 2)
        detail += (f". Value: PatchMatch's mean texture error minus Telea's on object holes (below 0: PatchMatch "
                   f"nearer the photo's fine detail); PSNR PatchMatch - Telea: small "
                   f"{mean(PATCHMATCH_ID, 'small', 2) - mean('opencv-telea', 'small', 2):+.2f} dB, object "
                   f"{mean(PATCHMATCH_ID, 'object', 2) - mean('opencv-telea', 'object', 2):+.2f} dB")
    return Metric("classical_quality", value, "<= 0", "log2 (texture error, PatchMatch - Telea, object holes)",
                  detail)


# ---- cli_classical_overhead ----------------------------------------------------------------------

def _cli_case(folder: Path) -> tuple[Path, Path, Image.Image, Image.Image]:
    """A 512x512 real photo and an elliptical mask (about 10% of it), written as PNG files."""
    image = photos.crop(CLI_PHOTO, CLI_SIDE)
    mask = photos.hole(image.size, np.random.default_rng(SEED), area=(0.10, 0.10))
    image_path, mask_path = folder / "image.png", folder / "mask.png"
    image_path.write_bytes(_png(image))
    mask_path.write_bytes(_png(mask))
    return image_path, mask_path, image, mask


def _run(command: list[str], env: dict | None = None) -> None:
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited with {done.returncode}: {done.stderr[-2000:]}")


def cli_classical_overhead(profile, work_dir: Path) -> Metric:
    folder = Path(tempfile.mkdtemp(prefix="cli-classical-", dir=work_dir))
    try:
        image_path, mask_path, _, mask = _cli_case(folder)
        env = {**os.environ, "INPAINT_DATA_DIR": str(folder / "data"), "HF_HUB_OFFLINE": "1"}
        env.pop("INPAINT_CATALOG", None)  # the shipped catalog, as a user without one has
        probe = classical_engine(folder / "probe")
        try:
            models, missing = _present(probe, (PATCHMATCH_ID, "opencv-telea"))
            size = patch_size(probe)
            box = imageops.crop_box(mask)
        finally:
            probe.store.close()
        image_url = "data:image/png;base64," + base64.b64encode(image_path.read_bytes()).decode("ascii")
        mask_url = "data:image/png;base64," + base64.b64encode(mask_path.read_bytes()).decode("ascii")
        rows = []
        for model_id in models:
            request = folder / f"{model_id}.json"
            request.write_text(json.dumps(_body(model_id, image_url, mask_url)))
            out = folder / f"out-{model_id}"
            kind = "patchmatch" if model_id == PATCHMATCH_ID else "telea"
            cli = [sys.executable, "-m", "inpaint", "generate", str(request), "--out", str(out)]
            script = [sys.executable, "-c", SCRIPT, kind, str(image_path), str(mask_path), str(folder / "script.png"),
                      str(SEED), str(size), str(TELEA_RADIUS), str(PNG_LEVEL)]
            times = interleaved({"cli": lambda cli=cli: _run(cli, env), "script": lambda script=script: _run(script)},
                                profile.rounds, warmup=1)
            produced = len(list(out.glob("*.png")))
            if produced != profile.rounds + 1:
                raise RuntimeError(f"the CLI wrote {produced} results for {profile.rounds + 1} runs of {model_id}")
            rows.append((model_id, median_ratio(times, "cli", "script"), times))
            log.info("  %s: %.2f", model_id, rows[-1][1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not rows:
        return Metric("cli_classical_overhead", None, "<= 3", "ratio", f"no classical model to run: {missing}")
    worst = max(rows, key=lambda row: row[1])
    detail = (f"`python -m inpaint generate REQUEST.json --out DIR` (fresh process, shipped catalog, temporary "
              f"INPAINT_DATA_DIR; the request holds the image and mask as PNG data URLs, numSamples 1) against "
              f"`python -c SCRIPT` reading the same PNG files with PIL, calling the library on the whole image and "
              f"writing a PNG at level {PNG_LEVEL}; process start included in both; {CLI_PHOTO} {CLI_SIDE}x{CLI_SIDE} "
              f"with an elliptical mask ({np.mean(np.asarray(mask) > 0) * 100:.0f}% of it; the engine fills the "
              f"{box[2] - box[0]}x{box[3] - box[1]} region around it); PatchMatch patch size {size}, Telea "
              f"radius {TELEA_RADIUS}; medians of {profile.rounds} interleaved rounds of per-round ratios; "
              + "; ".join(f"{model_id} {ratio:.2f} ({summary(times)})" for model_id, ratio, times in rows)
              + f"; worst: {worst[0]}")
    if missing:
        detail += f"; not in the catalog, skipped: {', '.join(missing)}"
    return Metric("cli_classical_overhead", round(worst[1], 3), "<= 3", "ratio", detail)


# ---- patchmatch_engine_overhead ------------------------------------------------------------------

def patchmatch_engine_overhead(profile, work_dir: Path) -> Metric:
    engine = classical_engine(work_dir / "patchmatch-overhead")
    try:
        if PATCHMATCH_ID not in engine.catalog:
            log.info("  %s is not in the catalog: skipped", PATCHMATCH_ID)
            return Metric("patchmatch_engine_overhead", None, "<= 1.10", "ratio",
                          f"skipped: model {PATCHMATCH_ID!r} is not in the catalog")
        import patchmatch

        rounds, size = OVERHEAD_ROUNDS[profile.name], patch_size(engine)
        image = photos.crop(CLI_PHOTO, CLI_SIDE)
        mask = photos.hole(image.size, np.random.default_rng(SEED), area=(0.10, 0.10))
        body = _body(PATCHMATCH_ID, data_url(image), data_url(mask))
        # One prepared request per run, made before the timing: generate is what is timed.
        prepared = [engine.prepare(body) for _ in range(rounds + 1)]
        stored_mask = engine.store.open_image(prepared[0].mask_asset_id).convert("L")
        box = imageops.crop_box(stored_mask)
        region_np, region_mask_np = np.asarray(image.crop(box)), np.asarray(stored_mask.crop(box))
        pending = iter(prepared)
        made: list = []

        def ours() -> None:
            made.append(results(engine.run(next(pending))))

        def direct() -> np.ndarray:
            patchmatch.set_random_seed(SEED)
            return np.asarray(patchmatch.inpaint(region_np, region_mask_np, patch_size=size))

        times = interleaved({"engine": ours, "direct": direct}, rounds, warmup=1)
        ours_np = _result_np(engine, made[-1])
        left, top, right, bottom = box
        inside_np = region_mask_np > 0
        max_diff = int(np.abs(ours_np[top:bottom, left:right].astype(np.int16)
                              - direct().astype(np.int16))[inside_np].max())
    finally:
        engine.store.close()
    value = median_ratio(times, "engine", "direct")
    detail = (f"Engine.run on a prepared request ({PATCHMATCH_ID}, 1 sample, merge mode: fill the "
              f"{right - left}x{bottom - top} region around the mask, paste it back, store the PNG result) / "
              f"patchmatch.set_random_seed + patchmatch.inpaint(patch_size={size}, the catalog entry's) on the same "
              f"region and mask as the engine prepared it; {CLI_PHOTO} {CLI_SIDE}x{CLI_SIDE}, elliptical mask "
              f"{np.mean(np.asarray(mask) > 0) * 100:.0f}% of it; max |difference| inside the mask, engine vs "
              f"direct: {max_diff}; medians of {rounds} interleaved rounds of per-round ratios; {summary(times)}")
    return Metric("patchmatch_engine_overhead", round(value, 3), "<= 1.10", "ratio", detail)
