"""Pure PIL/numpy image handling: data URLs, guarded decoding, mask preparation, crop box and paste back."""

import base64
import binascii
import io
import re
import struct
import warnings

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFilter, ImageOps, UnidentifiedImageError

from inpaint.errors import RequestError

MIN_SIDE = 64
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
# Brush strokes are anti-aliased: their grey fringe is half covered, so mid-grey is where the
# stroke's visual edge lies. >= 128 keeps a 50% grey pixel on the repaint side.
MASK_THRESHOLD = 128
# Fewer pixels than this below the threshold in a mask's alpha are strays, not a shape (an 8x8 stroke is 64).
MASK_SHAPE_MIN_PIXELS = 64
ARRAY_STRIP_ROWS = 256  # rows read at a time by array_of: a strip of a 2048 px picture is 2 MB
ALLOWED_MIME = {"image/png", "image/jpeg", "image/webp"}

# Process-wide, so every decoder in the process (Gradio's uploads included) refuses a bomb from its header,
# not only the ones that go through open_image.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

_MIME_ALIASES = {"image/jpg": "image/jpeg"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def decode_data_url(value: str, *, field: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("data:"):
        shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
        raise RequestError(field, f"{shown} is not a data URL; expected data:image/png;base64,...")
    comma = value.find(",", 5)
    header = value[5:] if comma < 0 else value[5:comma]  # the payload is sliced once: it is most of the request
    params = header.split(";")
    mime = _MIME_ALIASES.get(params[0].strip().lower(), params[0].strip().lower())
    if comma < 0 or params[-1].strip().lower() != "base64":
        raise RequestError(field, f"data URL header {header[:60]!r} must end in ';base64,'")
    if mime not in ALLOWED_MIME:
        raise RequestError(field, f"data URL type {mime!r} is not allowed; use one of {', '.join(sorted(ALLOWED_MIME))}")
    payload = value[comma + 1:]
    try:
        # binascii reads an ASCII str in place; base64.b64decode would first encode it, a copy of the payload.
        data = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        # Line-wrapped base64 is common from some clients (stripped only then: a copy of a 40 MP photo's
        # payload costs milliseconds); any other stray character is an error.
        payload = "".join(payload.split())
        try:
            data = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(field, f"data URL payload is not valid base64 ({exc})") from None
    if not data:
        raise RequestError(field, "data URL has an empty payload")
    return data


def sniff_format(data: bytes) -> str | None:
    """"PNG", "JPEG" or "WEBP" by the file's first bytes (what it is, whatever its name or MIME type claim)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _png_bit_depth(data: bytes) -> int | None:
    # Pillow opens 16-bit RGB(A) PNGs as 8-bit modes without a word: the header is the only witness.
    if data[12:16] == b"IHDR" and len(data) > 24:
        return data[24]
    return None


def declared_pixels(data: bytes) -> int:
    """The pixel count a file's header declares, read without decoding (0 for what open_image will refuse
    anyway: a file that is not an image, or a bomb Pillow stops at the header)."""
    fmt = sniff_format(data)
    if fmt is None:
        return 0
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, *_DECODE_ERRORS):
        return 0
    return width * height


def open_image(data: bytes, *, field: str, min_side: int = MIN_SIDE, notes: list[str] | None = None) -> Image.Image:
    """Decode after checking the header's declared size, so a bomb never allocates its pixels.

    A reduction the user should know of (16 bits per channel to 8) is appended to `notes` when given.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise RequestError(field, f"{field} is not a PNG, JPEG or WebP file (it starts with {data[:12]!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            w, h = img.size
            if not (min_side <= w <= MAX_SIDE and min_side <= h <= MAX_SIDE):
                raise RequestError(field, f"{field} is {w}x{h} px; each side must be {min_side}..{MAX_SIDE} px")
            if w * h > MAX_PIXELS:
                raise RequestError(field, f"{field} is {w}x{h} px = {w * h / 1e6:.1f} MP; at most {MAX_PIXELS / 1e6:.0f} MP")
            if getattr(img, "n_frames", 1) > 1:
                raise RequestError(field, f"{field} is animated ({img.n_frames} frames); send a single still image")
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: a copy of every upright picture otherwise
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check (the same limit) answers inside Image.open, before the size can be read here.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"a size of {int(declared[1]) / 1e6:.1f} MP" if declared else "a size over the limit"
        raise RequestError(field, f"{field} declares {size}; at most {MAX_PIXELS / 1e6:.0f} MP") from None
    except _DECODE_ERRORS as exc:
        detail = "damaged header" if isinstance(exc, UnidentifiedImageError) else exc
        raise RequestError(field, f"{field} is not a readable {fmt} file ({detail})") from None
    sixteen_bits = img.mode in ("I", "I;16", "I;16B", "I;16L") or (fmt == "PNG" and _png_bit_depth(data) == 16)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit greyscale PNG: keep the top byte, as a plain convert("L") would clip at 255.
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    if sixteen_bits and notes is not None:
        notes.append(f"{field} is 16 bits per channel; it was reduced to 8 bits")
    return img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def icc_colour_space(icc: bytes | None) -> bytes | None:
    """The data colour space an ICC profile describes (b"RGB ", b"CMYK", b"GRAY", ...), from its header."""
    return icc[16:20] if icc and len(icc) >= 128 else None


def rgb_profile(img: Image.Image) -> bytes | None:
    """The image's ICC profile when it describes RGB pixels: the one to carry onto an RGB result."""
    icc = img.info.get("icc_profile")
    return icc if icc_colour_space(icc) == b"RGB " else None


def _cmyk_to_rgb(img: Image.Image, *, field: str) -> Image.Image:
    icc = img.info.get("icc_profile")
    if not icc:
        return img.convert("RGB")
    try:
        # The embedded profile says what the inks look like; a plain conversion assumes ideal inks.
        rgb = ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                        outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise RequestError(field, f"{field} is a CMYK image whose colour profile cannot be read ({exc})") from None
    return rgb


def flatten(img: Image.Image, *, field: str = "image") -> Image.Image:
    """RGB with any alpha composited on white, as the contract asks of input images; `img` itself when it is
    that already (callers hand over a picture they just decoded).

    An RGB ICC profile stays in `info["icc_profile"]`; any other is dropped, as the pixels are now RGB
    (CMYK is converted to sRGB through its profile, and untagged RGB is read as sRGB).
    """
    icc = rgb_profile(img)
    if img.mode == "RGB" and not _has_alpha(img) and img.info.get("icc_profile") == icc:
        return img  # nothing to change: no copy of a large picture
    if img.mode == "CMYK":
        out = _cmyk_to_rgb(img, field=field)
    elif _has_alpha(img):
        rgba = img.convert("RGBA")
        out = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    else:
        out = img.convert("RGB")
    out.info.pop("icc_profile", None)
    if icc:
        out.info["icc_profile"] = icc
    return out


def read_mask(img: Image.Image, *, field: str = "mask",
              threshold: int = MASK_THRESHOLD) -> tuple[Image.Image, list[str]]:
    """The mask as greyscale, not yet thresholded, and a note when the reading had to choose.

    Alpha carries the mask only when it carries a shape: at least MASK_SHAPE_MIN_PIXELS pixels below the
    threshold (a brush stroke on a transparent canvas). An opaque mask with a few stray transparent pixels is
    read from its luminance: its alpha would repaint the whole image. When alpha and luminance both mark an
    area, and not the same one, alpha wins and a note says so.
    """
    if img.mode == "L":
        return img, []
    if not _has_alpha(img):
        return img.convert("L"), []
    rgba = img.convert("RGBA")
    alpha, luminance = rgba.getchannel("A"), rgba.convert("L")
    kept_np = np.asarray(alpha) >= threshold
    transparent = kept_np.size - int(np.count_nonzero(kept_np))
    from_luminance = "the mask was read from the luminance (white = repaint)"
    if transparent == 0:
        lowest = alpha.getextrema()[0]
        return luminance, [] if lowest == 255 else [
            f"{field}'s alpha channel was ignored: no pixel is below {threshold} (the lowest is {lowest}), so it "
            f"marks nothing to repaint; {from_luminance}"]
    if transparent < MASK_SHAPE_MIN_PIXELS:
        return luminance, [f"{field}'s alpha channel was ignored: only {transparent} pixel(s) are below {threshold}, "
                           f"stray pixels rather than a shape; {from_luminance}"]
    white_np = np.asarray(luminance) >= threshold
    if white_np.all() or not white_np.any() or np.array_equal(white_np, kept_np):
        return alpha, []  # the colour marks nothing of its own (a stroke's colour), or the same area
    return alpha, [f"{field}'s alpha channel and its luminance mark different areas; the alpha channel was used "
                   "(opaque = repaint): send the mask without alpha to have its luminance read"]


def load_image(data: bytes, *, field: str, notes: list[str] | None = None) -> Image.Image:
    return flatten(open_image(data, field=field, notes=notes), field=field)


def load_mask(data: bytes, *, field: str) -> Image.Image:
    return read_mask(open_image(data, field=field, min_side=1), field=field)[0]


def _dilate_np(mask_np: np.ndarray, grow: int) -> np.ndarray:
    # Within the marks' bounding box grown by `grow` (nothing outside it can become marked): a small mark on a
    # 40 MP photo costs what the mark costs.
    x, y, width, height = cv2.boundingRect(mask_np.view(np.uint8))
    if not width:
        return mask_np
    rows = slice(max(0, y - grow), min(mask_np.shape[0], y + height + grow))
    columns = slice(max(0, x - grow), min(mask_np.shape[1], x + width + grow))
    box_np = mask_np[rows, columns]
    # Square dilation as 1-D window sums over rows, then columns: O(pixels) whatever `grow` is,
    # where PIL's MaxFilter costs O(pixels * grow**2).
    for _ in range(2):
        sums_np = np.cumsum(np.pad(box_np, ((0, 0), (grow + 1, grow))), axis=1, dtype=np.int32)
        box_np = np.ascontiguousarray((sums_np[:, 2 * grow + 1:] > sums_np[:, : -2 * grow - 1]).T)
    out_np = np.zeros_like(mask_np)
    out_np[rows, columns] = box_np
    return out_np


def prepare_mask(mask: Image.Image, image_size: tuple[int, int], *, field: str = "mask",
                 threshold: int = MASK_THRESHOLD, grow: int = 0, invert: bool = False, soft: bool = False,
                 allow_empty: bool = False) -> tuple[Image.Image, list[str]]:
    """A binary (0/255) mask of exactly `image_size`, plus the warnings to return to the user. With `soft`, the
    grey levels are kept (inverted with `invert`; `threshold` and `grow` do not apply): they are opacities.

    `mask` may be the decoded file itself: its alpha or luminance is picked as `read_mask` says.
    """
    mask, notes = read_mask(mask, field=field, threshold=threshold)
    (mw, mh), (iw, ih) = mask.size, tuple(image_size)
    if (mw, mh) != (iw, ih):
        if abs((mw / mh) / (iw / ih) - 1) > 0.01:
            raise RequestError(field, f"mask is {mw}x{mh} px but the image is {iw}x{ih} px; "
                                      "a mask of another size must have the image's aspect ratio (within 1%)")
        mask = mask.resize((iw, ih), Image.Resampling.NEAREST)
        notes.append(f"{field} was {mw}x{mh} px; resized to the image's {iw}x{ih} px (nearest neighbour)")
    if soft:
        grey_np = np.asarray(mask.convert("L"))
        grey_np = 255 - grey_np if invert else grey_np
        if not grey_np.any() and not allow_empty:
            raise RequestError(field, f"{field} is empty: paint the area to repaint in white (or grey)")
        return Image.fromarray(np.ascontiguousarray(grey_np), "L"), notes
    mask_np = np.asarray(mask.convert("L")) >= threshold
    if invert:
        mask_np = ~mask_np
    if not mask_np.any() and not allow_empty:
        raise RequestError(field, f"{field} is empty: paint the area to repaint in white")
    if grow > 0:
        mask_np = _dilate_np(mask_np, grow)
    return Image.fromarray(mask_np.astype(np.uint8) * 255, "L"), notes


def feather(mask: Image.Image, radius: int) -> Image.Image:
    """Inward feather: 0 at the mask's edge, 255 about `radius` px inside, 0 everywhere outside."""
    bbox = mask.getbbox()
    if radius <= 0 or bbox is None:
        return mask
    # A Gaussian of sigma r/2 crosses 50% on a straight edge and reaches ~98% at r px inside;
    # stretching 50..100% to 0..255 gives the ramp in O(pixels) for any radius. By a lookup table and a masked
    # copy, in 8 bits: wider integers would be copies of a large mask several times over.
    # Blurred within the marks' bounding box and a margin past the blur's reach (Pillow's three box passes
    # reach under 3 * (sigma + 1) px): beyond it the mask is 0 on every side, as in the whole mask, so each pixel
    # comes out the same, and a small mark on a large picture costs what the mark costs.
    margin = 3 * radius + 3
    box = (max(0, bbox[0] - margin), max(0, bbox[1] - margin), min(mask.width, bbox[2] + margin),
           min(mask.height, bbox[3] + margin))
    crop = mask.crop(box)
    alpha_np = cv2.LUT(np.asarray(crop.filter(ImageFilter.GaussianBlur(radius / 2))), _FEATHER_RAMP)
    alpha = Image.new("L", mask.size, 0)
    alpha.paste(Image.fromarray(cv2.bitwise_and(alpha_np, alpha_np, mask=np.asarray(crop)), "L"), box[:2])  # 0 outside
    return alpha


_FEATHER_RAMP = np.clip(np.arange(256) * 2 - 255, 0, 255).astype(np.uint8)


def array_of(image: Image.Image) -> np.ndarray:
    """A writable array of `image`'s pixels, its own copy, made strip by strip: `np.array(image)` holds the picture
    three times over while it converts (Pillow's bytes in pieces, joined, then copied)."""
    out_np = np.empty((image.height, image.width, len(image.getbands())), np.uint8)
    for top in range(0, image.height, ARRAY_STRIP_ROWS):
        bottom = min(top + ARRAY_STRIP_ROWS, image.height)
        out_np[top:bottom] = np.asarray(image.crop((0, top, image.width, bottom))).reshape(bottom - top, image.width, -1)
    return out_np if out_np.shape[2] > 1 else out_np[:, :, 0]


def mask_bbox(mask: Image.Image) -> tuple[int, int, int, int]:
    box = mask.convert("L").getbbox()
    if box is None:
        raise RequestError("mask", "mask is empty: paint the area to repaint in white")
    return box


def crop_box(mask: Image.Image, *, context: float = 0.5, min_context: int = 32,
             min_size: int = 64) -> tuple[int, int, int, int]:
    """The region generated when merging: the mask's bbox plus context, kept inside the image."""
    left, top, right, bottom = mask_bbox(mask)
    pad = max(min_context, round(context * max(right - left, bottom - top)))

    def span(lo: int, hi: int, limit: int) -> tuple[int, int]:
        lo, hi = lo - pad, hi + pad
        short = max(0, min_size - (hi - lo))
        lo, hi = lo - short // 2, hi + short - short // 2
        size = min(hi - lo, limit)
        # Shifting rather than cutting at the border keeps the context (and the box's size).
        lo = min(max(lo, 0), limit - size)
        return lo, lo + size

    (x0, x1), (y0, y1) = span(left, right, mask.width), span(top, bottom, mask.height)
    return x0, y0, x1, y1


def paste_back(original: Image.Image, generated: Image.Image, box: tuple[int, int, int, int],
               alpha: Image.Image) -> Image.Image:
    """`original` with `generated` blended into `box` by `alpha`; bit-identical wherever alpha is 0."""
    left, top, right, bottom = box
    if generated.size != (right - left, bottom - top) or alpha.size != original.size:
        raise ValueError(f"paste_back: generated {generated.size} must be the box's size and alpha "
                         f"{alpha.size} the original's {original.size}")
    nonzero = alpha.getbbox()
    if nonzero and not (left <= nonzero[0] and top <= nonzero[1] and nonzero[2] <= right and nonzero[3] <= bottom):
        raise ValueError(f"paste_back: alpha's nonzero area {nonzero} is not inside the box {box}")
    out_np = np.array(original.convert("RGB"))
    blend_into(out_np, generated, box, np.asarray(alpha.convert("L"))[top:bottom, left:right])
    return Image.fromarray(out_np, "RGB")


def blend_into(out_np: np.ndarray, generated: Image.Image | np.ndarray, box: tuple[int, int, int, int],
               alpha_np: np.ndarray) -> None:
    """Blends `generated` (an image, or its RGB array) into `box` of the RGB array `out_np` in place, by
    `alpha_np` (the box's size, 0..255): pixels at alpha 0 are not written."""
    left, top, right, bottom = box
    region_np = out_np[top:bottom, left:right]
    generated_np = (generated if isinstance(generated, np.ndarray)
                    else np.asarray(generated if generated.mode == "RGB" else generated.convert("RGB")))
    # Only the partly covered pixels (a feathered band) need the float blend; a mask as drawn has none.
    full, band = alpha_np == 255, (alpha_np > 0) & (alpha_np < 255)
    # OpenCV's masked copy: numpy's boolean indexing costs 100x more on a large hole. Written back, as OpenCV
    # copies a strided view (a box of a larger picture) before writing.
    region_np[...] = cv2.copyTo(generated_np, full.view(np.uint8), region_np)
    if band.any():
        orig_f = region_np[band].astype(np.float32)
        weight_f = alpha_np[band, None] / np.float32(255)
        blend_f = orig_f + (generated_np[band].astype(np.float32) - orig_f) * weight_f
        region_np[band] = np.clip(np.rint(blend_f), 0, 255).astype(np.uint8)
    # Pixels at alpha 0 were never written: bit-identical outside the mask, as the contract says.


def blend_onto(out: Image.Image, under: Image.Image, generated: Image.Image, box: tuple[int, int, int, int],
               alpha_np: np.ndarray) -> None:
    """Where `alpha_np` (the box's size, 0..255) is above 0, the RGB image `out` becomes `under` (`out` itself, or
    the picture it was made from) blended with `generated` by it, as blend_into does; in place. Only that part of
    the box is read into arrays, so a large picture is never copied whole into one."""
    x, y, width, height = cv2.boundingRect(alpha_np)  # of the pixels above 0; 0 wide if none
    if not width:
        return
    written = (box[0] + x, box[1] + y, box[0] + x + width, box[1] + y + height)
    written_np = array_of(under.crop(written))
    blend_into(written_np, generated.crop((x, y, x + width, y + height)), (0, 0, width, height),
               alpha_np[y:y + height, x:x + width])
    out.paste(Image.fromarray(written_np, "RGB"), written[:2])


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def encode_webp(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=quality)
    return buf.getvalue()


def to_data_url(img: Image.Image, fmt: str = "png") -> str:
    encoders = {"png": encode_png, "webp": encode_webp}
    if fmt not in encoders:
        raise ValueError(f"to_data_url: fmt {fmt!r} must be one of {sorted(encoders)}")
    return f"data:image/{fmt};base64,{base64.b64encode(encoders[fmt](img)).decode('ascii')}"


def bytes_data_url(data: bytes) -> str:
    """A file already encoded (PNG, JPEG or WebP, told by its first bytes) as a data URL, byte for byte."""
    mime = f"image/{(sniff_format(data) or 'PNG').lower()}"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def resize(img: Image.Image, size: tuple[int, int], *, mask: bool = False) -> Image.Image:
    # Nearest keeps a mask binary; Lanczos keeps an image sharp.
    return img.resize(tuple(size), Image.Resampling.NEAREST if mask else Image.Resampling.LANCZOS)
