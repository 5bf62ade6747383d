"""Hugging Face ZeroGPU: the models placed at startup, and the GPU time each call asks for.

On ZeroGPU the GPU function (`ui.device.run_on_device`) runs in a forked worker that holds a GPU slice for the
`duration` it asked for; its arguments and everything it yields are pickled across that boundary. The
main process has no GPU, but the `spaces` package emulates CUDA there, so the models are loaded and
placed on `cuda` once at startup (`preload`) and the worker finds them ready instead of loading inside
the call. Elsewhere nothing here changes anything: loading stays lazy and no duration is asked for.

The duration is a guard, not a charge: a visitor is charged the time the call really took, but a call
is refused when the visitor's quota left is below its duration, aborted when it runs past it, and
queued behind shorter ones. So the estimate is a calibrated time times a margin, between a floor and a
ceiling (2 minutes by default: an anonymous visitor's daily quota, so anyone can run the defaults).

Cost model, per family (the pipeline's weights) and per device profile:

    seconds = call_s + samples * MP * (sample_s_per_mp + steps_run * step_s_per_mp) [+ load_s]

where MP is the processing size (width x height) in megapixels, steps_run is the denoising steps the
pipeline really runs (steps x strength, as diffusers' img2img-style inpainting does), and load_s is paid
only when the model was not placed at startup. Each family states its cost (`Family.gpu_cost`) for a
ZeroGPU "large" slice (half an H200, about an A100 in throughput) with fp16/bf16 weights and
classifier-free guidance as the families use it; they are estimates from published throughputs with
headroom, to be refined from Space logs.
`bench/gpu_time.py` fits the same model on the CPU with the tiny models and reports how well it predicts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from . import families
from .families import GpuCost
from .settings import env_int

if TYPE_CHECKING:
    from .pipelines import PipelineCache
    from .schema import ResolvedRequest

DEFAULT_DURATION_S = 60  # what @spaces.GPU asks for without a duration


MARGIN = 1.5  # over the calibrated time: a call that outruns its duration is aborted

FLOOR_S = env_int("INPAINT_SPACES_MIN_DURATION", 10, 1, 300)
CEILING_S = max(FLOOR_S, env_int("INPAINT_SPACES_MAX_DURATION", 120, 1, 300))  # ZeroGPU refuses more than 300 s
# Samples one request may ask for on a Space: each one costs the visitor GPU time from a small daily quota.
MAX_SAMPLES = env_int("INPAINT_SPACES_MAX_SAMPLES", 4, 1, 128)


def is_zerogpu() -> bool:
    """Whether this process runs on ZeroGPU, as the `spaces` package decides it (SPACES_ZERO_GPU)."""
    try:
        from spaces.config import Config
    except ImportError:
        return False
    return bool(getattr(Config, "zero_gpu", False))


def preload_ids() -> list[str]:
    """The default model (INPAINT_DEFAULT_MODEL; app.py names a GPU one on ZeroGPU), then INPAINT_PRELOAD's
    comma-separated ids, each once."""
    from . import settings

    listed = [name.strip() for name in os.environ.get("INPAINT_PRELOAD", "").split(",")]
    return list(dict.fromkeys(name for name in [settings.DEFAULT_MODEL, *listed] if name))


def preload(pipelines: PipelineCache, ids: Iterable[str] | None = None, *, log=print) -> list[str]:
    """Load `ids` (default: `preload_ids()`) into the pipeline cache, placed on its device.

    A LoRA places its base model; classical models and unknown ids are skipped (said in the log), so a
    typo in INPAINT_PRELOAD does not stop the Space. At most the cache's size are kept. Returns the ids
    of the pipelines placed, in order."""
    catalog, placed = pipelines.catalog, []
    for model_id in preload_ids() if ids is None else ids:
        if model_id not in catalog:
            log(f"preload: {model_id!r} is not in the catalog; skipped")
            continue
        entry = catalog.get(model_id)
        if not entry.family.has_weights:  # nothing to place
            continue
        target = entry.compliant_model_ids[0] if entry.type.is_lora and entry.compliant_model_ids else model_id
        if entry.type.is_lora and target == model_id:
            log(f"preload: {model_id!r} is a LoRA without a base model; skipped")
            continue
        if target in placed:
            continue
        if len(placed) >= pipelines.max_pipelines:
            log(f"preload: {target!r} skipped: the cache holds {pipelines.max_pipelines} "
                "pipelines (INPAINT_MAX_PIPELINES)")
            continue
        pipelines.get(target)
        placed.append(target)
    return placed


# ---- the GPU time of one call -----------------------------------------------------------------

def steps_run(steps: int, strength: float) -> int:
    """The denoising steps an inpainting pipeline runs for `steps` at `strength` (as diffusers counts them)."""
    return max(1, min(steps, int(steps * strength)))


def estimate_seconds(family: str, *, steps: int, strength: float, samples: int, width: int, height: int,
                     concepts: int = 0, loading: bool = False,
                     costs: Mapping[str, GpuCost] | None = None) -> float:
    """The calibrated time of one call (no margin, no bounds): the cost model of this module's docstring.
    `costs` by family name replaces the families' own (a calibration on another device)."""
    cost = (costs or {}).get(family) or families.get(family).gpu_cost
    mp = width * height / 1e6
    per_sample = mp * (cost.sample_s_per_mp + steps_run(steps, strength) * cost.step_s_per_mp)
    # A concept (LoRA) is loaded into the pipeline per call: about a second each on any family.
    return cost.call_s + max(1, samples) * per_sample + concepts * 1.0 + (cost.load_s if loading else 0.0)


def request_seconds(request: ResolvedRequest, *, loading: bool = False,
                    costs: Mapping[str, GpuCost] | None = None) -> float:
    """`estimate_seconds` for a resolved request."""
    concepts = sum(1 for c in request.concepts if getattr(c, "model_id", None) != request.model_id)
    return estimate_seconds(request.family, steps=request.num_inference_steps, strength=request.strength,
                            samples=request.num_samples, width=request.width, height=request.height,
                            concepts=concepts, loading=loading, costs=costs)


def bounded(seconds: float, *, margin: float = MARGIN, floor: int = FLOOR_S, ceiling: int = CEILING_S) -> int:
    """Whole seconds to ask for: `seconds` times the margin, rounded up, within [floor, ceiling]."""
    return max(floor, min(ceiling, math.ceil(seconds * margin)))


def gpu_duration(request: ResolvedRequest, *, loading: bool = False) -> int:
    """The duration one GPU call asks ZeroGPU for (the wrapper in ui/device.py adapts it to the call's arguments)."""
    return bounded(request_seconds(request, loading=loading))


# ---- the per-Space cap on numSamples ----------------------------------------------------------

def cap_samples(samples: float | None, *, default: int,
                limit: int = MAX_SAMPLES) -> tuple[float | None, str | None]:
    """numSamples as asked (None: the contract's `default`) held to `limit`; the note says why it was cut."""
    asked = default if samples is None else int(samples)
    if asked <= limit:
        return samples, None
    return limit, (f"numSamples: this Space runs at most {limit} samples per request (asked {asked}) so one "
                   "request fits a visitor's GPU quota; duplicate the Space to run more")
