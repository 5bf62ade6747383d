"""`python -m inpaint batch` on folders of real photographs: masks matched by name, one result per picture, a bad
file failing alone, a second run skipping what was done, and the same outputs from a server over the REST API."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data as photos

from inpaint import batch
from inpaint.api import create_app
from inpaint.runs import Local
from tests.support.api import KEY, serve

ROOT = Path(__file__).resolve().parents[1]
# Real photographs from scikit-image's data folder, cropped small: the classical models fill them in a blink.
PHOTOS = {"cat": photos.chelsea, "cup": photos.coffee, "wall": photos.brick}


def photo(name: str) -> Image.Image:
    return Image.fromarray(PHOTOS[name]()).convert("RGB").crop((40, 40, 232, 184))


def hole(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


def cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INPAINT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("INPAINT_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "inpaint", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """pictures/: cat.png (mask masks/cat.png), cup.jpg (masks/cup_mask.png), wall.webp (masks/wall.png), a
    file that is no picture with a mask (broken.png), and one picture without a mask (lonely.png)."""
    pictures, masks = tmp_path / "pictures", tmp_path / "masks"
    pictures.mkdir()
    masks.mkdir()
    photo("cat").save(pictures / "cat.png")
    photo("cup").save(pictures / "cup.jpg", quality=95)
    photo("wall").save(pictures / "wall.webp", lossless=True)
    photo("cat").save(pictures / "lonely.png")
    (pictures / "broken.png").write_bytes(b"this is not a picture")
    for name, box in (("cat.png", (60, 40, 110, 90)), ("cup_mask.png", (100, 50, 150, 110)),
                      ("wall.png", (20, 20, 70, 60)), ("broken.png", (20, 20, 70, 60))):
        hole((192, 144), box).save(masks / name)
    return pictures, masks


def lines_of(out: Path) -> dict[str, dict]:
    return {line["picture"]: line for line in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_each_picture_is_run_with_its_mask_a_bad_file_fails_alone_and_a_second_run_skips(tmp_path, folders):
    pictures, masks = folders
    out = tmp_path / "out"
    args = ("batch", "--images", str(pictures), "--masks", str(masks), "--out", str(out), "--model", "opencv-telea",
            "--seed", "11")
    done = cli(*args, data=tmp_path / "data")
    assert done.returncode == 1, done.stderr  # something failed
    assert "Traceback" not in done.stderr
    lines = lines_of(out)
    assert set(lines) == {"cat.png", "cup.jpg", "wall.webp", "broken.png", "lonely.png"}
    assert {name: line["status"] for name, line in lines.items()} == {
        "cat.png": "success", "cup.jpg": "success", "wall.webp": "success", "broken.png": "failure",
        "lonely.png": "no-mask"}
    assert lines["cup.jpg"]["mask"] == "cup_mask.png" and lines["cat.png"]["mask"] == "cat.png"
    # The bad file: the API's message, naming the field.
    assert lines["broken.png"]["field"] == "image" and lines["broken.png"]["error"].startswith("image: ")
    assert "broken.png: failure: image:" in done.stderr and "lonely.png: no-mask" in done.stderr

    for name, stem in (("cat.png", "cat"), ("cup.jpg", "cup"), ("wall.webp", "wall")):
        line = lines[name]
        assert line["seeds"] == [11] and line["files"] == [f"{stem}-11.png"] and line["seconds"] > 0
        assert line["input"]["modelId"] == "opencv-telea" and line["input"]["seed"] == 11
        assert line["seamReports"][0]["outsideMaskMaxDiff"] == 0
        result_np = np.asarray(Image.open(out / f"{stem}-11.png").convert("RGB"))
        source_np = np.asarray(Image.open(pictures / name).convert("RGB"))
        mask_np = np.asarray(Image.open(masks / (line["mask"]))) > 0
        assert np.array_equal(result_np[~mask_np], source_np[~mask_np])  # bit for bit outside the mask
        assert not np.array_equal(result_np[mask_np], source_np[mask_np])  # filled inside
    assert sorted(path.name for path in out.glob("*.png")) == ["cat-11.png", "cup-11.png", "wall-11.png"]

    # Again: what succeeded is skipped, its files untouched; the failures are tried again.
    stamps = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.glob("*.png")}
    again = cli(*args, data=tmp_path / "data")
    assert again.returncode == 1 and "3 of 5 pictures were done by an earlier run" in again.stderr
    assert {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.glob("*.png")} == stamps
    rerun = lines_of(out)  # one line per picture still, those of the successes kept as they were
    assert set(rerun) == set(lines) and all(rerun[name] == lines[name] for name in ("cat.png", "cup.jpg", "wall.webp"))

    # --force runs everything again: the same seed gives the same pixels.
    forced = cli(*args, "--force", data=tmp_path / "data")
    assert forced.returncode == 1 and "earlier run" not in forced.stderr
    for name, (mtime, content) in stamps.items():
        assert (out / name).stat().st_mtime_ns != mtime
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(io.BytesIO(content))))


def test_bad_input_exits_2_naming_it_before_anything_runs(tmp_path, folders):
    pictures, masks = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    cases = [
        (("--images", str(empty), "--model", "opencv-telea"), "error: --images:", "holds no pictures"),
        (("--images", str(tmp_path / "nowhere"), "--model", "opencv-telea"), "error: --images:", "is not a folder"),
        (("--images", str(pictures), "--masks", str(masks), "--model", "opencv-telea", "--strength", "3"),
         "error: strength:", "less than or equal to 1"),
        (("--images", str(pictures), "--masks", str(masks), "--model", "nope"), "error: modelId:",
         "unknown model 'nope'"),
    ]
    for extra, start, words in cases:
        done = cli("batch", *extra, "--out", str(out), data=tmp_path / "data")
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(start) and words in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"modelId": "opencv-telea", "mask": "data:image/png;base64,AAAA"}))
    done = cli("batch", "--images", str(pictures), "--masks", str(masks), "--request", str(base), "--out", str(out),
               data=tmp_path / "data")
    assert done.returncode == 2 and done.stderr.startswith("error: mask: is set by --images and --masks")
    assert not out.exists()


def test_masks_beside_the_pictures(tmp_path):
    folder, out = tmp_path / "shots", tmp_path / "out"
    folder.mkdir()
    photo("cup").save(folder / "cup.png")
    hole((192, 144), (100, 50, 150, 110)).save(folder / "cup_mask.png")
    done = cli("batch", "--images", str(folder), "--out", str(out), "--model", "patchmatch", "--samples", "2",
               "--seed", "5", data=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    [line] = lines_of(out).values()
    assert line["picture"] == "cup.png" and line["mask"] == "cup_mask.png"
    assert line["seeds"] == [5, 6] and line["files"] == ["cup-5.png", "cup-6.png"]
    assert "1 success" in done.stderr


def test_a_server_does_the_same_work_over_the_rest_api(tmp_path, folders, engine):
    pictures, masks = folders
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ("batch", "--images", str(pictures), "--masks", str(masks), "--model", "opencv-telea", "--seed", "3")
    here = cli(*args, "--out", str(local), data=tmp_path / "data")
    with serve(create_app(engine, api_key=KEY, with_ui=False)) as url:
        # Three requests at once: the server queues them for its worker.
        there = cli(*args, "--out", str(remote), "--server", url, "--key", KEY, "--parallel", "3",
                    data=tmp_path / "unused")
        refused = cli(*args, "--out", str(tmp_path / "refused"), "--server", url, "--key", "wrong",
                      data=tmp_path / "unused")
    assert here.returncode == there.returncode == 1, there.stderr
    here_lines, there_lines = lines_of(local), lines_of(remote)
    for name, line in here_lines.items():
        other = there_lines[name]
        assert (other["status"], other["files"], other["seeds"], other["field"]) == \
            (line["status"], line["files"], line["seeds"], line["field"])
        assert other["seamReports"] == line["seamReports"]
    assert there_lines["broken.png"]["error"] == here_lines["broken.png"]["error"]
    for path in local.glob("*.png"):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(remote / path.name)))
    # The work was the server's: its store holds the results.
    assert engine.store.exists(there_lines["cat.png"]["input"]["image"])
    assert refused.returncode == 2 and refused.stderr.startswith("error: --key: the server refused it")
    assert not (tmp_path / "refused").exists()
    unreachable = cli(*args, "--out", str(tmp_path / "refused"), "--server", url, data=tmp_path / "unused")
    assert unreachable.returncode == 2 and unreachable.stderr.startswith(f"error: --server: cannot reach {url}")
    alone = cli(*args, "--out", str(tmp_path / "refused"), "--parallel", "2", data=tmp_path / "unused")
    assert alone.returncode == 2 and alone.stderr.startswith("error: --parallel: needs --server")


def test_a_result_deleted_or_a_line_cut_short_is_run_again(tmp_path, folders, engine):
    pictures, masks = folders
    out = tmp_path / "out"
    base = {"modelId": "opencv-ns", "seed": 2, "numSamples": 1}
    found = [picture for picture in batch.pictures(pictures, masks) if picture.mask and picture.path.stem != "broken"]
    first = {line["picture"]: line for line in batch.run(found, masks, base, Local(engine), out)}
    assert all(line["status"] == "success" for line in first.values())
    (out / "cup-2.png").unlink()
    with (out / "results.jsonl").open("a") as file:
        file.write('{"picture": "wall.webp", "sta')  # a run killed while writing its line
    assets = len(engine.store.list(include_hidden=True, limit=1000))
    again = {line["picture"]: line for line in batch.run(found, masks, base, Local(engine), out)}
    assert again["cat.png"] == first["cat.png"] and again["wall.webp"] == first["wall.webp"]
    assert again["cup.jpg"]["status"] == "success" and (out / "cup-2.png").is_file()
    assert len(engine.store.list(include_hidden=True, limit=1000)) == assets + 3  # cup's image, mask and result
    assert [json.loads(text)["picture"] for text in (out / "results.jsonl").read_text().splitlines()] == \
        ["cat.png", "wall.webp", "cup.jpg"]

    # Another request (here another seed) into the same folder: everything runs again, with it.
    other = {line["picture"]: line for line in batch.run(found, masks, {**base, "seed": 3}, Local(engine), out)}
    assert [line["files"] for line in other.values()] == [["cat-3.png"], ["cup-3.png"], ["wall-3.png"]]
    assert len({line["requestDigest"] for line in other.values()} | {first["cat.png"]["requestDigest"]}) == 2
