"""The model catalog and the scheduler table: data read from JSON files, not classes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import RequestError

SHIPPED_CATALOG = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def clamp(self, value: float) -> float:
        return max(self.low, min(self.high, value))

    def to_json(self) -> dict:
        return {"min": self.low, "max": self.high}


@dataclass(frozen=True)
class ModelType:
    """What a model type allows, per the contract's table. `family` picks the pipeline classes."""

    name: str
    family: str  # "opencv" | "sd-1_5" | "sd-xl" | "flux.1"
    guidance_default: float
    guidance: Range
    size: Range
    native_resolution: int | None  # None: classical models work at the region's own size
    size_multiple: int  # what the family's latents need internally (VAE 1/8, Flux packs 2x2 more)
    scheduler: str | None  # the family's usual scheduler, used unless the entry or the request names one
    is_lora: bool = False
    # Pixels the mask is grown by, then feathered inward by, for the merge. Diffusion regenerates the whole
    # crop, whose pixels all differ a little from the original: the seam needs a soft band. Classical
    # inpainting keeps every known pixel and fills exactly the drawn mask: a band would only blur the edge.
    seam_px: int = 8


_SD15 = dict(family="sd-1_5", guidance_default=7.5, guidance=Range(0, 20), size=Range(64, 1024),
             native_resolution=512, size_multiple=8, scheduler="PNDMScheduler")
_SDXL = dict(family="sd-xl", guidance_default=6.0, guidance=Range(0, 20), size=Range(512, 2048),
             native_resolution=1024, size_multiple=8, scheduler="EulerDiscreteScheduler")
_FLUX = dict(family="flux.1", guidance_default=3.5, guidance=Range(0, 10), size=Range(64, 2048),
             native_resolution=1024, size_multiple=16,
             scheduler="FlowMatchEulerDiscreteScheduler")

MODEL_TYPES: dict[str, ModelType] = {
    # Classical inpainting has no latents and no guidance; sizes only bound the work.
    "opencv": ModelType("opencv", "opencv", 0.0, Range(0, 20), Range(64, 8192), None, 1, None, seam_px=0),
    "sd-1_5": ModelType("sd-1_5", **_SD15),
    "sd-1_5-lora": ModelType("sd-1_5-lora", **_SD15, is_lora=True),
    "sd-xl": ModelType("sd-xl", **_SDXL),
    "sd-xl-lora": ModelType("sd-xl-lora", **_SDXL, is_lora=True),
    "flux.1": ModelType("flux.1", **_FLUX),
    "flux.1-lora": ModelType("flux.1-lora", **_FLUX, is_lora=True),
}

# Scheduler name -> (kind, from_config overrides). SD families take every "sd" kind; Flux is
# flow-matching and takes only "flow". Classes are looked up in diffusers by name at build time.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "DDIMScheduler": ("sd", {}),
    "DDPMScheduler": ("sd", {}),
    "DEISMultistepScheduler": ("sd", {}),
    "DPMSolverMultistepScheduler": ("sd", {}),
    "DPMSolverSinglestepScheduler": ("sd", {}),
    "EulerAncestralDiscreteScheduler": ("sd", {}),
    "EulerDiscreteScheduler": ("sd", {}),
    "HeunDiscreteScheduler": ("sd", {}),
    "KDPM2AncestralDiscreteScheduler": ("sd", {}),
    "KDPM2DiscreteScheduler": ("sd", {}),
    "LMSDiscreteScheduler": ("sd", {}),
    "PNDMScheduler": ("sd", {}),
    "UniPCMultistepScheduler": ("sd", {}),
    "LCMScheduler": ("sd", {}),
    "FlowMatchEulerDiscreteScheduler": ("flow", {}),
}
FAMILY_SCHEDULER_KIND = {"sd-1_5": "sd", "sd-xl": "sd", "flux.1": "flow", "opencv": None}


