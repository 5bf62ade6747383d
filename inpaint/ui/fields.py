"""The studio's one table: each request field and the component that holds it. The request body, the
gradio_client API signature and the "follow the model" updates are all read from it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..catalog import ModelEntry
from ..errors import RequestError
from ..schema import whole_image_size

CONCEPT_HEADERS = ["concept", "scale", "epoch"]
PROMPT_HINT = "What to paint in the masked area"
OUTPAINT_SIDES = ("left", "right", "top", "bottom")
# The fields the "Compare settings" panel varies (inpaint.ui.compare), as the page names them.
COMPARED = (("Strength", "strength"), ("Guidance", "guidance"), ("Steps", "numInferenceSteps"), ("Seed", "seed"),
            ("Model", "modelId"), ("Colour match", "colorMatch"), ("Prompt", "prompt"))
VALUES_HINT = "Comma-separated, e.g. 0.5, 0.7, 0.9 (a value with a comma in double quotes)"
INTEGER_FIELDS = ("numSamples", "numInferenceSteps", "width", "height", "seed")  # sliders hand floats


def always(entry: ModelEntry) -> bool:
    return True


def denoises(entry: ModelEntry) -> bool:
    return entry.family.denoises


def is_lora(entry: ModelEntry) -> bool:
    return entry.type.is_lora


def blank_is_none(text):
    return text if text and str(text).strip() else None


def concept_rows(table) -> list[list]:
    """The rows of a concepts table, as the page sends them (a list) or an API caller may (headers + data)."""
    rows = table.get("data") if isinstance(table, dict) else table
    return [list(row) for row in rows or [] if row]


def concepts_from_table(table) -> list[dict] | None:
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


@dataclass(frozen=True)
class Field:
    """One parameter of the studio's API. `param` is the contract's field name when `sent` (the studio-only
    ones — the painted mask, the mask tools, the seed and size switches — shape other fields)."""

    param: str
    component: str  # the layout's name for it
    default: Any = None  # what an API caller who leaves it out gets (None: the engine's default)
    sent: bool = True
    applies: Callable[[ModelEntry], bool] = always  # the model reads it: sent, and live on the page, only then
    shows: str = "interactive"  # how the page says it does not apply: greyed out, or hidden ("visible")
    convert: Callable[[Any], Any] | None = None  # the component's value as the request's
    key: str | None = None  # the request's field when it is not `param`; dotted for a nested one


FIELDS: tuple[Field, ...] = (
    Field("image", "picture", sent=False),
    Field("mask", "mask_upload", sent=False),
    Field("sketch", "painter", sent=False),
    Field("invertMask", "invert", False, sent=False),
    Field("maskGrow", "grow", 0, sent=False),
    Field("maskFeather", "feather", 0, sent=False),
    Field("prompt", "prompt", applies=lambda e: e.family.uses_prompt),
    Field("negativePrompt", "negative_prompt", applies=lambda e: e.family.uses_negative_prompt,
          convert=blank_is_none),
    Field("modelId", "model"),
    Field("modelEpoch", "model_epoch", applies=is_lora, shows="visible", convert=blank_is_none),
    Field("baseModelId", "base_model", applies=is_lora, shows="visible", convert=blank_is_none),
    Field("numSamples", "num_samples"),
    Field("seed", "seed"),
    Field("randomizeSeed", "randomize", False, sent=False),
    Field("strength", "strength", applies=denoises),
    Field("guidance", "guidance", applies=denoises),
    Field("numInferenceSteps", "steps", applies=denoises),
    Field("scheduler", "scheduler", applies=denoises, convert=blank_is_none),
    Field("autoSize", "auto_size", False, sent=False),
    Field("width", "width"),
    Field("height", "height"),
    Field("disableMerging", "disable_merging", False, convert=bool),
    Field("intermediateImages", "intermediate", False, applies=lambda e: e.family.has_previews, convert=bool),
    Field("concepts", "concepts", convert=concepts_from_table),
    Field("negativePromptStrength", "negative_strength", applies=lambda e: e.family.negative_prompt_strength,
          shows="visible", convert=lambda v: v or None),
    Field("colorMatch", "color_match", convert=blank_is_none),
    Field("maskMode", "mask_mode", convert=blank_is_none),
    *(Field(f"outpaint{side.title()}", f"outpaint_{side}", 0, key=f"outpaint.{side}", convert=int)
      for side in OUTPAINT_SIDES),
)


def request_fields(values: dict[str, Any], entry: ModelEntry | None) -> dict:
    """The contract's fields for the page's values (keyed by param), those the model reads; None is left out
    (the engine's default). The seed and the size are sent only when the page fixes them."""
    body: dict = {}
    for field in FIELDS:
        if not field.sent or (entry is not None and not field.applies(entry)):
            continue
        value = values.get(field.param)
        value = field.convert(value) if field.convert and value is not None else value
        head, _, leaf = (field.key or field.param).partition(".")
        if leaf:
            if value:  # a nested object is sent when one of its parts is set (an outpaint of 0 is none)
                body.setdefault(head, {})[leaf] = value
        else:
            body[head] = value
    if values.get("randomizeSeed"):
        body.pop("seed", None)
    if values.get("autoSize"):
        body.pop("width", None), body.pop("height", None)
    for name in INTEGER_FIELDS:
        if isinstance(body.get(name), float) and body[name].is_integer():
            body[name] = int(body[name])
    return {k: v for k, v in body.items() if v is not None and v != []}


def follow_updates(entry: ModelEntry) -> dict[str, dict]:
    """Which fields the model reads, as updates keyed by component name: greyed out or hidden when not."""
    return {f.component: gr.update(**{f.shows: f.applies(entry)}) for f in FIELDS if f.applies is not always}


def api_function(run: Callable, name: str = "inpaint") -> Callable:
    """`run(values, state, request)` (values keyed by param) as the public API function gradio calls with one
    parameter per field, named as the contract names it, so a gradio_client call reads like a REST request."""
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter(f.param, keyword, default=f.default) for f in FIELDS]
        + [inspect.Parameter("state", keyword, default=None),
           inspect.Parameter("request", keyword, default=None, annotation=gr.Request)])

    def api(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        yield from run(values, values.pop("state"), values.pop("request"))

    api.__signature__ = signature
    api.__annotations__ = {"request": gr.Request}
    api.__name__ = api.__qualname__ = name
    api.__doc__ = ("Inpaint the area of `image` that `mask` (a file, white = repaint) or `sketch` (the page's painted "
                   "mask: a PNG data URL, painted where opaque) marks; streams previews and results.")
    return api


def fit_size(size: tuple[int, int] | None, entry: ModelEntry) -> tuple[int, int]:
    """The contract's whole-image default for the image (the model's native square before an upload)."""
    if not size:
        side = entry.family.native_resolution or 512
        size = (side, side)
    return whole_image_size(size, entry.size_range)


def model_label(entry: ModelEntry) -> str:
    """The id, and what stands in the way of a run or in the way of a good result (a test model paints noise);
    short enough for the box on a phone (the model's type and description are in the line under it)."""
    if entry.source_kind == "tiny":
        return f"{entry.id} · test model"  # whole in the box on a phone; the description says the rest
    availability = entry.availability()
    return entry.id if availability == "offline" else f"{entry.id} · {availability}"


def model_info(entry: ModelEntry) -> str:
    return f"**{entry.id}** · {entry.type.name} · {entry.description}"


def pipeline_model_id(entry: ModelEntry, base_model_id: str | None) -> str:
    """The model whose weights run: a LoRA model runs on one of its compliant bases."""
    if entry.type.is_lora:
        return base_model_id if base_model_id in entry.compliant_model_ids else entry.compliant_model_ids[0]
    return entry.id


def concept_choices(catalog, entry: ModelEntry, base_model_id: str | None) -> list[str]:
    base = pipeline_model_id(entry, base_model_id)
    return [e.id for e in catalog.entries() if e.type.is_lora and base in e.compliant_model_ids]
