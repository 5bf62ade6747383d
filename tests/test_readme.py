"""The README's commands, run as written: the curl round trip against a real server, on a 2 MB photograph."""

import re
import shutil
import subprocess
from pathlib import Path

import gradio
import numpy as np
import pytest
from PIL import Image

from inpaint.api import create_app
from tests.images import rect_mask
from tests.test_api import engine, serve  # noqa: F401 (fixture)

README = Path(__file__).resolve().parent.parent / "README.md"
# A real photograph shipped with a runtime dependency (no download), enlarged with grain to a 2 MB PNG.
PHOTO = Path(gradio.__file__).parent / "media_assets" / "images" / "tower.jpg"


def round_trip_script() -> str:
    text = README.read_text()
    section = text[text.index("### A round trip with curl"):text.index("On macOS use")]
    block = [line[4:] for line in section.splitlines() if line.startswith("    ") or not line.strip()]
    return "\n".join(block).strip()


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the round trip needs curl and jq")
def test_the_readme_round_trip_works_on_a_2_mb_photo(tmp_path, engine):
    photo = Image.open(PHOTO).convert("RGB").resize((1200, 1900), Image.Resampling.LANCZOS)
    grain_np = np.random.default_rng(0).normal(0, 6, (1900, 1200, 3))
    photo = Image.fromarray(np.clip(np.asarray(photo) + grain_np, 0, 255).astype(np.uint8))
    photo.save(tmp_path / "photo.png")
    assert (tmp_path / "photo.png").stat().st_size > 2_000_000  # past what one command-line argument may hold
    rect_mask(1200, 1900, (500, 900, 700, 1100)).save(tmp_path / "mask.png")
    with serve(create_app(engine, api_key=None, with_ui=False)) as url:
        script = round_trip_script().replace("BASE=http://127.0.0.1:7860", f"BASE={url}", 1)
        done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "INPAINT_API_KEY": ""})
    assert done.returncode == 0, done.stderr
    assert re.search(r"^success 1(\.0)?$", done.stdout, re.MULTILINE), done.stdout
    [result] = [path for path in tmp_path.glob("asset_*.png")]
    result_np, photo_np = np.asarray(Image.open(result).convert("RGB")), np.asarray(photo)
    assert result_np.shape == photo_np.shape
    assert np.array_equal(result_np[:800], photo_np[:800])  # far from the mask: the photo itself
