"""Where generation happens: one crop per mask region, its processing size, and the grown canvas of an outpaint.

Pure PIL/numpy/OpenCV, no model: `Engine.prepare` plans a request's crops here once (the request carries them), and
the studio draws its previews on `outpaint_canvas`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from .errors import RequestError
from .imageops import MAX_PIXELS, MAX_SIDE, MIN_SIDE
from .schema import Box, Region, generation_size

CONTEXT = 0.5  # context around a region: half its longer side on each side...
MIN_CONTEXT_PX = 32  # ...and at least this, so a small mark still sees its surroundings
MIN_BOX_PX = 64  # the smallest crop side a family is handed
# A mask of many specks (a scribbled texture, salt noise) would become as many generations: past this many
# regions the request is generated as one box around them all, as before regions existed.
MAX_REGIONS = 16
# Boxes whose aspect is within this of the generation size's are not widened: the resize's distortion is
# below what a snap of the size to a multiple of 8 already gives.
ASPECT_TOLERANCE = 0.02
# The new area of an outpaint is pre-filled at most at this many pixels (then enlarged): its colours are a
# starting point for the model, not detail, and PatchMatch's time grows with the pixels.
PREFILL_PIXELS = 512 * 512


def context_box(bbox: Box, image_size: tuple[int, int], *, aspect: float | None = None) -> Box:
    """`bbox` with context around it, kept inside the image (shifted, not cut, at the border); widened or
    heightened to `aspect` (width / height) when given and the image allows."""
    left, top, right, bottom = bbox
    pad = max(MIN_CONTEXT_PX, round(CONTEXT * max(right - left, bottom - top)))
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    width, height = max(width, MIN_BOX_PX), max(height, MIN_BOX_PX)
    if aspect is not None and abs(width / height / aspect - 1) > ASPECT_TOLERANCE:
        if width / height < aspect:
            width = round(height * aspect)
        else:
            height = round(width / aspect)

    def span(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
        size = min(size, limit)
        start = (lo + hi) // 2 - size // 2
        start = min(max(start, 0), limit - size)
        return start, start + size

    (x0, x1), (y0, y1) = span(left, right, width, image_size[0]), span(top, bottom, height, image_size[1])
    return x0, y0, x1, y1


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def components(mask: Image.Image) -> list[Box]:
    """The bounding boxes of the mask's connected regions (8-connected, anything above 0)."""
    mask = mask.convert("L")
    bbox = mask.getbbox()
    if bbox is None:
        raise RequestError("mask", "mask is empty: paint the area to repaint in white")
    # Labelled within the marks' bounding box: a small mark on a 40 MP photo costs what the mark costs.
    left, top = bbox[:2]
    count, _, stats_np, _ = cv2.connectedComponentsWithStats((np.asarray(mask.crop(bbox)) > 0).astype(np.uint8),
                                                             connectivity=8)
    return [(int(x) + left, int(y) + top, int(x + w) + left, int(y + h) + top) for x, y, w, h, _ in stats_np[1:count]]


