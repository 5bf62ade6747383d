"""The command line, run as a user runs it: a subprocess with the JSON body of the REST API."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image

from inpaint import datalock
from tests.support.images import data_url, photo, rect_mask

ROOT = Path(__file__).resolve().parents[1]


def cli_env(tmp_path: Path) -> dict:
    return {**os.environ, "INPAINT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}


def cli(*args: str, tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inpaint", *args], cwd=ROOT, env=cli_env(tmp_path), input=stdin,
                          capture_output=True, text=True, timeout=300)


def opencv_request(image: Image.Image, **fields) -> dict:
    return {"modelId": "opencv-ns", "prompt": "remove it", "image": data_url(image),
            "mask": data_url(rect_mask(image.width, image.height, (60, 40, 120, 90))), **fields}


def test_generate_writes_each_result_once_to_out_and_nothing_to_the_data_folder(tmp_path):
    image = photo(200, 150)
    (tmp_path / "request.json").write_text(json.dumps(opencv_request(image, seed=5, numSamples=2)))
    done = cli("generate", str(tmp_path / "request.json"), "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "success" and job["jobType"] == "inpaint" and job["progress"] == 1.0
    # Deterministic: one result is computed and stored for the two samples asked, and the warnings say so.
    assert job["metadata"]["seeds"] == [5] and job["metadata"]["input"]["seed"] == 5
    assert any("deterministic" in warning for warning in job["metadata"]["warnings"])
    # The results and nothing else: no copy left in a scratch store, no input, no database.
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted(f"{asset_id}.png" for asset_id in job["metadata"]["assetIds"])
    result_np = np.asarray(Image.open(tmp_path / "out" / written[0]).convert("RGB"))
    assert np.array_equal(result_np[:30], np.asarray(image)[:30])  # far from the mask: untouched
    assert not (tmp_path / "data").exists()


def test_store_keeps_the_job_in_the_data_folder_and_copies_each_result_to_out(tmp_path):
    # Whole-image mode: its size, a multiple of 8, replays (a region's own size need not be one).
    done = cli("generate", "-", "--out", str(tmp_path / "out"), "--store", tmp_path=tmp_path,
               stdin=json.dumps(opencv_request(photo(200, 150), seed=5, disableMerging=True)))
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    data = tmp_path / "data"
    with closing(sqlite3.connect(data / "inpaint.db")) as db:
        stored = json.loads(db.execute("SELECT json FROM jobs WHERE id = ?", (job["jobId"],)).fetchone()[0])
    assert stored["status"] == "success" and stored["metadata"]["assetIds"] == job["metadata"]["assetIds"]
    for asset_id in job["metadata"]["assetIds"]:
        out = tmp_path / "out" / f"{asset_id}.png"
        assert out.read_bytes() == (data / "files" / f"{asset_id}.png").read_bytes()
    # The inputs are stored too, so a replay of metadata.input (asset ids) runs with --store, and only with it.
    replay = json.dumps(job["metadata"]["input"])
    again = cli("generate", "-", "--out", str(tmp_path / "again"), "--store", tmp_path=tmp_path, stdin=replay)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / f"{json.loads(again.stdout)['metadata']['assetIds'][0]}.png").read_bytes() == \
        out.read_bytes()
    refused = cli("generate", "-", "--out", str(tmp_path / "third"), tmp_path=tmp_path, stdin=replay)
    assert refused.returncode == 2 and refused.stderr.startswith("error: image: asset_")
    assert "--store" in refused.stderr and not (tmp_path / "third").exists()


def test_store_takes_the_data_folder_lock_as_a_server_does(tmp_path, models_dir):
    data = tmp_path / "data"
    request = json.dumps(opencv_request(photo(200, 150), seed=5))
    # 1. A server holds the folder: a --store run is refused, saying so; a run without --store goes on beside it.
    datalock.acquire(data)
    try:
        refused = cli("generate", "-", "--out", str(tmp_path / "out"), "--store", tmp_path=tmp_path, stdin=request)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.startswith("error: another inpaint server") and str(data.resolve()) in refused.stderr
        assert not (tmp_path / "out").exists() and not (data / "inpaint.db").exists()
        beside = cli("generate", "-", "--out", str(tmp_path / "out"), tmp_path=tmp_path, stdin=request)
        assert beside.returncode == 0, beside.stderr
    finally:
        datalock.release(data)
    # 2. A --store run holds it while it runs: another (or a server) is refused, naming it.
    long_run = {"modelId": "tiny-sd-1_5", "prompt": "a cat", "image": data_url(photo(96, 96)),
                "mask": data_url(rect_mask(96, 96, (20, 20, 70, 70))), "numSamples": 128, "numInferenceSteps": 150,
                "width": 64, "height": 64}
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([sys.executable, "-m", "inpaint", "generate", "-", "--out", str(tmp_path / "first"),
                                  "--store"], cwd=ROOT, env={**cli_env(tmp_path), "INPAINT_MODELS_DIR": str(models_dir)},
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        first.stdin.write(json.dumps(long_run))
        first.stdin.close()
        lock = data / datalock.LOCK_NAME
        while f"(pid {first.pid})" not in lock.read_text():  # written once the run holds the lock
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        second = cli("generate", "-", "--out", str(tmp_path / "out"), "--store", tmp_path=tmp_path, stdin=request)
        assert second.returncode == 1
        assert f"another inpaint command line run with --store (pid {first.pid}) is using the data folder" \
            in second.stderr
    finally:
        first.kill()
        first.wait()


def test_generate_reads_standard_input_with_a_tiny_diffusion_model(tmp_path):
    request = {"modelId": "tiny-sd-1_5", "prompt": "a cat", "image": data_url(photo(96, 96)),
               "mask": data_url(rect_mask(96, 96, (20, 20, 70, 70))), "seed": 3, "numSamples": 1,
               "numInferenceSteps": 2, "width": 64, "height": 64}
    done = cli("generate", "-", "--out", str(tmp_path / "out"), tmp_path=tmp_path, stdin=json.dumps(request))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metadata"]["input"]["scheduler"] == "PNDMScheduler"


def test_bad_input_exits_2_with_one_line_naming_the_field(tmp_path):
    request = {"modelId": "opencv-telea", "prompt": "x", "image": data_url(photo(128, 128)),
               "mask": data_url(Image.new("L", (128, 128), 0))}
    done = cli("generate", "-", "--out", str(tmp_path / "out"), tmp_path=tmp_path, stdin=json.dumps(request))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: mask:") and "empty" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    not_json = cli("generate", "-", "--out", str(tmp_path / "out"), tmp_path=tmp_path, stdin="{not json")
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr


def test_models_lists_the_catalog(tmp_path):
    done = cli("models", "--json", tmp_path=tmp_path)
    assert done.returncode == 0
    models = {entry["id"]: entry for entry in json.loads(done.stdout)}
    assert models["opencv-telea"]["availability"] == "offline"
    assert models["tiny-sd-1_5-lora"]["epochs"] == ["epoch-1", "epoch-2"]
    assert models["sd-xl-inpainting"]["ranges"]["width"] == {"min": 512, "max": 2048}


def test_an_unreachable_hub_model_fails_fast_with_what_it_needs(tmp_path):
    request = {"modelId": "sd-1_5-inpainting", "prompt": "x", "image": data_url(photo(96, 96)),
               "mask": data_url(rect_mask(96, 96, (20, 20, 70, 70))), "numSamples": 1}
    done = cli("generate", "-", "--out", str(tmp_path / "out"), tmp_path=tmp_path, stdin=json.dumps(request))
    assert done.returncode == 1
    job = json.loads(done.stdout)
    assert job["status"] == "failure" and "Hugging Face Hub" in job["metadata"]["error"]
    assert "Traceback" not in done.stderr


def test_a_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    request = {"modelId": "tiny-sd-1_5", "prompt": "a cat", "image": data_url(photo(320, 192)),
               "mask": data_url(rect_mask(320, 192, (60, 60, 100, 100))), "seed": 3, "numSamples": 2}
    done = cli("generate", "-", "--dry-run", tmp_path=tmp_path, stdin=json.dumps(request))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    # The test model's defaults (its own 256x256 and 12 steps, SD 1.5's guidance), and the seeds of the two samples.
    assert plan["input"]["numInferenceSteps"] == 12 and plan["input"]["guidance"] == 7.5
    assert [region["size"] for region in plan["regions"]] == [[256, 256]] and plan["seeds"] == [3, 4]
    assert "image" not in plan["input"] and "maskId" not in plan["input"]  # nothing was stored to name
    assert not list((tmp_path / "data").rglob("*.png"))
    request["mask"] = data_url(Image.new("L", (320, 192), 0))
    refused = cli("generate", "-", "--dry-run", tmp_path=tmp_path, stdin=json.dumps(request))
    assert refused.returncode == 2 and refused.stderr.startswith("error: mask:")


def test_every_request_field_is_a_flag_that_wins_over_the_file(tmp_path):
    request = {"modelId": "opencv-telea", "image": data_url(photo(128, 96)),
               "mask": data_url(rect_mask(128, 96, (40, 30, 80, 60))), "seed": 1, "colorMatch": "none"}
    done = cli("generate", "-", "--out", str(tmp_path / "out"), "--model", "patchmatch", "--seed", "9",
               "--samples", "2", "--color-match", "histogram", "--disable-merging", tmp_path=tmp_path,
               stdin=json.dumps(request))
    assert done.returncode == 0, done.stderr
    given = json.loads(done.stdout)["metadata"]["input"]
    assert (given["modelId"], given["seed"], given["numSamples"], given["colorMatch"], given["disableMerging"]) == \
        ("patchmatch", 9, 2, "histogram", True)
    wrong = cli("generate", "-", "--out", str(tmp_path / "out"), "--strength", "much", tmp_path=tmp_path,
                stdin=json.dumps(request))
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: strength: Input should be a valid number")
