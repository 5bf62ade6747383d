"""Invisible seams: colour matching of a generated crop to its surroundings, and the seam report of a result.

Pure numpy/OpenCV, in CIE Lab (OpenCV's float conversion: sRGB, D65; L in 0..100).
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import cv2
import numpy as np
from PIL import Image

from .schema import ColorMatch

COLOR_MATCHES = get_args(ColorMatch)
RING_PX = 16  # known pixels this close outside the mask give the statistics: near enough to share its light
MIN_RING_PIXELS = 64  # fewer known pixels than this (a mask over the whole crop) say nothing reliable
STD_RATIO = (0.5, 2.0)  # a ring of flat colour has a tiny std: the gain it asks for would amplify noise
SEAM_BAND_PX = 4  # width of the bands compared on each side of the mask's edge
SEAM_WINDOW_SIGMA = 6.0  # local means over about this many pixels: texture averages out, a colour step stays
DIFF_STRIP_ROWS = 256  # rows compared at a time by the outside-the-mask check
Box = tuple[int, int, int, int]  # left, top, right, bottom


def to_lab(rgb_np: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb_np.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def from_lab(lab_np: np.ndarray) -> np.ndarray:
    rgb_np = cv2.cvtColor(lab_np.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb_np * 255), 0, 255).astype(np.uint8)


def _distance(inside_np: np.ndarray) -> np.ndarray:
    """Per pixel of `inside_np` (bool), its distance in px to the nearest pixel outside it (0 outside)."""
    return cv2.distanceTransform(inside_np.astype(np.uint8), cv2.DIST_L2, 3)


def ring(mask_np: np.ndarray, width: int = RING_PX) -> np.ndarray:
    """The known pixels (mask 0) within `width` px of the mask."""
    return (mask_np == 0) & (_distance(mask_np == 0) <= width)


def match_colors(generated: Image.Image, original: Image.Image, mask: Image.Image, method: str) -> Image.Image:
    """`generated` (a crop the model made of `original`, the same size) with its colours mapped so that on the
    known ring around `mask` they have the original's statistics, in Lab. The ring is where the model's
    output should equal the original: any difference there is the model's drift (a cast, a shift of tone),
    and the same correction is applied to the whole crop. Where the output equals the original on the ring
    (a fill that keeps every known pixel) the crop is returned unchanged."""
    if method == "none":
        return generated
    if method not in COLOR_MATCHES:
        raise ValueError(f"match_colors: method {method!r} must be one of {', '.join(COLOR_MATCHES)}")
    mask_np = _grey(mask)
    # A fill that kept every known pixel of the ring drifted nowhere: one comparison within the ring's box (not
    # the whole crop: on a large picture that would be copies of it), no distance transform.
    x, y, width, height = cv2.boundingRect(mask_np)
    box = (max(0, x - RING_PX), max(0, y - RING_PX), min(mask.width, x + width + RING_PX),
           min(mask.height, y + height + RING_PX))
    if _outside_mask_max_diff(generated, original, mask_np[box[1]:box[3], box[0]:box[2]], box) == 0:
        return generated
    generated_np, original_np = np.asarray(generated.convert("RGB")), np.asarray(original.convert("RGB"))
    known_np = ring(mask_np)
    if known_np.sum() < MIN_RING_PIXELS or np.array_equal(generated_np[known_np], original_np[known_np]):
        return generated
    lab_np = to_lab(generated_np)
    source_np, target_np = lab_np[known_np], to_lab(original_np[known_np][None])[0]
    if method == "mean-std":
        mean_s, mean_t = source_np.mean(axis=0), target_np.mean(axis=0)
        gain = np.clip(target_np.std(axis=0) / np.maximum(source_np.std(axis=0), 1e-3), *STD_RATIO)
        matched_np = (lab_np - mean_s) * gain + mean_t
    else:
        matched_np = np.stack([_match_histogram(lab_np[..., c], source_np[:, c], target_np[:, c])
                               for c in range(3)], axis=-1)
    return Image.fromarray(from_lab(matched_np), "RGB")


def _match_histogram(values_np: np.ndarray, source_np: np.ndarray, target_np: np.ndarray) -> np.ndarray:
    """Maps `values_np` through the quantile function that takes `source_np`'s distribution to `target_np`'s;
    values beyond the source's range move with its ends."""
    quantiles = np.linspace(0, 1, 257)
    source_q, target_q = np.quantile(source_np, quantiles), np.quantile(target_np, quantiles)
    # np.interp needs increasing x: equal quantiles (a flat channel) are spread by a hair.
    source_q = source_q + np.arange(len(quantiles)) * 1e-6
    mapped_np = np.interp(values_np, source_q, target_q)
    below, above = values_np < source_q[0], values_np > source_q[-1]
    mapped_np[below] = values_np[below] - source_q[0] + target_q[0]
    mapped_np[above] = values_np[above] - source_q[-1] + target_q[-1]
    return mapped_np


