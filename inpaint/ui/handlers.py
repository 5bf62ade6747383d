"""What the studio does: plain functions over the engine. Each takes the page's values as a dict keyed by
component and returns the components it changes, keyed the same way (the run, which is also the public API,
takes its values keyed by the API's parameter names: see fields.api_function)."""

from __future__ import annotations

import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image, ImageChops, ImageOps

from .. import imageops, regions, zerogpu
from ..assets import new_id
from ..catalog import ModelEntry
from ..errors import Busy, QueueFull, RequestError
from ..events import Event, Failed, Loading, Preview, Progress, Regions, Result, Waiting, Warned
from ..generate import Engine
from ..jobs import JobQueue
from ..schema import DEFAULT_COLOR_MATCH, DEFAULT_SAMPLES, MAX_CONCEPTS, InpaintRequest, default_steps
from . import device
from .examples import prune
from .fields import (
    FIELDS,
    OUTPAINT_SIDES,
    PROMPT_HINT,
    concept_choices,
    concept_rows,
    fit_size,
    follow_updates,
    model_info,
    request_fields,
)
from .layout import Layout
from .masks import (
    PREVIEW_MAX_SIDE,
    draw_regions,
    drawn_mask,
    layer_from_mask,
    mask_overlay,
)
from .uploads import (
    declared_pixels,
    read_mask_upload,
    read_picture,
    read_sketch,
    upload_bytes,
)

# The preview plans the run with the page's mask settings; the prompt moves no crop, but a model that needs one
# would refuse a plan without it while the user is still painting.
PLAN_PROMPT = "the mask's preview"
KEEP_FILES_S = 24 * 3600  # served copies older than this are removed when a new run starts
NAME_WORDS = 6  # a download is named after the prompt's first words and its seed
# A status line that only counts steps goes out at most this often. Each line sent is redrawn by the page, and
# a step a message (20 a second on a GPU) keeps the browser busy: on a CPU box it takes the cores the
# generation runs on (per step, the studio's runs took 10% longer here).
STEP_LINE_EVERY_S = 0.4
DEFAULT_MASK_MODE = InpaintRequest.model_fields["mask_mode"].default
COMPARE_REDUCE = 4  # where a result changed its input is found on pictures this many times smaller


@dataclass
class Studio:
    """What the handlers work with: the engine, the page's components, and the files the page is served."""

    engine: Engine
    ui: Layout
    files_dir: Path
    examples: list[dict]
    engine_key: str
    jobs: JobQueue | None = None  # the server's, shared with the REST jobs; None: runs go to the engine
    running: dict[str, threading.Event] = field(default_factory=dict)  # session -> cancel token of its run

    @property
    def catalog(self):
        return self.engine.catalog

    def entry(self, model_id) -> ModelEntry:
        try:
            return self.catalog.get(model_id)
        except RequestError as exc:
            raise bad_input(self, exc) from None


def field_label(studio: Studio, name: str) -> str:
    """The page's word for a request field ("Prompt" for `prompt`, "Concepts, row 2, scale" for
    `concepts.1.scale`): an error names what the user sees."""
    head, *rest = name.split(".")
    row = next((f for f in FIELDS if f.param == head), None)
    label = getattr(studio.ui[row.component], "label", None) if row else None
    words = [label.split(":")[0].split(" (")[0] if label else head]
    words += [f"row {int(part) + 1}" if part.isdigit() else part for part in rest]
    return ", ".join(words)


def plain(studio: Studio, exc: RequestError) -> str:
    if exc.field in ("mask", "sketch") and "empty" in exc.message:
        return "Mask: nothing is painted: paint over what should change, or load a mask file"
    if exc.field == "image" and "is required" in exc.message:
        return "Picture: upload or paste a picture first"
    return f"{field_label(studio, exc.field)}: {exc.message}"


def bad_input(studio: Studio, exc: RequestError) -> gr.Error:
    return gr.Error(plain(studio, exc), title="Please check")


@contextmanager
def decoding(studio: Studio, picture, sketch: str | None, upload):
    """Room for decoding the studio's files in the engine's one pixel budget, reserved from their headers before
    any of them is decoded, as a REST request's are: Busy (a RequestError) when the server is decoding as much
    as it may at once. Every studio event that decodes a file does it inside this."""
    with studio.engine.decoding.hold(declared_pixels(picture, sketch, upload)):
        yield


