"""PatchMatch at any size: the hole is filled at a bounded working resolution, then brought back up octave by
octave by the fill's own nearest-neighbour field, so the full-resolution pixels are copied from the photo at
full resolution (its fine texture) rather than enlarged from the small fill (a blur).

The library fills the small copy and keeps its field to itself; the field is found again here (a PatchMatch
search against the small fill, where each hole patch has a copy to find), then each octave up doubles it,
refines it within a pixel and lets the patches vote, keeping the light of the octave below. Only the hole and a
band of a patch around it are worked on, and a source is looked for only in the region the family was given. Numpy and OpenCV only, vectorised over
the hole's pixels, seeded by the fill's seed.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# The library's time grows with the pixels it is given and faster than its hole (a 25% hole: 1.2 s at 256x256,
# 3.9 s at 512x512, 13.8 s at 1024x1024 on one core here). A region up to DIRECT_PIXELS is filled as it is; a
# larger one on a copy halved until it is at most WORK_PIXELS (at 1024x1024: 128x128, 0.6 s).
DIRECT_PIXELS = 512 * 512
WORK_PIXELS = 192 * 192
SEARCH_RADIUS = 2  # 5x5 patches find the small fill's copies: it was made of patches of 7x7
SEARCH_ROUNDS = 4  # rounds of that search from random sources: jumps of every power of two, then random tries
REFINE_RADIUS = 1  # 3x3 patches for the octaves up: their fields come doubled from a good one, a pixel to adjust
VOTE_RADIUS = 1  # a pixel is the mean of the 3x3 patches' copies over it: wider votes blur a photo's grain

Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, hole as 0/255) -> the image with the hole filled


def octaves(width: int, height: int) -> int:
    """How many halvings the fill of a region of this size is made after (0: the library fills it as it is)."""
    if width * height <= DIRECT_PIXELS:
        return 0
    count = 0
    while width * height > WORK_PIXELS:
        width, height, count = (width + 1) // 2, (height + 1) // 2, count + 1
    return count


def fill(image_np: np.ndarray, hole_np: np.ndarray, fill_small: Fill, seed: int) -> np.ndarray:
    """`image_np` (H x W x 3, uint8) with the pixels where `hole_np` (H x W) is non-zero filled: `fill_small`
    fills the copy halved `octaves()` times (or the region itself when it is small), the rest is brought up here.
    Known pixels are returned as given."""
    count = octaves(image_np.shape[1], image_np.shape[0])
    if count == 0:
        return fill_small(image_np, hole_np)
    images, holes = [image_np], [hole_np > 0]
    for _ in range(count):
        images.append(_halve(images[-1]))
        holes.append(_halve_hole(holes[-1]))
    rng = np.random.default_rng(seed)
    small = fill_small(images[-1], holes[-1].astype(np.uint8) * 255)
    octave = _Octave(images[-1], holes[-1], SEARCH_RADIUS)
    if not len(octave.source_y):
        # No patch of the small copy is wholly known (a thin frame around a hole, an outpaint of a small photo):
        # there is nothing to copy from, and the fill is enlarged as it is.
        enlarged = cv2.resize(small, (image_np.shape[1], image_np.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.where(holes[0][..., None], enlarged, image_np)
    sources = octave.search(small, rng)
    # What the field itself makes of the small picture: the light each octave up keeps (see _pinned).
    filled = octave.vote(sources)
    for image, hole in zip(reversed(images[:-1]), reversed(holes[:-1])):
        finer = _Octave(image, hole, REFINE_RADIUS)
        sources = finer.valid_or_random(*octave.doubled(sources, finer), rng)
        # The doubled field's own copies are what it is refined against: an enlarged fill would be a blur, and
        # the smoothest sources would match it best.
        sources = finer.refine(finer.vote(sources), sources, rng)
        filled, octave = _pinned(finer.vote(sources), filled, hole), finer
    return filled


def _pinned(filled_np: np.ndarray, coarser_np: np.ndarray, hole_np: np.ndarray) -> np.ndarray:
    """The octave's fill with the light of the octave below: halved, it gives that fill again. Pieces copied from
    apart may differ in shade (a sky's gradient), which the vote below blended over a few of its pixels; the
    copies keep their detail, and the difference, enlarged smoothly, takes the steps out. (Pinned to the library's
    own fill instead, the light would follow pieces the field did not copy: ghosts.)"""
    height, width = hole_np.shape
    difference = coarser_np.astype(np.float32) - _halve(filled_np)
    smooth = cv2.resize(difference, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)[:height, :width]
    out = filled_np.copy()
    out[hole_np] = np.clip(np.rint(filled_np[hole_np] + smooth[hole_np]), 0, 255).astype(np.uint8)
    return out


def _halve(image_np: np.ndarray) -> np.ndarray:
    """Each 2x2 block's mean (an odd last row or column repeated): pixel (y, x) lies in (y // 2, x // 2)."""
    height, width = image_np.shape[:2]
    padded = np.pad(image_np, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge").astype(np.uint16)
    blocks = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    return ((blocks + 2) // 4).astype(np.uint8)


def _halve_hole(hole_np: np.ndarray) -> np.ndarray:
    """A block is hole if any of its pixels is: the known small pixels are means of known pixels only."""
    height, width = hole_np.shape
    padded = np.pad(hole_np, ((0, height % 2), (0, width % 2)), mode="edge")
    return padded[0::2, 0::2] | padded[1::2, 0::2] | padded[0::2, 1::2] | padded[1::2, 1::2]


class _Octave:
    """One octave of the region: its targets (centres of the patches that touch the hole) and its sources (centres
    of patches wholly known and inside). A field gives each target the row and column of its source. Pixels are
    read through flat indices into the picture padded by a patch radius: a patch is its centre plus fixed steps."""

    def __init__(self, image_np: np.ndarray, hole_np: np.ndarray, radius: int):
        self.radius, self.image_np, self.hole = radius, image_np, hole_np
        self.height, self.width = hole_np.shape
        self.stride = self.width + 2 * radius
        self.image = self._packed(image_np)
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        self.ty, self.tx = np.nonzero(cv2.dilate(hole_np.astype(np.uint8), kernel))
        self.targets = self._flat(self.ty, self.tx)
        self.index = np.full(hole_np.shape, -1, np.int64)  # each pixel's place among the targets, -1 if none
        self.index[self.ty, self.tx] = np.arange(len(self.targets))
        self.sources = cv2.erode((~hole_np).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                                 borderValue=0) > 0
        self.source_y, self.source_x = np.nonzero(self.sources)
        self.steps = np.array([dy * self.stride + dx for dy in range(-radius, radius + 1)
                               for dx in range(-radius, radius + 1)])

    def _packed(self, image_np: np.ndarray) -> np.ndarray:
        """The picture, edge-padded by a patch radius, one uint32 per pixel (its RGB and a zero byte): reading
        scattered pixels is one gather of words, 3x faster than of rows of three values."""
        r = self.radius
        padded = np.zeros((self.height + 2 * r, self.stride, 4), np.uint8)
        padded[..., :3] = np.pad(image_np, ((r, r), (r, r), (0, 0)), mode="edge")
        return padded.view(np.uint32).ravel()

    def _flat(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (y + self.radius) * self.stride + x + self.radius

    def valid_or_random(self, sy: np.ndarray, sx: np.ndarray, rng: np.random.Generator) -> tuple:
        """The sources given where they are sources, random ones elsewhere."""
        valid = self._valid(sy, sx)
        pick = rng.integers(0, len(self.source_y), len(sy))
        return np.where(valid, sy, self.source_y[pick]), np.where(valid, sx, self.source_x[pick])

    def _valid(self, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
        inside = (sy >= 0) & (sy < self.height) & (sx >= 0) & (sx < self.width)
        return inside & self.sources[np.where(inside, sy, 0), np.where(inside, sx, 0)]

    def _patches(self, guess_np: np.ndarray) -> np.ndarray:
        """Each target's patch of `guess_np` (a picture of the octave's size): targets x (patch pixels x RGBA)."""
        return _bytes(self._packed(guess_np)[self.targets[:, None] + self.steps]).astype(np.int16)

    def _distance(self, patches: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
        """Each target's patch against its source's patch in the picture; an invalid source is farthest."""
        valid = self._valid(sy, sx)
        sources = np.where(valid, self._flat(sy, sx), self.targets)
        diff = patches - _bytes(self.image[sources[:, None] + self.steps])
        distance = np.einsum("ij,ij->i", diff, diff, dtype=np.int32)
        distance[~valid] = np.iinfo(np.int32).max
        return distance

    def _improve(self, guess, field, distance, sy, sx) -> None:
        tried = self._distance(guess, sy, sx)
        better = tried < distance
        field[0][better], field[1][better], distance[better] = sy[better], sx[better], tried[better]

    def _propagate(self, guess, field, distance, jump: int) -> None:
        """Each target tries its neighbour's (`jump` away) source, moved back by as much: a piece copied whole."""
        for dy, dx in ((0, jump), (0, -jump), (jump, 0), (-jump, 0)):
            y, x = self.ty + dy, self.tx + dx
            inside = (y >= 0) & (y < self.height) & (x >= 0) & (x < self.width)
            neighbour = self.index[np.where(inside, y, 0), np.where(inside, x, 0)]
            neighbour = np.where(inside & (neighbour >= 0), neighbour, -1)
            has = neighbour >= 0
            sy = np.where(has, field[0][neighbour] - dy, -1)
            sx = np.where(has, field[1][neighbour] - dx, -1)
            self._improve(guess, field, distance, sy, sx)

    def _jitter(self, guess, field, distance, reach: int, rng) -> None:
        dy, dx = rng.integers(-reach, reach + 1, (2, len(self.targets)))
        self._improve(guess, field, distance, field[0] + dy, field[1] + dx)

    def search(self, filled_np: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A source for each target, found from random ones: where the patch of the filled picture came from."""
        guess = self._patches(filled_np)
        pick = rng.integers(0, len(self.source_y), len(self.targets))
        field = [self.source_y[pick], self.source_x[pick]]
        distance = self._distance(guess, *field)
        longest = max(self.height, self.width)
        for _ in range(SEARCH_ROUNDS):
            jump = 1 << (longest.bit_length() - 1)
            while jump >= 1:
                self._propagate(guess, field, distance, jump)
                jump //= 2
            reach = longest
            while reach >= 1:
                self._jitter(guess, field, distance, reach, rng)
                reach //= 2
        return field[0], field[1]

    def doubled(self, sources: tuple[np.ndarray, np.ndarray], finer: _Octave) -> tuple[np.ndarray, np.ndarray]:
        """Sources for the octave above: each pixel copies from the same place in the 2x2 block its parent copies
        (-1, no source, for a pixel whose parent was no target)."""
        parent = self.index[finer.ty // 2, finer.tx // 2]
        has = parent >= 0
        sy = np.where(has, 2 * sources[0][parent] + finer.ty % 2, -1)
        sx = np.where(has, 2 * sources[1][parent] + finer.tx % 2, -1)
        return sy, sx

    def refine(self, guess_np: np.ndarray, sources: tuple[np.ndarray, np.ndarray],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The sources, each moved where its patch matches the guess better: its neighbours' or a pixel off."""
        guess = self._patches(guess_np)
        field = [sources[0].copy(), sources[1].copy()]
        distance = self._distance(guess, *field)
        self._propagate(guess, field, distance, 1)
        self._jitter(guess, field, distance, 1, rng)
        return field[0], field[1]

    def vote(self, sources: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The picture with each hole pixel the mean of what the patches over it copy there."""
        hy, hx = np.nonzero(self.hole)
        total, count = np.zeros((len(hy), 4), np.uint16), np.zeros((len(hy), 1), np.uint16)
        flat = self._flat(hy, hx)
        offsets = self._flat(*sources) - self.targets
        for dy in range(-VOTE_RADIUS, VOTE_RADIUS + 1):
            for dx in range(-VOTE_RADIUS, VOTE_RADIUS + 1):
                y, x = hy - dy, hx - dx  # a patch centred here covers the hole pixel: a target, if in the picture
                inside = (y >= 0) & (y < self.height) & (x >= 0) & (x < self.width)
                centre = self.index[np.where(inside, y, hy), np.where(inside, x, hx)]  # (outside: not counted)
                total += inside[:, None] * _bytes(self.image[flat + offsets[centre]])
                count += inside[:, None]
        out = self.image_np.copy()
        out[hy, hx] = ((total[:, :3] + count // 2) // count).astype(np.uint8)
        return out


def _bytes(words: np.ndarray) -> np.ndarray:
    """Packed pixels (uint32) as bytes: one pixel's four a row (1-D), or a patch's all a row (2-D)."""
    as_bytes = words.view(np.uint8)
    return as_bytes.reshape(-1, 4) if words.ndim == 1 else as_bytes
