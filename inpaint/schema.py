"""The inpaint request (camelCase, bounds, descriptions) and its resolution into a complete request."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

from .catalog import Catalog, ModelEntry
from .errors import RequestError, validation_error
from .families import SCHEDULERS
from .imageops import MAX_PIXELS

SEED_MAX = 2**32 - 1  # the common seed range of diffusion tools; sample i uses seed + i
PROMPT_MAX_CHARS = 4000  # text encoders read 77-512 tokens; anything far beyond is a client bug
SchedulerName = Literal[tuple(SCHEDULERS)]  # type: ignore[valid-type]
# The defaults of the request: the studio's controls start at them, GET /models shows them.
DEFAULT_STEPS = 30
DEFAULT_STRENGTH = 0.75
DEFAULT_SAMPLES = 4  # of the models whose seed changes the result; a deterministic one makes one
MAX_CONCEPTS = 8

Number = Union[StrictInt, float]
Model = TypeVar("Model", bound=BaseModel)

ColorMatch = Literal["none", "mean-std", "histogram"]
# Measured by the benchmark's seam_delta_e (bench/results.md): on 12 holes in 3 photos with a diffusion model
# whose output has a known cast, the mean seam colour step fell to 0.42x of unmatched with "mean-std" and 0.38x
# with "histogram". That close, the affine map wins: fitted on six numbers, it keeps the generated content's
# contrast and tone order and moved new content least (4.0 against 4.1 CIEDE2000 from its true colour), where
# "histogram" reshapes every tone through quantiles of a small ring. A fill that keeps every known pixel shows
# no drift to correct: for the classical models any setting leaves the result unchanged.
DEFAULT_COLOR_MATCH = "mean-std"
MaskMode = Literal["binary", "soft"]
DEFAULT_MASK_MODE = "binary"
OUTPAINT_MAX_PX = 2048  # per side; the grown image must still be within the contract's limits


class CamelModel(BaseModel):
    """A JSON shape of the contract: its fields are snake_case in Python and camelCase in JSON."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class Concept(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model_id: str = Field(alias="modelId", min_length=1, max_length=200, description="A LoRA model id of the catalog.")
    scale: float = Field(1.0, ge=-2, le=2, description="Weight of the LoRA, -2..2.")
    model_epoch: str | None = Field(None, alias="modelEpoch", max_length=100, description="Epoch of the LoRA.")


