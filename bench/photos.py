"""Real photographs for the benchmark, from scikit-image's wheel (its `data/` folder ships them): no download.

Each is read as RGB (brick is greyscale: its grey copied to three channels). `hole` draws a seeded elliptical
mask the size of an object one would remove, `scratch` a thin one at an angle.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Name -> file in skimage/data/. Sizes: chelsea 451x300, coffee 600x400, rocket 640x427, brick and astronaut 512x512.
FILES = {"chelsea": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg", "brick": "brick.png",
         "astronaut": "astronaut.png"}
NAMES = tuple(FILES)


def data_dir() -> Path:
    """scikit-image's data folder, found without importing the package (nor fetching anything)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed: the benchmark's real photographs come with its wheel")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def path(name: str) -> Path:
    found = data_dir() / FILES[name]
    if not found.is_file():
        raise RuntimeError(f"{found} is missing from scikit-image's wheel")
    return found


def load(name: str) -> Image.Image:
    with Image.open(path(name)) as image:
        return image.convert("RGB")


def crop(name: str, side: int) -> Image.Image:
    """A `side` x `side` crop from the photo's centre; a photo smaller than that is first enlarged (Lanczos)
    so that its short side is `side`."""
    image = load(name)
    scale = side / min(image.size)
    if scale > 1:
        image = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)),
                             Image.Resampling.LANCZOS)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def hole(size: tuple[int, int], rng: np.random.Generator, *, area: tuple[float, float] = (0.05, 0.15),
         margin: int = 8) -> Image.Image:
    """A filled ellipse (0/255, hard edges) covering a fraction of the image drawn from `area`, of random
    aspect ratio (0.6..1.6) and position, `margin` px inside the border."""
    width, height = size
    pixels = rng.uniform(*area) * width * height
    aspect = rng.uniform(0.6, 1.6)
    semi_x = min(math.sqrt(pixels * aspect / math.pi), width / 2 - margin - 1)
    semi_y = min(pixels / (math.pi * semi_x), height / 2 - margin - 1)
    cx = rng.uniform(margin + semi_x, width - margin - semi_x)
    cy = rng.uniform(margin + semi_y, height - margin - semi_y)
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse((cx - semi_x, cy - semi_y, cx + semi_x, cy + semi_y), fill=255)
    return mask


def scratch(size: tuple[int, int], rng: np.random.Generator, *, area: tuple[float, float] = (0.005, 0.03),
            aspect: tuple[float, float] = (8.0, 20.0), margin: int = 8) -> Image.Image:
    """A thin ellipse at a random angle (0/255, hard edges): a scratch or a wire, covering a fraction of the image
    drawn from `area`, its long axis `aspect` times its short one, `margin` px inside the border."""
    width, height = size
    pixels = rng.uniform(*area) * width * height
    ratio = rng.uniform(*aspect)
    angle = rng.uniform(0, math.pi)
    # The long semi-axis fits the short side whatever the angle; a clipped one gives its area to the short axis.
    semi_long = min(math.sqrt(pixels * ratio / math.pi), min(width, height) / 2 - margin - 1)
    semi_short = pixels / (math.pi * semi_long)
    cos, sin = math.cos(angle), math.sin(angle)
    reach_x = math.hypot(semi_long * cos, semi_short * sin)
    reach_y = math.hypot(semi_long * sin, semi_short * cos)
    cx = rng.uniform(margin + reach_x, width - margin - reach_x)
    cy = rng.uniform(margin + reach_y, height - margin - reach_y)
    # ImageDraw's ellipses are axis-aligned: a rotated one is drawn as a fine polygon.
    points = [(cx + semi_long * math.cos(t) * cos - semi_short * math.sin(t) * sin,
               cy + semi_long * math.cos(t) * sin + semi_short * math.sin(t) * cos)
              for t in np.linspace(0, 2 * math.pi, 180, endpoint=False)]
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    return mask


def blob(size: tuple[int, int], rng: np.random.Generator, *, radius: tuple[float, float] = (0.15, 0.25),
         vertices: int = 48, margin: int = 8) -> Image.Image:
    """An irregular closed outline (0/255): a polygon whose distance from its centre swells and shrinks along three
    random harmonics, its mean radius a fraction of the short side drawn from `radius`."""
    width, height = size
    mean = rng.uniform(*radius) * min(size)
    t = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    swell = sum(rng.uniform(0.05, 0.15) * np.sin(k * t + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    reach = mean * (1 + swell)
    top = reach.max()
    cx, cy = rng.uniform(margin + top, width - margin - top), rng.uniform(margin + top, height - margin - top)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(list(zip(cx + reach * np.cos(t), cy + reach * np.sin(t))), fill=255)
    return mask


# Object photo -> background photo, pairs whose colours differ as a real object and its surroundings do.
COMPOSITES = (("chelsea", "brick"), ("coffee", "rocket"), ("astronaut", "brick"), ("rocket", "chelsea"))


def composite(object_name: str, background_name: str, side: int, rng: np.random.Generator
              ) -> tuple[Image.Image, Image.Image]:
    """An irregular piece of one photo pasted onto another (`side` x `side` crops of both): the picture and the
    exact mask of the object (0/255), a selection's ground truth."""
    truth = blob((side, side), rng)
    picture = crop(background_name, side)
    picture.paste(crop(object_name, side), (0, 0), truth)
    return picture, truth
