"""Tests for inpaint.imageops: decoding guards, mask preparation, crop box and bit-exact paste back."""

import base64
import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFilter

from inpaint import imageops
from inpaint.errors import RequestError
from tests.support.images import cmyk_profile, srgb_profile


def photo(w: int = 1024, h: int = 768, seed: int = 0) -> Image.Image:
    """Photo-like: smooth gradients plus noise, so every pixel differs from its neighbours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base_np = np.stack([127 + 100 * np.sin(x / 97 + c) * np.cos(y / 61 - c) for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(base_np + rng.normal(0, 12, base_np.shape), 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(w: int, h: int) -> bytes:
    """A tiny file whose IHDR declares w x h RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + png_chunk(b"IEND", b""))


def rejects(field: str, call, *needles: str) -> RequestError:
    with pytest.raises(RequestError) as info:
        call()
    assert info.value.field == field and info.value.status == 400
    for needle in needles:
        assert needle in info.value.message
    return info.value


# --- data URLs -----------------------------------------------------------------------------------

def test_data_url_round_trip_is_pixel_exact():
    img = photo(96, 80)
    out = imageops.load_image(imageops.decode_data_url(imageops.to_data_url(img), field="image"), field="image")
    assert out.mode == "RGB" and out.size == (96, 80)
    assert np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("JPEG", "image/jpg"), ("WEBP", "image/webp")])
def test_jpeg_and_webp_accepted(fmt, mime):
    img = photo(128, 64)
    out = imageops.load_image(imageops.decode_data_url(data_url(encode(img, fmt, quality=95), mime), field="image"),
                              field="image")
    assert out.size == (128, 64) and out.mode == "RGB"
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(img, dtype=int)).mean() < 12


def test_webp_data_url_encoder():
    url = imageops.to_data_url(photo(64, 64), "webp")
    assert url.startswith("data:image/webp;base64,")
    assert imageops.load_image(imageops.decode_data_url(url, field="image"), field="image").size == (64, 64)


@pytest.mark.parametrize("mime", ["image/svg+xml", "text/html", "image/gif", "application/octet-stream"])
def test_wrong_mime_rejected(mime):
    rejects("image", lambda: imageops.decode_data_url(data_url(encode(photo(64, 64)), mime), field="image"),
            repr(mime), "image/png")


@pytest.mark.parametrize("value, needle", [
    ("https://example.com/cat.png", "not a data URL"),
    ("asset_123", "not a data URL"),
    ("data:image/png,iVBORw0KGgo=", "base64"),
    ("data:image/png;base64,", "empty"),
    ("data:image/png;base64,iVBOR$w0K", "not valid base64"),
    ("data:image/png;base64,iVBORw0KG", "not valid base64"),
])
def test_malformed_data_urls_rejected(value, needle):
    rejects("mask", lambda: imageops.decode_data_url(value, field="mask"), needle)


def test_line_wrapped_base64_is_accepted():
    data = encode(photo(64, 64))
    b64 = base64.encodebytes(data).decode()
    assert "\n" in b64
    assert imageops.decode_data_url("data:image/png;base64," + b64, field="image") == data


# --- decoding guards -----------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"></svg>',
    b"<!DOCTYPE html><html><body>hi</body></html>",
    b"GIF89a" + b"\0" * 64,
    b"just some text",
])
def test_non_images_disguised_as_png_rejected(data):
    disguised = imageops.decode_data_url(data_url(data, "image/png"), field="image")
    rejects("image", lambda: imageops.load_image(disguised, field="image"), "not a PNG, JPEG or WebP")
    rejects("mask", lambda: imageops.load_mask(disguised, field="mask"), "not a PNG, JPEG or WebP")
    rejects("image", lambda: imageops.load_image(b"", field="image"), "not a PNG, JPEG or WebP")


def test_too_small_image_rejected_but_small_mask_accepted():
    tiny = encode(Image.new("RGB", (1, 1), "white"))
    rejects("image", lambda: imageops.load_image(tiny, field="image"), "1x1 px", "64..8192")
    assert imageops.load_mask(tiny, field="mask").size == (1, 1)


