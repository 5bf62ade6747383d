"""The README's commands, run as written: the curl round trip against a real server, on a 2 MB photograph; the batch
and grid commands on scikit-image's photographs."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gradio
import numpy as np
import pytest
from PIL import Image

from inpaint.api import create_app
from tests.support.api import serve
from tests.support.figures import figure_path
from tests.support.images import rect_mask

README = Path(__file__).resolve().parent.parent / "README.md"
# A real photograph shipped with a runtime dependency (no download), enlarged with grain to a 2 MB PNG.
PHOTO = Path(gradio.__file__).parent / "media_assets" / "images" / "tower.jpg"
SHEET = README.parent / "tests" / "screenshots" / "grid-coffee.png"


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


def batch_and_grid_script() -> str:
    text = README.read_text()
    start = text.index("## Batches over folders and grids of settings")
    section = text[start:text.index("\n## ", start)]  # to the next section, whichever it is
    return "\n".join(line[4:] for line in section.splitlines() if line.startswith("    "))


@pytest.mark.figure  # draws a README picture: `python -m bench.figures`
def test_the_readme_batch_and_grid_commands_make_its_contact_sheet(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(README.parent),
           "INPAINT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["bash", "-e", "-c", batch_and_grid_script()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(text) for text in (tmp_path / "results" / "results.jsonl").read_text().splitlines()]
    assert sorted(line["picture"] for line in lines) == ["brick.png", "chelsea.png", "coffee.png"]
    assert all(line["status"] == "success" and len(line["files"]) == 2 for line in lines)
    assert len(list((tmp_path / "results").glob("*.png"))) == 6
    cells = [json.loads(text) for text in (tmp_path / "grid" / "results.jsonl").read_text().splitlines()]
    assert len(cells) == 6 and all(cell["status"] == "success" for cell in cells)
    # The README's picture is this sheet (its times aside): the same layout.
    assert Image.open(tmp_path / "grid" / "grid.png").size == Image.open(SHEET).size
    shutil.copyfile(tmp_path / "grid" / "grid.png", figure_path(SHEET.name))