@dataclass(frozen=True)
class ModelEntry:
    """One catalog row. `source` is `opencv:<algo>`, `tiny:<type>`, `hub:<repo id>` or a local folder."""

    id: str
    type: ModelType
    source: str
    description: str = ""
    guidance_default: float | None = None
    guidance: Range | None = None
    size: Range | None = None
    compliant_model_ids: tuple[str, ...] = ()
    epochs: tuple[str, ...] = ()  # LoRA only; the last one is the default
    weight_name: str = "{epoch}.safetensors"  # LoRA only: file of one epoch inside `source`
    scheduler: str | None = None

    @property
    def default_scheduler(self) -> str | None:
        return self.scheduler or self.type.scheduler

    # A catalog entry may only narrow its type's ranges; these are the effective ones.
    @property
    def guidance_range(self) -> Range:
        return self.guidance or self.type.guidance

    @property
    def default_guidance(self) -> float:
        return self.type.guidance_default if self.guidance_default is None else self.guidance_default

    @property
    def size_range(self) -> Range:
        return self.size or self.type.size

    @property
    def family(self) -> str:
        return self.type.family

    @property
    def scheduler_names(self) -> list[str]:
        kind = FAMILY_SCHEDULER_KIND[self.family]
        return [name for name, (k, _) in SCHEDULERS.items() if k == kind]

    @property
    def source_kind(self) -> str:
        if self.source.startswith(("opencv:", "tiny:", "hub:")):
            return self.source.split(":", 1)[0]
        return "local"

    def availability(self) -> str:
        """"offline" (runs now, no network), "needs download" (Hub, not cached) or "missing"."""
        kind = self.source_kind
        if kind in ("opencv", "tiny"):
            return "offline"
        if kind == "local":
            return "offline" if Path(self.source).expanduser().exists() else "missing"
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return "needs download"
        marker = "model_index.json" if not self.type.is_lora else self.weight_name.format(epoch=self.epochs[-1])
        cached = try_to_load_from_cache(self.source.split(":", 1)[1], marker)
        return "offline" if isinstance(cached, str) else "needs download"

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "type": self.type.name,
            "family": self.family,
            "description": self.description,
            "source": self.source,
            "availability": self.availability(),
            "defaults": {"guidance": self.default_guidance, "resolution": self.type.native_resolution,
                         "scheduler": self.default_scheduler, "numInferenceSteps": 30, "strength": 0.75},
            "ranges": {"guidance": self.guidance_range.to_json(), "width": self.size_range.to_json(),
                       "height": self.size_range.to_json()},
            "schedulers": self.scheduler_names,
        }
        if self.type.is_lora:
            out["compliantModelIds"] = list(self.compliant_model_ids)
            out["epochs"] = list(self.epochs)
        return out


def _range(raw: dict | None, wide: Range, what: str, model_id: str) -> Range | None:
    if raw is None or ("min" not in raw and "max" not in raw):
        return None
    narrowed = Range(float(raw.get("min", wide.low)), float(raw.get("max", wide.high)))
    if narrowed.low not in wide or narrowed.high not in wide or narrowed.low > narrowed.high:
        raise ValueError(f"catalog entry {model_id!r}: {what} {narrowed} must narrow the type's {wide}")
    return narrowed


def _entry(raw: dict, base_dir: Path) -> ModelEntry:
    model_id = raw["id"]
    if raw.get("type") not in MODEL_TYPES:
        raise ValueError(f"catalog entry {model_id!r}: type must be one of {sorted(MODEL_TYPES)}")
    model_type = MODEL_TYPES[raw["type"]]
    source = str(raw["source"])
    if not source.startswith(("opencv:", "tiny:", "hub:")):
        # A local folder; relative paths are relative to the catalog file that names them.
        source = str((base_dir / Path(source).expanduser()).resolve())
    guidance_raw = raw.get("guidance") or {}
    guidance = _range(guidance_raw, model_type.guidance, "guidance", model_id)
    default = guidance_raw.get("default")
    if default is not None and float(default) not in (guidance or model_type.guidance):
        raise ValueError(f"catalog entry {model_id!r}: guidance default {default} is outside its range")
    epochs = tuple(str(e) for e in raw.get("epochs", ()))
    if raw.get("scheduler") is not None and raw["scheduler"] not in SCHEDULERS:
        raise ValueError(f"catalog entry {model_id!r}: scheduler must be one of {sorted(SCHEDULERS)}")
    if model_type.is_lora and not epochs:
        raise ValueError(f"catalog entry {model_id!r}: a LoRA entry needs at least one epoch")
    return ModelEntry(
        id=model_id,
        type=model_type,
        source=source,
        description=raw.get("description", ""),
        guidance_default=None if default is None else float(default),
        guidance=guidance,
        size=_range(raw.get("size"), model_type.size, "size", model_id),
        compliant_model_ids=tuple(raw.get("compliantModelIds", ())),
        epochs=epochs,
        weight_name=raw.get("weightName", "{epoch}.safetensors"),
        scheduler=raw.get("scheduler"),
    )


class Catalog:
    """The shipped catalog plus an optional user file; a user entry replaces a shipped one by id."""

    def __init__(self, entries: list[ModelEntry]):
        self._entries = {entry.id: entry for entry in entries}

    @classmethod
    def load(cls, user_file: str | Path | None = None) -> Catalog:
        entries: dict[str, ModelEntry] = {}
        for path in [SHIPPED_CATALOG, *([Path(user_file).expanduser()] if user_file else [])]:
            try:
                raw = json.loads(Path(path).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise SystemExit(f"cannot read the model catalog {path}: {exc}") from None
            for item in raw.get("models", []):
                entry = _entry(item, Path(path).parent)
                entries[entry.id] = entry
        return cls(list(entries.values()))

    @property
    def ids(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def get(self, model_id: str, *, field: str = "modelId") -> ModelEntry:
        try:
            return self._entries[model_id]
        except KeyError:
            raise RequestError(field, f"unknown model id {model_id!r}; valid ids: {', '.join(self.ids)}") from None

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._entries