# ---- the mask and the Generate button ---------------------------------------------------------------

def readiness(has_image: bool, has_mask: bool, busy: bool) -> str:
    """What is missing before a run, said under Generate while it is greyed ("" when nothing is)."""
    if busy:
        return "A run is going: Stop ends it."
    if not has_image:
        return "Upload or paste a picture to start."
    if not has_mask:
        return "Paint over what should change (or load a mask file)."
    return ""


def outpaint_sides(values: dict, ui: Layout) -> dict[str, int]:
    return {side: max(0, int(values[ui[f"outpaint_{side}"]] or 0)) for side in OUTPAINT_SIDES}


def busy(studio: Studio, values: dict, request: gr.Request | None) -> bool:
    """This page's run is going: its state says so, or the server already knows of its click (an answer
    computed before the click, arriving after it, must not make Generate live during the run)."""
    return bool(values[studio.ui.busy]) or getattr(request, "session_hash", None) in studio.running


def show_mask(studio: Studio, values: dict, request: gr.Request | None = None) -> dict:
    """What will be repainted, over the picture (or the extended canvas), with the crops the model will
    generate outlined; small, since a stroke waits for it. Also the mask's download, what a run lacks, and
    Generate: live only when nothing is missing."""
    ui = studio.ui
    upload = values[ui.mask_upload]
    sketch = values[ui.painter] if upload is None else None
    out = {ui.mask_preview: None, ui.mask_download: None, ui.image_size: None}
    note = ""
    try:
        # The masks are decoded here (the page's mask tools apply to them), the picture by the engine's plan: each
        # within the engine's one pixel budget, held until the preview is drawn.
        with decoding(studio, None, sketch, upload):
            out.update(mask_preview(studio, values, sketch, upload))
    except Busy as exc:
        note = exc.message  # said under Generate; the preview comes with the next change
    except RequestError as exc:
        if exc.field == "image":  # a picture the run would refuse: said now (nothing painted yet is no error)
            note = plain(studio, exc)
    running = busy(studio, values, request)
    reason = note or readiness(out[ui.image_size] is not None, out[ui.mask_preview] is not None, running)
    return {**out, ui.reason: reason, ui.generate_btn: gr.update(interactive=not reason)}


def mask_preview(studio: Studio, values: dict, sketch: str | None, upload) -> dict:
    """show_mask's pictures: the picture's size, and once something is painted the preview and the mask's
    download. Raises RequestError for a picture the run would refuse.

    The preview is the engine's plan of the run (a dry run): the mask as the job uses it, over the picture (on the
    grown canvas of an extension), with the crops the job will generate outlined. It is planned at the size a run
    takes by default: width and height are not this event's inputs (the page sends them as None until it has
    loaded, which Gradio's sliders refuse), so an explicit size can place the crops otherwise."""
    ui = studio.ui
    picture = values[ui.picture]
    if picture is None:
        return {}
    picture = upload_bytes(picture, field="image")
    try:
        mask, _ = drawn_mask(read_sketch(sketch), read_mask_upload(upload), invert=bool(values[ui.invert]),
                             grow=int(values[ui.grow] or 0), feather=int(values[ui.feather] or 0),
                             soft=values[ui.mask_mode] == "soft")
    except RequestError:
        mask = None  # nothing painted yet, or a mask file the run would refuse: the run says why
    sides = outpaint_sides(values, ui)
    if mask is None and not any(sides.values()):
        return {ui.image_size: picture_size(studio, picture)}  # nothing to plan yet; a refused picture is said now
    given = {"modelId": values[ui.model], "maskMode": values[ui.mask_mode]}  # None until the page has loaded
    body = {"prompt": PLAN_PROMPT, **{name: value for name, value in given.items() if value is not None}}
    if any(sides.values()):
        body["outpaint"] = sides
    try:
        plan = studio.engine.plan(body, image=picture, mask=mask)
    except Busy:
        raise  # show_mask says so; the preview comes with the next change
    except RequestError as exc:
        if exc.field == "image":
            raise
        return {ui.image_size: picture_size(studio, picture)}  # what the run would refuse, the run says
    canvas = regions.outpaint_canvas(plan.image, sides, prefill=False) if "outpaint" in body else plan.image
    small = canvas.copy()
    small.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.BILINEAR)
    preview = mask_overlay(small, plan.mask.resize(small.size, Image.Resampling.BILINEAR))
    preview = draw_regions(preview, [region.box for region in plan.regions], small.width / canvas.width)
    out = {ui.image_size: plan.image.size, ui.mask_preview: preview}
    if mask is not None:  # the drawn mask, as a file the run (or a REST request) takes again
        path = studio.files_dir / "masks" / f"mask-{new_id('m')}.png"
        path.parent.mkdir(exist_ok=True)
        mask.save(path)
        out[ui.mask_download] = str(path)
    return out


