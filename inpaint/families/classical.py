"""Families without weights that run on the CPU in the request's thread: OpenCV's two algorithms and
PatchMatch. Neither imports torch."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import RequestError
from . import coarse_fine
from .base import Family

OPENCV_RADIUS_PX = 3  # neighbourhood each classical algorithm looks at; OpenCV's documented example uses 3
# Around the hole's box: OpenCV reads the known pixels within its radius of the hole (Telea's distances outside it
# too). Twice that leaves room; tests/test_families.py checks the fill against one of the whole picture.
OPENCV_MARGIN_PX = 2 * OPENCV_RADIUS_PX + 2
PATCHMATCH_INSTALL = "pip install pypatchmatch"


@dataclass(frozen=True)
class OpenCV(Family):
    """`cv2.inpaint`, Telea's fast marching or Navier-Stokes: deterministic, smooth fills of small holes."""

    def load(self, entry, cache=None) -> int:
        import cv2

        algorithms = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
        variant = entry.source.split(":", 1)[1]
        if variant not in algorithms:
            raise RequestError("modelId", f"{entry.id!r} names OpenCV algorithm {variant!r}; one of "
                                          f"{', '.join(algorithms)}")
        return algorithms[variant]

    def run(self, model: int, request, regions, masks, seeds, on_step) -> list[Image.Image]:
        import cv2

        # Both algorithms fill each channel on its own, so RGB needs no round trip through OpenCV's BGR (two
        # copies of a large picture). They read the known pixels within their radius of the hole only, so they
        # run on the hole's box and a margin: the same pixels, without OpenCV's working copies of the rest.
        filled = []
        for region, mask in zip(regions, masks):
            fill = region.copy()
            hole = mask.getbbox()
            if hole is not None:
                box = (max(0, hole[0] - OPENCV_MARGIN_PX), max(0, hole[1] - OPENCV_MARGIN_PX),
                       min(mask.width, hole[2] + OPENCV_MARGIN_PX), min(mask.height, hole[3] + OPENCV_MARGIN_PX))
                fill.paste(Image.fromarray(cv2.inpaint(np.asarray(region.crop(box)), np.asarray(mask.crop(box)),
                                                       OPENCV_RADIUS_PX, model)), box[:2])
            filled.append(fill)
        return filled


# The library's seed is process-wide state: one fill at a time, or two requests would draw from each other's.
PATCHMATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class PatchMatch(Family):
    """PatchMatch (the `pypatchmatch` package): fills a hole with patches copied from the rest of the image,
    so textures continue where OpenCV's fills blur. Seeded: another seed, another fill."""

    def unavailable(self, entry) -> str | None:
        try:
            import patchmatch
        except ImportError:
            return f"it needs the PatchMatch library: {PATCHMATCH_INSTALL}"
        if not patchmatch.patchmatch_available:
            return "the PatchMatch library is installed but its native part does not load on this machine"
        return None

    def load(self, entry, cache=None) -> int:
        """The patch radius, from the source `patchmatch:<radius>`."""
        radius = entry.source.split(":", 1)[1]
        if not radius.isdigit() or not 1 <= int(radius) <= 15:
            raise RequestError("modelId", f"{entry.id!r}: source must be patchmatch:<patch radius 1..15>")
        return int(radius)

    def run(self, model: int, request, regions, masks, seeds, on_step) -> list[Image.Image]:
        # A large region is filled at a bounded size and brought back to full resolution (coarse_fine): the
        # library's time grows faster than the hole.
        return [Image.fromarray(coarse_fine.fill(np.asarray(region), np.asarray(mask),
                                                 functools.partial(_library_fill, patch_size=model, seed=seed), seed))
                for region, mask, seed in zip(regions, masks, seeds)]


def _library_fill(image_np: np.ndarray, hole_np: np.ndarray, *, patch_size: int, seed: int) -> np.ndarray:
    import patchmatch

    with PATCHMATCH_LOCK:
        patchmatch.set_random_seed(seed)
        return patchmatch.inpaint(image_np, hole_np, patch_size=patch_size)
