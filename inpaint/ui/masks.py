"""The mask the user drew (painted or uploaded, inverted, grown, feathered), and its preview."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter

from .. import imageops

MASK_OVERLAY_RGB = (255, 45, 85)
PREVIEW_MAX_SIDE = 320  # the preview beside the picture: small, so a stroke's answer travels fast


def painted_mask(sketch: Image.Image) -> Image.Image:
    """The painter's PNG as a mask: white wherever it holds paint (alpha > 0; the brush's colour carries
    nothing). It is drawn at the picture's size: the engine checks the mask's size against the picture's."""
    alpha = sketch.getchannel("A") if sketch.mode in ("RGBA", "LA") else sketch.convert("RGBA").getchannel("A")
    return alpha.point(lambda v: 255 if v else 0)


def drawn_mask(sketch: Image.Image | None, upload: Image.Image | None, *, invert: bool = False, grow: int = 0,
               feather: int = 0, soft: bool = False) -> tuple[Image.Image | None, list[str]]:
    """The mask the user drew, as the request's `mask`: the painted one (or the uploaded mask, which wins),
    inverted, grown, then feathered (a hard edge rounded, or with `soft` a grey one) by the page's mask tools;
    None when nothing was drawn or uploaded. Raises RequestError("mask", ...) when nothing is left to repaint.
    The engine then reads it as it reads any mask (size, threshold, its own seam band)."""
    raw = upload if upload is not None else painted_mask(sketch) if sketch is not None else None
    if raw is None:
        return None, []
    # An uploaded mask reads as the contract reads one (prepare_mask picks its alpha or its luminance).
    mask, notes = imageops.prepare_mask(raw, raw.size, field="mask", grow=int(grow), invert=bool(invert))
    if feather > 0 and soft:  # a soft mask keeps its grey edge: the merge's opacity
        return mask.filter(ImageFilter.GaussianBlur(feather / 2)), notes
    if feather > 0:
        # The contract thresholds every mask (white >= 128), so a soft edge would be cut back to a hard
        # one anyway: feathering here blurs then re-thresholds, rounding the brush's jagged outline.
        mask, _ = imageops.prepare_mask(mask.filter(ImageFilter.GaussianBlur(feather / 2)), mask.size, field="mask")
    return mask, notes


def mask_overlay(background: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the area to repaint tinted and the kept area dimmed: what the model will change."""
    image = background.convert("RGB")
    dimmed = Image.blend(image, Image.new("RGB", image.size, (0, 0, 0)), 0.45)
    tinted = Image.blend(image, Image.new("RGB", image.size, MASK_OVERLAY_RGB), 0.55)
    return Image.composite(tinted, dimmed, mask)


def layer_from_mask(mask: Image.Image) -> Image.Image:
    """What the painter holds for `mask` (white = repaint): the brush's colour, opaque where it paints (the
    page shows the canvas see-through), transparent elsewhere."""
    layer = Image.new("RGBA", mask.size, (*MASK_OVERLAY_RGB, 0))
    layer.putalpha(mask.point(lambda v: 255 if v >= imageops.MASK_THRESHOLD else 0))
    return layer


def draw_regions(preview: Image.Image, boxes, scale: float) -> Image.Image:
    """The crops the model will generate, outlined on the preview (one per separate part of the mask)."""
    draw = ImageDraw.Draw(preview)
    for box in boxes:
        draw.rectangle([round(v * scale) for v in box], outline=(255, 255, 255), width=2)
    return preview