def picture_size(studio: Studio, picture: bytes) -> tuple[int, int]:
    """The picture's size as a run reads it (EXIF-rotated), decoded within the pixel budget; RequestError for a
    picture a run would refuse."""
    with decoding(studio, picture, None, None):
        return read_picture(picture).size


def extend(studio: Studio, values: dict, side: str) -> dict:
    """+25% of the picture's width (left, right) or height (top, bottom) on one side."""
    ui = studio.ui
    size = values[ui.image_size]
    if not size:
        raise gr.Error("Picture: upload or paste a picture first", title="Extend")
    step = round(size[0 if side in ("left", "right") else 1] * 0.25)
    component = ui[f"outpaint_{side}"]
    return {component: int(values[component] or 0) + step}


def no_extension(studio: Studio) -> dict:
    return {studio.ui[f"outpaint_{side}"]: 0 for side in OUTPAINT_SIDES}


def painted(mask: Image.Image) -> str:
    """The painter's value for `mask` (white = repaint): as if painted with the brush, and as editable."""
    return imageops.to_data_url(layer_from_mask(mask))


def import_mask(studio: Studio, values: dict) -> dict:
    """A mask file becomes the painted mask: one mask on the canvas, editable with the brush and the eraser."""
    ui = studio.ui
    try:
        with decoding(studio, values[ui.picture], None, values[ui.mask_upload]):
            background = read_picture(values[ui.picture])
            mask = read_mask_upload(values[ui.mask_upload])
            if background is None or mask is None:
                return {}
            mask, _ = imageops.prepare_mask(mask, background.size, field="mask")
    except RequestError as exc:
        raise bad_input(studio, exc) from None
    return {ui.painter: painted(mask), ui.mask_upload: None}


def load_example(studio: Studio, index: int) -> dict:
    """An example's picture and mask together on the canvas, its prompt, and its model."""
    ui, example = studio.ui, studio.examples[index]
    with Image.open(example["mask"]) as mask:
        return {ui.picture: str(example["image"]), ui.painter: painted(mask.convert("L")), ui.mask_upload: None,
                ui.prompt: example["prompt"], ui.model: example["model"]}


# ---- following the model --------------------------------------------------------------------------

def follow_model(studio: Studio, values: dict) -> dict:
    """Every control follows the model's entry: what it reads, ranges, defaults, schedulers, LoRA fields. What
    the user set by hand stays (see `kept_choices`); switched during a run, the page says the run goes on."""
    ui = studio.ui
    entry = studio.entry(values[ui.model])
    family = entry.family
    w, h = fit_size(values[ui.image_size], entry)
    sizes = {"minimum": entry.size_range.low, "maximum": entry.size_range.high, "step": 8}
    base_id = values[ui.base_model]
    base_id = base_id if base_id in entry.compliant_model_ids else (list(entry.compliant_model_ids) or [None])[0]
    compatible = concept_choices(studio.catalog, entry, base_id)
    rows = [list(r) for r in concept_rows(values[ui.concepts]) if str(r[0] or "").strip() in compatible]
    auto = values[ui.auto_size]
    kept, changed = kept_choices(entry, values[ui.chosen] or {})
    out = {ui[name]: update for name, update in follow_updates(entry).items()}
    out[ui.guidance].update(minimum=entry.guidance_range.low, maximum=entry.guidance_range.high,
                            value=kept["guidance"])
    out[ui.scheduler].update(choices=entry.scheduler_names, value=kept["scheduler"])
    out[ui.steps].update(value=kept["steps"])
    out[ui.base_model].update(choices=list(entry.compliant_model_ids), value=base_id)
    out[ui.model_epoch] = gr.update(choices=list(entry.epochs), value=(list(entry.epochs) or [None])[-1],
                                    visible=bool(entry.epochs))
    out[ui.negative_strength].update(value=0)
    out[ui.prompt].update(placeholder=PROMPT_HINT if family.uses_prompt else f"{entry.id} needs no prompt")
    out.update({
        ui.width: gr.update(value=w, interactive=not auto, **sizes),
        ui.height: gr.update(value=h, interactive=not auto, **sizes),
        ui.concept_pick: gr.update(choices=compatible, value=None),
        ui.concept_box: gr.update(visible=bool(compatible)),
        ui.concepts: rows,
        ui.num_samples: gr.update(value=kept["num_samples"], interactive=family.seeded),
        ui.model_about: model_info(entry),
    })
    if values[ui.busy]:  # the run's own line goes on in the status line: a toast says what the switch does
        gr.Info(f"The run going on keeps its model; {entry.id} makes the next one.", title="Model")
    elif changed:
        out[ui.status] = (f"**{entry.id}** takes {', '.join(changed)} for now; "
                          "yours come back with a model that takes them.")
    return out


