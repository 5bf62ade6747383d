"""OpenAI's image edits (`POST /v1/images/edits`, `GET /v1/models`) as the official SDKs send them, translated to
the one inpaint request: multipart in, `ImagesResponse` or Server-Sent Events out, errors in OpenAI's shape."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ... import imageops, png, settings
from ...assets import Asset
from ...errors import RequestError
from ...events import Preview, Result
from ...generate import Engine
from ..deps import EngineDep, JobsDep
from . import runs

# The form fields of an edit this server reads; `seed` and `num_inference_steps` are its own (the SDK sends them
# with extra_body).
FIELDS = {"image", "image[]", "mask", "prompt", "model", "n", "size", "response_format", "output_format",
          "output_compression", "background", "quality", "input_fidelity", "stream", "partial_images", "user",
          "safety_identifier", "seed", "num_inference_steps"}
# Accepted and without effect here: how OpenAI's own models are tuned, and who the end user is.
UNUSED = ("quality", "input_fidelity")
MAX_IMAGES = 16  # OpenAI takes up to 16 images; the first is the picture, the others only references
MAX_PARTIAL_IMAGES = 3
OUTPUT_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}
# The request fields of ours that OpenAI names otherwise.
PARAMS = {"imageId": "image", "maskId": "mask", "modelId": "model", "numSamples": "n", "width": "size",
          "height": "size", "numInferenceSteps": "num_inference_steps", "body": None, "server": None}
CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
NO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}, "output_tokens": 0,
            "total_tokens": 0}


def _type(status: int) -> str:
    return "requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error"


def error_response(status: int, param: str | None, message: str, headers: dict | None) -> JSONResponse:
    code = "model_not_found" if status == 404 and param == "model" else CODES.get(status)
    if code is None and status == 400:
        code = "invalid_value"
    return JSONResponse({"error": {"message": message, "type": _type(status), "param": param,
                                   "code": code}}, status_code=status, headers=headers)


def _param(field: str) -> str | None:
    return PARAMS.get(field, field)


# Outside this server's OpenAPI schema: the host API documents these routes.
router = APIRouter(route_class=runs.shaped_errors(error_response, _param), include_in_schema=False)


# ---- the form ------------------------------------------------------------------------------------------------

def _text(form, name: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RequestError(name, "must be a text field, not a file")
    if choices is not None and value not in choices:
        raise RequestError(name, f"Invalid value: {value[:40]!r}. Supported values are: "
                                 + ", ".join(repr(choice) for choice in choices))
    return value


def _number(form, name: str, default: int | None, low: int, high: int) -> int | None:
    value = _text(form, name)
    if value is None:
        return default
    if not re.fullmatch(r"\d{1,10}", value.strip()) or not low <= int(value) <= high:
        raise RequestError(name, f"{value[:40]!r} must be an integer within [{low}, {high}]")
    return int(value)


def _flag(form, name: str) -> bool:
    value = _text(form, name, "false")
    if value.lower() not in ("true", "false"):
        raise RequestError(name, f"{value[:40]!r} must be true or false")
    return value.lower() == "true"


async def _file(value: object, name: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, UploadFile):
        raise RequestError(name, "must be a file (an image upload), not a text field")
    data = await value.read()
    if not data:
        raise RequestError(name, f"the file {value.filename!r} is empty")
    return data


def _edited_area(engine: Engine, data: bytes, field: str) -> bytes:
    """OpenAI's mask convention as ours: the fully transparent pixels of `data` (the mask, or the picture itself)
    are edited; as a mask's PNG, white = repaint."""
    with engine.decoding.hold(imageops.declared_pixels(data)):
        decoded = imageops.open_image(data, field=field, min_side=1)
        if not decoded.has_transparency_data:
            rule = ("must be a PNG with an alpha channel" if field == "mask" else
                    "has no alpha channel: send a mask, or a PNG whose transparent pixels are the area to edit")
            raise RequestError(field, f"{rule}; fully transparent pixels are edited")
        edited_np = np.asarray(decoded.convert("RGBA").getchannel("A")) == 0
        if not edited_np.any():
            raise RequestError(field, "has no fully transparent pixel: nothing to edit (fully transparent pixels "
                                      "are edited)")
        # The results' fast encoder: a plain greyscale PNG, which prepare then stores as it is when it is the
        # mask used.
        return png.encode(Image.fromarray(edited_np.astype(np.uint8) * 255, "L"))


