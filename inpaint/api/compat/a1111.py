"""AUTOMATIC1111's web UI API (`/sdapi/v1`) as inpainting clients use it (img2img with a mask, models, samplers,
options, progress, interrupt), translated to the one inpaint request; errors in A1111's shapes."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ... import __version__, imageops, png, settings
from ...catalog import Catalog
from ...errors import RequestError
from ..deps import EngineDep, JobsDep, json_body_declared, read_json
from . import runs

# A1111's sampler names and what drives our models like them ("Karras" and the other sigma spacings are A1111's
# `scheduler`, or a suffix of the sampler's name in its older versions). A model none of them can drive (Flux's
# flow matching) runs with its own default, and `info` says so.
SAMPLERS = {
    "Euler a": "EulerAncestralDiscreteScheduler",
    "Euler": "EulerDiscreteScheduler",
    "LMS": "LMSDiscreteScheduler",
    "Heun": "HeunDiscreteScheduler",
    "DPM2": "KDPM2DiscreteScheduler",
    "DPM2 a": "KDPM2AncestralDiscreteScheduler",
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "DPM++ SDE": "DPMSolverSinglestepScheduler",
    "DDIM": "DDIMScheduler",
    "DDPM": "DDPMScheduler",
    "PLMS": "PNDMScheduler",
    "UniPC": "UniPCMultistepScheduler",
    "DEIS": "DEISMultistepScheduler",
    "LCM": "LCMScheduler",
}
SPACINGS = (" Karras", " Exponential", " SGM Uniform", " Automatic")
FILLS = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
# Fields of A1111's img2img that change nothing here at these values (A1111's and webuiapi's defaults)...
NO_OP = {
    "resize_mode": (0,), "initial_noise_multiplier": (1, None), "styles": ([], None), "subseed": (-1, None),
    "subseed_strength": (0, None), "seed_resize_from_h": (0, -1, None), "seed_resize_from_w": (0, -1, None),
    "restore_faces": (False, None), "tiling": (False, None), "eta": (1, None), "s_churn": (0, None),
    "s_tmax": (0, None), "s_tmin": (0, None), "s_noise": (1, None), "include_init_images": (False, None),
    "script_name": (None, ""), "script_args": ([], None), "alwayson_scripts": ({}, None),
    "refiner_checkpoint": (None, ""), "enable_hr": (False, None), "disable_extra_networks": (False, None),
}
# ...and at any value: where results are saved (every result is an asset here), and instruct-pix2pix's guidance.
SILENT = {"do_not_save_samples", "do_not_save_grid", "save_images", "override_settings_restore_afterwards",
          "image_cfg_scale", "sampler_index", "comments", "force_task_id", "infotext"}
# Our request fields by the A1111 field they come from, for errors.
FIELDS = {"image": "init_images", "mask": "mask", "modelId": "override_settings.sd_model_checkpoint",
          "prompt": "prompt", "negativePrompt": "negative_prompt", "seed": "seed", "strength": "denoising_strength",
          "guidance": "cfg_scale", "numInferenceSteps": "steps", "numSamples": "batch_size", "width": "width",
          "height": "height", "scheduler": "sampler_name"}


class Img2Img(BaseModel):
    """The inpainting fields of A1111's `StableDiffusionImg2ImgProcessingAPI`; the others are named in `info` when
    they ask for something this server does not do."""

    model_config = ConfigDict(extra="allow")

    init_images: list[str] = Field(min_length=1, description="The picture, base64 with or without a data-URL head.")
    mask: str | None = Field(None, description="White = repaint, black = keep.")
    mask_blur: int = Field(4, ge=0, le=64, description="Replaced by the model's own seam band.")
    inpainting_fill: int = Field(0, ge=0, le=3, description="0 fill, 1 original, 2 latent noise, 3 latent nothing.")
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    denoising_strength: float = 0.75
    prompt: str = ""
    negative_prompt: str | None = None
    seed: int = -1
    steps: int = 50
    cfg_scale: float = 7.0
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1)
    n_iter: int = Field(1, ge=1)
    width: int = 512
    height: int = 512
    override_settings: dict = Field(default_factory=dict)
    send_images: bool = True


@dataclass
class Backend:
    """What A1111 keeps between requests: the checkpoint /options set, and the runs in progress."""

    checkpoint: str
    running: list[runs.Running] = field(default_factory=list)


# ---- errors ----------------------------------------------------------------------------------------------------

def error_response(status: int, where: str | None, message: str, headers: dict | None) -> JSONResponse:
    if status == 400:  # a value A1111 would refuse with its body's validation: FastAPI's 422 list
        loc = ["body", *(int(part) if part.isdigit() else part for part in where.split("."))] if where else ["body"]
        return JSONResponse({"detail": [{"loc": loc, "msg": message, "type": "value_error"}]}, status_code=422)
    return JSONResponse({"error": "HTTPException", "detail": message, "body": "", "errors": message},
                        status_code=status, headers=headers)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    detail = [{"loc": ["body", *error.get("loc", ())], "msg": error.get("msg", "is invalid"),
               "type": error.get("type", "value_error")} for error in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _field(ours: str) -> str:
    return FIELDS.get(ours, ours)


# Outside this server's OpenAPI schema: the host API documents these routes.
router = APIRouter(route_class=runs.shaped_errors(error_response, _field, _validation_error), include_in_schema=False)


async def _backend(request: Request) -> Backend:
    # Made on first use, on the event loop (one thread: no two are made).
    state = request.app.state
    if not hasattr(state, "a1111"):
        catalog: Catalog = state.engine.catalog
        state.a1111 = Backend(settings.DEFAULT_MODEL if settings.DEFAULT_MODEL in catalog else catalog.ids[0])
    return state.a1111


BackendDep = Annotated[Backend, Depends(_backend)]


async def _body(request: Request, model: type[BaseModel]) -> tuple[BaseModel, dict]:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise RequestValidationError([{"loc": (), "msg": "the request body must be a JSON object",
                                       "type": "dict_type"}])
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False,
                                                include_input=False)) from None


# ---- img2img as an inpaint request ---------------------------------------------------------------------------

def _file(value: str, where: str) -> bytes:
    """A1111's base64 image, with or without a data-URL head: the file, decoded as any data URL is (with its size
    bounded before it is decoded)."""
    if value.startswith("data:"):
        return imageops.decode_data_url(value, field=where)
    try:
        head = base64.b64decode(value[:16], validate=True)
    except ValueError:
        head = b""
    fmt = imageops.sniff_format(head)
    if fmt is None:
        raise RequestError(where, "must be a PNG, JPEG or WebP image in base64 (with or without a data-URL head)")
    return imageops.decode_data_url(f"data:image/{fmt.lower()};base64,{value}", field=where)


def _inverted(engine, data: bytes) -> bytes:
    """The mask read as every mask is (alpha or luminance), with repaint and keep swapped."""
    with engine.decoding.hold(imageops.declared_pixels(data)):
        mask = imageops.read_mask(imageops.open_image(data, field="mask", min_side=1))[0]
        return png.encode(mask.point(lambda value: 255 - value))


def _checkpoint(name: str) -> str:
    """A1111 titles carry the checkpoint's hash: "name [abcdef]" is the model id `name`."""
    return name.split(" [")[0].strip()


