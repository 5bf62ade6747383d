"""The one generation flow: a request body in, result assets out, with previews and progress on the way."""

from __future__ import annotations

import dataclasses
import functools
import gc
import io
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from PIL import ExifTags, Image

from . import imageops, settings
from .assets import Asset, AssetStore
from .catalog import Catalog
from .errors import JobCanceled, RequestError
from .limits import PixelBudget
from .pipelines import PipelineCache, concepts_applied
from .schema import InpaintRequest, ResolvedRequest, parse_request, resolve

# Decoded inputs kept from prepare to generate: ~600 MB of RGB at most, room for the inputs of a few
# queued 40 MP requests or of dozens of 2048x2048 ones; past it the oldest are read back from the store.
INPUT_CACHE_PIXELS = 200_000_000

OnResult = Callable[[Asset], None]
OnPreview = Callable[[list[Image.Image], int, int], None]  # previews of the batch, step, steps
OnProgress = Callable[[float], None]
OnWarning = Callable[[str], None]  # something the user should know of, found while generating


@dataclasses.dataclass
class _Run:
    """What one generation reports to its caller; every hook is optional."""

    on_result: OnResult | None = None
    on_preview: OnPreview | None = None
    on_progress: OnProgress | None = None
    cancel: threading.Event | None = None
    on_warning: OnWarning | None = None

    def canceled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


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


class _Writer:
    """Stores results on its own thread, in the order given, while the caller makes the next ones; calls
    `on_result` for each once it is stored. After a failed write the later ones are dropped, and check()
    raises its error: the job fails with the results before it kept."""

    def __init__(self, on_result: OnResult | None):
        self.on_result = on_result
        self.assets: list[Asset] = []
        self.error: BaseException | None = None
        # One thread: the results are stored, and reported, in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inpaint-writer")

    def submit(self, write: Callable[[], Asset]) -> None:
        self._thread.submit(self._write, write)

    def _write(self, write: Callable[[], Asset]) -> None:
        if self.error is not None:
            return
        try:
            asset = write()
            self.assets.append(asset)
            if self.on_result:
                self.on_result(asset)
        except BaseException as exc:  # raised on the caller's thread by check()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Waits for the writes submitted so far."""
        self._thread.shutdown(wait=True)


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