# The settings a user sets by hand and keeps across models (layout name -> page label), as long as a model can
# take them; until then each follows the model's own default.
CHOICES = {"num_samples": "Samples", "steps": "Steps", "guidance": "Guidance", "scheduler": "Scheduler"}


def kept_choices(entry: ModelEntry, chosen: dict) -> tuple[dict, list[str]]:
    """The values `entry` gets for CHOICES: the user's own (`chosen`, set by `remember`) where it can take them,
    else its nearest (clamped) or its default; and "Label given (not your wanted)" for each one the user loses for
    now."""
    family = entry.family
    defaults = {"num_samples": DEFAULT_SAMPLES if family.seeded else 1, "steps": default_steps(entry),
                "guidance": entry.default_guidance, "scheduler": entry.default_scheduler}
    taken = {"num_samples": (lambda n: n) if family.seeded else (lambda n: 1),  # deterministic: one is enough
             "steps": lambda n: n,
             "guidance": lambda g: entry.guidance_range.clamp(g),
             "scheduler": lambda name: name if name in entry.scheduler_names else entry.default_scheduler}
    read = family.denoises  # a model that does not read a setting shows it greyed: nothing is lost
    kept, changed = dict(defaults), []
    for name, label in CHOICES.items():
        wanted = chosen.get(name)
        if wanted is None:
            continue
        kept[name] = taken[name](wanted)
        if kept[name] != wanted and (read or name == "num_samples"):
            changed.append(f"{label} {kept[name]} (not your {wanted})")
    return kept, changed


def remember(studio: Studio, values: dict, name: str) -> dict:
    """A setting the user changed by hand: kept across model switches (kept_choices). A number field emptied on the
    way to a new value (select all, type) is not a choice: remembered, it would stand for "the model's default"."""
    ui = studio.ui
    if values[ui[name]] is None:
        return {}
    return {ui.chosen: {**(values[ui.chosen] or {}), name: values[ui[name]]}}


def page_defaults(studio: Studio, values: dict) -> dict:
    """The page's friendly starting values: a random seed each run, auto size, the model's own settings, and the
    contract's mask edge and colour match shown picked (an API caller's None means the same)."""
    ui = studio.ui
    return {**follow_model(studio, {**values, ui.auto_size: True, ui.concepts: [], ui.chosen: {}, ui.busy: False}),
            ui.randomize: True, ui.auto_size: True, ui.mask_mode: DEFAULT_MASK_MODE, ui.color_match: DEFAULT_COLOR_MATCH}


def follow_base(studio: Studio, values: dict) -> dict:
    ui = studio.ui
    compatible = concept_choices(studio.catalog, studio.entry(values[ui.model]), values[ui.base_model])
    rows = [list(r) for r in concept_rows(values[ui.concepts]) if str(r[0] or "").strip() in compatible]
    return {ui.concept_pick: gr.update(choices=compatible, value=None), ui.concept_box: gr.update(visible=bool(compatible)),
            ui.concepts: rows}


