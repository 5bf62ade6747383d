"""The segment request (select an object by clicks, a box or a text) and its one flow: validate, decode the
picture as an inpaint input is, run the model's selection, store the mask as an asset whose parent is the picture
(so `maskId` takes it to POST /generate/inpaint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from . import imageops
from .errors import ModelUnavailable, RequestError
from .families import Prompt
from .schema import Number, validated

if TYPE_CHECKING:
    from PIL import Image

    from .generate import Engine

MAX_POINTS = 64  # a person clicks a handful of times; the decoder's cost grows with each
MAX_GROW_PX = 64  # beyond, "grow" is no longer the object's outline but a region around it
TEXT_MAX_CHARS = 200  # a noun phrase ("the cat", "all cups")


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    x: Number = Field(description="Pixels from the picture's left edge.")
    y: Number = Field(description="Pixels from the picture's top edge.")
    label: Literal[0, 1] = Field(1, description="1 adds the object under the point, 0 removes it.")


class SegmentRequest(BaseModel):
    """The body of `POST /segment`, and what the CLI's flags make."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    image: str | None = Field(None, min_length=1, description="The picture: a data URL (png/jpeg/webp) or an asset id.")
    model_id: str = Field(alias="modelId", min_length=1, max_length=200,
                          description="A model of the catalog whose capabilities include points, box or text.")
    points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS,
                                description="Clicks in the picture's pixels: label 1 adds, 0 removes.")
    box: list[Number] | None = Field(None, min_length=4, max_length=4,
                                     description="[left, top, right, bottom] in pixels around the object.")
    text: str | None = Field(None, min_length=1, max_length=TEXT_MAX_CHARS,
                             description="What to select, in words (\"the cat\"): models with the text capability.")
    grow: StrictInt = Field(0, ge=0, le=MAX_GROW_PX, description=(
        "Pixels to grow the selection by: an object removed with the halo of its outline, which a selection "
        "follows too closely for an eraser."))
    multimask: StrictBool = Field(False, description="Let the model weigh several candidate masks and answer its "
                                                     "best-scored one; helps with a single ambiguous click.")
    hide: StrictBool = Field(True, description="Hide the stored picture and mask from `GET /assets`.")


@dataclass(frozen=True)
class Segmented:
    mask: Image.Image  # "L", 255 = selected, the picture's size
    mask_id: str
    image_id: str
    score: float | None
    model_id: str


def _prompt(req: SegmentRequest, selects: frozenset[str], model_id: str) -> Prompt:
    """The prompt as the model reads it, refused when the model cannot read a part of it or nothing selects."""
    given = {"points": bool(req.points), "box": req.box is not None, "text": req.text is not None}
    for field, present in given.items():
        if present and field not in selects:
            raise RequestError(field, f"{model_id!r} does not read {field}; it reads {', '.join(sorted(selects))}")
    if not (any(point.label for point in req.points) or req.box is not None or req.text is not None):
        wanted = {"points": "a positive point (label 1)" if req.points else "a point", "box": "a box", "text": "a text"}
        raise RequestError("points", f"nothing to select by: {model_id!r} needs "
                                     f"{' or '.join(wanted[prompt] for prompt in sorted(selects))}")
    return Prompt(points=tuple((float(p.x), float(p.y), p.label) for p in req.points),
                  box=None if req.box is None else tuple(float(v) for v in req.box), text=req.text,
                  multimask=req.multimask)


def _check_inside(prompt: Prompt, size: tuple[int, int]) -> None:
    width, height = size
    for index, (x, y, _) in enumerate(prompt.points):
        if not (0 <= x < width and 0 <= y < height):
            raise RequestError("points", f"point {index} ({x:g}, {y:g}) is outside the {width}x{height} picture")
    if prompt.box is not None:
        left, top, right, bottom = prompt.box
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise RequestError("box", f"[{left:g}, {top:g}, {right:g}, {bottom:g}] must have left < right and top < "
                                      f"bottom, within the {width}x{height} picture")


def segment(engine: Engine, body: object, *, image: bytes | None = None) -> Segmented:
    """Select what the body asks for, in its `image` or in the picture's file `image` given as the caller holds it;
    raises RequestError naming the field at fault."""
    # 1. Fields, types and bounds; the model and what it reads
    req = validated(SegmentRequest, body, "the segment request")
    entry = engine.catalog.get(req.model_id)
    family = entry.family
    if not family.selects:
        selecting = [e.id for e in engine.catalog.entries() if e.family.selects]
        raise RequestError("modelId", f"{entry.id!r} inpaints and selects nothing; models that select: "
                                      f"{', '.join(selecting)}")
    prompt = _prompt(req, family.selects, entry.id)
    reason = family.unavailable(entry)
    if reason:
        raise RequestError("modelId", f"{entry.id!r} cannot run on this server: {reason}")

    # 2. The picture, decoded under the engine's pixel budget (stored when it came as a data URL)
    picture = image if image is not None else req.image
    if picture is None:
        raise RequestError("image", "is required: a data URL (png/jpeg/webp) or an asset id")
    image, image_id = engine.picture(picture, hide=req.hide)
    _check_inside(prompt, image.size)

    # 3. The selection; a model with weights encodes each picture once (see inpaint/sam.py). Not under the engine's
    #    device lock: a click must answer while a generation runs, and SAM's memory is small beside a diffusion's.
    if family.has_weights:
        try:
            loaded = engine.pipelines.get(entry.id)
        except ModelUnavailable as exc:
            raise RequestError("modelId", str(exc)) from None
        with loaded.lock:
            selection = family.select(loaded.pipe, image, prompt)
    else:
        selection = family.select(family.load(entry), image, prompt)

    # 4. The mask, grown as asked and stored under the picture
    mask = imageops.prepare_mask(selection.mask, image.size, grow=req.grow, allow_empty=True)[0]
    mask_id = engine.store.put(mask, kind="mask", hidden=req.hide, parent_id=image_id, model_id=entry.id).id
    return Segmented(mask, mask_id, image_id, selection.score, entry.id)
