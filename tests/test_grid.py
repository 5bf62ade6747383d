"""`python -m inpaint grid` on a real photograph: every combination of the varied fields, the labelled contact sheet
and its offline report, resuming, a failing cell alone, bad --vary input, and the same cells from a server."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from skimage import data as photos

from inpaint import grid, imageops, sheet
from inpaint.api import create_app
from inpaint.client import Remote
from inpaint.errors import RequestError
from inpaint.runs import Local
from tests.support.api import serve

ROOT = Path(__file__).resolve().parents[1]
PAPER = np.array(sheet.PAPER)


def cat() -> Image.Image:
    """A real photograph (scikit-image's cat), cropped small."""
    return Image.fromarray(photos.chelsea()).crop((60, 30, 252, 174))


def mask() -> Image.Image:
    drawn = Image.new("L", (192, 144), 0)
    ImageDraw.Draw(drawn).ellipse((70, 40, 120, 90), fill=255)
    return drawn


def request(**fields) -> dict:
    return {"modelId": "patchmatch", "image": imageops.to_data_url(cat()), "mask": imageops.to_data_url(mask()),
            **fields}


def cli(*args: str, data: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "INPAINT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "inpaint", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def lines_of(out: Path) -> list[dict]:
    return [json.loads(text) for text in (out / "results.jsonl").read_text().splitlines()]


def runs(mask_np: np.ndarray) -> list[tuple[int, int]]:
    """The [start, end) spans where `mask_np` (1-D) is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask_np.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def tiles(picture: Image.Image, tile: tuple[int, int]) -> list[list[tuple[int, int, int, int]]]:
    """The boxes of the sheet's pictures, row by row: the spans of columns and of rows where most pixels are not
    paper and that are a tile long (the labels are thin strokes, the gaps paper)."""
    inked_np = np.any(np.asarray(picture) != PAPER, axis=-1)
    columns = [span for span in runs(inked_np.mean(axis=0) > 0.5) if span[1] - span[0] == tile[0]]
    rows = [span for span in runs(inked_np.mean(axis=1) > 0.5) if span[1] - span[0] == tile[1]]
    return [[(x0, y0, x1, y1) for x0, x1 in columns] for y0, y1 in rows]


def test_a_grid_of_models_and_seeds_draws_its_cells_with_labels_and_resumes(tmp_path):
    (tmp_path / "request.json").write_text(json.dumps(request()))
    out = tmp_path / "out"
    args = ("grid", str(tmp_path / "request.json"), "--vary", "modelId=patchmatch,opencv-telea", "--vary", "seed=1,2",
            "--out", str(out), "--crop")
    done = cli(*args, data=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert "4 of 4 cells succeeded" in done.stderr

    lines = lines_of(out)
    models = ("patchmatch", "opencv-telea")
    assert [line["cell"] for line in lines] == [{"modelId": model, "seed": seed} for model in models for seed in "12"]
    for line in lines:
        assert line["status"] == "success" and line["input"]["numSamples"] == 1  # one result per cell by default
        assert line["input"]["modelId"] == line["cell"]["modelId"] and line["seeds"] == [int(line["cell"]["seed"])]
        assert line["seamReports"][0]["outsideMaskMaxDiff"] == 0
    # PatchMatch is seeded, the Telea fill is not: the sheet shows what the seed changes.
    results = [np.asarray(Image.open(out / line["files"][0])) for line in lines]
    assert not np.array_equal(results[0], results[1]) and np.array_equal(results[2], results[3])

    # The sheet: models across, seeds down, each cell the region around the mask of its result.
    drawn = Image.open(out / "grid.png").convert("RGB")
    left, top, right, bottom = imageops.crop_box(mask())
    boxes = tiles(drawn, (sheet.TILE_PX, round(sheet.TILE_PX * (bottom - top) / (right - left))))
    assert [len(row) for row in boxes] == [2, 2]
    for line, result in zip(lines, results):
        column, row = ["patchmatch", "opencv-telea"].index(line["cell"]["modelId"]), int(line["cell"]["seed"]) - 1
        box = boxes[row][column]
        region = Image.fromarray(result).crop((left, top, right, bottom))
        expected = ImageOps.pad(region, (box[2] - box[0], box[3] - box[1]), color=sheet.EMPTY)
        assert np.array_equal(np.asarray(drawn.crop(box)), np.asarray(expected))
        # Its column's label above it, its row's label left of the first column.
        above = np.asarray(drawn.crop((box[0], box[1] - sheet.LABEL_PX - 6, box[2], box[1] - 2)))
        beside = np.asarray(drawn.crop((0, box[1], boxes[row][0][0] - 2, box[3])))
        assert (above != PAPER).any() and (beside != PAPER).any()

    # The report: every cell's settings, time, seam report and pictures, nothing fetched from elsewhere.
    page = (out / "index.html").read_text()
    assert not re.search(r"<script|https?://|//[a-z]", page, re.IGNORECASE)
    for source in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (out / source).is_file(), source
    for line in lines:
        assert f'src="{line["files"][0]}"' in page
        assert f'{line["seconds"]:.2f} s' in page and f'{line["seamReports"][0]["seamDeltaE"]:.2f}' in page
    assert page.count("<b>modelId</b> = patchmatch") == 2 and page.count("<b>seed</b> = 2") == 2

    # Again: nothing runs, no result is touched. One more seed: only its two cells run.
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("cell-*.png")}
    again = cli(*args, data=tmp_path / "data")
    assert again.returncode == 0 and "4 of 4 cells were done by an earlier run" in again.stderr
    assert {path: path.stat().st_mtime_ns for path in out.glob("cell-*.png")} == stamps
    more = cli(*args[:-4], "seed=1,2,3", "--out", str(out), data=tmp_path / "data")
    assert more.returncode == 0 and "4 of 6 cells were done by an earlier run" in more.stderr
    assert len(lines_of(out)) == 6 and all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())


def test_bad_vary_input_is_refused_naming_it_before_anything_runs(tmp_path, engine):
    base = request()
    cases = [
        (["strenght=0.5,0.7"], "--vary: 'strenght' is not a field of the inpaint request"),
        (["strength=0.5,lots"], "--vary strength: 'lots': Input should be a valid number"),
        (["strength=0.5,1.5"], "--vary strength: '1.5': Input should be less than or equal to 1"),
        (["colorMatch=none,sepia"], "--vary colorMatch: 'sepia': Input should be 'none', 'mean-std' or 'histogram'"),
        (["modelId=patchmatch,nope"], "--vary modelId: 'nope': unknown model"),
        (["strength"], "--vary: 'strength' must be FIELD=V1,V2,..."),
        (["strength=0.5,,0.7"], "--vary strength: '0.5,,0.7' must list values separated by commas, none empty"),
        (["mask=a,b"], "--vary: mask is an input"),
        (["seed=1,2", "seed=3"], "--vary: seed is varied twice"),
        ([f"{field}=1" for field in ("seed", "strength", "guidance", "numSamples")],
         "--vary: 4 fields: a grid varies at most 3"),
        ([f"seed={','.join(map(str, range(17)))}", f"strength={','.join(str(s / 100) for s in range(1, 17))}"],
         "--vary: 272 cells is more than 256: pass --yes"),
    ]
    for texts, words in cases:
        with pytest.raises(RequestError) as refused:
            grid.cells(base, [grid.axis(text) for text in texts], Local(engine), allow_many=False)
        assert str(refused.value).startswith(words), refused.value
    # A prompt with a comma, in quotes as in CSV.
    assert grid.axis('prompt="a cat, asleep",a dog').values == ("a cat, asleep", "a dog")

    # Through the command line: exit 2, one line, nothing made.
    out = tmp_path / "out"
    done = cli("grid", "-", "--vary", "strength=0.5,lots", "--out", str(out), data=tmp_path / "data",
               stdin=json.dumps(base))
    assert done.returncode == 2 and done.stderr == "error: --vary strength: 'lots': Input should be a valid number " \
                                                   "(got 'lots')\n"
    assert not out.exists()


@pytest.mark.torch
def test_cells_share_one_seed_and_a_failing_cell_fails_alone(tmp_path, engine, capsys):
    """A tiny diffusion model: without a seed, every cell gets the same one (cells differ by their settings alone);
    one step at strength 0.5 is no denoising step, refused for that cell only, naming the field."""
    base = request(modelId="tiny-sd-1_5", prompt="fur", width=64, height=64)
    axes = [grid.axis("strength=0.5,1.0"), grid.axis("numInferenceSteps=1,2")]
    runner = Local(engine)
    lines = grid.run(base, axes, grid.cells(base, axes, runner, allow_many=False), runner, tmp_path / "out")
    by_cell = {(line["cell"]["strength"], line["cell"]["numInferenceSteps"]): line for line in lines}
    failed = by_cell[("0.5", "1")]
    assert failed["status"] == "failure" and failed["field"] == "strength" and "no denoising step" in failed["error"]
    done = [line for line in lines if line is not failed]
    assert all(line["status"] == "success" for line in done)
    assert len({line["seeds"][0] for line in done}) == 1
    assert f"seed {done[0]['seeds'][0]} for every cell" in capsys.readouterr().err
    pictures = [np.asarray(Image.open(tmp_path / "out" / line["files"][0])) for line in done]
    assert not np.array_equal(pictures[0], pictures[1])
    assert "no denoising step" in (tmp_path / "out" / "index.html").read_text()
    assert Image.open(tmp_path / "out" / "grid.png").size[0] > 2 * sheet.TILE_PX


def test_a_server_runs_the_same_cells(tmp_path, engine):
    base = request(seed=4)
    axes = [grid.axis("modelId=patchmatch,opencv-ns")]
    local = grid.run(base, axes, grid.cells(base, axes, Local(engine), allow_many=False), Local(engine),
                     tmp_path / "local")
    with serve(create_app(engine, api_key=None, with_ui=False)) as url:
        remote = Remote(url)
        there = grid.run(base, axes, grid.cells(base, axes, remote, allow_many=False), remote, tmp_path / "remote")
    for here, other in zip(local, there):
        assert (other["cell"], other["status"], other["files"], other["seeds"], other["seamReports"]) == \
            (here["cell"], here["status"], here["files"], here["seeds"], here["seamReports"])
        assert np.array_equal(np.asarray(Image.open(tmp_path / "local" / here["files"][0])),
                              np.asarray(Image.open(tmp_path / "remote" / other["files"][0])))