def follow_image(studio: Studio, values: dict) -> dict:
    """A new picture (uploaded, pasted or cleared): the sizes follow it, and it starts unpainted. A picture the
    run would refuse leaves the editor at once, the server's words in a toast and in the status line."""
    ui = studio.ui
    try:
        with decoding(studio, values[ui.picture], None, None):
            background = read_picture(values[ui.picture])
    except Busy:
        background = None  # a sound picture, the server decoding others: the mask preview says so
    except RequestError as exc:
        message = plain(studio, exc)
        gr.Warning(message, title="Picture not loaded")
        return {**follow_image(studio, {**values, ui.picture: None}), ui.status: f"**Not loaded** · {message}"}
    size = background.size if background is not None else None
    w, h = fit_size(size, studio.entry(values[ui.model]))
    # The picture handed back as it is: an output left out gets an empty update, on which gradio rebuilds the
    # component from its arguments and forgets deliver_files.
    return {ui.width: w, ui.height: h, ui.image_size: size, ui.painter: "", ui.picture: values[ui.picture]}


def add_concept_row(studio: Studio, values: dict) -> dict:
    ui = studio.ui
    rows = [list(r) for r in concept_rows(values[ui.concepts]) if str(r[0] or "").strip()]
    concept_id = values[ui.concept_pick]
    if not concept_id:
        raise gr.Error("LoRA concept: pick one first", title="Concepts")
    if len(rows) >= MAX_CONCEPTS:
        raise gr.Error(f"Concepts: at most {MAX_CONCEPTS}", title="Concepts")
    entry = studio.entry(concept_id)
    return {ui.concepts: [*rows, [concept_id, 1.0, entry.epochs[-1] if entry.epochs else ""]]}


# ---- a run ----------------------------------------------------------------------------------------

def start(studio: Studio, values: dict, request: gr.Request) -> dict:
    """At the click (or Ctrl+Enter in the prompt), before the queue: Generate is disabled, the server knows of
    the run (Stop works from now on) and the status says something at once. Ctrl+Enter while this page's run
    is going starts nothing: the error ends the chain here (an unqueued event shows no toast; the line under
    Generate already says a run is going)."""
    ui = studio.ui
    if busy(studio, values, request):
        raise gr.Error("A run is going in this page: Stop ends it", title="Generate")
    studio.running[request.session_hash] = threading.Event()
    return {ui.generate_btn: gr.update(interactive=False), ui.reason: "A run is going: Stop ends it.",
            ui.status: "**Queued** · starting the run…", ui.busy: True}


def run_inputs(studio: Studio, values: dict, state: dict) -> tuple[dict, bytes | None, Image.Image | None, list[str]]:
    """What the engine prepares a run from: the request's fields (keyed by param), the picture's file as uploaded
    (None when it is the session's last input again: the body names its asset), the drawn mask (None when
    nothing is drawn: an extension needs none), and the notes the mask tools left."""
    model_id = values.get("modelId")
    entry = studio.catalog.get(model_id) if model_id in studio.catalog else None
    body = request_fields(values, entry)
    if model_id is None:
        body.pop("modelId", None)
    if values.get("image") is None:
        raise RequestError("image", "is required")
    picture = upload_bytes(values["image"], field="image")
    source = state.get("source")
    store = studio.engine.store
    stored = store.file_path(source, original=True) if source and store.exists(source) else None
    if stored is not None and stored.stat().st_size == len(picture) and stored.read_bytes() == picture:
        body["image"], picture = source, None  # the same picture again (a result kept as input): its asset
    upload = values.get("mask")
    mask, notes = drawn_mask(read_sketch(values.get("sketch")) if upload is None else None, read_mask_upload(upload),
                             invert=bool(values.get("invertMask")), grow=int(values.get("maskGrow") or 0),
                             feather=int(values.get("maskFeather") or 0), soft=values.get("maskMode") == "soft")
    return body, picture, mask, notes


def download_name(prompt: str, model_id: str, seed: int) -> str:
    """`<prompt words>-<seed>.png` (the model's id when there is no prompt): a name that says what it is."""
    words = re.findall(r"[a-z0-9]+", (prompt or "").lower())[:NAME_WORDS] or re.findall(r"[a-z0-9]+", model_id.lower())
    return f"{'-'.join(words)[:60]}-{seed}.png"