def group(mask: Image.Image, *, aspect: float | None = None) -> list[Box]:
    """The crop boxes of the mask's regions, top to bottom then left to right: one per group of connected
    regions whose crop boxes overlap, merged until none do (so each region is pasted from one crop only)."""
    bboxes = components(mask)
    if len(bboxes) > MAX_REGIONS:
        bboxes = [_bbox_of(bboxes)]
    while True:
        boxes = [context_box(bbox, mask.size, aspect=aspect) for bbox in bboxes]
        pair = next(((i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                     if _overlap(boxes[i], boxes[j])), None)
        if pair is None:
            return sorted(boxes, key=lambda box: (box[1], box[0]))
        i, j = pair
        bboxes[i] = _union(bboxes[i], bboxes.pop(j))


def _bbox_of(boxes: list[Box]) -> Box:
    out = boxes[0]
    for box in boxes[1:]:
        out = _union(out, box)
    return out


def plan(mask: Image.Image, family, *, size: tuple[int, int] | None = None) -> list[Region]:
    """The regions a request generates for `mask` (as the engine stores it: grown for diffusion) with a model
    of `family`. `size` is the request's width and height; None takes the family's default (its native area at
    the largest region's aspect). Families with a native resolution generate every region at that one size (so
    the crops go through the pipeline in one batch), each box widened to its aspect; the others work on each
    box at its own size."""
    if family.native_resolution is None:
        return [Region(box, (box[2] - box[0], box[3] - box[1])) for box in group(mask)]
    if size is None:
        size = default_size(mask, family)
    return [Region(box, tuple(size)) for box in group(mask, aspect=size[0] / size[1])]


def default_size(mask: Image.Image, family) -> tuple[int, int]:
    """The processing size a request gets without width and height: the family's native area at the aspect
    of the largest region (a box at its own size for families without a native resolution)."""
    boxes = group(mask)
    left, top, right, bottom = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    if family.native_resolution is None:
        return right - left, bottom - top
    return generation_size((right - left, bottom - top), family.native_resolution, family.size)


# ---- outpainting --------------------------------------------------------------------------------------

def outpaint_size(image_size: tuple[int, int], sides: dict[str, int]) -> tuple[int, int]:
    """The grown canvas's size; a RequestError naming `outpaint` when it is past the contract's limits."""
    width = image_size[0] + sides["left"] + sides["right"]
    height = image_size[1] + sides["top"] + sides["bottom"]
    if width > MAX_SIDE or height > MAX_SIDE:
        raise RequestError("outpaint", f"the image would be {width}x{height} px; each side must be at most "
                                       f"{MAX_SIDE} px (the image is {image_size[0]}x{image_size[1]})")
    if width * height > MAX_PIXELS:
        raise RequestError("outpaint", f"the image would be {width}x{height} px = {width * height / 1e6:.1f} MP; "
                                       f"at most {MAX_PIXELS / 1e6:.0f} MP")
    if min(width, height) < MIN_SIDE:
        raise RequestError("outpaint", f"the image would be {width}x{height} px; each side must be at least "
                                       f"{MIN_SIDE} px")
    return width, height


def outpaint_mask(image_size: tuple[int, int], sides: dict[str, int], *, band: int = 0) -> Image.Image:
    """The grown canvas's mask: 255 over the new area and `band` px into the original, 0 elsewhere."""
    width, height = outpaint_size(image_size, sides)
    mask_np = np.full((height, width), 255, np.uint8)
    keep = (sides["left"] + (band if sides["left"] else 0), sides["top"] + (band if sides["top"] else 0),
            sides["left"] + image_size[0] - (band if sides["right"] else 0),
            sides["top"] + image_size[1] - (band if sides["bottom"] else 0))
    mask_np[keep[1]:keep[3], keep[0]:keep[2]] = 0
    return Image.fromarray(mask_np, "L")


def outpaint_canvas(image: Image.Image, sides: dict[str, int], *, prefill: bool = True,
                    seed: int = 0) -> Image.Image:
    """The grown canvas: `image` at its offset, the new area pre-filled from it (PatchMatch, else Telea) so a
    model starts from plausible colours rather than grey; with `prefill` False the new area is mid-grey (a
    preview that needs no fill)."""
    width, height = outpaint_size(image.size, sides)
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(image, (sides["left"], sides["top"]))
    if not prefill or (width, height) == image.size:
        return canvas
    new_area = np.asarray(outpaint_mask(image.size, sides))
    scale = min(1.0, math.sqrt(PREFILL_PIXELS / (width * height)))
    small_size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small_np = np.asarray(canvas.resize(small_size, Image.Resampling.BOX))
    # Grown by a pixel at the small size: a small pixel that mixes the grey with the photo is a hole too.
    hole_np = cv2.dilate((np.asarray(Image.fromarray(new_area).resize(small_size, Image.Resampling.BOX)) > 0)
                         .astype(np.uint8), np.ones((3, 3), np.uint8))
    filled_np = _fill(small_np, hole_np, seed)
    filled = Image.fromarray(filled_np).resize((width, height), Image.Resampling.BICUBIC)
    canvas.paste(filled, (0, 0), Image.fromarray(new_area))
    return canvas


def _fill(image_np: np.ndarray, hole_np: np.ndarray, seed: int) -> np.ndarray:
    try:
        import patchmatch
    except ImportError:
        patchmatch = None
    if patchmatch is not None and patchmatch.patchmatch_available:
        from .families.classical import PATCHMATCH_LOCK

        with PATCHMATCH_LOCK:
            patchmatch.set_random_seed(seed % 2**32)
            return np.asarray(patchmatch.inpaint(image_np, hole_np * 255, patch_size=3))
    bgr_np = cv2.cvtColor(np.ascontiguousarray(image_np), cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.inpaint(bgr_np, hole_np * 255, 3, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)
