"""The diffusers inpainting families: Stable Diffusion 1.5, SDXL and Flux Fill. torch and diffusers are imported
by the first run, never at import."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from .. import imageops
from ..previews import latents_to_preview
from .base import Family, GpuCost, Range

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from ..pipelines import LoadedPipeline

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

# Flux reads the prompt with T5 up to the pipeline's default max_sequence_length (its CLIP encoder gives only a
# pooled summary); the other families read it with CLIP, up to the tokenizer's model_max_length.
FLUX_MAX_SEQUENCE_LENGTH = 512

# Least-squares fits of RGB on each family's (scaled) latent channels, the widely used community
# approximations for live previews: rows are latent channels, columns R, G, B; output is in [-1, 1].
_SD15_RGB = ([[0.3512, 0.2297, 0.3227],
              [0.3250, 0.4974, 0.2350],
              [-0.2829, 0.1762, 0.2721],
              [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0])
_SDXL_RGB = ([[0.3651, 0.4232, 0.4341],
              [-0.2533, -0.0042, 0.1068],
              [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011])
_FLUX_RGB = ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
              [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
              [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
              [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
              [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
              [-0.1262, -0.0982, -0.0778]], [-0.0329, -0.0718, -0.0851])


def make_scheduler(loaded: LoadedPipeline, name: str | None = None):
    """A new scheduler for one request (`name`: the resolved request's, which schema.resolve checked can drive
    the model); the cached pipeline's own scheduler is only read."""
    config = loaded.pipe.scheduler.config
    if name is None:
        return type(loaded.pipe.scheduler).from_config(config)
    import diffusers

    return getattr(diffusers, name).from_config(config, **SCHEDULERS[name][1])


def request_pipeline(loaded: LoadedPipeline, scheduler) -> DiffusionPipeline:
    """A pipeline object for one request: the cached modules (no weight copy) with its own scheduler.

    Not `from_pipe`: it costs ~14 ms on an SD 1.5-size pipeline (fine), but it re-runs `__init__` and
    casts every shared module with `.to(dtype)`, which logs a warning per module on every request and
    would undo a component deliberately kept in another dtype. A shallow copy is the cheapest correct
    thing (<1 ms): assigning `scheduler` on it gives the copy its own config dict, and per-call state
    (`_guidance_scale`, `_interrupt`, ...) is then set on the copy only.
    """
    pipe = copy.copy(loaded.pipe)
    pipe.scheduler = scheduler
    return pipe


@dataclass(frozen=True)
class Diffusers(Family):
    """A diffusers inpainting pipeline class, loaded by the pipeline cache through `from_pretrained`."""

    pipeline_class: str = ""  # a class of the diffusers package
    latent_rgb: tuple = ((), ())  # the preview fit: (rows per latent channel, bias)
    packs_latents: bool = False  # Flux packs 2x2 latent patches into channels
    prompt_tokenizer: str = "tokenizer"  # the pipeline's tokenizer whose limit cuts the prompt
    prompt_max_tokens: int | None = None  # a limit of the pipeline below the tokenizer's own

    def load(self, entry, cache):
        return cache.load_diffusers(entry, self.pipeline_class)

    def run(self, model, request, regions, masks, seeds, on_step) -> list[Image.Image]:
        """One pipeline call for the micro-batch, with one generator per crop so each sample can be replayed."""
        import torch

        # Sizes in the family's multiple; the engine resizes the outputs back.
        multiple = self.size_multiple
        width, height = (max(multiple, side // multiple * multiple) for side in (request.width, request.height))
        pipe = request_pipeline(model, make_scheduler(model, request.scheduler))

        def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            latents = callback_kwargs["latents"]
            if on_step(step + 1, pipe.num_timesteps,
                       lambda: latents_to_preview(self, latents, height=height, width=width)):
                pipe._interrupt = True  # diffusers' own flag: the loop stops before the next step
            return callback_kwargs

        # One image per crop: the pipelines encode image i with generator i, so each sample draws its random
        # numbers exactly as it would alone (with one shared image, generator 0 encodes it for the whole batch
        # and sample i of a batch differs from a run with seed + i).
        kwargs = dict(
            prompt=[request.prompt] * len(seeds),
            image=[imageops.resize(region, (width, height)) for region in regions],
            mask_image=[imageops.resize(mask, (width, height), mask=True) for mask in masks],
            width=width,
            height=height,
            strength=request.strength,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance,
            generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=on_step_end,
            output_type="pil",
        )
        if self.uses_negative_prompt:
            kwargs["negative_prompt"] = [request.negative_prompt] * len(seeds) if request.negative_prompt else None
        return pipe(**kwargs).images

    def notes(self, model, request) -> list[str]:
        """What the text encoder cuts off silently (diffusers only logs it): one message per prompt too long."""
        tokenizer = getattr(model.pipe, self.prompt_tokenizer)
        limit = min(tokenizer.model_max_length, self.prompt_max_tokens or tokenizer.model_max_length)
        messages = []
        for name, text in (("prompt", request.prompt), ("negativePrompt", request.negative_prompt)):
            if not text:
                continue
            # Counted as the pipeline counts: start and end tokens included.
            count = len(tokenizer(text, truncation=False, verbose=False).input_ids)
            if count > limit:
                messages.append(f"{name} is {count} tokens; the text encoder reads the first {limit}, "
                                "the rest was ignored")
        return messages


_DIFFUSION = dict(uses_prompt=True, has_previews=True, seeded=True, seam_px=8, has_weights=True,
                  supports_lora=True, size_multiple=8)

SD15 = Diffusers("sd-1_5", "Stable Diffusion 1.5", **_DIFFUSION, guidance_default=7.5, size=Range(64, 1024),
                 native_resolution=512, scheduler="PNDMScheduler", scheduler_kind="sd", uses_negative_prompt=True,
                 cuda_dtype="float16", pipeline_class="StableDiffusionInpaintPipeline", latent_rgb=_SD15_RGB,
                 gpu_cost=GpuCost(call_s=2.0, step_s_per_mp=0.25, sample_s_per_mp=0.8, load_s=20.0))
SDXL = Diffusers("sd-xl", "SDXL", **_DIFFUSION, guidance_default=6.0, size=Range(512, 2048),
                 native_resolution=1024, scheduler="EulerDiscreteScheduler", scheduler_kind="sd",
                 uses_negative_prompt=True, cuda_dtype="float16", pipeline_class="StableDiffusionXLInpaintPipeline",
                 latent_rgb=_SDXL_RGB,
                 gpu_cost=GpuCost(call_s=3.0, step_s_per_mp=0.30, sample_s_per_mp=1.0, load_s=40.0))
# Flux overflows in fp16, so it takes bf16 as its weights were trained. Flux Fill has no negative prompt; the
# contract keeps negativePromptStrength for Flux-dev based models.
FLUX = Diffusers("flux.1", "Flux", **{**_DIFFUSION, "size_multiple": 16}, guidance_default=3.5,
                 guidance=Range(0, 10), size=Range(64, 2048), native_resolution=1024,
                 scheduler="FlowMatchEulerDiscreteScheduler", scheduler_kind="flow", negative_prompt_strength=True,
                 cuda_dtype="bfloat16", pipeline_class="FluxFillPipeline", latent_rgb=_FLUX_RGB, packs_latents=True,
                 prompt_tokenizer="tokenizer_2", prompt_max_tokens=FLUX_MAX_SEQUENCE_LENGTH,
                 gpu_cost=GpuCost(call_s=5.0, step_s_per_mp=0.90, sample_s_per_mp=1.0, load_s=90.0))
