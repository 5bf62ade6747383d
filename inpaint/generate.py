"""The one generation flow: a request body in, result assets out, with previews and progress on the way."""

from __future__ import annotations

import dataclasses
import gc
import threading
from collections.abc import Callable
from contextlib import ExitStack

import cv2
import numpy as np
import torch
from PIL import Image

from . import imageops, settings
from .assets import Asset, AssetStore
from .catalog import Catalog
from .errors import JobCanceled, RequestError
from .pipelines import PipelineCache, concepts_applied, make_scheduler, request_pipeline
from .previews import latents_to_preview
from .schema import InpaintRequest, ResolvedRequest, parse_request, resolve

# The mask is grown by this much, then feathered inward by as much: the seam is soft, the painted
# area is fully repainted, and every pixel outside the grown mask (the stored mask asset) is untouched.
MASK_FEATHER_PX = 8
OPENCV_RADIUS_PX = 3  # neighbourhood each classical algorithm looks at; OpenCV's documented example uses 3
OPENCV_FLAGS = {"opencv:telea": cv2.INPAINT_TELEA, "opencv:ns": cv2.INPAINT_NS}

OnResult = Callable[[Asset], None]
OnPreview = Callable[[list[Image.Image], int, int], None]  # previews of the batch, step, steps
OnProgress = Callable[[float], None]


@dataclasses.dataclass
class _Run:
    """What one generation reports to its caller; every hook is optional."""

    on_result: OnResult | None = None
    on_preview: OnPreview | None = None
    on_progress: OnProgress | None = None
    cancel: threading.Event | None = None

    def canceled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def default_engine() -> Engine:
    """The engine configured by the environment (settings), as the app, the API and the CLI use it."""
    catalog = Catalog.load(settings.USER_CATALOG)
    pipelines = PipelineCache(catalog, settings.MODELS_DIR, max_pipelines=settings.MAX_PIPELINES)
    return Engine(catalog, AssetStore(settings.DATA_DIR), pipelines)


