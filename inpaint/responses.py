"""The JSON shapes of assets, jobs and models: what the REST API answers (its OpenAPI schema), the store keeps
of a job, and the CLI prints."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from .assets import Asset
from .schema import DEFAULT_STRENGTH, CamelModel, default_steps

if TYPE_CHECKING:
    from .catalog import ModelEntry


class AssetOut(CamelModel):
    """An asset as the API shows it: the store's Asset and the URL of its file."""

    id: str = Field(description="The asset id, `asset_` and 22 characters.")
    url: str = Field(description="Where the file is served, relative to the server: a WebP rendition, or the "
                                 "original file when `originalAssets=true` was asked.")
    mime_type: str = Field(description="The type of the original file.")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    hidden: bool
    parent_id: str | None
    job_id: str | None
    seed: int | None
    model_id: str | None
    created_at: str = Field(description="ISO-8601, UTC.")
    kind: Literal["image", "mask", "result", "preview"]

    @classmethod
    def of(cls, asset: Asset, url: str) -> AssetOut:
        return cls(url=url, **dataclasses.asdict(asset))


class AssetEnvelope(CamelModel):
    asset: AssetOut


class AssetList(CamelModel):
    assets: list[AssetOut] = Field(description="Newest first; hidden assets are left out.")


class JobRecordMetadata(CamelModel):
    input: dict[str, Any] = Field(description="The request with every default resolved (seed, size, guidance, "
                                              "scheduler, ...), in camelCase.")
    asset_ids: list[str] = Field(description="Results so far, in order, hidden ones included.")
    seeds: list[int] = Field(description="The seed of each result: sample i uses seed + i.")
    # Defaults: jobs stored before these fields existed are read back too.
    regions: list[dict[str, Any]] = Field(default_factory=list, description=(
        "The regions of the image that are generated: each one's `box` [left, top, right, bottom] and processing "
        "`size` [width, height]."))
    seam_reports: list[dict[str, Any] | None] = Field(default_factory=list, description=(
        "One per result, aligned with `assetIds`: `outsideMaskMaxDiff` and `seamDeltaE`; null where none was "
        "measured."))
    intermediate_images: list[str] = Field(description="Asset ids of the denoising previews, when asked for.")
    warnings: list[str]
    error: str | None = Field(description="Why the job failed, else null.")


class JobRecord(CamelModel):
    """A job as the store keeps it and the CLI prints it."""

    job_id: str
    job_type: Literal["inpaint"]
    status: Literal["queued", "in-progress", "success", "failure", "canceled"]
    progress: float = Field(ge=0, le=1)
    created_at: str
    updated_at: str
    original_assets: bool = Field(False, description="Whether the asset URLs of this job point at the originals.")
    metadata: JobRecordMetadata


class JobMetadata(JobRecordMetadata):
    assets: list[AssetOut] = Field(description="The results that are not hidden, with their URLs.")


class JobOut(JobRecord):
    """A job as the API answers it: its record, and its visible results with their URLs."""

    metadata: JobMetadata


class JobEnvelope(CamelModel):
    job: JobOut


class PlanOut(CamelModel):
    """What a request will do, as a dry run answers it: nothing is stored and no job is started."""

    input: dict[str, Any] = Field(description="The request with every default resolved, as the job's "
                                              "`metadata.input` will be (less the asset ids that storing gives).")
    regions: list[dict[str, Any]] = Field(description="The regions that will be generated, as the job's "
                                                      "`metadata.regions` will be: `box` and processing `size`.")
    seeds: list[int] = Field(description="The seed of each sample: sample i uses seed + i.")
    warnings: list[str]
    gpu_seconds: int = Field(description="The GPU time a ZeroGPU Space asks for this request, in seconds.")


class PlanEnvelope(CamelModel):
    plan: PlanOut


class AssetDeleted(CamelModel):
    deleted_asset_ids: list[str] = Field(description="The asset deleted, with its files.")


