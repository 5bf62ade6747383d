"""The fast PNG encoder: every pixel back as it went in, in every mode it takes, one strip or many."""

import io
import zlib
from pathlib import Path

import gradio
import numpy as np
import pytest
from PIL import Image

from inpaint import assets, png
from tests.support.images import srgb_profile

PHOTO = Path(gradio.__file__).parent / "media_assets" / "images" / "cheetah.jpg"  # a real photograph, shipped


def photo(side: int) -> Image.Image:
    with Image.open(PHOTO) as image:
        return image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (3, 97), (640, 480), (1500, 1100)])  # the last: several strips
def test_every_pixel_comes_back(mode, size):
    rng = np.random.default_rng(size[0])
    image = photo(max(size)).resize(size).convert(mode)
    if mode == "RGBA":  # an alpha channel of its own, not a constant
        image.putalpha(Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L"))
    back = decoded(png.encode(image))
    assert back.format == "PNG" and back.mode == mode and back.size == size
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_a_large_picture_is_deflated_in_strips_that_join_into_one_stream():
    image = photo(2048)
    data = png.encode(image)
    assert image.width * image.height * 3 // png.STRIP_BYTES > 1  # more than one strip on a machine with 2 cores
    assert np.array_equal(np.asarray(decoded(data)), np.asarray(image))
    # Strict readers check the stream's own checksum: zlib does, over the whole image.
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    assert len(zlib.decompress(data[idat + 4:idat + 4 + length])) == 2048 * (1 + 2048 * 3)


def test_the_colour_profile_is_embedded():
    assert decoded(png.encode(photo(64), icc_profile=srgb_profile())).info["icc_profile"] == srgb_profile()
    assert "icc_profile" not in decoded(png.encode(photo(64))).info


def test_files_stay_within_a_quarter_of_pillows_default_size_on_a_photograph():
    image = photo(1024)
    default = io.BytesIO()
    image.save(default, "PNG")  # zlib level 6, a filter chosen per row
    assert len(png.encode(image)) <= 1.25 * default.tell()


def test_adler32_of_joined_strips_is_zlibs():
    rng = np.random.default_rng(0)
    for _ in range(100):
        first, second = rng.bytes(int(rng.integers(0, 70000))), rng.bytes(int(rng.integers(0, 70000)))
        combined = png._adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)


def test_modes_it_does_not_take_go_to_pillow():
    palette = photo(32).convert("P")
    keyed = photo(32).convert("L")
    keyed.info["transparency"] = 0
    for image in (palette, keyed):
        assert not png.encodable(image)
        back = decoded(assets._encode(image, "PNG"))
        assert np.array_equal(np.asarray(back), np.asarray(image)) and back.info.get("transparency") == \
            image.info.get("transparency")
