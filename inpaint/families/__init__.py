"""Model families as plug-ins: the registry. Each family states what its models can do and does their work
(see base.Family); the rest of the code asks it, never compares family names. Adding a family is one module
here, its instance in FAMILIES, and rows in the catalog. Inpainting and segmentation families share it: a
family that `selects` answers POST /segment, the others inpaint."""

from __future__ import annotations

from .base import Family, GpuCost, OnStep, Prompt, Range, Selection
from .classical import OpenCV, PatchMatch
from .diffusion import FLUX, SCHEDULERS, SD15, SDXL
from .erasers import LAMA, MI_GAN
from .selectors import GRABCUT, SAM2, SAM3

OPENCV = OpenCV("opencv", "OpenCV")
PATCHMATCH = PatchMatch("patchmatch", "PatchMatch", seeded=True)

FAMILIES: dict[str, Family] = {family.name: family for family in (
    OPENCV, PATCHMATCH, LAMA, MI_GAN, SD15, SDXL, FLUX, GRABCUT, SAM2, SAM3,
)}


def get(name: str) -> Family:
    return FAMILIES[name]


__all__ = ["FAMILIES", "SCHEDULERS", "Family", "GpuCost", "OnStep", "Prompt", "Range", "Selection", "get"]