class Outpaint(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    left: int = Field(0, ge=0, le=OUTPAINT_MAX_PX, description="Pixels added on the left.")
    right: int = Field(0, ge=0, le=OUTPAINT_MAX_PX, description="Pixels added on the right.")
    top: int = Field(0, ge=0, le=OUTPAINT_MAX_PX, description="Pixels added at the top.")
    bottom: int = Field(0, ge=0, le=OUTPAINT_MAX_PX, description="Pixels added at the bottom.")

    def sides(self) -> dict[str, int]:
        return {"left": self.left, "right": self.right, "top": self.top, "bottom": self.bottom}


class InpaintRequest(BaseModel):
    """The body of `POST /generate/inpaint`, the Gradio API and the CLI: one schema for every surface."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    image: str | None = Field(None, description="Input image: a data URL (png/jpeg/webp) or an asset id.")
    image_id: str | None = Field(None, alias="imageId", description="Deprecated: the input image as an asset id.")
    mask: str | None = Field(None, description="Mask as a data URL. White = repaint, black = keep.")
    mask_id: str | None = Field(None, alias="maskId", description="The mask as an asset id; ignored if `mask` is given.")
    model_id: str = Field(alias="modelId", min_length=1, max_length=200, description="A model id of the catalog.")
    model_epoch: str | None = Field(None, alias="modelEpoch", max_length=100,
                                    description="LoRA models only: the saved epoch to use (default: the last).")
    base_model_id: str | None = Field(None, alias="baseModelId", max_length=200,
                                      description="LoRA models only: base model, one of its compliantModelIds.")
    prompt: str = Field("", max_length=PROMPT_MAX_CHARS,
                        description="What to paint in the masked area. Required by the models that read it "
                                    "(diffusion); erasers and classical models need none.")
    negative_prompt: str | None = Field(None, alias="negativePrompt", max_length=PROMPT_MAX_CHARS,
                                        description="What not to paint; ignored when guidance < 1.")
    negative_prompt_strength: float = Field(0.0, alias="negativePromptStrength", ge=0, le=10,
                                            description="Flux-dev based models only: weight of the negative prompt.")
    seed: StrictInt | str | None = Field(None, description="Seed of sample 0 (sample i uses seed + i). Default: random.")
    strength: float = Field(DEFAULT_STRENGTH, ge=0.01, le=1.0, description="Noise added to the masked area; 1 erases it.")
    guidance: float | None = Field(None, ge=0, le=20, description="Prompt adherence; default and range by model type.")
    num_inference_steps: int | None = Field(None, alias="numInferenceSteps", ge=1, le=150,
                                            description=f"Denoising steps (default {DEFAULT_STEPS}, fewer for the test "
                                                        "models).")
    num_samples: int | None = Field(None, alias="numSamples", ge=1, le=128,
                                    description=f"Images to generate (default {DEFAULT_SAMPLES}).")
    width: int | None = Field(None, ge=8, le=8192, description="Width, a multiple of 8; range by model type.")
    height: int | None = Field(None, ge=8, le=8192, description="Height, a multiple of 8; range by model type.")
    scheduler: SchedulerName | None = Field(None, description="Overrides the model's default scheduler.")
    intermediate_images: StrictBool = Field(False, alias="intermediateImages",
                                            description="Produce previews of the denoising while it runs.")
    concepts: list[Concept] = Field(default_factory=list, max_length=MAX_CONCEPTS, description="LoRA concepts with their scales.")
    disable_merging: StrictBool = Field(False, alias="disableMerging",
                                        description="Regenerate the whole image instead of the region around the mask.")
    hide_results: StrictBool = Field(False, alias="hideResults", description="Hide the generated assets from listings.")
    hide: StrictBool = Field(False, description="Hidden status of the input image asset created from a data URL.")
    parent_id: str | None = Field(None, alias="parentId", description="Parent asset id of the input image asset.")
    color_match: ColorMatch = Field(
        DEFAULT_COLOR_MATCH, alias="colorMatch",
        description="Colour matching of each generated region to the known pixels in a ring just outside the "
                    "mask, in Lab, before it is blended in: \"mean-std\" (mean and spread per channel, the "
                    "default), \"histogram\" (each channel's distribution) or \"none\". Pixels outside the mask "
                    "never change.")
    mask_mode: MaskMode = Field(
        DEFAULT_MASK_MODE, alias="maskMode",
        description="\"binary\": the mask is thresholded at 128. \"soft\": grey levels are the result's opacity "
                    "(0 keeps the original bit for bit, 255 takes the result), and everything above 0 is "
                    "repainted.")
    outpaint: Outpaint | None = Field(
        None, description="Extend the image by these many pixels per side (0..2048 each; the result at most "
                          "8192 px a side and 40 MP). The new area, plus the model's blend band into the "
                          "original, is repainted; `mask` becomes optional.")

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_is_integer_or_digits(cls, value: object) -> object:
        # Before the union: its own error would name the member tried ("seed.int"), not the field.
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ValueError(f"{shown} must be an integer or a string of digits")
        return value

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, value: int | str | None) -> int | None:
        if isinstance(value, str):
            if not value.strip().isdigit():
                raise ValueError(f"{value!r} must be an integer or a string of digits")
            if len(value.strip().lstrip("0")) > len(str(SEED_MAX)):  # int() of thousands of digits is slow
                raise ValueError(f"{value[:20]!r}... ({len(value)} digits) must be within [0, {SEED_MAX}]")
            value = int(value)
        if value is not None and not 0 <= value <= SEED_MAX:
            raise ValueError(f"{value} must be within [0, {SEED_MAX}]")
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"{value} must be a multiple of 8")
        return value


def default_steps(entry: ModelEntry) -> int:
    """numInferenceSteps when a request leaves it out: the contract's, or a test model's own smaller count."""
    return entry.default_steps or DEFAULT_STEPS


def parse_request(body: object) -> InpaintRequest:
    """Validate a JSON body; a bad one becomes one RequestError naming the first field at fault."""
    return validated(InpaintRequest, body, "the inpaint request")


def validated(schema: type[Model], body: object, what: str) -> Model:
    """`body` as a `schema`; a bad one becomes one RequestError naming the first field at fault. `what` names the
    request in the message about a field it does not have."""
    if not isinstance(body, dict):
        raise RequestError("body", "the request body must be a JSON object")
    try:
        return schema.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise validation_error(exc.errors(), what) from None


Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclasses.dataclass(frozen=True)
class Region:
    """One crop of the image: generated at `size`, pasted back into `box` (planned by inpaint.regions)."""

    box: Box
    size: tuple[int, int]  # the processing size (width, height)

    def to_json(self) -> dict:
        return {"box": list(self.box), "size": list(self.size)}


class ResolvedConcept(CamelModel):
    model_config = ConfigDict(frozen=True)

    model_id: str
    scale: float
    model_epoch: str


class ResolvedRequest(CamelModel):
    """A request with every default filled in; `to_json()` is the job's `metadata.input`, a request body that
    replays the job. Plain data: it crosses process boundaries (Ray, ZeroGPU)."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    pipeline_model_id: str = Field(exclude=True)  # the model whose weights run: the base model for a LoRA model
    family: str = Field(exclude=True)  # the family's name
    prompt: str
    negative_prompt: str | None
    negative_prompt_strength: float
    seed: int
    strength: float
    guidance: float
    num_inference_steps: int
    num_samples: int
    width: int
    height: int
    scheduler: str | None
    intermediate_images: bool
    concepts: tuple[ResolvedConcept, ...]  # LoRA model itself first (scale 1), then the request's
    disable_merging: bool
    hide_results: bool
    hide: bool
    parent_id: str | None
    model_epoch: str | None
    base_model_id: str | None
    color_match: ColorMatch
    mask_mode: MaskMode
    outpaint: dict[str, int] | None  # pixels added per side; None: the image keeps its size
    image_asset_id: str = Field(alias="image")
    mask_asset_id: str = Field(alias="maskId")
    warnings: tuple[str, ...] = Field((), exclude=True)
    # The crops, planned once when the request was checked (Engine.prepare): the job's `metadata.regions`.
    regions: tuple[Region, ...] = Field((), exclude=True)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_samples)]

    @field_serializer("concepts")
    def _requested_concepts(self, concepts: tuple[ResolvedConcept, ...]) -> list[dict]:
        # The LoRA model itself is the request's modelId, not one of its concepts.
        return [concept.model_dump() for concept in concepts if concept.model_id != self.model_id]

    def to_json(self) -> dict:
        return self.model_dump()


