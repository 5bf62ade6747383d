"""Families without weights that run on the CPU in the request's thread: OpenCV's two algorithms and
PatchMatch. Neither imports torch."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import RequestError
from .base import Family

OPENCV_RADIUS_PX = 3  # neighbourhood each classical algorithm looks at; OpenCV's documented example uses 3
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

        outputs = []
        for region, mask in zip(regions, masks):
            # OpenCV works in BGR; the project's convention is RGB in, RGB out.
            bgr_np = cv2.cvtColor(np.asarray(region), cv2.COLOR_RGB2BGR)
            filled_np = cv2.inpaint(bgr_np, np.asarray(mask), OPENCV_RADIUS_PX, model)
            outputs.append(Image.fromarray(cv2.cvtColor(filled_np, cv2.COLOR_BGR2RGB)))
        return outputs


# The library's seed is process-wide state: one fill at a time, or two requests would draw from each other's.
_patchmatch_lock = threading.Lock()


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
        import patchmatch

        outputs = []
        for region, mask, seed in zip(regions, masks, seeds):
            with _patchmatch_lock:
                patchmatch.set_random_seed(seed)
                outputs.append(Image.fromarray(patchmatch.inpaint(np.asarray(region), np.asarray(mask),
                                                                  patch_size=model)))
        return outputs