def _scheduler(req: Img2Img, entry, notes: list[str]) -> str | None:
    name = req.sampler_name or req.sampler_index
    if name is None or not entry.family.denoises:
        return None
    for spacing in SPACINGS:
        if name.endswith(spacing):
            name = name.removesuffix(spacing)
            notes.append(f"sampler_name: the{spacing} sigma spacing is not available; {name}'s own is used")
    if name not in SAMPLERS:
        raise RequestError("sampler_name", f"unknown sampler {name[:40]!r}; samplers: {', '.join(SAMPLERS)}")
    scheduler = SAMPLERS[name]
    if scheduler not in entry.scheduler_names:
        notes.append(f"sampler_name: {name} cannot drive {entry.id}; its default {entry.default_scheduler} was used")
        return None
    return scheduler


def _translate(req: Img2Img, raw: dict, engine,
               backend: Backend) -> tuple[dict, bytes, bytes, list[str], list[str]]:
    """The inpaint request's fields, its picture's and its mask's files, what was approximated (sentences) and the
    fields not used (names)."""
    notes: list[str] = []
    ignored = [name for name, value in raw.items() if name not in Img2Img.model_fields and name not in SILENT
               and not (name in NO_OP and value in NO_OP[name])]
    ignored += [f"override_settings.{name}" for name in req.override_settings if name != "sd_model_checkpoint"]
    if len(req.init_images) > 1:
        ignored.append("init_images[1:]")
    checkpoint = req.override_settings.get("sd_model_checkpoint", backend.checkpoint)
    model_id = _checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
    entry = engine.catalog.get(model_id) if isinstance(model_id, str) and model_id in engine.catalog else None
    denoises = entry is not None and entry.family.denoises

    if req.mask is None:
        raise RequestError("mask", "is required: this server inpaints (white = repaint, black = keep)")
    mask = _file(req.mask, "mask")
    if req.inpainting_mask_invert:
        mask = _inverted(engine, mask)
    if denoises and req.inpainting_fill != 1 and req.denoising_strength < 1:
        notes.append(f"inpainting_fill {req.inpainting_fill} ({FILLS[req.inpainting_fill]}) is approximated: the "
                     "model starts from the original under the mask, as with 1 (original); denoising_strength 1 "
                     "ignores it")
    if not req.inpaint_full_res:
        notes.append("inpaint_full_res false (whole picture) is approximated: the region around the mask is "
                     "generated at width x height, and the answer keeps the picture's size and its pixels outside "
                     "the mask")
    elif req.inpaint_full_res_padding:
        notes.append("inpaint_full_res_padding is approximated: the region's context is half its longer side, "
                     "at least 32 px")
    if req.scheduler not in (None, "automatic", "Automatic"):
        notes.append(f"scheduler {req.scheduler[:40]!r} is not available: the sampler's own sigma spacing is used")

    image = _file(req.init_images[0], "init_images.0")
    body = {"modelId": model_id, "prompt": req.prompt, "negativePrompt": req.negative_prompt or None,
            "seed": None if req.seed == -1 else req.seed, "strength": req.denoising_strength,
            "guidance": req.cfg_scale, "numInferenceSteps": req.steps, "numSamples": req.batch_size * req.n_iter,
            "width": req.width, "height": req.height}
    if entry is not None and entry.family.has_previews:  # /progress shows the latest as `current_image`
        body["intermediateImages"] = True
    if entry is not None and (scheduler := _scheduler(req, entry, notes)):
        body["scheduler"] = scheduler
    return body, image, mask, notes, ignored


