"""The effective mask: the editor's sketch or an uploaded mask, inverted, grown, feathered; and its preview."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .. import imageops, regions

MASK_OVERLAY_RGB = (255, 45, 85)
PREVIEW_MAX_SIDE = 320  # the preview beside the editor: small, so a stroke's answer travels fast


def layers_alpha(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image:
    """Union of the layers' painted pixels: alpha > 0 anywhere (the brush's colour carries nothing)."""
    painted_np = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers or []:
        if layer is None:
            continue
        if layer.mode != "RGBA":
            layer = layer.convert("RGBA")
        if layer.size[0] >= size[0] and layer.size[1] >= size[1]:
            layer = layer.crop((0, 0, *size))  # as is, or sent padded (layer_from_mask): the picture's part
        else:
            layer = layer.resize(size, Image.Resampling.NEAREST)
        painted_np |= np.asarray(layer.getchannel("A")) > 0
    return Image.fromarray(painted_np.astype(np.uint8) * 255, "L")


def effective_mask(background: Image.Image, layers: list[Image.Image] | None, upload: Image.Image | None, *,
                   invert: bool = False, grow: int = 0, feather: int = 0,
                   soft: bool = False) -> tuple[Image.Image, list[str]]:
    """The binary mask sent with the request: the sketch (or the uploaded mask, which wins), inverted,
    grown, then feathered (a hard edge rounded, or with `soft` a grey one). Raises RequestError("mask", ...) when nothing is left to repaint."""
    size = background.size
    # An uploaded mask reads as the contract reads one (prepare_mask picks its alpha or its luminance).
    raw = upload if upload is not None else layers_alpha(layers or [], size)
    mask, notes = imageops.prepare_mask(raw, size, field="mask", grow=int(grow), invert=bool(invert))
    if feather > 0 and soft:  # a soft mask keeps its grey edge: the merge's opacity
        return mask.filter(ImageFilter.GaussianBlur(feather / 2)), notes
    if feather > 0:
        # The contract thresholds every mask (white >= 128), so a soft edge would be cut back to a hard
        # one anyway: feathering here blurs then re-thresholds, rounding the brush's jagged outline.
        mask, _ = imageops.prepare_mask(mask.filter(ImageFilter.GaussianBlur(feather / 2)), size, field="mask")
    return mask, notes


def mask_overlay(background: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the area to repaint tinted and the kept area dimmed: what the model will change."""
    image = background.convert("RGB")
    dimmed = Image.blend(image, Image.new("RGB", image.size, (0, 0, 0)), 0.45)
    tinted = Image.blend(image, Image.new("RGB", image.size, MASK_OVERLAY_RGB), 0.55)
    return Image.composite(tinted, dimmed, mask)


def layer_from_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A sketch layer of `size` painting `mask` (white = repaint) at its top left in the brush's colour, as the
    editor's own strokes; transparent elsewhere."""
    layer = Image.new("RGBA", size, (*MASK_OVERLAY_RGB, 0))
    alpha = Image.new("L", layer.size, 0)
    alpha.paste(mask.point(lambda v: 140 if v >= imageops.MASK_THRESHOLD else 0))  # the brush's opacity
    layer.putalpha(alpha)
    return layer


def sent_layer_size(picture: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """The area gradio's editor (6.x) centres a layer in when the server sends it one: its first canvas
    (`canvas_size`) while the picture fits in that, else the picture. A layer of that size, the mask at its top
    left, lands on the picture unscaled."""
    fits = picture[0] <= canvas[0] and picture[1] <= canvas[1]
    return canvas if fits else picture


def extended_preview(background: Image.Image, mask: Image.Image | None, sides: dict[str, int],
                     ) -> tuple[Image.Image, Image.Image]:
    """The grown canvas (new area grey) and its mask: the new area plus the sketch at its new offset."""
    canvas = regions.outpaint_canvas(background, sides, prefill=False)
    grown = regions.outpaint_mask(background.size, sides)
    if mask is not None:
        grown.paste(mask, (sides["left"], sides["top"]), mask)
    return canvas, grown


def draw_regions(preview: Image.Image, boxes, scale: float) -> Image.Image:
    """The crops the model will generate, outlined on the preview (one per separate part of the mask)."""
    draw = ImageDraw.Draw(preview)
    for box in boxes:
        draw.rectangle([round(v * scale) for v in box], outline=(255, 255, 255), width=2)
    return preview
