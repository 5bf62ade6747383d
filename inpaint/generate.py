"""The one generation flow: a request body in, result assets out, with previews and progress on the way."""

from __future__ import annotations

import dataclasses
import functools
import gc
import io
import logging
import os
import queue
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import ExifTags, Image

from . import imageops, regions, schema, seams, settings, zerogpu
from .assets import Asset, AssetStore
from .catalog import Catalog
from .errors import JobCanceled, RequestError
from .events import (
    Done,
    Event,
    Failed,
    Loading,
    Preview,
    Progress,
    Regions,
    Result,
    Waiting,
    Warned,
    failure,
)
from .limits import PixelBudget
from .pipelines import PipelineCache, concepts_applied
from .schema import Box, InpaintRequest, Region, ResolvedRequest, parse_request, resolve
from .threads import KeptThreads

log = logging.getLogger(__name__)

# Decoded inputs kept from prepare to generate: ~600 MB of RGB at most, room for the inputs of a few
# queued 40 MP requests or of dozens of 2048x2048 ones; past it the oldest are read back from the store.
INPUT_CACHE_PIXELS = 200_000_000

Emit = Callable[[Event], None]  # where a generation reports what happens, in order

# A mask as a caller holds it: a file, or its pixels (white = repaint).
MaskInput = bytes | Image.Image | np.ndarray
Source = bytes | Image.Image | str | None  # what an input field holds: a file, pixels, an asset id, or nothing


class _Inputs:
    """Decoded inputs by asset id, handed from prepare to generate without a round trip through the store;
    bounded by their pixels, the least recently stored dropped first. Thread-safe."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels
        self._images: OrderedDict[str, Image.Image] = OrderedDict()
        self._pixels = 0
        self._lock = threading.Lock()

    def put(self, asset_id: str, image: Image.Image) -> None:
        with self._lock:
            self._pop(asset_id)
            if image.width * image.height > self.max_pixels:
                return
            self._images[asset_id] = image
            self._pixels += image.width * image.height
            while self._pixels > self.max_pixels:
                self._pop(next(iter(self._images)))

    def take(self, asset_id: str) -> Image.Image | None:
        """The image, now no longer held here; None if it never was or was dropped."""
        with self._lock:
            return self._pop(asset_id)

    def _pop(self, asset_id: str) -> Image.Image | None:
        image = self._images.pop(asset_id, None)
        if image is not None:
            self._pixels -= image.width * image.height
        return image


_GENERATING = KeptThreads("inpaint-generation")  # threads kept between runs: see threads.py
_MEASURING = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="inpaint-seam-report")


# Results finished at once: a batch's colour match, blend, seam report and encode (numpy, OpenCV and the PNG
# encoder let go of the GIL) overlap instead of queueing after the last step. A few: each holds its result's picture.
FINISH_WORKERS = min(4, os.cpu_count() or 1)


class _Writer:
    """Finishes results on a small pool and stores them on its own thread in the order given, while the caller
    makes the next ones; emits each one's Result once it is stored, in that order. After a failed finish or write
    the later ones are dropped, and check() raises its error: the job fails with the results before it kept."""

    def __init__(self, emit: Emit):
        self.emit = emit
        self.error: BaseException | None = None
        self._finishing = ThreadPoolExecutor(max_workers=FINISH_WORKERS, thread_name_prefix="inpaint-finish")
        # One thread: the results are stored, and reported, in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inpaint-writer")

    def submit(self, finish: Callable[[], Callable[[], Result]]) -> None:
        """`finish()` runs on the pool and gives back the write, which runs in order on the writer's thread."""
        self._thread.submit(self._write, self._finishing.submit(self._finish, finish))

    def _finish(self, finish: Callable[[], Callable[[], Result]]) -> Callable[[], Result] | None:
        return None if self.error is not None else finish()  # after a failure the rest is dropped: no work for it

    def _write(self, finished: Future) -> None:
        if self.error is not None:
            return
        try:
            write = finished.result()
            self.emit(write())
        except BaseException as exc:  # raised on the caller's thread by check()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Waits for the results submitted so far."""
        self._thread.shutdown(wait=True)
        self._finishing.shutdown(wait=True)


