"""The studio's files as its components hand them over: read once, through the contract's guards."""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
from gradio import utils as gradio_utils
from PIL import Image

from .. import imageops
from ..errors import RequestError


def upload_folder() -> Path:
    """Where this server's Gradio keeps what it received: the only folder a client may name a file in."""
    return Path(gradio_utils.get_upload_folder()).resolve()


def upload_bytes(value: str | Path | bytes, *, field: str) -> bytes:
    """The bytes of a file as the studio's components hand it over (see deliver_files): a path in this server's
    upload folder, or a data URL an API caller sent in place of a file (bytes: a test's own).

    The one place the studio opens a file a client named. Gradio checks a FileData path only when the dict
    carries its `meta` marker (one without is handed over unchecked), so the check is made here, on the real
    path: a link out of the folder or a `..` is followed first. A path outside the folder and a missing file
    get the same answer, which names neither the file nor anything in it.
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("data:"):
        return imageops.decode_data_url(value, field=field)
    not_received = RequestError(field, "is not a file this page uploaded: upload it again")
    if not isinstance(value, (str, Path)) or "\0" in str(value):
        raise not_received
    path = Path(os.path.realpath(value))
    if not path.is_relative_to(upload_folder()):
        raise not_received
    try:
        return path.read_bytes()
    except OSError:
        raise not_received from None


def read_picture(value: str | Path | bytes | None) -> Image.Image | None:
    """The picture, decoded as the contract decodes an input image (the header's size checked first, EXIF
    orientation applied, alpha on white)."""
    if value is None:
        return None
    return imageops.load_image(upload_bytes(value, field="image"), field="image")


def sketch_bytes(value: str | None) -> bytes | None:
    """The painter's PNG: a data URL and nothing else (a string naming a file of the server is refused, not read)."""
    if not value:
        return None
    if not isinstance(value, str) or not value.startswith("data:"):
        raise RequestError("sketch", "must be a PNG data URL, as the page's painter sends it")
    return imageops.decode_data_url(value, field="sketch")


def read_sketch(value: str | None) -> Image.Image | None:
    """The painted mask: painted where its alpha is not 0 (masks.painted_mask reads it)."""
    data = sketch_bytes(value)
    return None if data is None else imageops.open_image(data, field="sketch", min_side=1)


def declared_pixels(picture, sketch: str | None, upload) -> int:
    """What decoding the picture, the painted mask and an uploaded mask will cost, read from their headers
    before any of them is decoded."""
    files = [upload_bytes(picture, field="image") if picture is not None else None, sketch_bytes(sketch),
             upload_bytes(upload, field="mask") if upload is not None else None]
    return sum(imageops.declared_pixels(data) for data in files if data is not None)


def read_mask_upload(upload: str | Path | bytes | None) -> Image.Image | None:
    """An uploaded mask, decoded as the contract decodes `mask` (drawn_mask then reads it as a mask)."""
    if upload is None:
        return None
    return imageops.open_image(upload_bytes(upload, field="mask"), field="mask", min_side=1)


def deliver_files(component: gr.Image) -> gr.Image:
    """Hand the component's file to the handlers undecoded: Gradio's own preprocess opens every upload
    with PIL (even for type="filepath", or a data URL), so a huge picture costs its full decode before the
    project's guards can refuse it. (Wrapped on the instance, as `optional` does.)"""
    def preprocess(payload):
        if payload is None:
            return None
        if payload.path is None and payload.url and payload.url.startswith("data:"):
            return payload.url
        return payload.path
    component.preprocess = preprocess
    return component
