"""The studio's files as its components hand them over: read once, through the contract's guards."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from .. import imageops
from ..errors import RequestError

# A result sent back through the browser's canvas may come back off by a rounding step; any real
# edit (even a small retouch) moves some pixel by more than this and makes a new input asset.
SAME_IMAGE_MAX_DIFF = 2


def upload_bytes(value: str | Path | bytes, *, field: str) -> bytes:
    """The bytes of a file as the studio's components hand it over (see deliver_files): a path in
    Gradio's cache, the canvas's own bytes, or a data URL an API caller sent in place of a file."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("data:"):
        return imageops.decode_data_url(value, field=field)
    try:
        return Path(value).read_bytes()
    except (OSError, TypeError) as exc:
        raise RequestError(field, f"{field} could not be read ({type(exc).__name__})") from None


def read_editor(value: dict | None, *, with_layers: bool = True,
                notes: list[str] | None = None) -> tuple[Image.Image | None, list[Image.Image]]:
    """The editor's background, decoded as the contract decodes an input image (the header's size checked
    first, EXIF orientation applied, alpha on white; what decoding lost appended to `notes`), and its
    sketch layers through the same guard."""
    value = value or {}
    if value.get("background") is None:
        return None, []
    background = imageops.load_image(upload_bytes(value["background"], field="image"), field="image", notes=notes)
    layers = []
    for i, layer in enumerate((value.get("layers") or []) if with_layers else []):
        if layer is not None:
            field = f"image.layers.{i}"
            layers.append(imageops.open_image(upload_bytes(layer, field=field), field=field, min_side=1))
    return background, layers


def declared_pixels(value: dict | None, upload: str | Path | bytes | None) -> int:
    """What decoding the editor's files (background, sketch layers) and an uploaded mask will cost, read from
    their headers before any of them is decoded."""
    value = value or {}
    files = [value.get("background"), *(value.get("layers") or []), upload]
    return sum(imageops.declared_pixels(upload_bytes(file, field="image")) for file in files if file is not None)


def read_mask_upload(upload: str | Path | bytes | None) -> Image.Image | None:
    """An uploaded mask, decoded as the contract decodes `mask` (effective_mask then reads it as a mask)."""
    if upload is None:
        return None
    return imageops.open_image(upload_bytes(upload, field="mask"), field="mask", min_side=1)


def deliver_files(component: gr.ImageEditor | gr.Image) -> gr.ImageEditor | gr.Image:
    """Hand the component's files to the handlers undecoded: Gradio's own preprocess opens every upload
    with PIL (even for type="filepath": the editor converts each image to its mode, the image decodes a
    data URL), so a huge picture costs its full decode before the project's guards can refuse it.
    (Wrapped on the instance, as `optional` does.)"""
    def handed(file):
        return None if file is None else file if isinstance(file, (bytes, bytearray)) else file.path

    if isinstance(component, gr.ImageEditor):
        def preprocess(payload):
            if payload is None:
                return None
            source = payload
            if payload.id is not None:  # the page sends its canvas as blobs, stored under this id
                source = component.blob_storage.pop(payload.id, None)
            if source is None:
                return {"background": None, "layers": [], "composite": None}
            return {"background": handed(source.background),
                    "layers": [handed(f) for f in source.layers if f is not None],
                    "composite": handed(source.composite)}
    else:
        def preprocess(payload):
            if payload is None:
                return None
            if payload.path is None and payload.url and payload.url.startswith("data:"):
                return payload.url
            return payload.path
    component.preprocess = preprocess
    return component


def same_image(image: Image.Image, stored: Image.Image) -> bool:
    if image.size != stored.size:
        return False
    diff_np = np.abs(np.asarray(image.convert("RGB"), dtype=np.int16) - np.asarray(stored.convert("RGB"), dtype=np.int16))
    return int(diff_np.max()) <= SAME_IMAGE_MAX_DIFF

