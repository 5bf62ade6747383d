"""Test pictures made here: photo-like images, rectangular masks, data URLs."""

import base64
import io

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: neither flat (hides bugs) nor pure noise (unlike a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base_np = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
    noisy_np = base_np + rng.normal(0, 12, size=base_np.shape)
    return Image.fromarray(np.clip(noisy_np, 0, 255).astype(np.uint8), "RGB")


def rect_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"