class Engine:
    """Load once, run many: holds the catalog, the asset store and the pipeline cache."""

    def __init__(self, catalog: Catalog, store: AssetStore, pipelines: PipelineCache, *,
                 max_batch: int = settings.MAX_BATCH):
        self.catalog = catalog
        self.store = store
        self.pipelines = pipelines
        self.max_batch = max_batch
        # One diffusion run at a time on the device, whoever asks (the studio or a REST job): two would
        # contend for its memory, and loading another model must not overlap a running generation.
        self.device_lock = threading.Lock()

    # -- validation: everything is checked before anything is stored --------------------------------

    def prepare(self, body: object) -> ResolvedRequest:
        """Validate a request body and store its inputs; raises RequestError naming the field at fault."""
        # 1. Fields, types and bounds
        req = parse_request(body)

        # 2. Inputs decoded and checked, nothing stored yet
        image, image_asset_id = self._load_input(req, "image")
        raw_mask, _ = self._load_input(req, "mask")
        mask_field = "mask" if req.mask is not None else "maskId"
        mask, warnings = imageops.prepare_mask(raw_mask, image.size, field=mask_field, grow=MASK_FEATHER_PX)
        if req.parent_id is not None:
            self.store.get(req.parent_id, field="parentId")
        left, top, right, bottom = imageops.crop_box(mask)

        # 3. Model rules and defaults
        resolved = resolve(req, self.catalog, image_size=image.size, region_size=(right - left, bottom - top),
                           image_asset_id=image_asset_id or "", mask_asset_id="",
                           warnings=warnings)

        # 4. Store the image if it came as a data URL, and the mask as prepared (binary, image-sized):
        #    `maskId` in the resolved request is exactly the mask used, so a replay gives the same result.
        if image_asset_id is None:
            image_asset_id = self.store.put(image, kind="image", hidden=req.hide, parent_id=req.parent_id).id
        mask_asset_id = self.store.put(mask, kind="mask", hidden=True, parent_id=image_asset_id).id
        return dataclasses.replace(resolved, image_asset_id=image_asset_id, mask_asset_id=mask_asset_id)

    def _load_input(self, req: InpaintRequest, what: str) -> tuple[Image.Image, str | None]:
        """The image or the mask, from a data URL (no asset id yet) or from the store (its id)."""
        if what == "image":
            candidates = [("image", req.image), ("imageId", req.image_id)]
        else:
            candidates = [("mask", req.mask), ("maskId", req.mask_id)]
        field, value = next(((f, v) for f, v in candidates if v is not None), (candidates[0][0], None))
        if value is None:
            raise RequestError(field, f"is required: give `{candidates[0][0]}` as a data URL or "
                                      f"`{candidates[1][0]}` as an asset id")
        if value.startswith("data:"):
            data = imageops.decode_data_url(value, field=field)
            loaded = imageops.load_image(data, field=field) if what == "image" else imageops.load_mask(data, field=field)
            return loaded, None
        if field == "mask":  # the contract: `mask` is a data URL, `maskId` the asset id
            raise RequestError(field, "must be a data URL (data:image/png;base64,...); use maskId for an asset id")
        stored = self.store.open_image(value, field=field)
        return (imageops.flatten(stored) if what == "image" else imageops.mask_from(stored)), value

    # -- generation ----------------------------------------------------------------------------------

    def generate(self, request: ResolvedRequest, *, job_id: str | None = None, on_result: OnResult | None = None,
                 on_preview: OnPreview | None = None, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None) -> list[Asset]:
        """Run a prepared request; each result is stored as soon as it is made, so a failure keeps them."""
        run = _Run(on_result, on_preview if request.intermediate_images else None, on_progress, cancel)
        entry = self.catalog.get(request.model_id)

        # 1. Inputs from the store
        image = self.store.open_image(request.image_asset_id).convert("RGB")
        mask = self.store.open_image(request.mask_asset_id).convert("L")

        # 2. What to generate: the region around the mask (merge) or the whole image (resized)
        if request.disable_merging:
            box = (0, 0, *image.size)
            region = imageops.resize(image, (request.width, request.height))
            region_mask = imageops.resize(mask, (request.width, request.height), mask=True)
            alpha = None
        else:
            box = imageops.crop_box(mask)
            region, region_mask = image.crop(box), mask.crop(box)
            alpha = imageops.feather(mask, MASK_FEATHER_PX)

        assets: list[Asset] = []
        with ExitStack() as holding:
            # 3. The device, then the model, held for the whole request: schedulers and adapters are not
            #    thread-safe
            loaded = None
            if entry.family != "opencv":
                while not self.device_lock.acquire(timeout=0.1):
                    if run.canceled():  # stopped while it waited for the device: it never starts
                        raise JobCanceled()
                holding.callback(self.device_lock.release)
                loaded = self.pipelines.get(request.pipeline_model_id)
                adapters = [(self.pipelines.lora_file(self.catalog.get(c.model_id), c.model_epoch), c.scale)
                            for c in request.concepts]
                holding.enter_context(loaded.lock)
                holding.enter_context(concepts_applied(loaded, adapters))

            # 4. Micro-batches of samples: memory stays flat whatever numSamples is
            pending, batch_size = request.seeds, self.max_batch
            while pending:
                seeds = pending[:batch_size]
                try:
                    if loaded is None:
                        outputs = [_opencv(entry.source, region, region_mask)] * len(seeds)
                    else:
                        outputs = self._diffuse(loaded, request, region, region_mask, seeds, run,
                                                done=len(assets))
                except torch.OutOfMemoryError:
                    _free_memory()
                    if batch_size == 1:
                        raise
                    batch_size //= 2  # the same seeds again in smaller batches: results do not change
                    continue
                pending = pending[len(seeds):]

                # 5. Merge back and store each result as it is made
                for seed, output in zip(seeds, outputs):
                    if alpha is not None:
                        output = imageops.paste_back(image, imageops.resize(output, region.size), box, alpha)
                    elif output.size != (request.width, request.height):
                        output = imageops.resize(output, (request.width, request.height))
                    asset = self.store.put(output, kind="result", hidden=request.hide_results,
                                           parent_id=request.image_asset_id, job_id=job_id, seed=seed,
                                           model_id=request.model_id)
                    assets.append(asset)
                    if run.on_result:
                        run.on_result(asset)
                if run.on_progress:
                    run.on_progress(len(assets) / request.num_samples)
                if run.canceled() and pending:
                    raise JobCanceled()
        return assets

    def _diffuse(self, loaded, request: ResolvedRequest, region: Image.Image, region_mask: Image.Image,
                 seeds: list[int], run: _Run, *, done: int) -> list[Image.Image]:
        """One pipeline call for a micro-batch, with one generator per sample so each can be replayed."""
        # Families need sizes in their own multiple (Flux packs latents 2x2); the caller resizes back.
        multiple = self.catalog.get(request.pipeline_model_id).type.size_multiple
        width, height = (max(multiple, side // multiple * multiple) for side in (request.width, request.height))
        pipe = request_pipeline(loaded, make_scheduler(loaded, request.scheduler))

        def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            steps = pipe.num_timesteps
            if run.on_preview:
                previews = latents_to_preview(loaded.family, callback_kwargs["latents"], height=height, width=width)
                run.on_preview(previews, step + 1, steps)
            if run.on_progress:
                run.on_progress((done + len(seeds) * (step + 1) / steps) / request.num_samples)
            if run.canceled():
                pipe._interrupt = True  # diffusers' own flag: the loop stops before the next step
            return callback_kwargs

        # One copy of the image per sample: the pipelines encode image i with generator i, so each sample
        # draws its random numbers exactly as it would alone (with one shared image, generator 0 encodes it
        # for the whole batch and sample i of a batch differs from a run with seed + i).
        image = imageops.resize(region, (width, height))
        mask = imageops.resize(region_mask, (width, height), mask=True)
        kwargs = dict(
            prompt=[request.prompt] * len(seeds),
            image=[image] * len(seeds),
            mask_image=[mask] * len(seeds),
            width=width,
            height=height,
            strength=request.strength,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance,
            generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=on_step_end,
            output_type="pil",
        )
        if loaded.family != "flux.1":  # Flux Fill has no negative prompt (resolve warned about it)
            kwargs["negative_prompt"] = [request.negative_prompt] * len(seeds) if request.negative_prompt else None
        images = pipe(**kwargs).images
        if run.canceled():
            raise JobCanceled()
        return images


def _opencv(source: str, region: Image.Image, region_mask: Image.Image) -> Image.Image:
    """Classical inpainting. OpenCV works in BGR; the project's convention is RGB in, RGB out."""
    bgr_np = cv2.cvtColor(np.asarray(region), cv2.COLOR_RGB2BGR)
    filled_np = cv2.inpaint(bgr_np, np.asarray(region_mask), OPENCV_RADIUS_PX, OPENCV_FLAGS[source])
    return Image.fromarray(cv2.cvtColor(filled_np, cv2.COLOR_BGR2RGB))


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
