"""What the guards cost, as ratios: the tests check what they do (a picture over the pixel limit is refused
undecoded; a grown mask has the grown box), these say they do it without the work they exist to avoid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from inpaint import imageops
from inpaint.api import create_app
from tests.support.images import as_url, bomb_png, data_url, rect_mask

from .classical import classical_engine
from .timing import Metric, interleaved, median_ratio, summary

HUGE_SIDE = 13300  # 177 MP: a 21 KB PNG that took 17 s and 2.8 GB when it was decoded before the guards
GROW_SIDE = 4096


def huge_picture_refusal(profile, work_dir: Path) -> Metric:
    """POST /generate/inpaint with a 13300x13300 PNG as the picture against one with a 1x1 PNG: both are
    refused with a 400 naming `image`, the first by its header, the second once decoded."""
    engine = classical_engine(work_dir / "huge-refusal")
    app = create_app(engine, api_key=None, with_ui=False, allowed_hosts=("testserver",))
    mask = data_url(rect_mask(128, 96, (40, 30, 80, 60)))
    bodies = {"huge": {"modelId": "opencv-telea", "image": as_url(bomb_png(HUGE_SIDE, HUGE_SIDE)), "mask": mask},
              "tiny": {"modelId": "opencv-telea", "image": data_url(Image.new("RGB", (1, 1))), "mask": mask}}
    try:
        with TestClient(app) as client:
            def refused(name: str):
                def post() -> None:
                    response = client.post("/generate/inpaint", json=bodies[name])
                    assert response.status_code == 400 and response.json()["error"]["field"] == "image", response.text
                return post
            times = interleaved({name: refused(name) for name in bodies}, profile.rounds * 4)
    finally:
        engine.store.close()
    return Metric("huge_picture_refusal", round(median_ratio(times, "huge", "tiny"), 3), "<= 2", "ratio",
                  f"a {HUGE_SIDE}x{HUGE_SIDE} PNG ({len(bomb_png(HUGE_SIDE, HUGE_SIDE)) // 1024} KB) refused by its "
                  f"header / a 1x1 PNG refused after its decode, TestClient, median of "
                  f"{profile.rounds * 4} rounds: {summary(times)}")


def mask_grow_scaling(profile, work_dir: Path) -> Metric:
    """`prepare_mask` on a 4096x4096 mask grown by 64 px against by 8 px: the dilation's window sums cost the
    same whatever the grow (a max filter's cost rises with its square)."""
    mask_np = np.zeros((GROW_SIDE, GROW_SIDE), np.uint8)
    mask_np[1000:3000, 1200:1400] = 255
    mask = Image.fromarray(mask_np, "L")
    times = interleaved({f"grow {grow}": lambda grow=grow: imageops.prepare_mask(mask, mask.size, grow=grow)
                         for grow in (64, 8)}, profile.rounds)
    return Metric("mask_grow_scaling", round(median_ratio(times, "grow 64", "grow 8"), 3), "<= 1.5", "ratio",
                  f"{GROW_SIDE}x{GROW_SIDE} mask, grow 64 / grow 8, median of {profile.rounds} rounds: "
                  f"{summary(times)}")