def _lora(entry: ModelEntry, epoch: str | None, field_name: str) -> str:
    if epoch is None:
        return entry.epochs[-1]
    if epoch not in entry.epochs:
        raise RequestError(field_name, f"epoch {epoch!r} of {entry.id!r} does not exist; "
                                       f"valid epochs: {', '.join(entry.epochs)}")
    return epoch


def _snap(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def generation_size(region: tuple[int, int], native: int, size_range) -> tuple[int, int]:
    """Default size for a region: the model's native area (native x native) at the region's aspect."""
    scale = native / math.sqrt(region[0] * region[1])
    return tuple(int(size_range.clamp(_snap(side * scale, 8))) for side in region)  # type: ignore[return-value]


def whole_image_size(image_size: tuple[int, int], size_range) -> tuple[int, int]:
    """Default size with disableMerging: the input's, rounded down to a multiple of 8, inside the range."""
    return tuple(int(size_range.clamp(max(8, side // 8 * 8))) for side in image_size)  # type: ignore[return-value]


def resolve(req: InpaintRequest, catalog: Catalog, *, image_size: tuple[int, int], region_size: tuple[int, int],
            image_asset_id: str, mask_asset_id: str, warnings: list[str]) -> ResolvedRequest:
    """Apply the model type's defaults and rules. `region_size` is the crop around the mask (merge mode)."""
    warnings = list(warnings)
    given = req.model_fields_set
    entry = catalog.get(req.model_id)
    if entry.family.selects:
        raise RequestError("modelId", f"{entry.id!r} selects objects (POST /segment) and paints nothing; "
                                      "use its mask (maskId) with an inpainting model")
    model_type = entry.type

    # 1. Models: a LoRA model runs on a compliant base with itself as the first adapter.
    concepts: list[ResolvedConcept] = []
    model_epoch = base_model_id = None
    if model_type.is_lora:
        base_model_id = req.base_model_id or entry.compliant_model_ids[0]
        if base_model_id not in entry.compliant_model_ids:
            raise RequestError("baseModelId", f"{base_model_id!r} is not compliant with {entry.id!r}; "
                                              f"allowed: {', '.join(entry.compliant_model_ids)}")
        catalog.get(base_model_id, field="baseModelId")
        model_epoch = _lora(entry, req.model_epoch, "modelEpoch")
        concepts.append(ResolvedConcept(model_id=entry.id, scale=1.0, model_epoch=model_epoch))
    else:
        for name in ("model_epoch", "base_model_id"):
            if getattr(req, name) is not None:
                alias = InpaintRequest.model_fields[name].alias
                raise RequestError(alias, f"is only for LoRA models (*-lora types); {entry.id!r} is {model_type.name}")
    pipeline_model_id = base_model_id or entry.id
    for i, concept in enumerate(req.concepts):
        where = f"concepts.{i}.modelId"
        lora = catalog.get(concept.model_id, field=where)
        if not lora.type.is_lora:
            raise RequestError(where, f"{lora.id!r} is a {lora.type.name} model, not a LoRA")
        if pipeline_model_id not in lora.compliant_model_ids:
            raise RequestError(where, f"{lora.id!r} cannot be applied on {pipeline_model_id!r}; "
                                      f"it is compliant with: {', '.join(lora.compliant_model_ids)}")
        concepts.append(ResolvedConcept(model_id=lora.id, scale=concept.scale,
                                        model_epoch=_lora(lora, concept.model_epoch, f"concepts.{i}.modelEpoch")))

    # 2. Prompt, guidance, negative prompt and scheduler, as the family takes them.
    family = entry.family
    reason = family.unavailable(entry)
    if reason:
        raise RequestError("modelId", f"{entry.id!r} cannot run on this server: {reason}")
    if family.uses_prompt and not req.prompt.strip():
        raise RequestError("prompt", f"must not be empty or blank for {entry.id}: it paints what the prompt says")
    guidance = entry.default_guidance if req.guidance is None else req.guidance
    if guidance not in entry.guidance_range:
        r = entry.guidance_range
        raise RequestError("guidance", f"{guidance} is outside [{r.low}, {r.high}] for {model_type.name} models")
    negative_prompt = req.negative_prompt
    if family.negative_prompt_strength:
        if negative_prompt and req.negative_prompt_strength <= 0:
            raise RequestError("negativePromptStrength", f"must be > 0 when negativePrompt is given to a "
                                                         f"{family.title} model")
        if negative_prompt:
            warnings.append(f"negativePrompt is not active in inpaint mode for {family.title} models; "
                            "it was not used")
            negative_prompt = None
    elif req.negative_prompt_strength:
        raise RequestError("negativePromptStrength", f"is only for Flux-dev based models; {entry.id!r} is "
                                                     f"{model_type.name}")
    if not family.uses_negative_prompt:
        negative_prompt = None
    if negative_prompt and guidance < 1:
        warnings.append(f"negativePrompt is ignored when guidance < 1 (guidance is {guidance})")
        negative_prompt = None
    scheduler = (req.scheduler or entry.default_scheduler) if family.denoises else None
    if family.denoises and scheduler not in entry.scheduler_names:
        raise RequestError("scheduler", f"{scheduler} cannot drive {model_type.name} models; "
                                        f"allowed: {', '.join(entry.scheduler_names)}")

    # Diffusion pipelines run int(steps x strength) steps: fewer than one is no generation at all.
    steps = req.num_inference_steps or default_steps(entry)
    if family.denoises and int(steps * req.strength) < 1:
        raise RequestError("strength", f"{req.strength} x numInferenceSteps {steps} leaves no "
                                       "denoising step; their product must be at least 1")

    # 3. Sizes: the answer's size in whole-image mode, the generation size of the region in merge mode.
    #    Every family has a range, the classical ones included: their cost grows with the pixels too.
    size_range = entry.size_range
    for name in ("width", "height"):
        value = getattr(req, name)
        if value is not None and value not in size_range:
            raise RequestError(name, f"{value} is outside [{int(size_range.low)}, {int(size_range.high)}] "
                                     f"for {model_type.name} models")
    at_own_size = family.native_resolution is None
    if at_own_size and not req.disable_merging:
        default_size = region_size  # the family works on the region as it is
    elif req.disable_merging:
        default_size = whole_image_size(image_size, size_range)
    else:
        default_size = generation_size(region_size, family.native_resolution, size_range)
    width, height = req.width or default_size[0], req.height or default_size[1]
    if req.disable_merging is False and (req.width is None) != (req.height is None):
        # One side given: the other keeps the region's aspect.
        aspect = region_size[0] / region_size[1]
        width = req.width or int(size_range.clamp(_snap(height * aspect, 8)))
        height = req.height or int(size_range.clamp(_snap(width / aspect, 8)))
    if width * height > MAX_PIXELS:
        name = "height" if req.width is None and req.height is not None else "width"
        raise RequestError(name, f"{width}x{height} px = {width * height / 1e6:.1f} MP; width x height must be at "
                                 f"most {MAX_PIXELS / 1e6:.0f} MP")

    # 4. Fields the family does not read are reported, not refused: one request body can try every model.
    ignored = [name for name, unused in (
        ("prompt", not family.uses_prompt and req.prompt.strip()),
        ("negativePrompt", not family.uses_negative_prompt and not family.negative_prompt_strength
         and req.negative_prompt),
        *((InpaintRequest.model_fields[name].alias or name, not family.denoises and name in given)
          for name in ("guidance", "strength", "num_inference_steps", "scheduler", "intermediate_images")),
    ) if unused]
    if ignored:
        warnings.append(f"{entry.id} ignores {', '.join(ignored)}: {model_type.name} models do not read "
                        + ("it" if len(ignored) == 1 else "them"))
    if at_own_size and not req.disable_merging and {"width", "height"} & given:
        warnings.append(f"{entry.id} works on the region at its own size; width and height are ignored")
    num_samples = req.num_samples
    if not family.seeded:
        # Deterministic: more samples would be identical copies, each computed and stored.
        if num_samples is not None and num_samples > 1:
            warnings.append(f"{entry.id} is deterministic: one result is stored for the {num_samples} samples asked")
        num_samples = 1
    num_samples = num_samples or DEFAULT_SAMPLES

    # 5. Seeds: sample i uses seed + i, and each must be a valid seed to replay that sample alone.
    largest_seed = SEED_MAX - (num_samples - 1)
    if req.seed is not None and int(req.seed) > largest_seed:
        raise RequestError("seed", f"{req.seed} + numSamples {num_samples} - 1 is over {SEED_MAX}: sample i uses "
                                   f"seed + i, so with numSamples {num_samples} the seed must be at most "
                                   f"{largest_seed}")
    seed = random.randint(0, largest_seed) if req.seed is None else int(req.seed)

    return ResolvedRequest(
        model_id=entry.id,
        pipeline_model_id=pipeline_model_id,
        family=family.name,
        prompt=req.prompt,
        negative_prompt=negative_prompt,
        negative_prompt_strength=req.negative_prompt_strength,
        seed=seed,
        strength=req.strength,
        guidance=guidance,
        num_inference_steps=steps,
        num_samples=num_samples,
        width=width,
        height=height,
        scheduler=scheduler,
        intermediate_images=req.intermediate_images,
        concepts=tuple(concepts),
        disable_merging=req.disable_merging,
        hide_results=req.hide_results,
        hide=req.hide,
        image_asset_id=image_asset_id,
        mask_asset_id=mask_asset_id,
        parent_id=req.parent_id,
        model_epoch=model_epoch,
        base_model_id=base_model_id,
        warnings=tuple(warnings),
        color_match=req.color_match,
        mask_mode=req.mask_mode,
        outpaint=outpaint_sides(req),
    )


def outpaint_sides(req: InpaintRequest) -> dict[str, int] | None:
    """The request's outpaint per side, or None when it adds nothing."""
    sides = req.outpaint.sides() if req.outpaint is not None else None
    return sides if sides and any(sides.values()) else None
