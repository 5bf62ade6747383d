"""The Gradio studio: sketch a mask, stream the denoising, browse and reuse the results."""

from __future__ import annotations

import functools
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import imageops, settings, zerogpu
from .assets import new_id
from .catalog import ModelEntry
from .errors import JobCanceled, RequestError
from .generate import Engine
from .pipelines import ModelUnavailable
from .previews import side_by_side
from .schema import ResolvedRequest, whole_image_size

try:  # ZeroGPU on Hugging Face Spaces; elsewhere spaces.GPU hands the function back unchanged
    import spaces
except ImportError:
    spaces = None


def on_gpu(fn, *, duration=None):
    """`fn` as a ZeroGPU function asking for `duration` (seconds, or a callable of fn's arguments)."""
    return fn if spaces is None else spaces.GPU(fn, duration=duration)

CONCEPT_HEADERS = ["concept", "scale", "epoch"]
MAX_CONCEPTS = 8  # the request's own limit
DEFAULT_SAMPLES = 4  # the contract's default numSamples
DEFAULT_STEPS = 30
DEFAULT_STRENGTH = 0.75
PREVIEW_HEIGHT_PX = 192  # latent previews are 1/8 of the generation size: enlarged to stay readable
PREVIEW_GAP_PX = 4
WEBP_MAX_SIDE = 16383  # libwebp refuses a larger side, and previews are saved as WebP
# A result sent back through the browser's canvas may come back off by a rounding step; any real
# edit (even a small retouch) moves some pixel by more than this and makes a new input asset.
SAME_IMAGE_MAX_DIFF = 2
KEEP_FILES_S = 24 * 3600  # served copies older than this are removed when a new run starts
MASK_OVERLAY_RGB = (255, 45, 85)
PROMPT_HINT = "What to paint in the masked area"

# Gradio 6 takes theme and CSS at launch/mount time: the server passes these along with the Blocks.
# System fonts: a self-hosted studio must not wait on a font CDN it may not reach.
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="rose",
                       font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
#inpaint-status p { margin: 0; }
"""


# ---- pure helpers (no gradio state): tested directly ---------------------------------------------

def model_label(entry: ModelEntry) -> str:
    return f"{entry.id}  ·  {entry.type.name}  ·  {entry.availability()}"


def fit_size(size: tuple[int, int] | None, entry: ModelEntry) -> tuple[int, int]:
    """The contract's whole-image default for the image (the model's native square before an upload)."""
    if not size:
        side = entry.family.native_resolution or 512
        size = (side, side)
    return whole_image_size(size, entry.size_range)


def pipeline_model_id(entry: ModelEntry, base_model_id: str | None) -> str:
    """The model whose weights run: a LoRA model runs on one of its compliant bases."""
    if entry.type.is_lora:
        return base_model_id if base_model_id in entry.compliant_model_ids else entry.compliant_model_ids[0]
    return entry.id


def concept_choices(engine: Engine, entry: ModelEntry, base_model_id: str | None) -> list[str]:
    base = pipeline_model_id(entry, base_model_id)
    return [e.id for e in engine.catalog.entries() if e.type.is_lora and base in e.compliant_model_ids]


def layers_alpha(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image:
    """Union of the layers' painted pixels: alpha > 0 anywhere (the brush's colour carries nothing)."""
    painted_np = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers or []:
        if layer is None:
            continue
        if layer.mode != "RGBA":
            layer = layer.convert("RGBA")
        if layer.size != size:
            layer = layer.resize(size, Image.Resampling.NEAREST)
        painted_np |= np.asarray(layer.getchannel("A")) > 0
    return Image.fromarray(painted_np.astype(np.uint8) * 255, "L")


def effective_mask(background: Image.Image, layers: list[Image.Image] | None, upload: Image.Image | None, *,
                   invert: bool = False, grow: int = 0, feather: int = 0) -> tuple[Image.Image, list[str]]:
    """The binary mask sent with the request: the sketch (or the uploaded mask, which wins), inverted,
    grown, then feathered. Raises RequestError("mask", ...) when nothing is left to repaint."""
    size = background.size
    # An uploaded mask reads as the contract reads one (prepare_mask picks its alpha or its luminance).
    raw = upload if upload is not None else layers_alpha(layers or [], size)
    mask, notes = imageops.prepare_mask(raw, size, field="mask", grow=int(grow), invert=bool(invert))
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


def same_image(image: Image.Image, stored: Image.Image) -> bool:
    if image.size != stored.size:
        return False
    diff_np = np.abs(np.asarray(image.convert("RGB"), dtype=np.int16) - np.asarray(stored.convert("RGB"), dtype=np.int16))
    return int(diff_np.max()) <= SAME_IMAGE_MAX_DIFF


def concept_rows(table) -> list[list]:
    """The rows of a concepts table, as the page sends them (a list) or an API caller may (headers + data)."""
    rows = table.get("data") if isinstance(table, dict) else table
    return [list(row) for row in rows or [] if row]


def concepts_from_table(table) -> list[dict]:
    """Rows of the concepts table (concept, scale, epoch) as the request's `concepts`; blank rows skipped."""
    concepts = []
    for row in concept_rows(table):
        row = list(row) + [None] * (3 - len(row))
        model_id = str(row[0] or "").strip()
        if not model_id:
            continue
        concept: dict = {"modelId": model_id}
        if row[1] not in (None, ""):
            try:
                concept["scale"] = float(row[1])
            except (TypeError, ValueError):
                raise RequestError(f"concepts.{len(concepts)}.scale", f"{row[1]!r} must be a number in -2..2") from None
        if str(row[2] or "").strip():
            concept["modelEpoch"] = str(row[2]).strip()
        concepts.append(concept)
    return concepts