def ciede2000(lab1_np: np.ndarray, lab2_np: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of Lab arrays (..., 3) (Sharma, Wu and Dalal's formulation)."""
    l1, a1, b1 = np.moveaxis(lab1_np.astype(np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(lab2_np.astype(np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    dl, dc = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0, dh)
    d_big_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_bar, c_bar_p = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_bar = np.where(c1p * c2p == 0, h_sum, h_bar)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_bar_p, 1 + 0.015 * c_bar_p * t
    r_t = (-2 * np.sqrt(c_bar_p**7 / (c_bar_p**7 + 25.0**7))
           * np.sin(np.radians(60 * np.exp(-(((h_bar - 275) / 25) ** 2)))))
    return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (d_big_h / s_h) ** 2
                   + r_t * (dc / s_c) * (d_big_h / s_h))


def seam_delta_e(result: Image.Image, original: Image.Image, mask: Image.Image, *, inset: int = 0) -> float:
    """The colour step across the mask's edge: mean CIEDE2000 between the local mean colour of the result just
    inside the edge and that of the original just outside it. `inset` skips that many px of a blend band
    inside the edge (where the result is still mostly the original), so the result's side is where it is the
    model's own. Local means (a Gaussian window) leave the texture out: what remains is a shift of colour or
    tone that the eye sees as a seam. 0.0 when one side is missing (a mask over the whole image)."""
    return _Edge.of(_rgb(original), np.asarray(mask.convert("L")) > 0, inset).delta_e(_rgb(result))


def _grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "L" else image.convert("L"))


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


@dataclasses.dataclass(frozen=True)
class _Edge:
    """The original's side of a mask's edge: which pixels of the band just inside the edge are compared, and the
    local mean colour (Lab) of the original just outside it around each; the result's side is measured later."""

    inner_np: np.ndarray  # the band inside the edge, past `inset` (bool)
    compared: tuple[np.ndarray, np.ndarray]  # rows and columns of the inner band's pixels that see the outer band
    outer_means: np.ndarray  # (n, 3): the original's local mean around each of them

    @classmethod
    def of(cls, original_np: np.ndarray, mask_np: np.ndarray, inset: int) -> _Edge:
        inside_d, outside_d = _distance(mask_np), _distance(~mask_np)
        inner_np = mask_np & (inside_d > inset) & (inside_d <= inset + SEAM_BAND_PX)
        outer_np = ~mask_np & (outside_d <= SEAM_BAND_PX)
        if not inner_np.any() or not outer_np.any():
            return cls(inner_np, (np.empty(0, np.intp),) * 2, np.empty((0, 3), np.float32))
        # Compared where both sides are near: the inner band's pixels that see the outer band in their window.
        compared = np.nonzero(inner_np & (_blur(outer_np.astype(np.float32)) > 1e-3))
        return cls(inner_np, compared, _means(_local_sums(original_np, outer_np, compared)))

    def delta_e(self, result_np: np.ndarray) -> float:
        if not self.compared[0].size:
            return 0.0
        inner_means = _means(_local_sums(result_np, self.inner_np, self.compared))
        return float(ciede2000(inner_means, self.outer_means).mean())


def _means(sums: np.ndarray) -> np.ndarray:
    return sums[:, :3] / np.maximum(sums[:, 3:], 1e-6)


def _blur(plane_np: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(plane_np, (0, 0), SEAM_WINDOW_SIGMA)


def _local_sums(rgb_np: np.ndarray, where_np: np.ndarray, at: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """At the pixels `at` (rows, columns), the Gaussian-weighted sums of the Lab colours (columns 0-2) and of the
    weights (column 3) of the pixels of `where_np` around them: their local mean is the first over the second.
    Only those pixels are converted to Lab (a band is a thin ring of a large crop), and the channels are blurred
    one at a time: four at once would be a float copy of the box four times over."""
    ys, xs = np.nonzero(where_np)  # once: each use of the boolean array as an index would search it again
    lab_np = to_lab(rgb_np[ys, xs][None])[0]
    sums_np = np.empty((len(at[0]), 4), np.float32)
    plane_np = np.zeros(where_np.shape, np.float32)
    for channel in range(4):
        plane_np[ys, xs] = lab_np[:, channel] if channel < 3 else 1
        sums_np[:, channel] = _blur(plane_np)[at]
    return sums_np


def outside_mask_max_diff(result: Image.Image, original: Image.Image, mask: Image.Image) -> int:
    """The largest change of any channel of any pixel outside the mask (mask 0), 0..255."""
    return _outside_mask_max_diff(result, original, _grey(mask), (0, 0, *mask.size))


def _outside_mask_max_diff(result: Image.Image, original: Image.Image, mask_np: np.ndarray, box: Box) -> int:
    """outside_mask_max_diff within `box` of two images (`mask_np` is the box's), read by strips of rows: the
    arrays it makes are a strip's, not copies of a large picture."""
    # In 8 bits and with OpenCV's vector code: on a 2048 px result, a fraction of the PNG encode it runs beside.
    left, top, right, bottom = box
    largest = 0
    for row in range(top, bottom, DIFF_STRIP_ROWS):
        strip = (left, row, right, min(row + DIFF_STRIP_ROWS, bottom))
        difference_np = cv2.absdiff(_pixels(result, strip), _pixels(original, strip))
        outside_np = cv2.compare(mask_np[row - top:strip[3] - top], 0, cv2.CMP_EQ)
        largest = max(largest, int(cv2.bitwise_and(difference_np, difference_np, mask=outside_np).max()))
    return largest


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a seam report reads of the original and its mask, taken before the result exists: a generation
    measures it while its model runs, so that once a result is made only the result's side is left."""

    # The original itself, read when the result is: it is kept for the merge anyway, and an array of it would be
    # one more copy of a large picture.
    original: Image.Image
    boxes: list[tuple[Box, np.ndarray]]  # where a result may differ, with the mask's pixels there
    edge_box: Box | None  # the mask edge's surroundings; None where nothing is masked
    edge: _Edge | None


def reference(original: Image.Image, mask: Image.Image, *, inset: int = 0, boxes: list[Box] | None = None) -> Reference:
    """The original's side of the seam report of results made from `original` under `mask`.

    `boxes`, when given, are the only places where a result may differ from `original` (the regions merged back:
    elsewhere it holds the original's pixels by construction), and only they are read: a small mark on a 40 MP
    photo costs what the mark costs."""
    known = [(box, _grey(_crop(mask, box))) for box in boxes or [(0, 0, *mask.size)]]
    bbox = None
    for (left, top, _, _), mask_np in known:
        x, y, width, height = cv2.boundingRect(mask_np)  # of the box's masked pixels; 0 wide if none
        if width:
            inner = (left + x, top + y, left + x + width, top + y + height)
            bbox = inner if bbox is None else (*map(min, bbox[:2], inner[:2]), *map(max, bbox[2:], inner[2:]))
    if bbox is None:
        return Reference(original, known, None, None)
    # The edge's surroundings only.
    margin = SEAM_BAND_PX + round(4 * SEAM_WINDOW_SIGMA)
    edge_box = (max(0, bbox[0] - margin), max(0, bbox[1] - margin),
                min(mask.width, bbox[2] + margin), min(mask.height, bbox[3] + margin))
    edge_mask_np = _grey(_crop(mask, edge_box)) > 0
    return Reference(original, known, edge_box, _Edge.of(_pixels(original, edge_box), edge_mask_np, inset))


def report(result: Image.Image, known: Reference) -> dict:
    """The seam report of a result against the image it was made from (`known`, that image's reference), as the
    job's metadata carries it."""
    outside = max(_outside_mask_max_diff(result, known.original, mask_np, box) for box, mask_np in known.boxes)
    seam = known.edge.delta_e(_pixels(result, known.edge_box)) if known.edge is not None else 0.0
    return {"outsideMaskMaxDiff": outside, "seamDeltaE": round(seam, 3)}


def _crop(image: Image.Image, box: Box) -> Image.Image:
    return image if box == (0, 0, *image.size) else image.crop(box)


def _pixels(image: Image.Image, box: Box) -> np.ndarray:
    """The RGB pixels of `image` in `box`, read without a copy of the rest."""
    return _rgb(_crop(image, box))
