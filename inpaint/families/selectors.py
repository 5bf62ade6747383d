"""Segmentation families: they select an object from clicks, a box or a text, they do not inpaint. GrabCut
(OpenCV, no weights), SAM 2.1 and SAM 3 (transformers, weights from the Hub)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import RequestError
from .base import Family, Prompt, Selection

# GrabCut's cost grows with the pixels (0.5-0.9 s at ~512 px on a 2-core CPU): it works at this longest side,
# and its mask is scaled back up. The object's outline at 512 px is finer than a brush stroke.
GRABCUT_SIDE = 512
# From a click: "probably the object" in a square of this fraction of the short side around it, "surely the
# object" in a disk of this fraction at it, "surely not" on the border and in a disk twice that at a negative
# click. The square's colours teach GrabCut what the object looks like: too small and it misses the object's
# other colours, too large and it learns the surroundings. On 8 composites of bench/photos.py (objects of 15-25%
# of the side) and a click on scikit-image's rocket (a thin object): 0.05 -> mean IoU 0.76, rocket right;
# 0.1 -> 0.93; 0.15 -> 0.99 (min 0.91), rocket right; 0.2 -> 0.98, but the rocket takes the sky with it.
CLICK_REACH = 0.15
CLICK_DISK = 0.015
BORDER_PX = 1  # GrabCut needs background samples even when a box covers the whole picture
GRABCUT_SEED = 0


@dataclass(frozen=True)
class GrabCut(Family):
    """OpenCV's GrabCut: colour models of the object and its surroundings, refined a few times. Offline, a box or
    clicks; the selection is the part connected to the positive clicks."""

    def load(self, entry, cache=None) -> int:
        """The number of iterations, from the source `grabcut:<iterations>`."""
        iterations = entry.source.split(":", 1)[1]
        if not iterations.isdigit() or not 1 <= int(iterations) <= 20:
            raise RequestError("modelId", f"{entry.id!r}: source must be grabcut:<iterations 1..20>")
        return int(iterations)

    def select(self, model: int, image: Image.Image, prompt: Prompt) -> Selection:
        import cv2

        scale = min(1.0, GRABCUT_SIDE / max(image.size))
        work = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                            Image.Resampling.BOX) if scale < 1 else image
        height, width = work.height, work.width
        short = min(width, height)
        disk = max(2, round(CLICK_DISK * short))
        points = [(round(x * scale), round(y * scale), label) for x, y, label in prompt.points]

        init_np = np.full((height, width), cv2.GC_PR_BGD, np.uint8)
        if prompt.box is not None:
            # Outward: a box of a pixel or two still covers a pixel at the working size.
            left, top = (math.floor(v * scale) for v in prompt.box[:2])
            right, bottom = (math.ceil(v * scale) for v in prompt.box[2:])
            init_np[:] = cv2.GC_BGD
            init_np[top:bottom, left:right] = cv2.GC_PR_FGD
        else:
            reach = max(disk, round(CLICK_REACH * short))
            for x, y, label in points:
                if label:
                    init_np[max(0, y - reach):y + reach, max(0, x - reach):x + reach] = cv2.GC_PR_FGD
        border = np.ones_like(init_np, bool)
        border[BORDER_PX:-BORDER_PX, BORDER_PX:-BORDER_PX] = False
        init_np[border] = cv2.GC_BGD
        for x, y, label in points:
            cv2.circle(init_np, (x, y), disk if label else 2 * disk, cv2.GC_FGD if label else cv2.GC_BGD, -1)

        # OpenCV works in BGR; the project's convention is RGB in.
        bgr_np = cv2.cvtColor(np.asarray(work), cv2.COLOR_RGB2BGR)
        models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut's colour models start from k-means with random centres: on the rocket photo one click gave 2%,
        # 26% or 31% of the picture from run to run. OpenCV's generator is per thread: seeded here, one picture
        # and prompt give one selection.
        cv2.setRNGSeed(GRABCUT_SEED)
        labels = set(np.unique(init_np).tolist())
        # GrabCut models both sides; a box squeezed into the border leaves it no object: nothing is selected.
        if labels & {cv2.GC_FGD, cv2.GC_PR_FGD} and labels & {cv2.GC_BGD, cv2.GC_PR_BGD}:
            cv2.grabCut(bgr_np, init_np, None, *models, model, cv2.GC_INIT_WITH_MASK)
        selected_np = ((init_np == cv2.GC_FGD) | (init_np == cv2.GC_PR_FGD)).astype(np.uint8)
        clicked = [(x, y) for x, y, label in points if label]
        if clicked:
            # Colours alike elsewhere in the picture are not what was clicked on.
            _, parts_np = cv2.connectedComponents(selected_np, connectivity=8)
            kept = {int(parts_np[min(y, height - 1), min(x, width - 1)]) for x, y in clicked} - {0}
            selected_np = np.isin(parts_np, list(kept)).astype(np.uint8)
        mask_np = selected_np * 255
        if scale < 1:
            # Linear then thresholded at half: the outline is smooth, not the staircase of a nearest-neighbour zoom.
            mask_np = np.where(cv2.resize(mask_np, image.size, interpolation=cv2.INTER_LINEAR) >= 128, 255, 0)
        return Selection(Image.fromarray(mask_np.astype(np.uint8), "L"), None)


@dataclass(frozen=True)
class Sam(Family):
    """SAM 2.1 and SAM 3 through transformers: the picture is encoded once, each prompt then costs only what reads
    it (see inpaint/sam.py)."""

    predictor: str = ""  # the class of inpaint.sam that loads and runs the family's models

    def unavailable(self, entry) -> str | None:
        if entry.source_kind == "hub" and entry.availability() == "needs download":
            from ..hub import hub_offline

            if hub_offline():
                return (f"it needs a download of {entry.source.split(':', 1)[1]!r} from the Hugging Face Hub, but "
                        "HF_HUB_OFFLINE is set; fill the Hugging Face cache (HF_HOME) or unset it")
        return None

    def load(self, entry, cache):
        from .. import sam

        return getattr(sam, self.predictor).load(entry, cache)

    def select(self, model, image: Image.Image, prompt: Prompt) -> Selection:
        return model.select(image, prompt)


GRABCUT = GrabCut("grabcut", "GrabCut", selects=frozenset({"points", "box"}))
# A load reads ~150 MB (tiny) to ~180 MB (small); a click is milliseconds once the picture is encoded.
SAM2 = Sam("sam2", "SAM 2.1", has_weights=True, selects=frozenset({"points", "box"}), hub_marker="config.json",
           predictor="Sam2Predictor")
# Every instance of what a text names. Its box prompts sample the picture's features with torchvision's roi_align,
# and torchvision has no CPU build for the pinned torch: boxes and clicks are SAM 2.1's here.
SAM3 = Sam("sam3", "SAM 3", has_weights=True, selects=frozenset({"text"}), hub_marker="config.json",
           predictor="Sam3Predictor")