def test_truncated_png_rejected():
    data = encode(photo(256, 256))
    rejects("image", lambda: imageops.load_image(data[: len(data) // 2], field="image"), "not a readable PNG")


def test_corrupt_jpeg_rejected():
    data = bytearray(encode(photo(256, 256), "JPEG"))
    data[600:] = b"\0" * (len(data) - 600)
    rejects("image", lambda: imageops.load_image(bytes(data[:2000]), field="image"), "not a readable JPEG")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_rejected(fmt):
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    rejects("image", lambda: imageops.load_image(data, field="image"), "animated", "2 frames")
    rejects("mask", lambda: imageops.load_mask(data, field="mask"), "animated")


@pytest.mark.parametrize("w, h, needle", [
    (100_000, 100_000, "40 MP"),  # far past Pillow's own bomb limit
    (7000, 7000, "49.0 MP"),  # under Pillow's limit, over ours
    (9000, 100, "9000x100 px"),
])
def test_decompression_bomb_rejected_from_header(w, h, needle, decoded_sizes):
    data = bomb_png(w, h)
    assert len(data) < 200
    rejects("image", lambda: imageops.load_image(data, field="image"), needle)
    rejects("mask", lambda: imageops.load_mask(data, field="mask"))
    assert decoded_sizes == []


def test_pillow_refuses_a_bomb_anywhere_in_the_process_once_imageops_is_imported():
    # Any decoder of the process (Gradio's uploads included) is covered, not only open_image. A fresh process:
    # the test runner resets warning filters between tests.
    script = ("import io, sys; from PIL import Image; import inpaint.imageops as ops; "
              "assert Image.MAX_IMAGE_PIXELS == ops.MAX_PIXELS == 40_000_000\n"
              "try:\n    Image.open(io.BytesIO(sys.stdin.buffer.read()))\n"
              "except Image.DecompressionBombWarning as exc:\n    print('refused:', exc)")
    done = subprocess.run([sys.executable, "-c", script], input=bomb_png(7000, 7000), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("refused: Image size (49000000 pixels) exceeds limit of 40000000 pixels")


def png16(rgb_np: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow writes none): IHDR bit depth 16, colour type 2, rows unfiltered."""
    h, w, _ = rgb_np.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb_np)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def test_16_bit_inputs_say_they_were_reduced_to_8_bits():
    rgb_np = np.zeros((64, 64, 3), np.uint16)
    rgb_np[..., 0], rgb_np[..., 2] = 0xAB12, 0x00FF
    notes = []
    out = imageops.load_image(png16(rgb_np), field="image", notes=notes)
    assert out.mode == "RGB" and np.asarray(out)[0, 0].tolist() == [0xAB, 0, 0]  # the top byte of each sample
    assert notes == ["image is 16 bits per channel; it was reduced to 8 bits"]
    grey_np = np.full((64, 64), 40000, np.uint16)
    notes = []
    assert np.asarray(imageops.load_image(encode(Image.fromarray(grey_np)), field="image", notes=notes)).max() == 156
    assert notes == ["image is 16 bits per channel; it was reduced to 8 bits"]
    for data in (encode(photo(64, 64)), encode(photo(64, 64), "JPEG"), encode(photo(64, 64), "WEBP")):
        notes = []
        imageops.load_image(data, field="image", notes=notes)
        assert notes == []


# --- colour profiles -----------------------------------------------------------------------------

def test_rgb_colour_profile_is_kept_byte_for_byte():
    icc = srgb_profile()
    for fmt in ("PNG", "JPEG", "WEBP"):
        out = imageops.load_image(encode(photo(64, 64), fmt, icc_profile=icc), field="image")
        assert out.mode == "RGB" and out.info["icc_profile"] == icc and imageops.rgb_profile(out) == icc
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 128))
    flat = imageops.load_image(encode(rgba, icc_profile=icc), field="image")
    assert flat.info["icc_profile"] == icc and flat.getpixel((0, 0)) == (255, 127, 127)
    assert "icc_profile" not in imageops.load_image(encode(photo(64, 64)), field="image").info


def test_cmyk_jpeg_is_converted_to_srgb_through_its_profile():
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # full magenta + yellow
    cmyk.paste((255, 0, 0, 0), (0, 0, 32, 64))  # full cyan on the left
    out = imageops.load_image(encode(cmyk, "JPEG", quality=95, icc_profile=cmyk_profile((200, 30, 40))),
                              field="image")
    out_np = np.asarray(out, dtype=int)
    assert out.mode == "RGB" and "icc_profile" not in out.info  # the CMYK profile never describes RGB pixels
    assert np.abs(out_np[:, 40:] - [200, 30, 40]).max() <= 6  # the profile's red, not a plain conversion's
    assert np.abs(out_np[:, :24] - [0, 255, 255]).max() <= 6
    plain = imageops.load_image(encode(cmyk, "JPEG", quality=95), field="image")  # no profile: a plain conversion
    assert "icc_profile" not in plain.info
    assert np.abs(np.asarray(plain, dtype=int)[:, 40:] - [255, 0, 0]).max() <= 6


def test_cmyk_jpeg_with_an_unreadable_profile_rejected():
    data = encode(Image.new("CMYK", (64, 64)), "JPEG", icc_profile=b"\0" * 200)
    rejects("image", lambda: imageops.load_image(data, field="image"), "CMYK", "colour profile cannot be read")


def test_a_profile_of_another_colour_space_is_dropped():
    grey = Image.new("L", (64, 64), 90)
    grey.info["icc_profile"] = srgb_profile()[:16] + b"GRAY" + srgb_profile()[20:]
    out = imageops.flatten(grey)
    assert out.mode == "RGB" and "icc_profile" not in out.info and imageops.rgb_profile(grey) is None


def test_exif_orientation_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = Image.new("RGB", (128, 64), "white")
    img.paste((255, 0, 0), (0, 0, 16, 64))  # red stripe at the left
    out = imageops.load_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95), field="image")
    assert out.size == (64, 128)
    top_np, bottom_np = np.asarray(out)[:8].mean(axis=(0, 1)), np.asarray(out)[-8:].mean(axis=(0, 1))
    assert top_np[0] > 200 and top_np[1] < 60  # the left stripe is now on top
    assert bottom_np.min() > 200


def test_rgba_composited_on_white():
    rgba_np = np.zeros((64, 64, 4), np.uint8)
    rgba_np[..., 0] = 255
    rgba_np[:, 32:, 3] = 255  # right half opaque red, left half fully transparent
    rgba_np[:, 16:32, 3] = 128
    out_np = np.asarray(imageops.load_image(encode(Image.fromarray(rgba_np, "RGBA")), field="image"))
    assert (out_np[:, :16] == 255).all()
    assert (out_np[:, 32:] == [255, 0, 0]).all()
    assert abs(int(out_np[0, 20, 1]) - 127) <= 1


def test_palette_transparency_composited_on_white():
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 32, 64))
    out_np = np.asarray(imageops.load_image(encode(img, transparency=0), field="image"))
    assert (out_np[:, 32:] == 255).all() and (out_np[:, :32] == [0, 255, 0]).all()


def test_16_bit_greyscale_keeps_its_range():
    grey_np = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    out_np = np.asarray(imageops.load_mask(encode(Image.fromarray(grey_np)), field="mask"))
    assert out_np[0, 0] == 0 and out_np[0, -1] == 255 and 120 <= out_np[0, 32] <= 135


# --- masks ---------------------------------------------------------------------------------------

def test_mask_uses_alpha_when_not_opaque():
    rgba_np = np.zeros((64, 64, 4), np.uint8)  # black RGB: luminance would say "keep" everywhere
    rgba_np[:, 40:, 3] = 255
    mask = imageops.load_mask(encode(Image.fromarray(rgba_np, "RGBA")), field="mask")
    assert mask.mode == "L"
    assert (np.asarray(mask)[:, 40:] == 255).all() and (np.asarray(mask)[:, :40] == 0).all()


def test_mask_uses_luminance_when_alpha_is_opaque():
    rgba_np = np.full((64, 64, 4), 255, np.uint8)
    rgba_np[:, :10, :3] = 0
    rgba_np[:, 10:20, :3] = 100  # grey is kept, not thresholded, by load_mask
    mask_np = np.asarray(imageops.load_mask(encode(Image.fromarray(rgba_np, "RGBA")), field="mask"))
    assert (mask_np[:, :10] == 0).all() and (mask_np[:, 10:20] == 100).all() and (mask_np[:, 20:] == 255).all()


def test_alpha_that_thresholds_to_nothing_is_ignored_with_a_warning():
    # An opaque mask painted white, where one pixel's alpha is 254: alpha would repaint the whole image.
    rgba_np = np.zeros((64, 64, 4), np.uint8)
    rgba_np[..., 3] = 255
    rgba_np[16:32, 8:40, :3] = 255
    rgba_np[60, 60, 3] = 254
    raw = Image.open(io.BytesIO(encode(Image.fromarray(rgba_np, "RGBA"))))
    out, notes = imageops.prepare_mask(raw, (64, 64))
    assert imageops.mask_bbox(out) == (8, 16, 40, 32) and np.count_nonzero(np.asarray(out)) == 16 * 32
    assert len(notes) == 1
    assert "mask's alpha channel was ignored" in notes[0] and "below 128" in notes[0] and "lowest is 254" in notes[0]
    assert imageops.mask_bbox(imageops.load_mask(encode(Image.fromarray(rgba_np, "RGBA")), field="mask")) == \
        (8, 16, 40, 32)
    # Fully opaque: luminance, and nothing to say.
    rgba_np[60, 60, 3] = 255
    assert imageops.prepare_mask(Image.fromarray(rgba_np, "RGBA"), (64, 64), field="maskId")[1] == []


@pytest.mark.parametrize("alpha", [0, 127])
def test_a_stray_transparent_pixel_never_flips_the_reading(alpha):
    # An opaque mask painted white over 5% of it, and one pixel far away at alpha 0 or 127: read as alpha, the
    # mask would repaint everything but that pixel.
    rgba_np = np.zeros((64, 64, 4), np.uint8)
    rgba_np[..., 3] = 255
    rgba_np[16:24, 8:32, :3] = 255
    rgba_np[60, 60, 3] = alpha
    out, notes = imageops.prepare_mask(Image.fromarray(rgba_np, "RGBA"), (64, 64))
    assert imageops.mask_bbox(out) == (8, 16, 32, 24) and np.count_nonzero(np.asarray(out)) == 8 * 24
    assert notes == ["mask's alpha channel was ignored: only 1 pixel(s) are below 128, stray pixels rather than a "
                     "shape; the mask was read from the luminance (white = repaint)"]
    # As many strays as make a shape: then the alpha is read, and the note says the two disagreed.
    rgba_np[56:64, 56:64, 3] = alpha
    out, notes = imageops.prepare_mask(Image.fromarray(rgba_np, "RGBA"), (64, 64))
    assert np.count_nonzero(np.asarray(out)) == 64 * 64 - imageops.MASK_SHAPE_MIN_PIXELS
    assert notes[0].startswith("mask's alpha channel and its luminance mark different areas; the alpha channel "
                               "was used")


def test_alpha_and_luminance_that_agree_need_no_note():
    rgba_np = np.zeros((64, 64, 4), np.uint8)
    rgba_np[16:24, 8:32] = 255  # white and opaque in the same place, black and transparent elsewhere
    out, notes = imageops.prepare_mask(Image.fromarray(rgba_np, "RGBA"), (64, 64))
    assert notes == [] and imageops.mask_bbox(out) == (8, 16, 32, 24)


def test_brush_strokes_on_a_transparent_canvas_still_use_alpha():
    rgba_np = np.zeros((64, 64, 4), np.uint8)  # black RGB everywhere: luminance would keep everything
    rgba_np[20:40, 10:30, 3] = 255
    rgba_np[20:40, 30, 3] = 128  # the stroke's anti-aliased edge
    out, notes = imageops.prepare_mask(Image.fromarray(rgba_np, "RGBA"), (64, 64))
    assert notes == [] and imageops.mask_bbox(out) == (10, 20, 31, 40)
    # Alpha everywhere at least the threshold but some pixels below 255: still luminance.
    rgba_np[..., 3] = 200
    rgba_np[20:40, 10:30, :3] = 255
    out, notes = imageops.prepare_mask(Image.fromarray(rgba_np, "RGBA"), (64, 64), field="maskId")
    assert imageops.mask_bbox(out) == (10, 20, 30, 40) and notes[0].startswith("maskId's alpha channel was ignored")


def test_threshold_at_127_and_128():
    mask_np = np.zeros((64, 64), np.uint8)
    mask_np[:, :20] = 127
    mask_np[:, 20:40] = 128
    out, notes = imageops.prepare_mask(Image.fromarray(mask_np, "L"), (64, 64))
    out_np = np.asarray(out)
    assert notes == [] and out.mode == "L" and set(np.unique(out_np)) == {0, 255}
    assert (out_np[:, :20] == 0).all() and (out_np[:, 20:40] == 255).all() and (out_np[:, 40:] == 0).all()


def test_invert():
    mask_np = np.zeros((64, 64), np.uint8)
    mask_np[:, :16] = 255
    out_np = np.asarray(imageops.prepare_mask(Image.fromarray(mask_np, "L"), (64, 64), invert=True)[0])
    assert (out_np[:, :16] == 0).all() and (out_np[:, 16:] == 255).all()


def test_mask_of_same_aspect_is_resized_with_a_warning():
    mask_np = np.zeros((48, 64), np.uint8)
    mask_np[12:24, 16:32] = 200
    out, notes = imageops.prepare_mask(Image.fromarray(mask_np, "L"), (128, 96))
    assert out.size == (128, 96)
    assert imageops.mask_bbox(out) == (32, 24, 64, 48)
    assert len(notes) == 1 and "64x48" in notes[0] and "128x96" in notes[0]


def test_mask_of_other_aspect_rejected():
    mask = Image.new("L", (64, 64), 255)
    rejects("mask", lambda: imageops.prepare_mask(mask, (128, 96)), "64x64", "128x96", "aspect ratio")


def test_empty_mask_rejected():
    mask = Image.new("L", (64, 64), 127)
    rejects("mask", lambda: imageops.prepare_mask(mask, (64, 64)), "empty", "white")
    rejects("maskId", lambda: imageops.prepare_mask(Image.new("L", (64, 64), 255), (64, 64), field="maskId",
                                                    invert=True), "empty")


def test_grow_dilates_by_exactly_grow_pixels():
    mask_np = np.zeros((100, 120), np.uint8)
    mask_np[40:50, 50:60] = 255
    mask_np[0, 0] = 255
    out_np = np.asarray(imageops.prepare_mask(Image.fromarray(mask_np, "L"), (120, 100), grow=5)[0])
    assert (out_np[35:55, 45:65] == 255).all()
    assert out_np[34, 50] == 0 and out_np[55, 50] == 0 and out_np[45, 44] == 0 and out_np[45, 65] == 0
    assert (out_np[:6, :6] == 255).all() and out_np[6, 0] == 0
    assert np.count_nonzero(out_np) == 20 * 20 + 6 * 6


def test_grow_on_a_large_mask_grows_its_box():  # its speed: `mask_grow_scaling` in bench/
    mask_np = np.zeros((4096, 4096), np.uint8)
    mask_np[1000:3000, 1200:1400] = 255
    out = imageops.prepare_mask(Image.fromarray(mask_np, "L"), (4096, 4096), grow=64)[0]
    assert imageops.mask_bbox(out) == (1136, 936, 1464, 3064)


# --- feather, crop box, paste back ---------------------------------------------------------------

def test_feather_is_inward_and_zero_outside():
    mask_np = np.zeros((200, 200), np.uint8)
    mask_np[50:150, 60:160] = 255
    mask = Image.fromarray(mask_np, "L")
    alpha_np = np.asarray(imageops.feather(mask, 12))
    assert (alpha_np[mask_np == 0] == 0).all()
    assert (alpha_np[70:130, 80:140] == 255).all()
    assert alpha_np[100, 60] < 40 and alpha_np[50, 100] < 40  # edge pixels barely change
    row = alpha_np[100, 60:100].astype(int)
    assert (np.diff(row) >= 0).all() and row[-1] == 255
    assert imageops.feather(mask, 0) is mask


def test_feather_keeps_mask_touching_the_border_solid_there():
    mask_np = np.zeros((100, 100), np.uint8)
    mask_np[:, :50] = 255
    alpha_np = np.asarray(imageops.feather(Image.fromarray(mask_np, "L"), 8))
    assert (alpha_np[:, :30] == 255).all() and (alpha_np[:, 50:] == 0).all()


@pytest.mark.parametrize("radius", [1, 4, 8, 16])
def test_feather_and_grow_of_a_mark_do_not_depend_on_the_picture_around_it(radius):
    # Both work within the marks' box and a margin: whatever lies beyond, far or at the border, must not show.
    rng = np.random.default_rng(radius)
    mark_np = np.zeros((90, 70), np.uint8)
    mark_np[20:60, 15:50] = 255
    mark_np[rng.random(mark_np.shape) < 0.02] = 255  # specks up to the mark's own border
    on_its_own = Image.fromarray(np.pad(mark_np, 200), "L")  # zeros all around, far past any margin
    on_a_picture_np = np.zeros((1500, 1300), np.uint8)
    on_a_picture_np[:90, -70:] = mark_np  # in a corner: the picture's border cuts the margin
    on_a_picture_np[900:990, 600:670] = mark_np  # and far inside
    on_a_picture = Image.fromarray(on_a_picture_np, "L")

    alone_np = np.asarray(imageops.feather(on_its_own, radius))[200:290, 200:270]
    alpha_np = np.asarray(imageops.feather(on_a_picture, radius))
    assert np.array_equal(alpha_np[900:990, 600:670], alone_np) and alpha_np.any()
    reference_np = np.asarray(on_a_picture.filter(ImageFilter.GaussianBlur(radius / 2)))  # the whole picture's blur
    expected_np = np.where(on_a_picture_np > 0, np.clip(reference_np.astype(int) * 2 - 255, 0, 255), 0)
    assert np.array_equal(alpha_np, expected_np)

    grown_np = np.asarray(imageops.prepare_mask(on_a_picture, on_a_picture.size, grow=radius)[0])
    alone_np = np.asarray(imageops.prepare_mask(on_its_own, on_its_own.size, grow=radius)[0])
    inside_np = grown_np[900 - radius:990 + radius, 600 - radius:670 + radius]
    corner_np = grown_np[:90 + radius, -70 - radius:]  # cut by the top and right borders
    assert np.array_equal(inside_np, alone_np[200 - radius:290 + radius, 200 - radius:270 + radius])
    assert np.array_equal(corner_np, alone_np[200:290 + radius, 200 - radius:270])
    assert np.count_nonzero(grown_np) == np.count_nonzero(inside_np) + np.count_nonzero(corner_np)


def test_mask_bbox():
    mask_np = np.zeros((50, 80), np.uint8)
    mask_np[10:20, 30:41] = 255
    assert imageops.mask_bbox(Image.fromarray(mask_np, "L")) == (30, 10, 41, 20)
    rejects("mask", lambda: imageops.mask_bbox(Image.new("L", (8, 8))), "empty")


@pytest.mark.parametrize("size, rect", [
    ((1024, 768), (500, 300, 540, 320)),  # small: min_context pads
    ((1024, 768), (0, 0, 10, 10)),  # corner: box shifted inside
    ((1024, 768), (100, 100, 900, 700)),  # large: clamped to the image
    ((80, 70), (30, 30, 40, 40)),  # image smaller than the padded box
    ((1024, 768), (1020, 760, 1024, 768)),
])
def test_crop_box_inside_image_and_containing_bbox(size, rect):
    mask = Image.new("L", size)
    mask.paste(255, rect)
    left, top, right, bottom = imageops.crop_box(mask)
    assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
    assert left <= rect[0] and top <= rect[1] and right >= rect[2] and bottom >= rect[3]
    assert right - left >= min(64, size[0]) and bottom - top >= min(64, size[1])


def test_crop_box_padding():
    mask = Image.new("L", (1024, 768))
    mask.paste(255, (400, 300, 600, 340))  # 200 px wide: context 0.5 pads 100 px
    assert imageops.crop_box(mask) == (300, 200, 700, 440)
    mask = Image.new("L", (1024, 768))
    mask.paste(255, (500, 400, 510, 404))  # tiny: min_context 32 then min_size 64 apply
    assert imageops.crop_box(mask, min_size=100) == (455, 352, 555, 452)
    mask = Image.new("L", (1024, 768))
    mask.paste(255, (0, 0, 10, 10))
    assert imageops.crop_box(mask) == (0, 0, 74, 74)


def test_paste_back_bit_exact_outside_the_mask():
    original = photo()
    mask = Image.new("L", original.size)
    mask.paste(255, (300, 200, 600, 450))
    mask.paste(255, (620, 210, 640, 230))
    alpha = imageops.feather(mask, 16)
    box = imageops.crop_box(mask)
    generated = photo(box[2] - box[0], box[3] - box[1], seed=1)
    out = imageops.paste_back(original, generated, box, alpha)
    out_np, orig_np, alpha_np = np.asarray(out), np.asarray(original), np.asarray(alpha)
    assert out.size == original.size and out.mode == "RGB"
    assert np.array_equal(out_np[alpha_np == 0], orig_np[alpha_np == 0])
    inside = alpha_np == 255
    gen_np = np.asarray(generated)
    assert np.array_equal(out_np[box[1]:box[3], box[0]:box[2]][inside[box[1]:box[3], box[0]:box[2]]],
                          gen_np[inside[box[1]:box[3], box[0]:box[2]]])
    ramp = (alpha_np > 0) & (alpha_np < 255)
    assert ramp.any() and not np.array_equal(out_np[ramp], orig_np[ramp])


def test_paste_back_checks_sizes():
    original = photo(128, 128)
    with pytest.raises(ValueError):
        imageops.paste_back(original, photo(10, 10), (0, 0, 20, 20), Image.new("L", (128, 128)))
    alpha = Image.new("L", (128, 128))
    alpha.paste(255, (100, 100, 110, 110))
    with pytest.raises(ValueError):
        imageops.paste_back(original, photo(20, 20), (0, 0, 20, 20), alpha)


def test_encoders_and_resize():
    img = photo(200, 100)
    assert Image.open(io.BytesIO(imageops.encode_png(img))).format == "PNG"
    assert Image.open(io.BytesIO(imageops.encode_webp(img, quality=50))).format == "WEBP"
    assert imageops.resize(img, (100, 50)).size == (100, 50)
    mask = Image.fromarray((np.arange(100 * 200).reshape(100, 200) % 2 * 255).astype(np.uint8), "L")
    assert set(np.unique(np.asarray(imageops.resize(mask, (67, 33), mask=True)))) <= {0, 255}
    with pytest.raises(ValueError):
        imageops.to_data_url(img, "gif")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_array_of_is_a_writable_copy_of_the_pixels(mode):
    image = photo(300, 600, seed=4).convert(mode)  # more rows than a strip
    image_np = imageops.array_of(image)
    assert np.array_equal(image_np, np.array(image)) and image_np.flags.writeable


def test_blend_onto_writes_what_blend_into_does_and_only_where_alpha_is_above_0():
    original, generated = photo(160, 120, seed=5), photo(100, 80, seed=6)
    box = (30, 20, 130, 100)
    alpha_np = np.zeros((80, 100), np.uint8)
    alpha_np[10:50, 20:70] = 255
    alpha_np[10:50, 15:20] = 128  # a feathered edge
    expected_np = np.array(original)
    imageops.blend_into(expected_np, generated, box, alpha_np)
    out = original.copy()
    imageops.blend_onto(out, original, generated, box, alpha_np)
    assert np.array_equal(np.asarray(out), expected_np)
