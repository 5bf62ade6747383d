"""The command line, run as a user runs it: a subprocess with the JSON body of the REST API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.images import data_url, photo, rect_mask

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "INPAINT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "inpaint", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_generate_writes_each_result_and_prints_the_job(tmp_path):
    image = photo(200, 150)
    request = {"modelId": "opencv-ns", "prompt": "remove it", "image": data_url(image),
               "mask": data_url(rect_mask(200, 150, (60, 40, 120, 90))), "seed": 5, "numSamples": 2}
    (tmp_path / "request.json").write_text(json.dumps(request))
    done = cli("generate", str(tmp_path / "request.json"), "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "success" and job["jobType"] == "inpaint" and job["progress"] == 1.0
    # Deterministic: one result is computed and stored for the two samples asked, and the warnings say so.
    assert job["metadata"]["seeds"] == [5] and job["metadata"]["input"]["seed"] == 5
    assert any("deterministic" in warning for warning in job["metadata"]["warnings"])
    written = sorted(p.stem for p in (tmp_path / "out").glob("*.png"))
    assert written == sorted(job["metadata"]["assetIds"])
    result_np = np.asarray(Image.open(tmp_path / "out" / f"{written[0]}.png").convert("RGB"))
    assert np.array_equal(result_np[:30], np.asarray(image)[:30])  # far from the mask: untouched


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