def steps_note(requested: int, runs: int) -> str:
    """What strength does to the step count: said, so "step 5 of 23" does not read as a bug when Steps is 30."""
    return f" · strength runs {runs} of {requested} steps" if runs < requested else ""


def generate(studio: Studio, values: dict, state: dict | None, request: gr.Request | None):
    """One run: previews, progress and results streamed as they come. The gallery keeps the last run's
    results until this one's first result; a failed run says so in the status line and keeps them."""
    ui, engine = studio.ui, studio.engine
    state = dict(state or {})
    warnings: list[str] = []
    if zerogpu.is_zerogpu():  # each sample costs the visitor GPU quota
        values["numSamples"], capped = zerogpu.cap_samples(values.get("numSamples"), default=DEFAULT_SAMPLES)
        if capped:
            warnings.append(capped)
            gr.Warning(capped)
    yield {ui.status: "**Preparing** · reading the picture and the mask…"}
    try:
        # The drawn mask is decoded here (the page's mask tools apply to it), the picture by the engine, both
        # within the engine's one pixel budget.
        with decoding(studio, None, values.get("sketch"), values.get("mask")):
            body, picture, mask, notes = run_inputs(studio, values, state)
            resolved = engine.prepare(body, image=picture, mask=mask)
    except RequestError as exc:
        if exc.field == "mask" and values.get("mask") is None:  # the mask the user painted, in the page's words
            exc = RequestError("sketch", exc.message, status=exc.status)
        yield {ui.status: f"**Not started** · {plain(studio, exc)}"}
        raise bad_input(studio, exc) from None
    warnings += [*notes, *resolved.warnings]
    prune(studio.files_dir, KEEP_FILES_S)
    stored_input = engine.store.file_path(resolved.image_asset_id)  # a PNG, or the JPEG/WebP as uploaded
    input_path = studio.files_dir / stored_input.name
    if not input_path.exists():
        shutil.copyfile(stored_input, input_path)
    summary = {"input": resolved.to_json(), "assetIds": [], "seeds": [], "warnings": warnings}
    shown: list[tuple[str, str]] = []
    results: list[dict] = []
    total, started = resolved.num_samples, time.monotonic()
    family = studio.catalog.get(resolved.model_id).family
    working = "Denoising" if family.denoises else "Filling"
    # Strength skips the start of the schedule: the previews count the steps that run, and the line says so.
    requested = resolved.num_inference_steps
    line = {"stage": f"**Starting** {resolved.model_id}", "step": "", "runs": requested}

    def status(text: str | None = None) -> str:
        # The warnings read at the run's end; those found while generating join the request's.
        note = steps_note(requested, line["runs"])
        text = text or f"{line['stage']} · {len(shown)}/{total} images{line['step']}{note}"
        return text + "".join(f"\n\n⚠️ {w}" for w in warnings)

    key = getattr(request, "session_hash", None)
    # The page's click registered the run (see start); an API call registers it here.
    cancel = studio.running.setdefault(key, threading.Event()) if key else threading.Event()
    run_key = new_id("run")
    device.CANCELS[run_key] = cancel
    previews = device.PreviewFiles(studio.files_dir, run_key)
    sent = {"text": status(), "stage": line["stage"], "at": time.monotonic()}  # the status line on the page

    def worth_sending(event: Event, text: str) -> bool:
        """Whether the line goes out for an event with nothing else to show: a new stage or a warning at once; a
        step counted once STEP_LINE_EVERY_S has passed."""
        if text == sent["text"]:
            return False
        if isinstance(event, Progress) and line["stage"] == sent["stage"]:
            return time.monotonic() - sent["at"] >= STEP_LINE_EVERY_S
        return True

    yield {ui.status: sent["text"], ui.preview: gr.update(value=None, visible=resolved.intermediate_images),
           ui.seed: resolved.seed}
    failed = None
    try:
        events = device.studio_events(studio.jobs, studio.engine_key, resolved, run_key)
        for event in events:
            out = {}
            match event:
                case Waiting():
                    line["stage"] = "**Waiting** for the device: another run is going"
                case Loading(model_id=model_id):
                    line["stage"] = f"**Loading** {model_id} (its first use since the server started)"
                case Progress(fraction=fraction):
                    line["stage"] = f"**{working}**"
                    if not line["step"] or not resolved.intermediate_images:
                        line["step"] = f" · {fraction:.0%}"
                case Regions(regions=planned) if not line["stage"].startswith("**Loading"):  # planned before it loads
                    line["stage"] = f"**{working}** {len(planned)} region{'s' * (len(planned) > 1)}"
                case Warned(message=message) if message not in warnings:  # shown once, however often reported
                    warnings.append(message)  # summary["warnings"] is this list
                case Preview(step=step, steps=steps):
                    line.update(stage=f"**{working}**", step=f" · step {step} of {steps}", runs=steps)
                    out[ui.preview] = previews.save(event)
                case Result(asset=asset, seam_report=seam):
                    folder = studio.files_dir / asset.id
                    folder.mkdir(exist_ok=True)
                    path = folder / download_name(resolved.prompt, resolved.model_id, asset.seed)
                    shutil.copyfile(engine.store.file_path(asset.id, original=True), path)
                    shown.append((str(path), f"seed {asset.seed}"))
                    results.append({"id": asset.id, "seed": asset.seed, "path": str(path), "seam": seam})
                    summary["assetIds"].append(asset.id)
                    summary["seeds"].append(asset.seed)
                    state.update(source=resolved.image_asset_id, input=str(input_path), results=list(results),
                                 selected=None, summary=summary)
                    out.update({ui.gallery: shown.copy(), ui.session: dict(state)})
                case Failed():
                    failed = event
            text = status()
            if out or worth_sending(event, text):
                sent.update(text=text, stage=line["stage"], at=time.monotonic())
                yield {**out, ui.status: text}
            if cancel.is_set() and failed is None:
                events.close()  # stops the generation wherever it runs, within a step
                failed = Failed("canceled", "stopped")
    except QueueFull as exc:  # nothing started: refused like a bad input, and the last run's results stay
        yield {ui.status: f"**Not started** · {exc.message}"}
        raise gr.Error(exc.message, title="The server is busy") from None
    finally:
        device.CANCELS.pop(run_key, None)
        if key and studio.running.get(key) is cancel:
            del studio.running[key]
    if failed is not None and failed.kind == "canceled":
        yield final(studio, shown, summary, resolved, state, status(f"**Stopped** · kept {len(shown)} of {total} images"))
        return
    if failed is not None:
        # Said in the status line, then raised: the page shows it as a toast, and an API caller (gradio_client)
        # gets an error with the same words instead of outputs that look like a success.
        message = failure_message(studio, failed)
        kept = f" · kept {len(shown)} of {total} images" if shown else " · the results above are the last run's"
        yield {**final(studio, shown, summary, resolved, state, status(f"**Failed** · {message}{kept}")),
               **({} if shown else {ui.gallery: gr.skip(), ui.session: gr.skip()})}
        raise gr.Error(message, title="The run failed")
    seeds = f"seed {resolved.seed}" if total == 1 else f"seeds {resolved.seed}–{resolved.seed + total - 1}"
    yield final(studio, shown, summary, resolved, state,
                status(f"**Done** · {len(shown)} image{'s' * (len(shown) > 1)} in "
                       f"{time.monotonic() - started:.1f} s · {seeds}"))


