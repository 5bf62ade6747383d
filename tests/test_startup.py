"""Starting the server and running a classical model import neither torch nor diffusers: they take seconds
and hundreds of MB, and only a diffusion model needs them. Each check runs in a fresh interpreter, since the
test process itself has imported them long before."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.images import data_url, photo, rect_mask

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers")
# Prints, last, which of HEAVY the code before it imported.
REPORT = f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"


def python(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "INPAINT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
                   "GRADIO_ANALYTICS_ENABLED": "False", **env}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def imported(code: str, tmp_path: Path, **env: str) -> list[str]:
    return json.loads(python("-c", textwrap.dedent(code) + REPORT, tmp_path=tmp_path, **env).stdout.splitlines()[-1])


def classical_request(model_id: str = "opencv-telea") -> dict:
    return {"modelId": model_id, "image": data_url(photo(160, 120)),
            "mask": data_url(rect_mask(160, 120, (50, 40, 100, 80))), "numSamples": 1}


def test_the_app_and_the_studio_import_no_diffusion_library(tmp_path):
    assert imported("import app\nfrom inpaint import api, ui", tmp_path) == []
    # Built as `python app.py` builds it, the Gradio studio included.
    assert imported("from inpaint.api import create_app\ncreate_app()", tmp_path) == []


def test_the_default_model_is_picked_without_torch(tmp_path):
    code = "from inpaint import settings\nprint(settings.DEFAULT_MODEL)"
    assert imported(code, tmp_path) == []
    chosen = python("-c", code, tmp_path=tmp_path, INPAINT_DEFAULT_MODEL="opencv-ns").stdout.split()
    assert chosen == ["opencv-ns"]


def test_a_classical_request_through_the_api_imports_no_diffusion_library(tmp_path):
    (tmp_path / "request.json").write_text(json.dumps(classical_request()))
    code = f"""
        import json, time
        from fastapi.testclient import TestClient
        from inpaint.api import create_app

        body = json.loads(open({str(tmp_path / "request.json")!r}).read())
        with TestClient(create_app(api_key=None), base_url="http://localhost") as client:
            job = client.post("/generate/inpaint", json=body).json()["job"]
            deadline = time.monotonic() + 60
            while job["status"] not in ("success", "failed", "canceled") and time.monotonic() < deadline:
                time.sleep(0.05)
                job = client.get(f"/jobs/{{job['jobId']}}").json()["job"]
        assert job["status"] == "success", job
    """
    assert imported(code, tmp_path) == []


@pytest.mark.parametrize("model_id", ["opencv-telea", "patchmatch"])
def test_the_cli_runs_a_classical_model_without_torch(tmp_path, model_id):
    (tmp_path / "request.json").write_text(json.dumps(classical_request(model_id)))
    # The real entry point, with the interpreter listing every module it imports.
    done = python("-X", "importtime", "-m", "inpaint", "generate", str(tmp_path / "request.json"),
                  "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert json.loads(done.stdout)["status"] == "success"
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "inpaint.generate" in modules  # the listing is there, and the run was real: the family's library ran
    # OpenCV serves every request (regions, the seam report); PatchMatch only the family that fills with it.
    assert "cv2" in modules and ("patchmatch" in modules) == (model_id == "patchmatch")
    assert not modules & set(HEAVY)
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
