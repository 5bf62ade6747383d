"""The model catalog and the scheduler table: data read from JSON files, not classes."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import RequestError
from .families import FAMILIES, SCHEDULERS, Family, Range

__all__ = ["MODEL_TYPES", "Catalog", "ModelEntry", "ModelType", "Range"]

SHIPPED_CATALOG = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class ModelType:
    """A catalog `type`: a family, or its LoRA variant. The family holds everything the type allows."""

    name: str
    family: Family
    is_lora: bool = False


def _model_types() -> dict[str, ModelType]:
    types = {}
    for family in FAMILIES.values():
        types[family.name] = ModelType(family.name, family)
        if family.supports_lora:
            types[f"{family.name}-lora"] = ModelType(f"{family.name}-lora", family, is_lora=True)
    return types


MODEL_TYPES: dict[str, ModelType] = _model_types()

# Sources that are not paths: `tiny:<kind>` (built offline on first use), `hub:<repo id>`, a URL of a
# TorchScript file, and `<family>:<variant>` for the families without weights (`opencv:telea`).
_URL_PREFIXES = ("https://", "http://")
_NAMED_PREFIXES = ("tiny:", "hub:", *(f"{family.name}:" for family in FAMILIES.values() if not family.has_weights))


@dataclass(frozen=True)
class ModelEntry:
    """One catalog row. `source`: `<family>:<variant>` for families without weights (`opencv:telea`),
    `tiny:<type>`, `hub:<repo id>`, the URL of a TorchScript file (with its `md5`), or a local path."""

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
    md5: str | None = None  # of a downloaded file: checked before it is ever loaded
    # A test model's own working size and step count, smaller than its family's: random weights paint noise
    # either way, and at the family's 512-1024 px and 30 steps a CPU takes minutes over it.
    native_resolution: int | None = None
    default_steps: int | None = None  # None: the contract's (schema.DEFAULT_STEPS)

    @property
    def default_scheduler(self) -> str | None:
        return self.scheduler or self.family.scheduler

    # A catalog entry may only narrow its type's ranges; these are the effective ones.
    @property
    def guidance_range(self) -> Range:
        return self.guidance or self.family.guidance

    @property
    def default_guidance(self) -> float:
        return self.family.guidance_default if self.guidance_default is None else self.guidance_default

    @property
    def size_range(self) -> Range:
        return self.size or self.family.size

    @functools.cached_property
    def family(self) -> Family:
        """The type's family, at the entry's own native resolution when it names one."""
        if self.native_resolution is None:
            return self.type.family
        return dataclasses.replace(self.type.family, native_resolution=self.native_resolution)

    @property
    def scheduler_names(self) -> list[str]:
        kind = self.family.scheduler_kind
        return [name for name, (k, _) in SCHEDULERS.items() if kind is not None and k == kind]

    @property
    def source_kind(self) -> str:
        """"builtin" (no weights), "tiny", "hub", "url" or "local"."""
        if self.source.startswith(_URL_PREFIXES):
            return "url"
        if self.source.startswith(("tiny:", "hub:")):
            return self.source.split(":", 1)[0]
        return "builtin" if self.source.startswith(_NAMED_PREFIXES) else "local"

    def availability(self) -> str:
        """"offline" (runs now, no network), "needs download" (Hub or URL, not fetched yet) or "missing"."""
        kind = self.source_kind
        if kind == "builtin":
            return "missing" if self.family.unavailable(self) else "offline"
        if kind == "tiny":
            return "offline"
        if kind == "local":
            return "offline" if Path(self.source).expanduser().exists() else "missing"
        if kind == "url":
            from . import settings

            return "offline" if (settings.MODELS_DIR / self.source.rsplit("/", 1)[-1]).is_file() else "needs download"
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return "needs download"
        marker = self.family.hub_marker if not self.type.is_lora else self.weight_name.format(epoch=self.epochs[-1])
        cached = try_to_load_from_cache(self.source.split(":", 1)[1], marker)
        return "offline" if isinstance(cached, str) else "needs download"


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
    if not source.startswith((*_URL_PREFIXES, *_NAMED_PREFIXES)):
        # A local folder; relative paths are relative to the catalog file that names them.
        source = str((base_dir / Path(source).expanduser()).resolve())
    guidance_raw = raw.get("guidance") or {}
    guidance = _range(guidance_raw, model_type.family.guidance, "guidance", model_id)
    default = guidance_raw.get("default")
    if default is not None and float(default) not in (guidance or model_type.family.guidance):
        raise ValueError(f"catalog entry {model_id!r}: guidance default {default} is outside its range")
    epochs = tuple(str(e) for e in raw.get("epochs", ()))
    if raw.get("scheduler") is not None and raw["scheduler"] not in SCHEDULERS:
        raise ValueError(f"catalog entry {model_id!r}: scheduler must be one of {sorted(SCHEDULERS)}")
    if model_type.is_lora and not epochs:
        raise ValueError(f"catalog entry {model_id!r}: a LoRA entry needs at least one epoch")
    if source.startswith(_URL_PREFIXES) and not raw.get("md5"):
        raise ValueError(f"catalog entry {model_id!r}: a downloaded file needs its md5")
    return ModelEntry(
        id=model_id,
        type=model_type,
        source=source,
        description=raw.get("description", ""),
        guidance_default=None if default is None else float(default),
        guidance=guidance,
        size=_range(raw.get("size"), model_type.family.size, "size", model_id),
        compliant_model_ids=tuple(raw.get("compliantModelIds", ())),
        epochs=epochs,
        weight_name=raw.get("weightName", "{epoch}.safetensors"),
        scheduler=raw.get("scheduler"),
        md5=raw.get("md5"),
        native_resolution=_native_resolution(raw, model_type.family, model_id),
        default_steps=int(raw["defaultSteps"]) if "defaultSteps" in raw else None,
    )


def _native_resolution(raw: dict, family: Family, model_id: str) -> int | None:
    value = raw.get("nativeResolution")
    if value is None:
        return None
    if family.native_resolution is None or int(value) not in family.size:
        raise ValueError(f"catalog entry {model_id!r}: nativeResolution is for the families that have one, "
                         f"within their size range {family.size}")
    return int(value)


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
