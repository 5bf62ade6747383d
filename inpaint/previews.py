"""Cheap latent -> RGB previews of a running denoising, without a VAE decode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

# side_by_side serves every surface; only the latent previews need torch, and a diffusion run has imported it.
if TYPE_CHECKING:
    import torch

    from .families.diffusion import Diffusers

VAE_SCALE = 8  # every family's VAE downsamples 8x


def side_by_side(images: list[Image.Image], *, gap: int = 0) -> Image.Image:
    """The previews of one micro-batch in a row, on white: one image per step, whatever the batch."""
    strip = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1),
                              max(im.height for im in images)), (255, 255, 255))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width + gap
    return strip


def unpack_flux_latents(latents: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """(B, seq, C*4) packed Flux latents -> (B, C, H/8, W/8); Flux packs each 2x2 patch into channels."""
    batch, _, packed = latents.shape
    rows, cols = height // (VAE_SCALE * 2), width // (VAE_SCALE * 2)
    grid = latents.reshape(batch, rows, cols, packed // 4, 2, 2)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(batch, packed // 4, rows * 2, cols * 2)


def latents_to_preview(family: Diffusers, latents: torch.Tensor, *, height: int, width: int) -> list[Image.Image]:
    """One RGB image per sample, at latent size (1/8 of height x width), from the family's `latent_rgb` fit."""
    import torch

    latents = latents.detach().to("cpu", torch.float32)
    if family.packs_latents:
        latents = unpack_flux_latents(latents, height=height, width=width)
    channels = latents.shape[1]
    factors, bias = family.latent_rgb
    if channels == len(factors):
        weight, offset = torch.tensor(factors), torch.tensor(bias)
    else:
        # A model with another latent width (tiny test models): show its first channels as RGB.
        weight, offset = torch.eye(channels, 3), torch.zeros(3)
    rgb = torch.einsum("bchw,cr->bhwr", latents, weight) + offset
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(np.ascontiguousarray(image), "RGB") for image in pixels]