def _infotext(req: Img2Img, resolved, seed: int) -> str:
    """A1111's parameters line, which its clients parse."""
    negative = f"\nNegative prompt: {req.negative_prompt}" if req.negative_prompt else ""
    sampler = req.sampler_name or req.sampler_index or resolved.scheduler or "none"
    return (f"{req.prompt}{negative}\nSteps: {resolved.num_inference_steps}, Sampler: {sampler}, "
            f"CFG scale: {resolved.guidance}, Seed: {seed}, Size: {resolved.width}x{resolved.height}, "
            f"Model: {resolved.model_id}, Denoising strength: {resolved.strength}")


def _images(engine, assets) -> list[str]:
    return [base64.b64encode(engine.store.file_path(asset.id).read_bytes()).decode("ascii") for asset in assets]


@router.post("/sdapi/v1/img2img", dependencies=[Depends(json_body_declared)])
async def img2img(request: Request, engine: EngineDep, jobs: JobsDep, backend: BackendDep) -> dict:
    """A1111's img2img with a mask, on the checkpoint of `override_settings.sd_model_checkpoint` (a model id of
    this server) or of /options. Image i has seed + i, as in A1111."""
    req, raw = await _body(request, Img2Img)
    body, image, mask, notes, ignored = await run_in_threadpool(_translate, req, raw, engine, backend)
    cancel = threading.Event()
    resolved, events = await run_in_threadpool(runs.start, engine, jobs, body, image, mask, cancel)
    running = runs.Running(resolved, cancel)
    backend.running.append(running)
    try:
        outcome = await run_in_threadpool(runs.finish, runs.Outcome(resolved), events, running=running)
    finally:
        backend.running.remove(running)
    seeds = [asset.seed for asset in outcome.assets]
    count = len(seeds)
    info = {
        "prompt": req.prompt, "all_prompts": [req.prompt] * count, "negative_prompt": req.negative_prompt or "",
        "all_negative_prompts": [req.negative_prompt or ""] * count, "seed": resolved.seed, "all_seeds": seeds,
        "subseed": -1, "all_subseeds": seeds, "subseed_strength": 0, "width": resolved.width,
        "height": resolved.height, "sampler_name": req.sampler_name or req.sampler_index,
        "cfg_scale": resolved.guidance, "steps": resolved.num_inference_steps, "batch_size": req.batch_size,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": resolved.model_id,
        "sd_model_hash": None, "denoising_strength": resolved.strength, "extra_generation_params": {},
        "index_of_first_image": 0, "infotexts": [_infotext(req, resolved, seed) for seed in seeds],
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": f"inpaint {__version__}",
        "interrupted": outcome.stopped, "warnings": notes + outcome.warnings, "ignored_fields": ignored,
    }
    images = await run_in_threadpool(_images, engine, outcome.assets) if req.send_images else []
    parameters = {**raw, "init_images": None, "mask": None}
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