def default_engine() -> Engine:
    """The engine configured by the environment (settings), as the app, the API and the CLI use it."""
    catalog = Catalog.load(settings.USER_CATALOG)
    pipelines = PipelineCache(catalog, settings.MODELS_DIR, max_pipelines=settings.MAX_PIPELINES)
    return Engine(catalog, AssetStore(settings.DATA_DIR), pipelines)


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

    def prepare(self, body: object) -> ResolvedRequest:
        """Validate a request body and store its inputs; raises RequestError naming the field at fault."""
        # 1. Fields, types and bounds
        req = parse_request(body)

        # 2. Where the inputs come from; their decoding waits for room in the pixel budget (or is refused)
        sources = [self._input_source(req, "image"), self._input_source(req, "mask")]
        with self.decoding.hold(sum(self._declared_pixels(source) for source in sources)):
            # 3. Inputs decoded and checked, nothing stored yet
            warnings: list[str] = []
            image, image_asset_id, as_sent = self._load_input(sources[0], "image", warnings)
            raw_mask, _, _ = self._load_input(sources[1], "mask", warnings)
            seam_px = self.catalog.get(req.model_id).family.seam_px
            mask, notes = imageops.prepare_mask(raw_mask, image.size, field=sources[1][0], grow=seam_px)
            warnings += notes
            if req.parent_id is not None:
                self.store.get(req.parent_id, field="parentId")
            left, top, right, bottom = imageops.crop_box(mask)

            # 4. Model rules and defaults
            resolved = resolve(req, self.catalog, image_size=image.size, region_size=(right - left, bottom - top),
                               image_asset_id=image_asset_id or "", mask_asset_id="",
                               warnings=warnings)

            # 5. Store the image if it came as a data URL (the file as received when it holds the very pixels
            #    used), and the mask as prepared (binary, image-sized): `maskId` in the resolved request is
            #    exactly the mask used, so a replay gives the same result. Both stay in memory for generate.
            if image_asset_id is None:
                image_asset_id = self.store.put(image, kind="image", hidden=req.hide, parent_id=req.parent_id,
                                                icc_profile=imageops.rgb_profile(image),
                                                data=sources[0][1] if as_sent else None).id
            mask_asset_id = self.store.put(mask, kind="mask", hidden=True, parent_id=image_asset_id).id
            self.inputs.put(image_asset_id, image)
            self.inputs.put(mask_asset_id, mask)
        return dataclasses.replace(resolved, image_asset_id=image_asset_id, mask_asset_id=mask_asset_id)

    def upload(self, data_url: str, *, hide: bool = False, parent_id: str | None = None) -> Asset:
        """Store an uploaded image as an asset. Alpha is kept: as a mask (`maskId`) it is what counts; as an
        input image it is flattened on white when a request uses it. So the file is stored as received when
        it decodes to RGB or RGBA as it stands (see _stored_as_sent), else re-encoded as the RGBA or the
        flattened RGB that is kept."""
        data = imageops.decode_data_url(data_url, field="image")
        with self.decoding.hold(imageops.declared_pixels(data)):
            decoded = imageops.open_image(data, field="image")
            as_sent = _stored_as_sent(data, decoded, alpha=True)
            image = (decoded.convert("RGBA") if decoded.has_transparency_data
                     else imageops.flatten(decoded, field="image"))
            return self.store.put(image, kind="image", hidden=hide, parent_id=parent_id,
                                  data=data if as_sent else None)

    def _input_source(self, req: InpaintRequest, what: str) -> tuple[str, bytes | str]:
        """The field the image or the mask came in, and the file of its data URL or its asset id."""
        if what == "image":
            candidates = [("image", req.image), ("imageId", req.image_id)]
        else:
            candidates = [("mask", req.mask), ("maskId", req.mask_id)]
        field, value = next(((f, v) for f, v in candidates if v is not None), (candidates[0][0], None))
        if value is None:
            raise RequestError(field, f"is required: give `{candidates[0][0]}` as a data URL or "
                                      f"`{candidates[1][0]}` as an asset id")
        if value.startswith("data:"):
            return field, imageops.decode_data_url(value, field=field)
        if field == "mask":  # the contract: `mask` is a data URL, `maskId` the asset id
            raise RequestError(field, "must be a data URL (data:image/png;base64,...); use maskId for an asset id")
        return field, value

    def _declared_pixels(self, source: tuple[str, bytes | str]) -> int:
        field, value = source
        if isinstance(value, bytes):
            return imageops.declared_pixels(value)
        asset = self.store.get(value, field=field)
        return asset.width * asset.height

    def _load_input(self, source: tuple[str, bytes | str], what: str,
                    notes: list[str]) -> tuple[Image.Image, str | None, bool]:
        """The image (flattened) or the mask (as decoded: prepare_mask reads it), with its asset id when it was
        stored already, and whether a received file may be stored as it is; what was lost in decoding is
        appended to `notes`."""
        field, value = source
        if isinstance(value, bytes):
            if what == "image":
                decoded = imageops.open_image(value, field=field, notes=notes)
                return (imageops.flatten(decoded, field=field), None,
                        _stored_as_sent(value, decoded, alpha=False))
            return imageops.open_image(value, field=field, min_side=1), None, False
        stored = self.store.open_image(value, field=field)
        return (imageops.flatten(stored, field=field) if what == "image" else stored), value, False

    # -- generation ----------------------------------------------------------------------------------

    def generate(self, request: ResolvedRequest, *, job_id: str | None = None, on_result: OnResult | None = None,
                 on_preview: OnPreview | None = None, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None, on_warning: OnWarning | None = None) -> list[Asset]:
        """Run a prepared request; each result is stored while the next ones are made, so a failure keeps them.

        `on_warning(message)` is called with what the user should know of that only the model could tell
        (a prompt longer than its text encoder reads); `request.warnings` holds the rest.
        """
        run = _Run(on_result, on_preview if request.intermediate_images else None, on_progress, cancel, on_warning)
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
        mask = mask.convert("L")

        # 2. What to generate: the region around the mask (merge) or the whole image (resized)
        if request.disable_merging:
            box = (0, 0, *image.size)
            region = imageops.resize(image, (request.width, request.height))
            region_mask = imageops.resize(mask, (request.width, request.height), mask=True)
            alpha = None
        else:
            box = imageops.crop_box(mask)
            region, region_mask = image.crop(box), mask.crop(box)
            alpha = imageops.feather(mask, entry.family.seam_px)

        def finish(seed: int, output: Image.Image) -> Asset:
            """Merged back and stored; runs on the writer thread."""
            if alpha is not None:
                output = imageops.paste_back(image, imageops.resize(output, region.size), box, alpha)
            elif output.size != (request.width, request.height):
                output = imageops.resize(output, (request.width, request.height))
            return self.store.put(output, kind="result", hidden=request.hide_results,
                                  parent_id=request.image_asset_id, job_id=job_id, seed=seed,
                                  model_id=request.model_id, icc_profile=icc_profile)

        writer = _Writer(run.on_result)
        try:
            self._samples(request, entry, run, region, region_mask, writer, finish)
        finally:
            writer.close()  # what was made is stored, also when generating failed
        writer.check()
        return writer.assets

    def _samples(self, request: ResolvedRequest, entry, run: _Run, region: Image.Image, region_mask: Image.Image,
                 writer: _Writer, finish: Callable[[int, Image.Image], Asset]) -> None:
        """Generates the samples micro-batch by micro-batch, handing each result to `writer`."""
        family = entry.family
        made = 0
        with ExitStack() as holding:
            # 3. The model. One with weights runs on the device, held for the whole request with the model
            #    itself: schedulers and adapters are not thread-safe. A model without weights needs neither.
            if family.has_weights:
                while not self.device_lock.acquire(timeout=0.1):
                    if run.canceled():  # stopped while it waited for the device: it never starts
                        raise JobCanceled()
                holding.callback(self.device_lock.release)
                model = self.pipelines.get(request.pipeline_model_id)
                adapters = [(self.pipelines.lora_file(self.catalog.get(c.model_id), c.model_epoch), c.scale)
                            for c in request.concepts]
                holding.enter_context(model.lock)
                holding.enter_context(concepts_applied(model, adapters))
            else:
                model = family.load(entry, self.pipelines)
            if run.on_warning:
                for message in family.notes(model, request):
                    run.on_warning(message)

            # 4. Micro-batches of samples: memory stays flat whatever numSamples is
            pending, batch_size = request.seeds, self.max_batch
            while pending:
                seeds = pending[:batch_size]

                def on_step(step: int, steps: int, previews, done: int = made, batch: int = len(seeds)) -> bool:
                    if run.on_preview and previews is not None:
                        run.on_preview(previews(), step, steps)
                    if run.on_progress:
                        run.on_progress((done + batch * step / steps) / request.num_samples)
                    return run.canceled()

                try:
                    outputs = family.run(model, request, region, region_mask, seeds, on_step)
                except _out_of_memory():
                    _free_memory()
                    if batch_size == 1:
                        raise
                    batch_size //= 2  # the same seeds again in smaller batches: results do not change
                    continue
                if family.denoises and run.canceled():  # stopped between two steps: the outputs are unfinished
                    raise JobCanceled()
                pending = pending[len(seeds):]
                writer.check()  # a write failed: the job fails now, not after the remaining samples

                # 5. Merged back and stored on the writer thread, in order, while the next micro-batch generates
                for seed, output in zip(seeds, outputs):
                    writer.submit(functools.partial(finish, seed, output))
                made += len(seeds)
                if run.on_progress:
                    run.on_progress(made / request.num_samples)
                if run.canceled() and pending:
                    raise JobCanceled()


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