class JobDeleted(CamelModel):
    job_id: str
    deleted_asset_ids: list[str] = Field(description="The job's results, previews, mask and input image, deleted "
                                                     "with their files.")
    kept_asset_ids: list[str] = Field(description="Its assets that another job or a remaining asset still names.")


class RangeOut(BaseModel):
    min: float
    max: float


class Capabilities(BaseModel):
    prompt: bool = Field(description="Reads the prompt; models that do not take none (it is optional for them).")
    negativePrompt: bool = Field(description="Reads the negative prompt.")  # noqa: N815 (the contract's names)
    steps: bool = Field(description="Denoises in steps: takes strength, numInferenceSteps, scheduler, guidance.")
    previews: bool = Field(description="Can stream previews of its denoising (intermediateImages).")
    seeded: bool = Field(description="The seed changes the result; if not, one sample is made whatever numSamples.")
    # A model that reads any of these selects objects (POST /segment) and does not inpaint.
    points: bool = Field(description="Selects the object under clicks (POST /segment `points`).")
    box: bool = Field(description="Selects the object in a box (POST /segment `box`).")
    text: bool = Field(description="Selects what a text names (POST /segment `text`).")


# Dumped with `exclude_unset=True`: an entry that is not a LoRA has no LoRA fields.
class ModelOut(CamelModel):
    id: str
    type: str
    family: str
    description: str
    source: str
    availability: Literal["offline", "needs download", "missing"]
    capabilities: Capabilities
    defaults: dict[str, Any]
    ranges: dict[str, RangeOut]
    schedulers: list[str]
    compliant_model_ids: list[str] | None = Field(None, description="LoRA models only.")
    epochs: list[str] | None = Field(None, description="LoRA models only; the last one is the default.")

    @classmethod
    def of(cls, entry: ModelEntry) -> ModelOut:
        family = entry.family
        lora = {"compliant_model_ids": list(entry.compliant_model_ids), "epochs": list(entry.epochs)} \
            if entry.type.is_lora else {}
        ranges = {"guidance": entry.guidance_range, "width": entry.size_range, "height": entry.size_range}
        return cls(
            id=entry.id, type=entry.type.name, family=family.name, description=entry.description,
            source=entry.source, availability=entry.availability(),
            capabilities=Capabilities(prompt=family.uses_prompt, negativePrompt=family.uses_negative_prompt,
                                      steps=family.denoises, previews=family.has_previews, seeded=family.seeded,
                                      **{prompt: prompt in family.selects for prompt in ("points", "box", "text")}),
            defaults={"guidance": entry.default_guidance, "resolution": family.native_resolution,
                      "scheduler": entry.default_scheduler, "numInferenceSteps": default_steps(entry),
                      "strength": DEFAULT_STRENGTH},
            ranges={name: RangeOut(min=span.low, max=span.high) for name, span in ranges.items()},
            schedulers=entry.scheduler_names, **lora)


class ModelList(CamelModel):
    models: list[ModelOut]


class ModelEnvelope(CamelModel):
    model: ModelOut


class SegmentOut(CamelModel):
    """What `POST /segment` answers."""

    mask: str = Field(description="The selection as a PNG data URL, the picture's size: white = selected.")
    mask_id: str = Field(description="The mask's asset id, a child of the picture: `maskId` of /generate/inpaint.")
    image_id: str = Field(description="The picture's asset id: send it as `image` with the next click, so it is "
                                      "neither uploaded nor stored again.")
    score: float | None = Field(description="The model's estimate of the mask's IoU; null for models without one.")
    model_id: str
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class ErrorDetail(BaseModel):
    field: str = Field(description="The request field (or part) at fault, camelCase, dotted for nested fields.")
    message: str = Field(description="What is wrong and the rule it breaks.")
    status: int = Field(description="The HTTP status, repeated.")


class ErrorOut(BaseModel):
    error: ErrorDetail
