"""What a model family states about itself and what it does: load a model, then run a micro-batch (inpainting
families) or select an object (segmentation families)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from ..catalog import ModelEntry
    from ..pipelines import PipelineCache
    from ..schema import ResolvedRequest


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def clamp(self, value: float) -> float:
        return max(self.low, min(self.high, value))


@dataclass(frozen=True)
class Prompt:
    """What to select in a picture: clicks (x, y, label 1 to add or 0 to remove), a box, a text, in its pixels."""

    points: tuple[tuple[float, float, int], ...] = ()
    box: tuple[float, float, float, float] | None = None  # left, top, right, bottom
    text: str | None = None
    multimask: bool = False  # a model with several candidate masks answers its best-scored one


@dataclass(frozen=True)
class Selection:
    mask: Image.Image  # "L", 255 = selected, the picture's size
    score: float | None  # the model's own estimate of the mask's IoU; None for a model without one


@dataclass(frozen=True)
class GpuCost:
    """Seconds of one call of a family's model on a ZeroGPU slice (see inpaint/zerogpu.py's cost model)."""

    call_s: float  # per call: prompt encoding, scheduler set-up, the worker's start
    step_s_per_mp: float  # one denoising step of one sample, per megapixel of the processing size
    sample_s_per_mp: float  # per sample outside the steps: VAE encode and decode, saving, per megapixel
    load_s: float = 0.0  # a model not placed at startup: read from disk and moved to the device


# After each step of a family that works in steps: (step, steps, previews) -> whether to stop now. `previews`
# makes the latent previews of the micro-batch when called (None: the family has none); it costs a little,
# so only a caller that shows them calls it.
OnStep = Callable[[int, int, "Callable[[], list[Image.Image]] | None"], bool]


@dataclass(frozen=True)
class Family:
    """A kind of model: its capabilities, asked by validation, the engine, /models, the CLI and the studio,
    and its work. Subclasses implement `load`, and `run` (inpainting) or `select` (segmentation); instances are
    registered in `families.FAMILIES`."""

    name: str  # the catalog's model type; a family with LoRA support also has "<name>-lora"
    title: str  # how messages name its models ("Flux", "PatchMatch")
    guidance_default: float = 0.0
    guidance: Range = Range(0, 20)
    # Width and height the family accepts; classical ones have a range too: their cost grows with the pixels.
    size: Range = Range(64, 8192)
    native_resolution: int | None = None  # None: works on the region around the mask at its own size
    size_multiple: int = 1  # what the model's internals need (a VAE's 1/8, Flux packs 2x2 more)
    scheduler: str | None = None  # the usual scheduler; None for families that do not denoise in steps
    scheduler_kind: str | None = None  # which rows of diffusion.SCHEDULERS can drive it
    uses_prompt: bool = False
    uses_negative_prompt: bool = False
    negative_prompt_strength: bool = False  # Flux-dev based: the field exists, the negative prompt is inactive
    has_previews: bool = False
    seeded: bool = False  # whether the seed changes the result; if not, one sample is computed
    # Pixels the mask is grown by, then feathered inward by, for the merge. Diffusion regenerates the whole crop,
    # whose pixels all differ a little from the original: the seam needs a soft band. Classical inpainting and
    # erasers keep every known pixel and fill exactly the drawn mask: a band would only blur the edge.
    seam_px: int = 0
    has_weights: bool = False  # loaded once into the pipeline cache and run on the device, under its lock
    supports_lora: bool = False
    cuda_dtype: str = "float32"  # the weights' dtype on a GPU, a name in torch
    # A segmentation family names the prompts it reads ("points", "box", "text"): it selects objects, it does not
    # inpaint. Empty for the inpainting families.
    selects: frozenset[str] = frozenset()
    hub_marker: str = "model_index.json"  # the file of a Hub repo whose presence in the cache means "downloaded"
    gpu_cost: GpuCost = GpuCost(call_s=1.0, step_s_per_mp=0.0, sample_s_per_mp=0.3)  # a CPU family's time

    @property
    def denoises(self) -> bool:
        """Runs denoising steps: takes strength, numInferenceSteps, scheduler and guidance."""
        return self.scheduler_kind is not None

    def unavailable(self, entry: ModelEntry) -> str | None:
        """Why this machine cannot run `entry` (a missing package), found without loading anything; None if
        nothing is known against it. Downloads are checked when the model loads."""
        return None

    def load(self, entry: ModelEntry, cache: PipelineCache) -> Any:
        """What `run` takes as `model`. For a family with weights the pipeline cache calls this once, on the
        CPU, moves the result to its device with `.to(device)` and hands `run` its LoadedPipeline; otherwise
        the engine calls it per request and it must be cheap."""
        raise NotImplementedError

    def run(self, model: Any, request: ResolvedRequest, regions: list[Image.Image], masks: list[Image.Image],
            seeds: list[int], on_step: OnStep) -> list[Image.Image]:
        """One micro-batch of crops: for each region (with its binary, 0/255, mask and its seed) an image of the
        processing size. Crops of one sample share its seed; a family with a native resolution gets them all
        at the request's width and height."""
        raise NotImplementedError

    def select(self, model: Any, image: Image.Image, prompt: Prompt) -> Selection:
        """A segmentation family's one job: the object `prompt` points at in the RGB `image`."""
        raise NotImplementedError

    def notes(self, model: Any, request: ResolvedRequest) -> list[str]:
        """What only the loaded model can tell the user about the request (a prompt longer than it reads)."""
        return []
