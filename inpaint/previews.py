"""Cheap latent -> RGB previews of a running denoising, without a VAE decode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

# side_by_side serves every surface; only the latent previews need torch, and a diffusion run has imported it.
if TYPE_CHECKING:
    import torch

# Least-squares fits of RGB on each family's (scaled) latent channels, the widely used community
# approximations for live previews: rows are latent channels, columns R, G, B; output is in [-1, 1].
_SD15 = ([[0.3512, 0.2297, 0.3227],
          [0.3250, 0.4974, 0.2350],
          [-0.2829, 0.1762, 0.2721],
          [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0])
_SDXL = ([[0.3651, 0.4232, 0.4341],
          [-0.2533, -0.0042, 0.1068],
          [0.1076, 0.1111, -0.0362],
          [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011])
_FLUX = ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
          [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
          [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
          [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
          [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
          [-0.1262, -0.0982, -0.0778]], [-0.0329, -0.0718, -0.0851])
RGB_FACTORS = {"sd-1_5": _SD15, "sd-xl": _SDXL, "flux.1": _FLUX}
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


def latents_to_preview(family: str, latents: torch.Tensor, *, height: int, width: int) -> list[Image.Image]:
    """One RGB image per sample, at latent size (1/8 of height x width)."""
    import torch

    if family not in RGB_FACTORS:
        raise ValueError(f"no latent preview for family {family!r}; one of {', '.join(RGB_FACTORS)}")
    latents = latents.detach().to("cpu", torch.float32)
    if family == "flux.1":
        latents = unpack_flux_latents(latents, height=height, width=width)
    channels = latents.shape[1]
    factors, bias = RGB_FACTORS[family]
    if channels == len(factors):
        weight, offset = torch.tensor(factors), torch.tensor(bias)
    else:
        # A model with another latent width (tiny test models): show its first channels as RGB.
        weight, offset = torch.eye(channels, 3), torch.zeros(3)
    rgb = torch.einsum("bchw,cr->bhwr", latents, weight) + offset
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(np.ascontiguousarray(image), "RGB") for image in pixels]