@dataclass(frozen=True)
class Edit:
    """An edit request: the inpaint request it becomes (its fields, the picture's file and the mask's PNG), and how
    the answer is written."""

    body: dict
    image: bytes
    mask: bytes
    stream: bool
    partial_images: int
    response_format: str
    output_format: str
    compression: int
    warnings: list[str]
    background: str = "opaque"


async def _edit(request: Request, engine: Engine) -> Edit:
    """The multipart form as an Edit; read once the key was checked and the form is known to come from a client
    that may post here."""
    # A web page on another site can post a form here without a CORS preflight; it cannot add an Authorization
    # header to it, and its browser sends an Origin (which BrowserGuard refuses unless it is this server's).
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise RequestError("body", f"the body must be multipart/form-data, as the OpenAI SDKs send it (got "
                                   f"{media_type or 'none'!r})", status=415)
    if "authorization" not in request.headers and "origin" not in request.headers:
        raise RequestError("authorization", "a form posted here needs an Authorization header (the API key as a "
                                            "Bearer token; any value when the server has none) or this server's "
                                            "Origin: a page of another site may post forms anywhere", status=403)
    # Closed on the way out: an uploaded file over 1 MB is spooled to disk.
    async with request.form(max_files=MAX_IMAGES + 1, max_fields=len(FIELDS) + MAX_IMAGES) as form:
        return await _form_edit(form, engine)


async def _form_edit(form, engine: Engine) -> Edit:
    unknown = sorted(set(form.keys()) - FIELDS)
    if unknown:
        raise RequestError(unknown[0], f"Unrecognized request argument supplied: {unknown[0][:40]}")

    images = [*form.getlist("image"), *form.getlist("image[]")]
    if not images:
        raise RequestError("image", "is required: the picture to edit, as a file")
    picture = await _file(images[0], "image")
    mask = await _file(form.get("mask"), "mask")
    prompt = _text(form, "prompt")
    if prompt is None:
        raise RequestError("prompt", "is required")
    model = _text(form, "model", settings.DEFAULT_MODEL)
    if model not in engine.catalog:
        raise RequestError("model", f"The model {model[:80]!r} does not exist; valid models: "
                                    f"{', '.join(engine.catalog.ids)}", status=404)
    size = _text(form, "size", "auto")
    if size != "auto" and not re.fullmatch(r"\d{2,5}x\d{2,5}", size):
        raise RequestError("size", f"{size[:40]!r} must be 'auto' or WIDTHxHEIGHT, such as '512x512'")
    output_format = _text(form, "output_format", "png", tuple(OUTPUT_FORMATS))
    response_format = _text(form, "response_format", "b64_json", ("b64_json", "url"))
    if response_format == "url" and output_format == "jpeg":
        raise RequestError("output_format", "jpeg is sent as b64_json only; a url serves png (the original) or "
                                            "webp")
    background = _text(form, "background", "auto", ("transparent", "opaque", "auto"))
    if background == "transparent":
        raise RequestError("background", "'transparent' is not available: this server's models paint opaque "
                                         "pictures; use 'opaque' or 'auto'")
    stream = _flag(form, "stream")
    partial_images = _number(form, "partial_images", 0, 0, MAX_PARTIAL_IMAGES)
    seed = _text(form, "seed")
    warnings = [f"{name} is not used by this server" for name in UNUSED if _text(form, name, "auto") != "auto"]
    if len(images) > 1:
        warnings.append(f"only the first image is edited; the {len(images) - 1} others were not used")

    edited = await run_in_threadpool(_edited_area, engine, mask or picture, "mask" if mask else "image")
    body = {"modelId": model, "prompt": prompt, "numSamples": _number(form, "n", 1, 1, 128),
            **({"seed": seed} if seed is not None else {})}
    if (steps := _number(form, "num_inference_steps", None, 1, 150)) is not None:
        body["numInferenceSteps"] = steps
    if stream and partial_images:  # previews cost a little at each step: made only when they are sent
        body["intermediateImages"] = True
    if size != "auto":
        body["width"], body["height"] = map(int, size.split("x"))
    return Edit(body, picture, edited, stream=stream, partial_images=partial_images, response_format=response_format,
                output_format=output_format, compression=_number(form, "output_compression", 100, 0, 100),
                warnings=warnings)


# ---- the answer ----------------------------------------------------------------------------------------------