def _stored_as_sent(data: bytes, decoded: Image.Image, *, alpha: bool) -> bool:
    """Whether the received file can be stored as it is: only when its decoder gives exactly the pixels the
    engine keeps (RGB, or with `alpha` RGBA, 8 bits per channel, as stored; an RGB profile or none). Anything
    open_image or flatten changed is re-encoded from what they made: EXIF/XMP-rotated, alpha flattened on
    white (or a tRNS colour key made alpha), CMYK, 16 bits reduced, palette or greyscale made RGB, a profile
    of another colour space. The store's decoder is the guards' own, so a replay reads the same pixels (a JPEG's
    pixels are its decoder's: after an upgrade of libjpeg a replay may differ in the last bit)."""
    if decoded.mode not in (("RGB", "RGBA") if alpha else ("RGB",)) or "transparency" in decoded.info:
        return False
    if imageops.icc_colour_space(decoded.info.get("icc_profile")) not in (None, b"RGB "):
        return False
    if data.startswith(b"\x89PNG"):
        return _png_plain(data)
    with Image.open(io.BytesIO(data)) as header:  # JPEG and WebP read their EXIF and XMP with the header
        return header.getexif().get(ExifTags.Base.Orientation, 1) == 1


def _mask_as_sent(data: bytes | str | None, decoded: Image.Image | None, mask: Image.Image) -> bool:
    """Whether a received mask file is the prepared mask itself (a plain 8-bit greyscale PNG with exactly its
    pixels: nothing thresholded, resized or grown), so it can be stored as it came instead of encoded again."""
    return (isinstance(data, bytes) and data.startswith(b"\x89PNG") and decoded is not None
            and decoded.mode == "L" and "transparency" not in decoded.info and decoded.size == mask.size
            and _png_plain(data) and np.array_equal(np.asarray(decoded), np.asarray(mask)))


def _png_plain(data: bytes) -> bool:
    """An 8-bit PNG without metadata that may rotate it: no eXIf chunk, no XMP or raw EXIF text.
    Read from the chunk headers: Pillow would decode the whole file again to find a late eXIf."""
    position = 8  # after the signature
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + min(length, 80)]  # a text chunk's keyword is 1..79 bytes
        if kind == b"IHDR" and body[8:9] != b"\x08":  # bit depth: Pillow reads 16 bits as 8 without a word
            return False
        if kind == b"eXIf" or (kind in (b"tEXt", b"zTXt", b"iTXt")
                               and body.split(b"\0")[0] in (b"XML:com.adobe.xmp", b"Raw profile type exif",
                                                             b"Raw profile type APP1")):
            return False
        if kind == b"IEND":
            return True
        position += 12 + length  # length, type, data, CRC
    return False


def default_engine(data_dir: Path | None = None) -> Engine:
    """The engine configured by the environment (settings), as the app, the API and the CLI use it: on the
    first device of INPAINT_DEVICES (workers.local_workers makes the others), its store in `data_dir` (default:
    the data folder, INPAINT_DATA_DIR)."""
    catalog = Catalog.load(settings.USER_CATALOG)
    # Unset, torch picks: cuda where ZeroGPU emulates it for a process that sees no GPU.
    pipelines = PipelineCache(catalog, settings.MODELS_DIR, max_pipelines=settings.MAX_PIPELINES,
                              device=settings.GIVEN_DEVICES[0] if settings.GIVEN_DEVICES else None)
    return Engine(catalog, AssetStore(settings.DATA_DIR if data_dir is None else data_dir), pipelines)


