"""Selecting objects: what a further click costs once the picture is encoded (SAM 2.1 at its real size, random
weights, through the engine), and how well GrabCut finds objects whose outline is known exactly (an irregular
piece of one scikit-image photograph pasted onto another)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from inpaint import families
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.families import Prompt
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from inpaint.segment import segment
from tests.support.images import data_url

from . import models, photos
from .timing import Metric, interleaved, median_ratio, summary

SAM_MODEL_ID = "bench-sam2.1-tiny-size"


# ---- segment_second_click_ratio ----------------------------------------------------------------------------------

def _sam_folder() -> Path:
    """SAM 2.1 tiny's architecture (transformers' default Sam2Config) with random weights, saved once."""
    folder = models.CACHE_DIR / "models" / SAM_MODEL_ID
    if not (folder / "config.json").is_file():
        import torch
        from transformers import Sam2Model

        from inpaint.tiny import sam2_config

        torch.manual_seed(0)
        Sam2Model(sam2_config()).eval().save_pretrained(folder)
    return folder


def _sam_engine(work_dir: Path, name: str) -> Engine:
    path = models.CACHE_DIR / "catalog-sam.json"
    path.write_text(json.dumps({"models": [{"id": SAM_MODEL_ID, "type": "sam2", "source": str(_sam_folder()),
                                            "description": "SAM 2.1 tiny's size, random weights"}]}))
    catalog = Catalog.load(path)
    return Engine(catalog, AssetStore(work_dir / name), PipelineCache(catalog, models.CACHE_DIR / "models",
                                                                      max_pipelines=1, device="cpu"))


def segment_second_click_ratio(profile, work_dir: Path) -> Metric:
    picture = photos.crop("chelsea", profile.side)
    click = {"modelId": SAM_MODEL_ID, "points": [{"x": profile.side // 2, "y": profile.side // 3}]}
    # Two engines: one whose model keeps no picture (every click is a first one), one that keeps them.
    first_engine, engine = _sam_engine(work_dir, "sam-first"), _sam_engine(work_dir, "sam")
    first_engine.pipelines.get(SAM_MODEL_ID).pipe.pictures = 0
    picture_url = data_url(picture)
    picture_id = segment(engine, {**click, "image": picture_url}).image_id
    predictor = engine.pipelines.get(SAM_MODEL_ID).pipe
    encoded = predictor.encoded
    parameters = sum(p.numel() for p in predictor.model.parameters())

    # As the studio sends them: the first click with the picture, the next ones with its asset id.
    times = interleaved({"first": lambda: segment(first_engine, {**click, "image": picture_url}),
                         "second": lambda: segment(engine, {**click, "image": picture_id})}, profile.rounds)
    assert predictor.encoded == encoded, "a further click encoded the picture again"
    for each in (first_engine, engine):
        each.store.close()
    return Metric("segment_second_click_ratio", round(median_ratio(times, "second", "first"), 4), "<= 0.2", "x",
                  f"POST /segment's flow (decode, select, store the mask) on a {profile.side} px photo, one click, "
                  f"SAM 2.1 tiny's architecture ({parameters / 1e6:.1f} M parameters, random weights) on the CPU: "
                  f"{summary(times)}; medians of {profile.rounds} interleaved rounds")


# ---- grabcut_iou ----------------------------------------------------------------------------------------------------

def _iou(selected_np: np.ndarray, truth_np: np.ndarray) -> float:
    return float((selected_np & truth_np).sum() / (selected_np | truth_np).sum())


def grabcut_iou(profile, work_dir: Path) -> list[Metric]:
    grabcut = families.get("grabcut")
    iterations = grabcut.load(Catalog.load().get("grabcut"))
    side, per_pair = (384, 1) if profile.name == "quick" else (512, 3)
    rng = np.random.default_rng(2024)
    scores: dict[str, list[float]] = {"box": [], "click": []}
    seconds: dict[str, list[float]] = {"box": [], "click": []}
    for pair in photos.COMPOSITES:
        for _ in range(per_pair):
            picture, truth = photos.composite(*pair, side, rng)
            truth_np = np.asarray(truth) > 0
            ys, xs = np.nonzero(truth_np)
            # A click where a person clicks: the object's pixel farthest from its outline.
            distance = cv2.distanceTransform(truth_np.astype(np.uint8), cv2.DIST_L2, 5)
            y, x = np.unravel_index(distance.argmax(), distance.shape)
            prompts = {"box": Prompt(box=(xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)),
                       "click": Prompt(points=((float(x), float(y), 1),))}
            for name, prompt in prompts.items():
                start = time.perf_counter()
                selection = grabcut.select(iterations, picture, prompt)
                seconds[name].append(time.perf_counter() - start)
                scores[name].append(_iou(np.asarray(selection.mask) > 0, truth_np))
    setting = (f"{len(scores['box'])} composites at {side} px (an irregular piece of one scikit-image photo pasted on "
               f"another: {', '.join(f'{a} on {b}' for a, b in photos.COMPOSITES)})")

    def metric(name: str, prompt: str, goal: str) -> Metric:
        return Metric(name, round(statistics.mean(scores[prompt]), 4), goal, "IoU",
                      f"one {prompt} per picture, {setting}: IoU min {min(scores[prompt]):.3f}; "
                      f"{statistics.median(seconds[prompt]):.2f} s per selection (median) on the CPU")

    return [metric("grabcut_iou", "box", ">= 0.95"), metric("grabcut_iou_click", "click", ">= 0.85")]