def final(studio: Studio, shown, summary, resolved, state, text: str) -> dict:
    """Every output of the run (an API caller reads this last message whole)."""
    ui = studio.ui
    return {ui.gallery: shown.copy(), ui.preview: gr.update(visible=resolved.intermediate_images),
            ui.status: text, ui.params: summary, ui.seed: resolved.seed, ui.session: state}


def failure_message(studio: Studio, failed: Failed) -> str:
    """A failed run in the page's words: a bad input names the control at fault."""
    if failed.kind == "bad-input":
        return plain(studio, failed.error())
    return failed.message


def finish(studio: Studio, values: dict, request: gr.Request | None = None) -> dict:
    """After a run, whatever its end: the page is no longer busy (show_mask, next, makes Generate live again
    when nothing is missing), the first result is selected, and a run that made something joins this
    session's history."""
    ui = studio.ui
    studio.running.pop(getattr(request, "session_hash", None), None)  # a run refused before it began (a full queue) left it here
    state = dict(values[ui.session] or {})
    # The status line written again as it is: after a refused run gradio marks it with an "Error" badge, and the
    # line already says what went wrong.
    out = {ui.busy: False, ui.status: values[ui.status]}
    results = state.get("results") or []
    history = list(state.get("history") or [])
    if results and not any(run["results"] == results for run in history):
        summary = state.get("summary") or {}
        words = (summary.get("input") or {}).get("prompt") or (summary.get("input") or {}).get("modelId", "")
        history.insert(0, {"results": results, "input": state.get("input"), "summary": summary,
                           "label": f"{words[:40]} · {len(results)}"})
        state["history"] = history
        out[ui.history] = [(run["results"][0]["path"], run["label"]) for run in history]
    return {**out, **select(studio, {**state, "selected": 0}, 0)}