def _encoded(image: Image.Image, edit: Edit) -> str:
    buffer = io.BytesIO()
    fmt = OUTPUT_FORMATS[edit.output_format]
    image.save(buffer, fmt, **({"quality": edit.compression} if fmt != "PNG" else {}))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _result(request: Request, engine: Engine, asset: Asset, edit: Edit) -> dict:
    """One image of the answer, with the seed that reproduces it alone."""
    if edit.response_format == "url":
        original = edit.output_format == "png"
        path = f"assets/{asset.id}/file" + ("?original=true" if original else "")
        return {"url": f"{request.base_url}{path}", "seed": asset.seed}
    path = engine.store.file_path(asset.id, original=True)
    if edit.output_format == "png":  # results are stored as PNG: sent as they are
        return {"b64_json": base64.b64encode(path.read_bytes()).decode("ascii"), "seed": asset.seed}
    with Image.open(path) as image:
        return {"b64_json": _encoded(image.convert("RGB"), edit), "seed": asset.seed}


def _answer(outcome: runs.Outcome, edit: Edit) -> dict:
    first = outcome.assets[0]
    return {"created": int(time.time()), "background": edit.background, "output_format": edit.output_format,
            "quality": "auto", "size": f"{first.width}x{first.height}", "warnings": edit.warnings + outcome.warnings}


def _made(outcome: runs.Outcome) -> None:
    if not outcome.assets:
        raise RequestError("server", "the server stopped before an image was made; send the request again",
                           status=503)


def _sse(kind: str, payload: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def _events(request: Request, engine: Engine, edit: Edit, outcome: runs.Outcome, events) -> Iterator[bytes]:
    """The run as OpenAI's stream: up to `partial_images` previews spread over the denoising, then each image."""
    sent = 0
    try:
        for event in runs.follow(outcome, events):
            match event:
                case Preview(images=images, step=step, steps=steps) if sent < edit.partial_images and \
                        step * (edit.partial_images + 1) >= (sent + 1) * steps:
                    preview = runs.at_generation_size(images[0], outcome.request)
                    yield _sse("image_edit.partial_image", {
                        "b64_json": _encoded(preview, edit), "partial_image_index": sent,
                        "created_at": int(time.time()), "size": f"{preview.width}x{preview.height}",
                        "quality": "auto", "background": edit.background, "output_format": edit.output_format})
                    sent += 1
                case Result(asset=asset):
                    yield _sse("image_edit.completed", {
                        **_result(request, engine, asset, edit), "created_at": int(time.time()),
                        "size": f"{asset.width}x{asset.height}", "quality": "auto", "background": edit.background,
                        "output_format": edit.output_format, "usage": NO_USAGE})
        _made(outcome)
    except RequestError as exc:  # the answer has begun: the SDK raises an APIError from this event
        error = json.loads(error_response(exc.status, _param(exc.field), exc.message, None).body)["error"]
        yield _sse("error", {"error": error})


@router.post("/v1/images/edits")
async def edit_image(request: Request, engine: EngineDep, jobs: JobsDep):
    """OpenAI's image edit: the picture's fully transparent pixels (or the mask's) are repainted by `model`, one of
    this server's model ids. Answers OpenAI's ImagesResponse, or its Server-Sent Events with `stream=true`."""
    edit = await _edit(request, engine)
    resolved, events = await run_in_threadpool(runs.start, engine, jobs, edit.body, edit.image, edit.mask,
                                               threading.Event())
    outcome = runs.Outcome(resolved)
    if edit.stream:
        return StreamingResponse(_events(request, engine, edit, outcome, events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    await run_in_threadpool(runs.finish, outcome, events)
    _made(outcome)
    data = [await run_in_threadpool(_result, request, engine, asset, edit) for asset in outcome.assets]
    return {**_answer(outcome, edit), "data": data}


def _model(entry) -> dict:
    return {"id": entry.id, "object": "model", "created": 0, "owned_by": "inpaint"}


@router.get("/v1/models")
def list_models(engine: EngineDep) -> dict:
    """The catalog's model ids, as OpenAI lists models: any of them is an edit's `model`."""
    return {"object": "list", "data": [_model(entry) for entry in engine.catalog.entries()]}


@router.get("/v1/models/{model}")
def get_model(engine: EngineDep, model: Annotated[str, Path(description="A model id of the catalog.")]) -> dict:
    if model not in engine.catalog:
        raise RequestError("model", f"The model {model[:80]!r} does not exist", status=404)
    return _model(engine.catalog.get(model))


runs.add_fallback(router, "/v1")
