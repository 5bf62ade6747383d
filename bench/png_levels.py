"""PNG zlib levels 0..6 on photo-like results: encode time and bytes, one JSON line per size and level; then the
store's own encoder (inpaint.png: Up filter, strips deflated by ISA-L on every core) at each of ISA-L's levels
against the same level 6."""

from __future__ import annotations

import io
import json
import statistics
import sys
import time

import numpy as np
from PIL import Image

from inpaint import png

SIZES = (2048, 512)  # the largest common result, and the smallest a model makes
LEVELS = range(7)  # 6 is Pillow's default; above it costs more for a few % fewer bytes
ISAL_LEVELS = range(4)  # ISA-L's, for inpaint.png
ROUNDS = 5  # a median of 5 is steady on a loaded machine


def photo_like(side: int, seed: int = 0) -> Image.Image:
    """Smooth shapes at several scales, hard edges and mild sensor noise: compresses as a photo does,
    unlike pure noise (incompressible) or flat colour (free)."""
    rng = np.random.default_rng(seed)
    out_np = np.zeros((side, side, 3), np.float32)
    for cells, weight in ((4, 90.0), (16, 40.0), (64, 15.0)):  # large forms, objects, texture
        field = Image.fromarray(rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8), "RGB")
        out_np += (np.asarray(field.resize((side, side), Image.Resampling.BICUBIC), np.float32) - 128) * weight / 128
    y, x = np.mgrid[0:side, 0:side]
    out_np[(x + 2 * y) % (side // 3) < side // 12] += 30  # bands with sharp edges, as objects have
    out_np += 128 + rng.normal(0, 2.5, out_np.shape)  # a camera's noise at base ISO
    return Image.fromarray(np.clip(out_np, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, level: int) -> tuple[float, int]:
    buffer = io.BytesIO()
    start = time.perf_counter()
    image.save(buffer, format="PNG", compress_level=level)
    return time.perf_counter() - start, buffer.tell()


def main() -> None:
    for side in SIZES:
        image = photo_like(side)
        encode(image, 1)  # warm-up: zlib's tables and the allocator
        rows = {level: [encode(image, level) for _ in range(ROUNDS)] for level in LEVELS}
        base_s = statistics.median(t for t, _ in rows[6])
        base_bytes = rows[6][0][1]
        for level, runs in rows.items():
            seconds, size = statistics.median(t for t, _ in runs), runs[0][1]
            print(json.dumps({"side": side, "level": level, "seconds": round(seconds, 4), "bytes": size,
                              "time_vs_6": round(seconds / base_s, 3), "bytes_vs_6": round(size / base_bytes, 3)}))
            sys.stdout.flush()
        for level in ISAL_LEVELS:
            runs = []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                size = len(png.encode(image, level=level))
                runs.append(time.perf_counter() - start)
            seconds = statistics.median(runs)
            print(json.dumps({"side": side, "encoder": "inpaint.png", "isal_level": level, "chosen": level == png.LEVEL,
                              "seconds": round(seconds, 4), "bytes": size, "time_vs_6": round(seconds / base_s, 3),
                              "bytes_vs_6": round(size / base_bytes, 3), "time_vs_1": round(seconds / statistics.median(
                                  t for t, _ in rows[1]), 3)}))


if __name__ == "__main__":
    main()
