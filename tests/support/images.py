"""Test pictures made here: photo-like images, rectangular masks, data URLs; and the pictures Pillow decodes."""

import base64
import functools
import io
import itertools
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: neither flat (hides bugs) nor pure noise (unlike a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base_np = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
    noisy_np = base_np + rng.normal(0, 12, size=base_np.shape)
    return Image.fromarray(np.clip(noisy_np, 0, 255).astype(np.uint8), "RGB")


def rect_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def data_url(img: Image.Image, fmt: str = "PNG", **params) -> str:
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(encoded(img, fmt, **params)).decode()}"


def as_url(data: bytes) -> str:
    """A PNG, JPEG or WebP file's bytes as a data URL of its type."""
    mime = {b"\x89P": "png", b"\xff\xd8": "jpeg", b"RI": "webp"}[data[:2]]
    return f"data:image/{mime};base64,{base64.b64encode(data).decode()}"


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def cmyk_profile(red: tuple[int, int, int]) -> bytes:
    """A minimal ICC v2 CMYK profile (a 2-point lut16 from CMYK to Lab): inks as a plain conversion sees them,
    except full magenta + yellow, which looks `red` (sRGB). A conversion through it is told apart from one
    without it by that colour."""
    corners = list(itertools.product((0, 1), repeat=4))  # the lut's order: C slowest, K fastest
    rgb_np = np.array([[round((1 - ink) * (1 - k) * 255) for ink in (c, m, y)] for c, m, y, k in corners], np.uint8)
    rgb_np[corners.index((0, 1, 1, 0))] = red
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab_np = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb_np[None], "RGB"), to_lab))[0].astype(np.uint32)
    # Pillow's LAB holds a and b as signed bytes; ICC v2 Lab in 16 bits: L 0..100 -> 0..0xFF00, a/b offset 128.
    clut_np = np.stack([lab_np[:, 0] * 0xFF00 // 255, (lab_np[:, 1] ^ 0x80) << 8, (lab_np[:, 2] ^ 0x80) << 8], axis=1)

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    identity = b"".join(s15(float(i == j)) for i in range(3) for j in range(3))
    lut = (b"mft2\0\0\0\0" + bytes([4, 3, 2, 0]) + identity + struct.pack(">HH", 2, 2)
           + struct.pack(">8H", *[0, 65535] * 4) + struct.pack(">48H", *clut_np.ravel().tolist())
           + struct.pack(">6H", *[0, 65535] * 3))
    name = b"test CMYK\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + bytes(8 + 3 + 67)
    d50 = s15(0.9642) + s15(1.0) + s15(0.8249)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ \0\0\0\0" + d50), (b"A2B0", lut)]
    table, body, start = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (struct.pack(">I", start + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"spacCMYKLab "
              + bytes(12) + b"acsp" + bytes(28) + d50)
    return header.ljust(128, b"\0") + struct.pack(">I", len(tags)) + table + body


@functools.cache
def bomb_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG of `width` x `height` black pixels: tens of KB that would decode to hundreds of MB."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    row, packer = b"\x00" * (1 + (width + 7) // 8), zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + \
        chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every picture Pillow decodes while the test runs, in any thread: a guard that refuses a
    picture by its header leaves no trace here, however long the machine takes."""
    sizes = []
    load = ImageFile.ImageFile.load

    def recorded(image):
        if image.tile:  # pixels still to decode
            sizes.append(image.size)
        return load(image)
    monkeypatch.setattr(ImageFile.ImageFile, "load", recorded)
    return sizes