# ---- models, samplers, options, progress ----------------------------------------------------------------------

@router.get("/sdapi/v1/sd-models")
def sd_models(engine: EngineDep) -> list[dict]:
    return [{"title": entry.id, "model_name": entry.id, "hash": None, "sha256": None, "filename": entry.id,
             "config": None} for entry in engine.catalog.entries()]


@router.get("/sdapi/v1/samplers")
def samplers() -> list[dict]:
    return [{"name": name, "aliases": [scheduler], "options": {}} for name, scheduler in SAMPLERS.items()]


@router.get("/sdapi/v1/schedulers")
def schedulers() -> list[dict]:
    # The samplers' own spacing only: a request naming another is run with it, and its info says so.
    return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
             "need_inner_model": False}]


@router.get("/sdapi/v1/scripts")
def scripts() -> dict:
    return {"txt2img": [], "img2img": []}


@router.get("/sdapi/v1/options")
def get_options(backend: BackendDep) -> dict:
    return {"sd_model_checkpoint": backend.checkpoint, "live_previews_enable": True, "samples_format": "png"}


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")

    sd_model_checkpoint: str | None = None


@router.post("/sdapi/v1/options", dependencies=[Depends(json_body_declared)])
async def set_options(request: Request, engine: EngineDep, backend: BackendDep) -> None:
    """Sets `sd_model_checkpoint` (a model id) for the img2img requests that do not override it; other options are
    accepted and change nothing."""
    options, _ = await _body(request, Options)
    if options.sd_model_checkpoint is not None:
        model_id = _checkpoint(options.sd_model_checkpoint)
        engine.catalog.get(model_id, field="sd_model_checkpoint")
        backend.checkpoint = model_id


def _preview(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@router.get("/sdapi/v1/progress")
def progress(backend: BackendDep, skip_current_image: Annotated[bool, Query()] = False) -> dict:
    current = backend.running[0] if backend.running else None
    state = {"skipped": False, "interrupted": bool(current and current.cancel.is_set()), "stopping_generation": False,
             "job": "img2img" if current else "", "job_count": len(backend.running), "job_timestamp": "0",
             "job_no": 0, "sampling_step": current.step if current else 0,
             "sampling_steps": current.steps if current else 0}
    if current is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    elapsed = time.monotonic() - current.started
    eta = elapsed / current.progress - elapsed if current.progress > 0 else 0.0
    image = (None if skip_current_image or current.preview is None
             else _preview(runs.at_generation_size(current.preview, current.request)))
    return {"progress": current.progress, "eta_relative": eta, "state": state, "current_image": image,
            "textinfo": None}


@router.post("/sdapi/v1/interrupt")
def interrupt(backend: BackendDep) -> dict:
    """Each running img2img stops within a step and answers the images it made."""
    for running in backend.running:
        running.cancel.set()
    return {}


runs.add_fallback(router, "/sdapi/v1")