def select(studio: Studio, state: dict, index: int) -> dict:
    """The sample at `index`: compared with the input, downloadable, its own parameters shown."""
    ui = studio.ui
    results = state.get("results") or []
    if not 0 <= index < len(results):
        return {ui.session: state}
    picked = results[index]
    summary = state.get("summary") or {}
    params = {**(summary.get("input") or {}), "seed": picked["seed"], "assetId": picked["id"]}
    if picked.get("seam"):
        params["seamReport"] = picked["seam"]
    if summary.get("warnings"):
        params["warnings"] = summary["warnings"]
    before, divider = comparison(studio, state["input"], picked["path"], (summary.get("input") or {}).get("outpaint"))
    return {ui.compare: gr.update(value=(before, picked["path"]), slider_position=divider), ui.download: picked["path"],
            ui.params: params, ui.session: {**state, "selected": index}}


def comparison(studio: Studio, input_path: str, result_path: str, outpaint: dict | None) -> tuple[str, float]:
    """The before side of a result's comparison, at the result's scale (an extended picture's input on its grown
    canvas, as the mask preview shows it), and where the divider starts: across the middle of what changed, so
    both sides of the change show before anyone moves it (0..100, from the left)."""
    with Image.open(input_path) as opened, Image.open(result_path) as result:
        before = ImageOps.exif_transpose(opened).convert("RGB")  # as the engine read it
        if outpaint:
            before = regions.outpaint_canvas(before, outpaint, prefill=False)
            input_path = str(studio.files_dir / f"before-{Path(result_path).stem}.png")
            before.save(input_path)
        # Compared small: where the change is, not its every pixel.
        small_before, small_after = before.reduce(COMPARE_REDUCE), result.convert("RGB").reduce(COMPARE_REDUCE)
    if small_before.size != small_after.size:
        return input_path, 50.0
    changed = ImageChops.difference(small_before, small_after).convert("L").point(lambda v: 255 * (v > 8)).getbbox()
    if changed is None:
        return input_path, 50.0
    return input_path, round(100 * (changed[0] + changed[2]) / 2 / small_after.width, 1)


def select_result(studio: Studio, values: dict, evt: gr.SelectData) -> dict:
    return select(studio, dict(values[studio.ui.session] or {}), evt.index)


def bring_back(studio: Studio, values: dict, evt: gr.SelectData) -> dict:
    """An earlier run of this session back in the gallery, its first sample selected."""
    ui = studio.ui
    state = dict(values[ui.session] or {})
    history = state.get("history") or []
    if not 0 <= evt.index < len(history):
        return {}
    run = history[evt.index]
    state.update(results=run["results"], input=run["input"], summary=run["summary"])
    shown = [(r["path"], f"seed {r['seed']}") for r in run["results"]]
    return {ui.gallery: shown, **select(studio, state, 0)}


def stop(studio: Studio, request: gr.Request) -> str:
    cancel = studio.running.get(getattr(request, "session_hash", None))
    if cancel is None:
        return "Nothing is running."
    cancel.set()
    return "**Stopping** at the end of the current step…"


def keep_editing(studio: Studio, values: dict) -> dict:
    """The selected result becomes the next input (and so the parent of what comes next), on a fresh canvas."""
    ui = studio.ui
    state = dict(values[ui.session] or {})
    results, index = state.get("results") or [], state.get("selected")
    if index is None or not results:
        raise gr.Error("Pick a result in the gallery first", title="Use as input")
    picked = results[index]
    state["source"] = picked["id"]
    return {ui.picture: picked["path"], ui.painter: "", ui.mask_upload: None, ui.mask_preview: None,
            ui.session: state}
