"""A lossless PNG encoder for results, on every core: the rows filtered with numpy, deflated in strips at once.

Pillow's encoder runs zlib on one core and picks a filter per row in C; at 2048x2048 it is most of a classical
request's time. Here each strip of rows is filtered ("Up": the difference with the row above, one vector
operation) and deflated on its own thread by ISA-L (Intel's deflate: vector code, 5-6x zlib's speed at its
fastest level for bytes like zlib's level 2, and it lets go of the GIL), each strip's stream ending on a byte
boundary (a sync flush, as pigz does) so that the strips join into one valid zlib stream. The strips share no
history, so the file is a little larger than one stream would be. bench/png_levels.py measures the bytes and the
time of each of ISA-L's levels here against Pillow's zlib levels.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from isal import isal_zlib
from PIL import Image

# ISA-L's level of 0..3. With the Up filter, 1 is both the quickest and the smallest of them (bench/png_levels.py):
# 7% over the bytes of Pillow's default (zlib level 6) on a photo-like image, within 25% on the shipped photos.
LEVEL = 1
ZLIB_HEADER = b"\x78\x01"  # deflate with a 32 KB window, made at a fast level
STRIP_BYTES = 1 << 16  # the least of the raw rows a strip gets: below it a thread costs more than it saves
COLOUR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}  # PNG's colour type per mode, 8 bits per channel
ADLER_BASE = 65521
_STRIPS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="inpaint-png")


def encodable(image: Image.Image) -> bool:
    """Whether `encode` writes all of `image`: its mode has 8 bits per channel and no colour key."""
    return image.mode in COLOUR_TYPES and "transparency" not in image.info


def encode(image: Image.Image, *, icc_profile: bytes | None = None, level: int = LEVEL) -> bytes:
    """`image` (L, RGB or RGBA) as a PNG file, with `icc_profile` embedded when given."""
    height, width = image.height, image.width
    strips = max(1, min(os.cpu_count() or 1, height * width * len(image.getbands()) // STRIP_BYTES))
    bounds = np.linspace(0, height, strips + 1).astype(int)
    parts = [(bounds[i], bounds[i + 1], level, i == strips - 1) for i in range(strips)]
    done = ([_deflate_strip(image, *parts[0])] if strips == 1
            else list(_STRIPS.map(lambda part: _deflate_strip(image, *part), parts)))
    adler = 1
    for _, strip_adler, length in done:
        adler = _adler32_combine(adler, strip_adler, length)
    stream = ZLIB_HEADER + b"".join(data for data, _, _ in done) + struct.pack(">I", adler)

    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPES[image.mode], 0, 0, 0))]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    chunks += [_chunk(b"IDAT", stream), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _deflate_strip(image: Image.Image, top: int, bottom: int, level: int, last: bool) -> tuple[bytes, int, int]:
    """Rows top..bottom filtered (each prefixed with its filter type) and deflated: the raw deflate data, the
    Adler-32 of the filtered bytes and their length."""
    # The strip's rows and the one above them, read here: the picture is never copied whole into an array.
    above = max(top - 1, 0)
    rows = np.asarray(image.crop((0, above, image.width, bottom))).reshape(bottom - above, -1)
    filtered = np.empty((bottom - top, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # Up
    if top == 0:  # the first row has none above: it is its own difference
        filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1 if top == 0 else 0:, 1:])  # modulo 256
    data = memoryview(filtered).cast("B")
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH)
    return deflated, isal_zlib.adler32(data), len(data)


def _adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine, which Python lacks)."""
    remainder = length2 % ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = remainder * sum1 % ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + ADLER_BASE - 1) % ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + ADLER_BASE - remainder) % ADLER_BASE
    return sum1 | (sum2 << 16)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
