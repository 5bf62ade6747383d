"""The studio's examples, made here from pictures that ship with its packages (nothing is downloaded)."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

# A real photograph that ships with gradio, a runtime dependency: a cheetah running across a blurred plain.
CHEETAH = Path(gr.__file__).parent / "media_assets" / "images" / "cheetah.jpg"
CHEETAH_BOX = (76, 108, 392, 246)  # around the animal, its tail and its legs


def draw_example(folder: Path) -> dict[str, Path]:
    """A small landscape drawn here (no download), with masks over its sun and its house."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = 320, 240
    y_np = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky_np = (1 - y_np) * np.array([96, 150, 230], np.float32) + y_np * np.array([250, 214, 170], np.float32)
    image = Image.fromarray(np.broadcast_to(sky_np, (height, width, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((222, 28, 272, 78), fill=(255, 226, 92))  # sun
    draw.ellipse((-80, 150, 200, 330), fill=(86, 150, 78))  # far hill
    draw.ellipse((120, 160, 420, 360), fill=(64, 128, 60))  # near hill
    draw.rectangle((60, 150, 120, 200), fill=(236, 226, 204))  # house
    draw.polygon([(52, 152), (90, 118), (128, 152)], fill=(170, 60, 50))  # roof
    draw.rectangle((82, 172, 98, 200), fill=(110, 72, 44))  # door
    masks = {"sun": (212, 18, 282, 88), "house": (44, 108, 136, 208)}
    paths = {"image": folder / "landscape.png"}
    image.save(paths["image"])
    for name, box in masks.items():
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        paths[name] = folder / f"landscape-mask-{name}.png"
        mask.save(paths[name])
    return paths


def prune(folder: Path, max_age_s: float) -> None:
    cutoff = time.time() - max_age_s
    for path in folder.glob("*"):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)



def make_examples(folder: Path, catalog) -> list[dict]:
    """Each example's picture, its mask (an L image, white = repaint), a prompt, the model it is made for (picked
    with it: a removal on a test model paints noise), and a label that names both."""
    drawn = draw_example(folder)
    patchmatch_runs = "patchmatch" in catalog and catalog.get("patchmatch").availability() == "offline"
    remover = "patchmatch" if patchmatch_runs else "opencv-telea"
    rows = [{"label": "Remove the sun", "image": drawn["image"], "mask": drawn["sun"], "prompt": "", "model": remover},
            {"label": "The house becomes a barn", "image": drawn["image"], "mask": drawn["house"],
             "prompt": "a red barn with a tall silo", "model": "tiny-sd-1_5"}]
    if CHEETAH.exists():
        with Image.open(CHEETAH) as photo:
            photo.convert("RGB").save(folder / "cheetah.png")
            mask = Image.new("L", photo.size, 0)
        ImageDraw.Draw(mask).ellipse(CHEETAH_BOX, fill=255)
        mask.save(folder / "cheetah-mask.png")
        rows.insert(0, {"label": "Remove the cheetah", "image": folder / "cheetah.png",
                        "mask": folder / "cheetah-mask.png", "prompt": "", "model": remover})
    return [{**row, "label": f"{row['label']} · {row['model']}"} for row in rows if row["model"] in catalog]