class Engine:
    """Load once, run many: holds the catalog, the asset store and the pipeline cache."""

    def __init__(self, catalog: Catalog, store: AssetStore, pipelines: PipelineCache, *,
                 max_batch: int = settings.MAX_BATCH, decode_pixels: int = settings.PREPARE_PIXELS,
                 input_cache_pixels: int = INPUT_CACHE_PIXELS):
        self.catalog = catalog
        self.store = store
        self.pipelines = pipelines
        self.max_batch = max_batch
        # Every surface decodes its inputs through prepare or upload: one bound on their memory.
        self.decoding = PixelBudget(decode_pixels)
        # One diffusion run at a time on the device, whoever asks (the studio or a REST job): two would
        # contend for its memory, and loading another model must not overlap a running generation.
        self.device_lock = threading.Lock()
        # What prepare decoded, for generate: a 2048x2048 input is not decoded twice.
        self.inputs = _Inputs(input_cache_pixels)

    # -- validation: everything is checked before anything is stored --------------------------------

    def plan(self, body: object, *, image: bytes | None = None, mask: MaskInput | None = None) -> Plan:
        """What preparing and running `body` would do, with nothing stored and nothing started (a dry run): the
        request with every default filled in, the mask as the job uses it, and the regions its job will generate,
        planned as the job plans them. Takes what `prepare` takes; raises RequestError naming the field at fault,
        as `prepare` does."""
        with self._checked(body, image, mask) as checked:
            return Plan(checked.resolved, checked.image, checked.mask)

    def prepare(self, body: object, *, image: bytes | None = None, mask: MaskInput | None = None) -> ResolvedRequest:
        """Validate a request and store its inputs; raises RequestError naming the field at fault.

        `body` holds the request's fields; the picture and the mask come in it as the contract sends them (data
        URLs or asset ids), or as the caller holds them: `image` a file as received (PNG, JPEG or WebP bytes),
        `mask` a file or the drawn mask's pixels (white = repaint; soft mode reads its grey levels). A surface
        that has files hands them over as they are: nothing is encoded to be decoded again."""
        with self._checked(body, image, mask) as checked:
            # 5. Store the image if it came as a data URL (the file as received when it holds the very pixels
            #    used), and the mask as prepared (binary, image-sized): `maskId` in the resolved request is
            #    exactly the mask used, so a replay gives the same result. Both stay in memory for generate.
            req, image, mask = checked.req, checked.image, checked.mask
            (_, image_data), (_, mask_data) = checked.sources
            image_asset_id = checked.resolved.image_asset_id
            if not image_asset_id:
                image_asset_id = self.store.put(image, kind="image", hidden=req.hide, parent_id=req.parent_id,
                                                icc_profile=imageops.rgb_profile(image),
                                                data=image_data if checked.image_as_sent else None).id
            mask_file = mask_data if _mask_as_sent(mask_data, checked.raw_mask, mask) else None
            mask_asset_id = self.store.put(mask, kind="mask", hidden=True, parent_id=image_asset_id,
                                           data=mask_file).id
            self.inputs.put(image_asset_id, image)
            self.inputs.put(mask_asset_id, mask)
        return checked.resolved.model_copy(update={"image_asset_id": image_asset_id, "mask_asset_id": mask_asset_id})

    @contextmanager
    def _checked(self, body: object, image: bytes | None, mask: MaskInput | None) -> Iterator[_Checked]:
        """The request validated and its inputs decoded and checked, nothing stored yet, held in the pixel budget
        while the caller uses them."""
        # 1. Fields, types and bounds
        req = parse_request(body)

        # 2. Where the inputs come from; their decoding waits for room in the pixel budget (or is refused)
        # An outpaint repaints the new area: a mask is then optional.
        outpaint = schema.outpaint_sides(req)
        sources = (self._input_source(req, "image", image),
                   self._input_source(req, "mask", mask, optional=outpaint is not None))
        with self.decoding.hold(sum(self._declared_pixels(source) for source in sources)):
            # 3. Inputs decoded and checked. The mask covers the grown canvas of an outpaint.
            warnings: list[str] = []
            image, image_asset_id, as_sent = self._load_input(sources[0], "image", warnings)
            canvas_size = regions.outpaint_size(image.size, outpaint) if outpaint else image.size
            raw_mask = self._load_input(sources[1], "mask", warnings)[0] if sources[1][1] is not None else None
            family = self.catalog.get(req.model_id).family
            mask = self._mask(req, raw_mask, sources[1][0], image.size, family.seam_px, warnings)
            if req.parent_id is not None:
                self.store.get(req.parent_id, field="parentId")

            # 4. Model rules and defaults (the processing size follows the largest region), then the crops at
            #    that size: the plan the run follows, made once here.
            repainted = _repainted(mask, req.mask_mode)
            largest = max(regions.group(repainted), key=lambda box: (box[2] - box[0]) * (box[3] - box[1]))
            resolved = resolve(req, self.catalog, image_size=canvas_size,
                               region_size=(largest[2] - largest[0], largest[3] - largest[1]),
                               image_asset_id=image_asset_id or "", mask_asset_id="",
                               warnings=warnings)
            resolved = resolved.model_copy(update={"regions": _plan(resolved, family, repainted)})
            yield _Checked(req, resolved, sources, image, as_sent, raw_mask, mask)

    def upload(self, data: bytes, *, hide: bool = False, parent_id: str | None = None) -> Asset:
        """Store an uploaded image file as an asset. Alpha is kept: as a mask (`maskId`) it is what counts; as an
        input image it is flattened on white when a request uses it. So the file is stored as received when
        it decodes to RGB or RGBA as it stands (see _stored_as_sent), else re-encoded as the RGBA or the
        flattened RGB that is kept."""
        with self.decoding.hold(imageops.declared_pixels(data)):
            decoded = imageops.open_image(data, field="image")
            as_sent = _stored_as_sent(data, decoded, alpha=True)
            image = (decoded.convert("RGBA") if decoded.has_transparency_data
                     else imageops.flatten(decoded, field="image"))
            return self.store.put(image, kind="image", hidden=hide, parent_id=parent_id,
                                  data=data if as_sent else None)

    def picture(self, value: str | bytes, *, field: str = "image", hide: bool = True) -> tuple[Image.Image, str]:
        """The RGB picture of `field` (a file, a data URL or an asset id) and its asset id: decoded as an inpaint input
        is, under the same pixel budget, and stored first when it came as a file."""
        if isinstance(value, str) and value.startswith("data:"):
            value = imageops.decode_data_url(value, field=field)
        source = (field, value)
        with self.decoding.hold(self._declared_pixels(source)):
            image, asset_id, as_sent = self._load_input(source, "image", [])
            if asset_id is None:
                asset_id = self.store.put(image, kind="image", hidden=hide, icc_profile=imageops.rgb_profile(image),
                                          data=source[1] if as_sent else None).id
        return image, asset_id

    def _mask(self, req: InpaintRequest, raw_mask: Image.Image | None, field: str, image_size: tuple[int, int],
              seam_px: int, warnings: list[str]) -> Image.Image:
        """The mask as stored and used: binary and grown by the family's seam band, or in soft mode its grey
        levels as they are; with an outpaint, on the grown canvas with the new area to repaint. A mask sent with
        an outpaint is drawn on the image (placed at its offset) or, at exactly the canvas's size, on the canvas."""
        soft = req.mask_mode == "soft"
        outpaint = schema.outpaint_sides(req)
        if outpaint is None:
            mask, notes = imageops.prepare_mask(raw_mask, image_size, field=field, grow=0 if soft else seam_px,
                                                soft=soft)
            warnings += notes
            return mask
        canvas_size = regions.outpaint_size(image_size, outpaint)
        new_area = regions.outpaint_mask(image_size, outpaint)
        canvas_np = np.zeros((canvas_size[1], canvas_size[0]), np.uint8)
        if raw_mask is not None:
            on_canvas = raw_mask.size == canvas_size
            drawn, notes = imageops.prepare_mask(raw_mask, canvas_size if on_canvas else image_size, field=field,
                                                 soft=soft, allow_empty=True)
            warnings += notes
            offset = (0, 0) if on_canvas else (outpaint["left"], outpaint["top"])
            canvas_np[offset[1]:offset[1] + drawn.height, offset[0]:offset[0] + drawn.width] = np.asarray(drawn)
        if soft:
            # The new area's edge blends over the family's seam band, as a binary mask's feather does.
            grown = imageops.prepare_mask(new_area, canvas_size, grow=seam_px)[0]
            new_area = imageops.feather(grown, seam_px) if seam_px else grown
            return Image.fromarray(np.maximum(canvas_np, np.asarray(new_area)), "L")
        canvas_np = np.maximum(canvas_np, np.asarray(new_area))
        return imageops.prepare_mask(Image.fromarray(canvas_np, "L"), canvas_size, grow=seam_px)[0]

    def _input_source(self, req: InpaintRequest, what: str, given: bytes | Image.Image | None, *,
                      optional: bool = False) -> tuple[str, Source]:
        """The field the image or the mask came in, and what it holds: the file (of its data URL, or `given`), the
        drawn mask's pixels, or its asset id (None when `optional` and not given)."""
        if given is not None:
            if isinstance(given, np.ndarray):
                given = Image.fromarray(given)
            return what, given
        if what == "image":
            candidates = [("image", req.image), ("imageId", req.image_id)]
        else:
            candidates = [("mask", req.mask), ("maskId", req.mask_id)]
        field, value = next(((f, v) for f, v in candidates if v is not None), (candidates[0][0], None))
        if value is None and optional:
            return field, None
        if value is None:
            raise RequestError(field, f"is required: give `{candidates[0][0]}` as a data URL or "
                                      f"`{candidates[1][0]}` as an asset id")
        if value.startswith("data:"):
            return field, imageops.decode_data_url(value, field=field)
        if field == "mask":  # the contract: `mask` is a data URL, `maskId` the asset id
            raise RequestError(field, "must be a data URL (data:image/png;base64,...); use maskId for an asset id")
        return field, value

    def _declared_pixels(self, source: tuple[str, Source]) -> int:
        field, value = source
        if value is None:
            return 0
        if isinstance(value, Image.Image):  # already decoded by its caller: reading it costs no more
            return 0
        if isinstance(value, bytes):
            return imageops.declared_pixels(value)
        asset = self.store.get(value, field=field)
        return asset.width * asset.height

    def _load_input(self, source: tuple[str, Source], what: str,
                    notes: list[str]) -> tuple[Image.Image, str | None, bool]:
        """The image (flattened) or the mask (as decoded: prepare_mask reads it), with its asset id when it was
        stored already, and whether a received file may be stored as it is; what was lost in decoding is
        appended to `notes`."""
        field, value = source
        if isinstance(value, Image.Image):  # a mask as drawn
            return value, None, False
        if isinstance(value, bytes):
            if what == "image":
                decoded = imageops.open_image(value, field=field, notes=notes)
                return (imageops.flatten(decoded, field=field), None,
                        _stored_as_sent(value, decoded, alpha=False))
            return imageops.open_image(value, field=field, min_side=1), None, False
        stored = self.store.open_image(value, field=field)
        return (imageops.flatten(stored, field=field) if what == "image" else stored), value, False

    def on_device(self, device: str) -> Engine:
        """An engine for another device, with its own pipeline cache and device lock, sharing this one's
        catalog, store, decoding budget and decoded inputs: a request prepared here may run there."""
        pipelines = PipelineCache(self.catalog, self.pipelines.models_dir, max_pipelines=self.pipelines.max_pipelines,
                                  device=device)
        twin = Engine(self.catalog, self.store, pipelines, max_batch=self.max_batch)
        twin.decoding, twin.inputs = self.decoding, self.inputs
        return twin

    # -- generation ----------------------------------------------------------------------------------

    def run(self, request: ResolvedRequest, cancel: threading.Event | None = None, *,
            job_id: str | None = None) -> Iterator[Event]:
        """Run a prepared request and yield what happens, as plain data (inpaint.events), in this order:

        - `Waiting()` when another generation holds this engine's device (it starts once that one ends);
        - `Loading(model_id)` when the model is not loaded yet;
        - `Regions(regions)` once, before the first sample: each region's box and processing size;
        - `Warned(message)`, `Preview(images, step, steps)` (when `request.intermediate_images`) and
          `Progress(fraction)` as they come, previews per micro-batch with `step` starting over at 1;
        - `Result(asset, seam_report)` per sample, once it is stored, in seed order;
        - last, exactly one of `Done()` or `Failed(kind, message, field)`: `kind` is "canceled" after `cancel`
          was set, "bad-input", "unavailable" (the model cannot load here) or "error"; results before it are
          kept in the store.

        Never raises what the generation raised. Setting `cancel` stops the run within a step (the stream
        then ends with Failed("canceled")); closing the iterator early does the same and returns once the
        generation has let go of the device. The events pickle, so a stream may cross processes."""
        cancel = cancel if cancel is not None else threading.Event()
        if request.pipeline_model_id in self.catalog and self.catalog.get(request.pipeline_model_id).family.has_weights:
            if self.device_lock.locked():
                yield Waiting()
            if request.pipeline_model_id not in self.pipelines.cached_ids():
                yield Loading(request.pipeline_model_id)

        # The work runs on a thread of its own (one kept from an earlier run) and queues what it reports; this
        # thread yields it.
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()

        def work() -> None:
            try:
                self._generate(request, events.put, cancel, job_id)
                events.put(Done())
            except BaseException as exc:  # told to the consumer as the stream's last event
                failed = failure(exc)
                if failed.kind == "error":  # not the user's doing: the traceback is for the server's log
                    log.error("generation failed", exc_info=exc)
                events.put(failed)

        finished = _GENERATING.start(work)
        ended = False
        try:
            while not ended:
                event = events.get()
                ended = isinstance(event, (Done, Failed))
                yield event
        finally:
            if not ended:  # the consumer left early (stopped, disconnected)
                cancel.set()
            finished.wait()

    def _generate(self, request: ResolvedRequest, emit: Emit, cancel: threading.Event, job_id: str | None) -> None:
        """The work of one run (see `run`), reported through `emit`; raises what stopped it. Each result is stored
        while the next ones are made, so a failure keeps them."""
        entry = self.catalog.get(request.model_id)

        # 1. Inputs as prepare left them in memory, else (after a restart, or once dropped) from the store: the
        #    same pixels either way. Results carry the input's colour profile, or their colours would change.
        image = self.inputs.take(request.image_asset_id)
        if image is None:
            image = imageops.flatten(self.store.open_image(request.image_asset_id))
        icc_profile = imageops.rgb_profile(image)
        mask = self.inputs.take(request.mask_asset_id)
        if mask is None:
            mask = self.store.open_image(request.mask_asset_id)
        mask = mask if mask.mode == "L" else mask.convert("L")
        if request.outpaint:
            # The grown canvas; a model that denoises starts the new area from a fill of it, not from grey.
            image = regions.outpaint_canvas(image, request.outpaint, prefill=entry.family.denoises,
                                            seed=request.seed)
        repaint = _repainted(mask, request.mask_mode)

        # 2. What to generate: the crops prepare planned, one per region of the mask (merge), or the whole image
        #    (resized). In merge mode each result is blended in by `alpha`: the feathered mask, or a soft mask's
        #    own grey levels.
        size, plan = (request.width, request.height), request.regions
        if request.disable_merging:
            crops = [(imageops.resize(image, size), imageops.resize(repaint, size, mask=True))]
            alpha = None
        else:
            crops = [(_crop(image, region.box), _crop(repaint, region.box)) for region in plan]
            alpha = np.asarray(mask if request.mask_mode == "soft" else imageops.feather(mask, entry.family.seam_px))
        emit(Regions(tuple(region.to_json() for region in plan)))
        # What the seam report reads of the original, measured on another core while the model runs. The result's
        # side of the seam is measured past the feathered band, where it is the model's own.
        original, measured, boxes = ((crops[0][0], crops[0][1], None) if alpha is None
                                     else (image, repaint, [region.box for region in plan]))
        seam_reference = _MEASURING.submit(seams.reference, original, measured, boxes=boxes,
                                           inset=entry.family.seam_px if request.mask_mode == "binary" else 0)

        def finish(seed: int, outputs: list[Image.Image]) -> Callable[[], Result]:
            """Colour-matched, merged back, measured and encoded, on the writer's pool; gives back its write (the
            store), which the writer runs in seed order."""
            if alpha is None:
                output = outputs[0]
                if output.size != size:
                    output = imageops.resize(output, size)
                output = seams.match_colors(output, *crops[0], request.color_match)
            else:
                # Region by region into one picture, each output let go as soon as it is blended in; only where a
                # region's alpha is above 0 becomes arrays. A large picture is held as few times as the work needs:
                # a region of all of it (a large hole) gives its output to be the result, the picture's own pixels
                # put back where alpha is 0, instead of a copy of the picture.
                output = None
                for i, (region, (crop, crop_mask)) in enumerate(zip(plan, crops)):
                    left, top, right, bottom = region.box
                    generated = outputs[i] if outputs[i].size == crop.size else imageops.resize(outputs[i], crop.size)
                    outputs[i] = None
                    generated = seams.match_colors(generated, crop, crop_mask, request.color_match)
                    under = output
                    if output is None and crop is image and generated is not image:
                        output = generated if generated.mode == "RGB" else generated.convert("RGB")
                        output.paste(image, mask=Image.fromarray(cv2.compare(alpha, 0, cv2.CMP_EQ)))
                    elif output is None:
                        output = image.copy()
                    imageops.blend_onto(output, under or image, generated, region.box, alpha[top:bottom, left:right])
                    del generated
                output.info.clear()  # the profile is the store's to embed (icc_profile), as for any result
            # Measured on another core while the result is encoded.
            report = _MEASURING.submit(seams.report, output, seam_reference.result())
            data = self.store.encode(output, icc_profile=icc_profile)
            measured = report.result()

            def write() -> Result:
                asset = self.store.put(output, kind="result", hidden=request.hide_results,
                                       parent_id=request.image_asset_id, job_id=job_id, seed=seed,
                                       model_id=request.model_id, icc_profile=icc_profile, data=data)
                return Result(asset, measured)
            return write

        writer = _Writer(emit)
        try:
            self._samples(request, entry, emit, cancel, crops, writer, finish)
        finally:
            writer.close()  # what was made is stored, also when generating failed
        writer.check()

    def _samples(self, request: ResolvedRequest, entry, emit: Emit, cancel: threading.Event,
                 crops: list[tuple[Image.Image, Image.Image]], writer: _Writer,
                 finish: Callable[[int, list[Image.Image]], Callable[[], Result]]) -> None:
        """Generates the samples micro-batch by micro-batch, each sample's crops (region and mask) in the same
        batch under its seed, handing each sample's outputs to `writer`."""
        family = entry.family
        made = 0
        with ExitStack() as holding:
            # 3. The model. One with weights runs on the device, held for the whole request with the model
            #    itself: schedulers and adapters are not thread-safe. A model without weights needs neither.
            if family.has_weights:
                while not self.device_lock.acquire(timeout=0.1):
                    if cancel.is_set():  # stopped while it waited for the device: it never starts
                        raise JobCanceled()
                holding.callback(self.device_lock.release)
                model = self.pipelines.get(request.pipeline_model_id)
                adapters = [(self.pipelines.lora_file(self.catalog.get(c.model_id), c.model_epoch), c.scale)
                            for c in request.concepts]
                holding.enter_context(model.lock)
                holding.enter_context(concepts_applied(model, adapters))
            else:
                model = family.load(entry, self.pipelines)
            for message in family.notes(model, request):
                emit(Warned(message))

            # 4. Micro-batches of samples: memory stays flat whatever numSamples is. A batch holds up to max_batch
            #    crops: all the regions of as many samples as fit.
            pending, batch_size = request.seeds, max(1, self.max_batch // len(crops))
            while pending:
                seeds = pending[:batch_size]

                def on_step(step: int, steps: int, previews, done: int = made, batch: int = len(seeds)) -> bool:
                    if request.intermediate_images and previews is not None:
                        emit(Preview(tuple(previews()), step, steps))
                    emit(Progress((done + batch * step / steps) / request.num_samples))
                    return cancel.is_set()

                try:
                    outputs = family.run(model, request, [crop for _ in seeds for crop, _ in crops],
                                         [crop_mask for _ in seeds for _, crop_mask in crops],
                                         [seed for seed in seeds for _ in crops], on_step)
                except _out_of_memory():
                    _free_memory()
                    if batch_size == 1:
                        raise
                    batch_size //= 2  # the same seeds again in smaller batches: results do not change
                    continue
                if family.denoises and cancel.is_set():  # stopped between two steps: the outputs are unfinished
                    raise JobCanceled()
                pending = pending[len(seeds):]
                writer.check()  # a write failed: the job fails now, not after the remaining samples

                # 5. Merged back on the writer's pool and stored in order, while the next micro-batch generates
                for i, seed in enumerate(seeds):
                    writer.submit(functools.partial(finish, seed, outputs[i * len(crops):(i + 1) * len(crops)]))
                del outputs  # the writer holds them now, and lets each go once it is merged
                made += len(seeds)
                emit(Progress(made / request.num_samples))
                if cancel.is_set() and pending:
                    raise JobCanceled()


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a request will do (Engine.plan): `to_json()` is the answer of a dry run."""

    request: ResolvedRequest
    image: Image.Image  # the picture as decoded (on the grown canvas's scale: an outpaint adds around it)
    mask: Image.Image  # the mask as the job uses it: grown by the seam band, on the grown canvas of an outpaint

    @property
    def regions(self) -> tuple[Region, ...]:
        return self.request.regions

    def to_json(self) -> dict:
        """The resolved request (as a job's `metadata.input`, without the asset ids that storing would give),
        its regions as the job's `metadata.regions` will be, its seeds, its warnings, and the GPU seconds a
        ZeroGPU Space asks for it."""
        given = {name: value for name, value in self.request.to_json().items() if value != ""}
        return {"input": given, "regions": [region.to_json() for region in self.regions],
                "seeds": self.request.seeds, "warnings": list(self.request.warnings),
                "gpuSeconds": zerogpu.gpu_duration(self.request)}


class _Checked(NamedTuple):
    """A request body validated, with its inputs decoded and checked (Engine._checked)."""

    req: InpaintRequest
    resolved: ResolvedRequest  # without asset ids for what was not stored yet
    sources: tuple[tuple[str, Source], tuple[str, Source]]  # (field, what it holds), image and mask
    image: Image.Image
    image_as_sent: bool  # the image's file may be stored as it came
    raw_mask: Image.Image | None  # as decoded
    mask: Image.Image  # as stored and used


def _plan(request: ResolvedRequest, family, repainted: Image.Image) -> tuple[Region, ...]:
    """The crops a request generates from what its mask repaints (on the grown canvas of an outpaint): one per
    region of the mask, at the request's processing size (merge), or the whole image resized (disableMerging)."""
    size = (request.width, request.height)
    if request.disable_merging:
        return (Region((0, 0, *repainted.size), size),)
    return tuple(regions.plan(repainted, family, size=size))


def _crop(image: Image.Image, box: Box) -> Image.Image:
    """The box of `image`; the image itself (not a copy of it) when the box is all of it."""
    return image if box == (0, 0, *image.size) else image.crop(box)


def _repainted(mask: Image.Image, mask_mode: str) -> Image.Image:
    """What the model repaints: the mask, or in soft mode every pixel above 0."""
    return mask.point(lambda value: 255 if value else 0) if mask_mode == "soft" else mask


def _out_of_memory() -> tuple[type[BaseException], ...]:
    """What an except clause catches as the device running out of memory. Nothing until torch is imported:
    only a diffusion run imports it, so classical models run without paying for it."""
    torch = sys.modules.get("torch")
    return (torch.OutOfMemoryError,) if torch is not None else ()


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")  # not imported: nothing was put on a device
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