def preview_strip(previews: list[Image.Image]) -> Image.Image:
    """The previews of one micro-batch side by side, enlarged so a latent-sized preview can be read,
    and never past the side WebP can store (a wide generation's previews stay as wide as they fit)."""
    gaps = PREVIEW_GAP_PX * (len(previews) - 1)
    scale = max(1, min(PREVIEW_HEIGHT_PX // max(im.height for im in previews),
                       (WEBP_MAX_SIDE - gaps) // sum(im.width for im in previews)))
    strip = side_by_side([im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
                          for im in previews], gap=PREVIEW_GAP_PX)
    if max(strip.size) > WEBP_MAX_SIDE:  # too wide even at latent size (a big batch of wide previews): shrunk
        strip.thumbnail((WEBP_MAX_SIDE, WEBP_MAX_SIDE), Image.Resampling.BOX)
    return strip


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


def draw_example(folder: Path) -> dict[str, Path]:
    """A small landscape drawn here (no download), with masks over its sun and its house."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = 320, 240
    y_np = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky_np = (1 - y_np) * np.array([96, 150, 230], np.float32) + y_np * np.array([250, 214, 170], np.float32)
    image = Image.fromarray(np.broadcast_to(sky_np, (height, width, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((222, 28, 272, 78), fill=(255, 226, 92))  # sun
    draw.ellipse((-80, 150, 200, 330), fill=(86, 150, 78))  # far hill
    draw.ellipse((120, 160, 420, 360), fill=(64, 128, 60))  # near hill
    draw.rectangle((60, 150, 120, 200), fill=(236, 226, 204))  # house
    draw.polygon([(52, 152), (90, 118), (128, 152)], fill=(170, 60, 50))  # roof
    draw.rectangle((82, 172, 98, 200), fill=(110, 72, 44))  # door
    masks = {"sun": (212, 18, 282, 88), "house": (44, 108, 136, 208)}
    paths = {"image": folder / "landscape.png"}
    image.save(paths["image"])
    for name, box in masks.items():
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        paths[name] = folder / f"landscape-mask-{name}.png"
        mask.save(paths[name])
    return paths


def _prune(folder: Path, max_age_s: float) -> None:
    cutoff = time.time() - max_age_s
    for path in folder.glob("*"):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


# ---- the generation stream -----------------------------------------------------------------------

def stream_generation(engine: Engine, request: ResolvedRequest, *, cancel: threading.Event,
                      preview_dir: Path) -> Iterator[tuple[str, object]]:
    """Run one prepared request in a worker thread and yield its events as they happen:
    ("waiting", None), ("preview", (path, step, steps)), ("progress", fraction), ("warning", message),
    ("result", asset). Ends after the last result; raises what the generation raised (JobCanceled
    when `cancel` was set). Closing the iterator early cancels the generation."""
    events: queue.Queue = queue.Queue()
    run_id = f"{time.time_ns():x}"
    batch = {"index": 0, "last_step": 0}

    def on_preview(previews: list[Image.Image], step: int, steps: int) -> None:
        if step <= batch["last_step"]:
            batch["index"] += 1  # the steps start over: the next micro-batch
        batch["last_step"] = step
        # Saved once, then only its path travels: a Gallery/Image re-encodes every image on every yield.
        path = preview_dir / f"preview-{run_id}-{batch['index']:03d}-{step:03d}.webp"
        preview_strip(previews).save(path, quality=80)
        events.put(("preview", (str(path), step, steps)))

    def work() -> None:
        try:
            if engine.device_lock.locked():  # the engine runs one generation at a time per device
                events.put(("waiting", None))
            engine.generate(request, on_result=lambda asset: events.put(("result", asset)),
                            on_preview=on_preview, on_progress=lambda f: events.put(("progress", f)),
                            on_warning=lambda message: events.put(("warning", message)), cancel=cancel)
            events.put(("done", None))
        except BaseException as exc:  # handed to the consumer's thread, which raises it
            events.put(("error", exc))

    thread = threading.Thread(target=work, name="inpaint-ui-generation", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield kind, value
    finally:
        if thread.is_alive():  # the consumer left early (stopped, disconnected): stop within a step
            cancel.set()


# ZeroGPU runs the GPU function in a worker process and pickles its arguments and what it yields, so the
# function takes plain data and finds the engine and the cancel token here (a stop there comes from closing
# the stream), and its errors cross as plain data too (ZeroGPU would only pass on their class name).
_ENGINES: weakref.WeakValueDictionary[str, Engine] = weakref.WeakValueDictionary()
_CANCELS: dict[str, threading.Event] = {}


def _needs_load(engine: Engine | None, request: ResolvedRequest) -> bool:
    """Whether the request's pipeline is not in the engine's cache yet (placed at startup or by a run before)."""
    if engine is None or request.pipeline_model_id not in engine.catalog:
        return False
    return (engine.catalog.get(request.pipeline_model_id).family.has_weights
            and request.pipeline_model_id not in engine.pipelines.cached_ids())


def gpu_seconds(engine_key: str, request: ResolvedRequest, run_key: str, preview_dir: str) -> int:
    """ZeroGPU's duration for one run_on_device call (same arguments): sized by the request, plus the
    model's load when it was not placed at startup."""
    return zerogpu.gpu_duration(request, loading=_needs_load(_ENGINES.get(engine_key), request))


def _error_data(exc: BaseException) -> dict:
    """An exception of this package as plain data: its class by name, its message and attributes."""
    cls = type(exc)
    attrs = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return {"module": cls.__module__, "name": cls.__qualname__, "text": str(exc), "attrs": attrs}


def _rebuild_error(data: dict) -> BaseException:
    """The exception `_error_data` described: the same class when it is this package's, else a RuntimeError."""
    import importlib

    cls = None
    if data["module"].split(".")[0] == __package__:
        cls = getattr(importlib.import_module(data["module"]), data["name"], None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"{data['name']}: {data['text']}")
    exc = cls.__new__(cls)
    exc.args = (data["text"],)
    vars(exc).update(data["attrs"])
    return exc


@functools.partial(on_gpu, duration=gpu_seconds)
def run_on_device(engine_key: str, request: ResolvedRequest, run_key: str,
                  preview_dir: str) -> Iterator[tuple[str, object]]:
    """The GPU work of one run: stream_generation on the registered engine. Yields plain data only:
    ("loading", model id) first when its model must be loaded, then stream_generation's events, and
    ("failed", error data) instead of raising."""
    cancel = _CANCELS.setdefault(run_key, threading.Event())
    engine = _ENGINES[engine_key]
    try:
        if _needs_load(engine, request):
            yield "loading", request.pipeline_model_id
        yield from stream_generation(engine, request, cancel=cancel, preview_dir=Path(preview_dir))
    except Exception as exc:  # noqa: BLE001  (raised again by device_events, on the caller's side)
        yield "failed", _error_data(exc)
    finally:
        _CANCELS.pop(run_key, None)


def device_events(engine_key: str, request: ResolvedRequest, run_key: str,
                  preview_dir: str) -> Iterator[tuple[str, object]]:
    """run_on_device's events, with its errors raised again here (as the class they had there)."""
    stream = run_on_device(engine_key, request, run_key, preview_dir)
    try:
        for kind, value in stream:
            if kind == "failed":
                raise _rebuild_error(value)
            yield kind, value
    finally:
        stream.close()  # closing this stream stops the generation wherever it runs


# ---- the Blocks ----------------------------------------------------------------------------------

def optional(slider: gr.Slider) -> gr.Slider:
    """Let an API caller leave `slider` out (None): the engine then applies the model's own default.
    (Wrapped on the instance: a gr.Slider subclass would make gradio write a type stub next to this file.)"""
    preprocess, postprocess = slider.preprocess, slider.postprocess
    slider.preprocess = lambda payload: None if payload is None else preprocess(payload)
    slider.postprocess = lambda value: None if value is None else postprocess(value)
    slider.value = None  # the slider starts at "the model's default"; the page sets its own value on load
    return slider


def _widest(ranges) -> tuple[float, float]:
    ranges = list(ranges)
    return min(r.low for r in ranges), max(r.high for r in ranges)


def build_demo(engine: Engine, *, default_model: str | None = None, max_queue: int = settings.MAX_QUEUE) -> gr.Blocks:
    """A new Blocks around `engine` (a factory: one Blocks per server, never shared).

    The components start at "let the engine decide" (no seed, no guidance, no size), so an API
    call that leaves a parameter out gets the contract's default for its model; the page's own
    friendly values (the model's guidance, a random seed each run, auto size) are set on load.
    """
    catalog = engine.catalog
    default_id = default_model or settings.DEFAULT_MODEL
    if default_id not in catalog:
        default_id = catalog.ids[0]
    default = catalog.get(default_id)
    files_dir = Path(tempfile.mkdtemp(prefix="inpaint-ui-"))  # served copies: results, previews, examples
    examples = draw_example(files_dir / "examples")
    engine_key = f"engine-{id(engine):x}"
    _ENGINES[engine_key] = engine
    running: dict[str, threading.Event] = {}  # session -> cancel token of its generation
    # Server-side bounds are the widest of the catalog, so the engine (not the slider) judges a value
    # and answers with the contract's message; the page narrows them to the chosen model.
    guidance_bounds = _widest(e.guidance_range for e in catalog.entries())
    size_bounds = _widest(e.size_range for e in catalog.entries())

    with gr.Blocks(title="inpaint studio", delete_cache=(3600, KEEP_FILES_S)) as demo:
        weakref.finalize(demo, shutil.rmtree, files_dir, True)
        session = gr.State({"source": None, "input": None, "results": [], "selected": None})
        image_size = gr.State(None)
        previous_model = gr.State(None)

        gr.Markdown("## inpaint studio\nUpload or paste an image, paint over what should change, describe it, "
                    "generate. Pick a result to compare it, download it, or keep editing from it.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=340):
                editor = deliver_files(gr.ImageEditor(
                    label="Image",
                    type="filepath", image_mode="RGBA", format="png", sources=["upload", "clipboard"],
                    brush=gr.Brush(default_size=24, colors=["#ff2d55"], color_mode="fixed"),
                    eraser=gr.Eraser(default_size=24), layers=False, transforms=(), height=420,
                    elem_id="inpaint-editor"))
                with gr.Accordion("Mask", open=True):
                    with gr.Row():
                        mask_preview = gr.Image(label="Effective mask", interactive=False, height=150,
                                                buttons=[], elem_id="inpaint-mask-preview")
                        mask_upload = deliver_files(gr.Image(
                            label="Mask file (overrides the sketch)", type="filepath", image_mode=None,
                            sources=["upload", "clipboard"], height=150, elem_id="inpaint-mask-upload"))
                    with gr.Row():
                        grow = gr.Slider(0, 64, value=0, step=1, label="Grow (px)", min_width=120)
                        feather = gr.Slider(0, 32, value=0, step=1, label="Feather (px)", min_width=120)
                    invert = gr.Checkbox(label="Invert mask (repaint everything but the sketch)", value=False)
                examples_box = gr.Column()

            with gr.Column(scale=3, min_width=300):
                prompt = gr.Textbox(label="Prompt", lines=3, placeholder=PROMPT_HINT,
                                    elem_id="inpaint-prompt")
                negative_prompt = gr.Textbox(label="Negative prompt", lines=1, placeholder="What to avoid")
                model = gr.Dropdown(choices=[(model_label(e), e.id) for e in catalog.entries()], value=default_id,
                                    label="Model", info=default.description, allow_custom_value=True,
                                    elem_id="inpaint-model")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", scale=2, min_width=80,
                                             elem_id="inpaint-generate")
                    stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=60, elem_id="inpaint-stop")
                num_samples = optional(gr.Slider(1, 128, step=1, label="Samples", elem_id="inpaint-samples"))
                steps = gr.Slider(1, 150, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="inpaint-steps")
                intermediate = gr.Checkbox(label="Show the denoising (intermediateImages)", value=False,
                                           elem_id="inpaint-intermediate")
                disable_merging = gr.Checkbox(label="Regenerate the whole image (disableMerging)", value=False)
                with gr.Accordion("Advanced", open=False, elem_id="inpaint-advanced"):
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=None, precision=0, min_width=120, elem_id="inpaint-seed")
                        randomize = gr.Checkbox(label="Randomise seed", value=False, min_width=120,
                                                info="A new seed each run", elem_id="inpaint-randomize")
                    strength = gr.Slider(0.01, 1.0, value=DEFAULT_STRENGTH, step=0.01, label="Strength")
                    guidance = optional(gr.Slider(*guidance_bounds, step=0.1, label="Guidance",
                                                         elem_id="inpaint-guidance"))
                    scheduler = gr.Dropdown(choices=default.scheduler_names, value=None, label="Scheduler",
                                            allow_custom_value=True, elem_id="inpaint-scheduler")
                    auto_size = gr.Checkbox(label="Auto size", value=False, elem_id="inpaint-auto-size",
                                            info="Whole image: the image's own size. Merging: the model's "
                                                 "native resolution around the mask.")
                    with gr.Row():
                        width = optional(gr.Slider(*size_bounds, step=8, label="Width", min_width=120,
                                                         elem_id="inpaint-width"))
                        height = optional(gr.Slider(*size_bounds, step=8, label="Height", min_width=120,
                                                          elem_id="inpaint-height"))
                    base_model = gr.Dropdown(choices=list(default.compliant_model_ids), value=None,
                                             label="Base model (LoRA models)", allow_custom_value=True,
                                             visible=default.type.is_lora)
                    model_epoch = gr.Dropdown(choices=list(default.epochs), value=None, label="Epoch (LoRA models)",
                                              allow_custom_value=True, visible=bool(default.epochs))
                    negative_strength = gr.Slider(0, 10, value=0, step=0.1, label="Negative prompt strength",
                                                  visible=default.family.negative_prompt_strength)
                    with gr.Group(visible=bool(concept_choices(engine, default, None))) as concept_box:
                        with gr.Row(equal_height=True):
                            concept_pick = gr.Dropdown(choices=concept_choices(engine, default, None), value=None,
                                                       label="LoRA concept", scale=3, elem_id="inpaint-concept-pick")
                            add_concept = gr.Button("Add", size="sm", scale=1, min_width=60,
                                                    elem_id="inpaint-add-concept")
                        concepts = gr.Dataframe(value=[], headers=CONCEPT_HEADERS, datatype=["str", "number", "str"],
                                                type="array", column_count=3, label="Concepts (scale -2..2)",
                                                interactive=True, elem_id="inpaint-concepts")
                        clear_concepts = gr.Button("Clear concepts", size="sm")

            with gr.Column(scale=5, min_width=340):
                status = gr.Markdown("Ready.", label="Status", min_height=56, elem_id="inpaint-status")
                preview = gr.Image(label="Denoising preview", type="filepath", interactive=False, height=200,
                                   visible=False, buttons=[], elem_id="inpaint-preview")
                gallery = gr.Gallery(label="Results", columns=3, height=340, object_fit="contain", format="png",
                                     buttons=["download", "fullscreen"], elem_id="inpaint-gallery")
                with gr.Row():
                    use_input = gr.Button("Use as input", elem_id="inpaint-use-input")
                    download = gr.DownloadButton("Download PNG", value=None, elem_id="inpaint-download")
                compare = gr.ImageSlider(label="Before / after", type="filepath", interactive=False,
                                         max_height=400, elem_id="inpaint-compare")
                with gr.Accordion("Parameters", open=False):
                    params = gr.JSON(label="Effective parameters", elem_id="inpaint-params")

        with examples_box:
            gr.Examples(
                examples=[[str(examples["image"]), str(examples["sun"]), "a full moon in a night sky", default_id],
                          [str(examples["image"]), str(examples["house"]), "a red barn with a tall silo",
                           "tiny-sd-1_5" if "tiny-sd-1_5" in catalog else default_id]],
                inputs=[editor, mask_upload, prompt, model], label="Examples",
                example_labels=["The sun becomes a moon", "The house becomes a barn"])

        # ---- event handlers ----------------------------------------------------------------------

        def entry_or_error(model_id) -> ModelEntry:
            try:
                return catalog.get(model_id)
            except RequestError as exc:
                raise gr.Error(f"{exc.field}: {exc.message}", title="Bad input") from None

        def show_mask(value, upload, invert_mask, grow_px, feather_px):
            try:
                background, layers = read_editor(value, with_layers=upload is None)
            except RequestError:
                return None, None  # a file the run would refuse (with the reason): no preview
            if background is None:
                return None, None
            try:
                mask, _ = effective_mask(background, layers, read_mask_upload(upload), invert=bool(invert_mask),
                                         grow=int(grow_px or 0), feather=int(feather_px or 0))
            except RequestError:
                return None, background.size  # nothing painted yet, or a mask the run would refuse
            return mask_overlay(background, mask), background.size

        def follow_model(model_id, size, previous, samples, base_id, auto, table):
            """Every control follows the model's entry: ranges, defaults, schedulers, LoRA fields."""
            entry = entry_or_error(model_id)
            family = entry.family
            live = family.denoises  # the diffusion controls apply
            w, h = fit_size(size, entry)
            sizes = dict(minimum=entry.size_range.low, maximum=entry.size_range.high, step=8)
            was_seeded = previous in catalog and catalog.get(previous).family.seeded
            if not family.seeded:
                samples = 1  # deterministic: every sample would be the same
            elif samples is None or not was_seeded:
                samples = DEFAULT_SAMPLES
            base_id = base_id if base_id in entry.compliant_model_ids else (list(entry.compliant_model_ids) or [None])[0]
            compatible = concept_choices(engine, entry, base_id)
            rows = [list(r) for r in concept_rows(table) if str(r[0] or "").strip() in compatible]
            return (
                gr.update(minimum=entry.guidance_range.low, maximum=entry.guidance_range.high,
                          value=entry.default_guidance, interactive=live),
                gr.update(value=w, interactive=not auto, **sizes),
                gr.update(value=h, interactive=not auto, **sizes),
                gr.update(choices=entry.scheduler_names, value=entry.default_scheduler, interactive=live),
                gr.update(choices=list(entry.compliant_model_ids), value=base_id, visible=entry.type.is_lora),
                gr.update(choices=list(entry.epochs), value=(list(entry.epochs) or [None])[-1],
                          visible=bool(entry.epochs)),
                gr.update(visible=family.negative_prompt_strength, value=0),
                gr.update(choices=compatible, value=None),
                gr.update(visible=bool(compatible)),
                rows,
                gr.update(value=samples, interactive=family.seeded),
                gr.update(interactive=live),
                gr.update(interactive=live),
                gr.update(interactive=family.uses_negative_prompt),
                gr.update(interactive=family.has_previews),
                gr.update(interactive=family.uses_prompt,
                          placeholder=PROMPT_HINT if family.uses_prompt else f"{entry.id} needs no prompt"),
                gr.update(info=entry.description),
                model_id,
            )

        def page_defaults(model_id, size, samples, base_id):
            return (*follow_model(model_id, size, None, samples, base_id, True, []), True, True)

        def follow_base(model_id, base_id, table):
            compatible = concept_choices(engine, entry_or_error(model_id), base_id)
            rows = [list(r) for r in concept_rows(table) if str(r[0] or "").strip() in compatible]
            return gr.update(choices=compatible, value=None), gr.update(visible=bool(compatible)), rows

        def follow_image(value, model_id):
            try:
                background, _ = read_editor(value, with_layers=False)
            except RequestError:
                return gr.update(), gr.update(), None  # the run will say what is wrong with the file
            size = background.size if background is not None else None
            w, h = fit_size(size, entry_or_error(model_id))
            return w, h, size

        def add_concept_row(table, concept_id):
            rows = [list(r) for r in concept_rows(table) if str(r[0] or "").strip()]
            if not concept_id:
                raise gr.Error("concepts: pick a LoRA concept first", title="Concepts")
            if len(rows) >= MAX_CONCEPTS:
                raise gr.Error(f"concepts: at most {MAX_CONCEPTS} concepts", title="Concepts")
            entry = entry_or_error(concept_id)
            rows.append([concept_id, 1.0, entry.epochs[-1] if entry.epochs else ""])
            return rows

        def request_body(value, upload, invert_mask, grow_px, feather_px, prompt_text, negative, model_id, epoch,
                         base_id, samples, seed_value, randomize_seed, strength_value, guidance_value, steps_value,
                         scheduler_name, auto, width_value, height_value, merge_off, previews, concept_table,
                         negative_weight, state) -> tuple[dict, list[str]]:
            """The contract's request body for the page's values; None means "the engine's default"."""
            entry = catalog.get(model_id) if model_id in catalog else None
            body: dict = {"modelId": model_id, "disableMerging": bool(merge_off)}
            if entry is None or entry.family.uses_prompt:  # greyed out, and not sent, for models that ignore it
                body["prompt"] = prompt_text
            notes: list[str] = []
            decoding: list[str] = []
            image, layers = read_editor(value, with_layers=upload is None, notes=decoding)  # each file once, guarded
            if image is not None:
                source = state.get("source")
                if source and engine.store.exists(source) and same_image(image, engine.store.open_image(source)):
                    body["image"] = source  # the same picture again (e.g. a result kept as input): its asset
                else:
                    body["image"] = imageops.to_data_url(image)
                mask, notes = effective_mask(image, layers, read_mask_upload(upload), invert=bool(invert_mask),
                                             grow=int(grow_px or 0), feather=int(feather_px or 0))
                notes = [*decoding, *notes]
                body["mask"] = imageops.to_data_url(mask)
            if entry is not None and entry.type.is_lora:
                body.update(modelEpoch=epoch or None, baseModelId=base_id or None)
            if entry is None or entry.family.denoises:
                body.update(strength=strength_value, guidance=guidance_value, numInferenceSteps=steps_value,
                            intermediateImages=bool(previews), scheduler=scheduler_name or None,
                            negativePrompt=negative if negative and negative.strip() else None,
                            negativePromptStrength=negative_weight or None)
            body["numSamples"] = samples
            if not randomize_seed:
                body["seed"] = seed_value
            if not auto:
                body.update(width=width_value, height=height_value)
            picked = concepts_from_table(concept_table)
            if picked:
                body["concepts"] = picked
            # Sliders hand floats; the contract's integer fields take integers.
            for name in ("numSamples", "numInferenceSteps", "width", "height", "seed"):
                if isinstance(body.get(name), float) and body[name].is_integer():
                    body[name] = int(body[name])
            return {k: v for k, v in body.items() if v is not None}, notes

        # The API's parameters carry the contract's field names (camelCase, as in the JSON body), so a
        # gradio_client call reads like a REST request; each one left out takes the contract's default.
        def inpaint(image=None, mask=None, invertMask=False, maskGrow=0, maskFeather=0, prompt=None,  # noqa: N803
                    negativePrompt=None, modelId=None, modelEpoch=None, baseModelId=None, numSamples=None, seed=None,
                    randomizeSeed=False, strength=None, guidance=None, numInferenceSteps=None, scheduler=None,
                    autoSize=False, width=None, height=None, disableMerging=False, intermediateImages=False,
                    concepts=None, negativePromptStrength=None, state=None, request: gr.Request = None,
                    progress=gr.Progress()):
            """Inpaint the masked area of an image editor value (or of `mask`); streams previews and results."""
            state = dict(state or {})
            capped = None
            if zerogpu.is_zerogpu():  # each sample costs the visitor GPU quota
                numSamples, capped = zerogpu.cap_samples(numSamples, default=DEFAULT_SAMPLES)
                if capped:
                    gr.Warning(capped)
            try:
                # The studio decodes its files itself (to draw the mask): under the engine's one pixel budget.
                with engine.decoding.hold(declared_pixels(image, mask)):
                    body, notes = request_body(image, mask, invertMask, maskGrow, maskFeather, prompt,
                                               negativePrompt, modelId, modelEpoch, baseModelId, numSamples, seed,
                                               randomizeSeed, strength, guidance, numInferenceSteps, scheduler,
                                               autoSize, width, height, disableMerging, intermediateImages,
                                               concepts, negativePromptStrength, state)
                resolved = engine.prepare(body)
            except RequestError as exc:
                raise gr.Error(f"{exc.field}: {exc.message}", title="Bad input") from None
            warnings = [*([capped] if capped else []), *notes, *resolved.warnings]
            _prune(files_dir, KEEP_FILES_S)
            stored_input = engine.store.file_path(resolved.image_asset_id)  # a PNG, or the JPEG/WebP as uploaded
            input_path = files_dir / stored_input.name
            if not input_path.exists():
                shutil.copyfile(stored_input, input_path)
            state.update(source=resolved.image_asset_id, input=str(input_path), results=[], selected=None)
            summary = {"input": resolved.to_json(), "assetIds": [], "seeds": [], "warnings": warnings}
            shown: list[tuple[str, str]] = []
            total = resolved.num_samples
            last_preview = None

            def update(text: str):
                # The warnings read at the run's end; those found while generating join the request's.
                note = "".join(f"\n\n⚠️ {w}" for w in warnings)
                return (shown.copy(), gr.update(value=last_preview, visible=resolved.intermediate_images),
                        text + note if text else "", summary, resolved.seed, state)

            cancel, run_key = threading.Event(), new_id("run")
            _CANCELS[run_key] = cancel
            key = getattr(request, "session_hash", None)
            if key:
                running[key] = cancel
            started = time.monotonic()
            fraction, step_note = 0.0, ""

            def tell(stage: str) -> None:
                # While a run lasts, the bar (drawn over the emptied status line) says where it is.
                progress(fraction, desc=f"{stage} · {len(shown)}/{total} images{step_note}")

            yield update("")
            tell(f"Running {resolved.model_id}")
            working = "Denoising" if catalog.get(resolved.model_id).family.denoises else "Filling"
            try:
                stream = device_events(engine_key, resolved, run_key, str(files_dir))
                for kind, value in stream:
                    if kind == "waiting":
                        tell("Waiting for the device: another generation is running")
                    elif kind == "loading":
                        tell(f"Loading {value}: it was not placed on the device at startup")
                    elif kind == "progress":
                        fraction = value
                        tell(working)
                    elif kind == "warning":
                        if value not in warnings:  # shown once, however often it is reported
                            warnings.append(value)  # summary["warnings"] is this list
                        yield update("")
                    elif kind == "preview":
                        last_preview, step, steps = value
                        step_note = f" · step {step}/{steps}"
                        tell(working)
                        yield update("")
                    elif kind == "result":
                        path = files_dir / f"{value.id}.png"
                        shutil.copyfile(engine.store.file_path(value.id, original=True), path)
                        shown.append((str(path), f"seed {value.seed}"))
                        state["results"] = [*state["results"], {"id": value.id, "seed": value.seed, "path": str(path)}]
                        summary["assetIds"].append(value.id)
                        summary["seeds"].append(value.seed)
                        tell(working)
                        yield update("")
                    if cancel.is_set():
                        stream.close()  # stops the generation wherever it runs, within a step
                        raise JobCanceled()
            except JobCanceled:
                yield update(f"**Stopped** · kept {len(shown)} of {total} images")
                return
            except ModelUnavailable as exc:
                raise gr.Error(str(exc), title="Model unavailable") from None
            except RequestError as exc:
                raise gr.Error(f"{exc.field}: {exc.message}", title="Bad input") from None
            except Exception as exc:
                raise gr.Error(f"generation failed: {type(exc).__name__}: {exc}", title="Generation failed") from None
            finally:
                _CANCELS.pop(run_key, None)
                if key and running.get(key) is cancel:
                    del running[key]
            seeds = f"seed {resolved.seed}" if total == 1 else f"seeds {resolved.seed}–{resolved.seed + total - 1}"
            yield update(f"**Done** · {len(shown)} image{'s' * (len(shown) > 1)} in "
                         f"{time.monotonic() - started:.1f} s · {seeds}")

        def stop(request: gr.Request):
            cancel = running.get(getattr(request, "session_hash", None))
            if cancel is None:
                return "Nothing is running."
            cancel.set()
            return "**Stopping** at the end of the current step…"

        def select_result(state, evt: gr.SelectData):
            results = (state or {}).get("results") or []
            if not 0 <= evt.index < len(results):
                return gr.update(), gr.update(), state
            picked = results[evt.index]
            return (state["input"], picked["path"]), picked["path"], {**state, "selected": evt.index}

        def show_selected(state):
            results = (state or {}).get("results") or []
            if not results:
                return gr.update(), gr.update(), state
            index = state.get("selected") or 0
            picked = results[index]
            return (state["input"], picked["path"]), picked["path"], {**state, "selected": index}

        def keep_editing(state):
            results = (state or {}).get("results") or []
            index = (state or {}).get("selected")
            if index is None or not results:
                raise gr.Error("Pick a result in the gallery first", title="Use as input")
            picked = results[index]
            # The result's asset becomes the next input, and so the parent of what comes next.
            state = {**state, "source": picked["id"]}
            # A bare image: the editor takes it as background and composite, on a fresh canvas.
            return picked["path"], None, None, state

        # ---- wiring: only the generation is public API ------------------------------------------

        private = dict(api_visibility="private", show_progress="hidden")
        mask_inputs = [editor, mask_upload, invert, grow, feather]
        for trigger in (editor.change, mask_upload.change, invert.change, grow.release, feather.release):
            trigger(show_mask, mask_inputs, [mask_preview, image_size], trigger_mode="always_last", **private)
        editor.upload(follow_image, [editor, model], [width, height, image_size], **private)
        follows = [guidance, width, height, scheduler, base_model, model_epoch, negative_strength, concept_pick,
                   concept_box, concepts, num_samples, steps, strength, negative_prompt, intermediate, prompt,
                   model, previous_model]
        model.change(follow_model, [model, image_size, previous_model, num_samples, base_model, auto_size, concepts],
                     follows, **private)
        demo.load(page_defaults, [model, image_size, num_samples, base_model], [*follows, randomize, auto_size],
                  **private)
        base_model.change(follow_base, [model, base_model, concepts], [concept_pick, concept_box, concepts], **private)
        auto_size.change(lambda auto: (gr.update(interactive=not auto),) * 2, auto_size, [width, height], **private)
        intermediate.change(lambda on: gr.update(visible=on), intermediate, preview, **private)
        add_concept.click(add_concept_row, [concepts, concept_pick], concepts, **private)
        clear_concepts.click(lambda: [], None, concepts, **private)

        run_inputs = [editor, mask_upload, invert, grow, feather, prompt, negative_prompt, model, model_epoch,
                      base_model, num_samples, seed, randomize, strength, guidance, steps, scheduler, auto_size, width,
                      height, disable_merging, intermediate, concepts, negative_strength, session]
        run = gr.on([generate_btn.click, prompt.submit], inpaint, run_inputs,
                    [gallery, preview, status, params, seed, session], api_name="inpaint",
                    show_progress="full", show_progress_on=[status], concurrency_limit=1,
                    concurrency_id="inpaint-device")
        run.then(show_selected, session, [compare, download, session], **private)
        # The run ends itself within a step and keeps what it made; a queue-level cancel would abandon
        # its handler mid-stream (the page then shows an error and briefly ignores the next Generate).
        stop_btn.click(stop, None, status, queue=False, **private)
        gallery.select(select_result, session, [compare, download, session], **private)
        use_input.click(keep_editing, session, [editor, mask_upload, mask_preview, session], api_visibility="private")

    demo.queue(max_size=max_queue, default_concurrency_limit=4)
    return demo
