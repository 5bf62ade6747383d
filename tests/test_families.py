"""Model families as plug-ins: the registry, PatchMatch, the TorchScript erasers through the engine, and the
prompt being optional for the families that ignore it, on every surface."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import patchmatch
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from skimage import data as photos

from inpaint import families, torchscript  # neither imports torch
from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import MODEL_TYPES, Catalog
from inpaint.errors import RequestError
from inpaint.families.classical import PatchMatch
from inpaint.generate import Engine
from inpaint.events import results
from tests.support.figures import figure_path
from tests.support.images import data_url

ROOT = Path(__file__).resolve().parents[1]
CATALOG = Catalog.load()
FINAL = {"success", "failure", "canceled"}


def chelsea(width: int = 300, height: int = 224) -> Image.Image:
    """A real photograph (a cat, from scikit-image's data folder), cropped."""
    return Image.fromarray(photos.chelsea()).crop((60, 30, 60 + width, 30 + height))


def ellipse_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


def request(image: Image.Image, mask: Image.Image, **fields) -> dict:
    return {"image": data_url(image), "mask": data_url(mask), **fields}


@pytest.fixture
def engine(tmp_path, pipeline_cache):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"), pipeline_cache)
    yield engine
    engine.store.close()


def run(engine: Engine, body: dict):
    resolved = engine.prepare(body)
    return resolved, results(engine.run(resolved))


def pixels(engine: Engine, asset) -> np.ndarray:
    return np.asarray(engine.store.open_image(asset.id).convert("RGB"))


# -- the registry ---------------------------------------------------------------------------------------

def test_every_model_type_is_a_family_or_its_lora_variant():
    assert set(families.FAMILIES) == {"opencv", "patchmatch", "lama", "mi-gan", "sd-1_5", "sd-xl", "flux.1",
                                      "grabcut", "sam2", "sam3"}
    for name, model_type in MODEL_TYPES.items():
        assert model_type.family is families.get(name.removesuffix("-lora"))
        assert model_type.is_lora == name.endswith("-lora")
    assert {t.name for t in MODEL_TYPES.values() if t.is_lora} == {"sd-1_5-lora", "sd-xl-lora", "flux.1-lora"}
    for entry in CATALOG.entries():  # a test model may name its own native resolution: otherwise its type's family
        own = {"native_resolution": entry.native_resolution} if entry.native_resolution else {}
        assert entry.family == dataclasses.replace(entry.type.family, **own)


def test_capabilities_are_what_the_families_do():
    telea, pm, lama, migan = (families.get(n) for n in ("opencv", "patchmatch", "lama", "mi-gan"))
    for family in (telea, pm, lama, migan):
        assert not (family.uses_prompt or family.denoises or family.has_previews or family.seam_px)
        assert family.native_resolution is None  # they work on the region at its own size
    assert pm.seeded and not (telea.seeded or lama.seeded or migan.seeded)
    assert lama.has_weights and migan.has_weights and not (telea.has_weights or pm.has_weights)
    for name in ("sd-1_5", "sd-xl", "flux.1"):
        family = families.get(name)
        assert family.uses_prompt and family.denoises and family.seeded and family.seam_px == 8
    assert families.FLUX.negative_prompt_strength and not families.FLUX.uses_negative_prompt


def test_no_code_outside_the_families_compares_family_names():
    """Capabilities are asked, not inferred from names: adding a family touches its module and the catalog."""
    names = "|".join(re.escape(name) for name in families.FAMILIES)
    compared = re.compile(rf"""[=!]=\s*["']({names})["']|["']({names})["']\s*[=!]=|in\s*\(["']({names})["']""")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in sorted((ROOT / "inpaint").rglob("*.py")) if "families" not in path.parts
                 for number, line in enumerate(path.read_text().splitlines(), 1) if compared.search(line)]
    assert offenders == []


def test_models_endpoint_states_each_models_capabilities(engine):
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        models = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert models["patchmatch"]["family"] == "patchmatch" and models["patchmatch"]["availability"] == "offline"
    assert models["patchmatch"]["capabilities"] == {"prompt": False, "negativePrompt": False, "steps": False,
                                                    "previews": False, "seeded": True, "points": False, "box": False,
                                                    "text": False}
    assert models["tiny-sd-1_5"]["capabilities"]["prompt"] and models["tiny-sd-1_5"]["capabilities"]["steps"]
    assert models["lama"]["availability"] in ("needs download", "offline")
    assert models["tiny-lama"]["availability"] == "offline"


# -- PatchMatch -----------------------------------------------------------------------------------------

def test_patchmatch_fills_are_seeded_and_each_sample_replays_alone(engine):
    image = chelsea()
    mask = ellipse_mask(image.size, (120, 80, 190, 150))
    resolved, assets = run(engine, request(image, mask, modelId="patchmatch", seed=40, numSamples=3))
    assert resolved.num_samples == 3 and [a.seed for a in assets] == [40, 41, 42]
    fills = [pixels(engine, a) for a in assets]
    hole = np.asarray(mask) >= 128
    assert not np.array_equal(fills[0][hole], fills[1][hole]) and not np.array_equal(fills[1][hole], fills[2][hole])
    _, [again] = run(engine, request(image, mask, modelId="patchmatch", seed=41, numSamples=1))
    assert np.array_equal(pixels(engine, again), fills[1])
    for fill in fills:  # bit-exact outside the mask, as drawn (no grow, no feather)
        assert np.array_equal(fill[~hole], np.asarray(image)[~hole])


def test_patchmatch_result_is_the_librarys_own_fill_of_the_region(engine):
    image = chelsea()
    mask = ellipse_mask(image.size, (40, 40, 100, 120))
    resolved, [result] = run(engine, request(image, mask, modelId="patchmatch", seed=7, numSamples=1))
    # The engine crops the region around the mask; the library, given that crop and the seed, fills it alike.
    from inpaint import imageops

    box = imageops.crop_box(mask)
    patchmatch.set_random_seed(7)
    filled = patchmatch.inpaint(np.asarray(image.crop(box)), np.asarray(mask.crop(box)), patch_size=3)
    expected = np.array(image)
    expected[box[1]:box[3], box[0]:box[2]] = filled
    assert np.array_equal(pixels(engine, result), expected)


def test_a_large_region_is_filled_small_and_brought_up_with_the_photos_own_texture(engine, monkeypatch):
    """Past DIRECT_PIXELS the library fills a halved copy at most WORK_PIXELS large; the fill is brought back to
    full resolution by copying the photo's own pixels, so it keeps the fine detail an enlarged fill loses, stays
    seeded per sample, and leaves every known pixel as it was."""
    from inpaint.families import coarse_fine

    monkeypatch.setattr(coarse_fine, "DIRECT_PIXELS", 128 * 128)  # a 256 px region is "large" here: fast
    monkeypatch.setattr(coarse_fine, "WORK_PIXELS", 64 * 64)
    given = []
    library_inpaint = patchmatch.inpaint
    monkeypatch.setattr(patchmatch, "inpaint", lambda image, mask, **kw: given.append(image.shape) or
                        library_inpaint(image, mask, **kw))
    wall = Image.fromarray(photos.brick()).convert("RGB").crop((96, 96, 352, 352))
    hole = ellipse_mask(wall.size, (60, 70, 190, 180))  # about a fifth of the region
    inside, wall_np = np.asarray(hole) >= 128, np.asarray(wall)
    _, assets = run(engine, request(wall, hole, modelId="patchmatch", seed=5, numSamples=2))
    # Once per sample, on the region (256 px wide) halved twice.
    assert len(given) == 2 and all(height * width <= 64 * 64 and width == 64 for height, width, _ in given)
    fills = [pixels(engine, asset) for asset in assets]
    assert not np.array_equal(fills[0][inside], fills[1][inside])
    _, [again] = run(engine, request(wall, hole, modelId="patchmatch", seed=6, numSamples=1))
    assert np.array_equal(pixels(engine, again), fills[1])
    for fill in fills:
        assert np.array_equal(fill[~inside], wall_np[~inside])

    def detail(image_np: np.ndarray) -> float:  # mean |Laplacian| of the grey image inside the hole
        grey = np.asarray(Image.fromarray(image_np).convert("L"), dtype=float)
        laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        return float(np.abs(laplacian)[inside[1:-1, 1:-1]].mean())

    # What filling the small copy and enlarging it would give: a blur of the wall.
    small_fill = library_inpaint(np.asarray(wall.resize((64, 64), Image.Resampling.BOX)),
                                 np.asarray(hole.resize((64, 64), Image.Resampling.BOX)), patch_size=3)
    enlarged = np.asarray(Image.fromarray(small_fill).resize(wall.size, Image.Resampling.BICUBIC))
    assert detail(fills[0]) > 0.6 * detail(wall_np) > detail(enlarged)


def test_a_large_region_with_no_wholly_known_patch_is_still_filled(monkeypatch):
    """A hole leaving only a thin frame has no source patch at the working size: the small fill is enlarged."""
    from inpaint.families import coarse_fine

    monkeypatch.setattr(coarse_fine, "DIRECT_PIXELS", 64 * 64)
    monkeypatch.setattr(coarse_fine, "WORK_PIXELS", 32 * 32)
    image_np = np.asarray(chelsea(128, 128))
    hole_np = np.full((128, 128), 255, np.uint8)
    hole_np[:2], hole_np[-2:], hole_np[:, :2], hole_np[:, -2:] = 0, 0, 0, 0

    def fill_small(small_np, small_hole_np):
        patchmatch.set_random_seed(3)
        return patchmatch.inpaint(small_np, small_hole_np, patch_size=3)

    filled_np = coarse_fine.fill(image_np, hole_np, fill_small, seed=3)
    assert filled_np.shape == image_np.shape
    assert np.array_equal(filled_np[hole_np == 0], image_np[hole_np == 0])


def test_a_family_this_machine_cannot_run_is_refused_before_anything_is_stored(engine, monkeypatch):
    monkeypatch.setattr(PatchMatch, "unavailable", lambda self, entry: "it needs the PatchMatch library")
    image = chelsea(128, 96)
    with pytest.raises(RequestError) as refused:
        engine.prepare(request(image, ellipse_mask(image.size, (30, 30, 70, 70)), modelId="patchmatch"))
    assert refused.value.field == "modelId" and "PatchMatch library" in refused.value.message
    assert engine.store.list(include_hidden=True) == []


# -- the TorchScript erasers through the engine ------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("model_id", ["tiny-lama", "tiny-mi-gan"])
def test_tiny_erasers_load_through_torch_jit_and_paste_back_bit_exact(engine, model_id, monkeypatch):
    import torch

    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    engine.pipelines._pipelines.pop(model_id, None)  # loaded by this test, through the real path
    image = chelsea(203, 157)  # odd sizes: LaMa pads to a multiple of 8, MI-GAN resizes to 512
    mask = ellipse_mask(image.size, (70, 50, 131, 97))
    resolved, [result] = run(engine, request(image, mask, modelId=model_id, seed=3, numSamples=2))
    assert resolved.num_samples == 1 and any("deterministic" in w for w in resolved.warnings)
    assert (engine.pipelines.models_dir / model_id / "model.pt").is_file() and len(loads) == 1
    out, hole = pixels(engine, result), np.asarray(mask) >= 128
    assert np.array_equal(out[~hole], np.asarray(image)[~hole])
    assert np.abs(out[hole].astype(int) - np.asarray(image)[hole]).mean() > 10  # the random network's fill
    run(engine, request(image, mask, modelId=model_id))
    assert len(loads) == 1  # cached like any model


def test_lama_without_downloads_is_refused_at_once_saying_what_it_needs(engine, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image = chelsea(128, 96)
    with pytest.raises(RequestError) as refused:
        engine.prepare(request(image, ellipse_mask(image.size, (30, 30, 70, 70)), modelId="lama"))
    assert refused.value.field == "modelId"
    assert "big-lama.pt" in refused.value.message and "HF_HUB_OFFLINE" in refused.value.message
    assert engine.store.list(include_hidden=True) == []


@pytest.mark.torch
def test_lama_whose_download_fails_fails_the_job_saying_what_it_needs(engine, monkeypatch, tmp_path):
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps({"models": [{  # a closed port: the download fails at once
        "id": "lama", "type": "lama", "source": "http://127.0.0.1:9/big-lama.pt", "md5": torchscript.LAMA_MD5}]}))
    from inpaint.errors import ModelUnavailable
    from inpaint.pipelines import PipelineCache

    cache = PipelineCache(Catalog.load(catalog_file), tmp_path / "models", device="cpu")
    offline = Engine(cache.catalog, AssetStore(tmp_path / "offline"), cache)
    image = chelsea(128, 96)
    resolved = offline.prepare(request(image, ellipse_mask(image.size, (30, 30, 70, 70)), modelId="lama"))
    with pytest.raises(ModelUnavailable) as failed:
        results(offline.run(resolved))
    assert "big-lama.pt" in str(failed.value) and "download" in str(failed.value)
    assert list((tmp_path / "models").glob("*.pt*")) == []
    offline.store.close()


@pytest.mark.torch
def test_a_download_with_a_bad_checksum_is_deleted_and_never_loaded(tmp_path, monkeypatch):
    import http.server
    import threading

    import torch

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"not the model"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps({"models": [{
        "id": "my-lama", "type": "lama", "source": f"http://127.0.0.1:{server.server_port}/big-lama.pt",
        "md5": torchscript.LAMA_MD5}]}))
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a))
    from inpaint.errors import ModelUnavailable
    from inpaint.pipelines import PipelineCache

    cache = PipelineCache(Catalog.load(catalog_file), tmp_path / "models", device="cpu")
    try:
        with pytest.raises(ModelUnavailable, match="md5"):
            cache.get("my-lama")
    finally:
        server.shutdown()
    assert loads == [] and list((tmp_path / "models").glob("*")) == []


# -- the prompt is optional where the family ignores it ---------------------------------------------------

def test_rest_takes_no_prompt_for_patchmatch_and_still_requires_one_for_diffusion(engine):
    image = chelsea(160, 120)
    mask = ellipse_mask(image.size, (50, 40, 100, 80))
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        answer = client.post("/generate/inpaint", json=request(image, mask, modelId="patchmatch", numSamples=1))
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["job"]["jobId"]
        job = client.get(f"/jobs/{job_id}", params={"wait": 30}).json()["job"]
        while job["status"] not in FINAL:
            job = client.get(f"/jobs/{job_id}", params={"wait": 30}).json()["job"]
        assert job["status"] == "success" and not any("prompt" in w for w in job["metadata"]["warnings"])
        before = client.get("/assets").json()
        refused = client.post("/generate/inpaint", json=request(image, mask, modelId="tiny-sd-1_5", prompt=" "))
        assert refused.status_code == 400
        assert refused.json()["error"]["field"] == "prompt" and "sd-1_5" in refused.json()["error"]["message"]
        assert client.get("/assets").json() == before


def test_a_prompt_given_to_patchmatch_is_reported_as_ignored(engine):
    image = chelsea(128, 96)
    resolved = engine.prepare(request(image, ellipse_mask(image.size, (30, 30, 70, 70)), modelId="patchmatch",
                                      prompt="a dog", guidance=5))
    assert "patchmatch ignores prompt, guidance: patchmatch models do not read them" in resolved.warnings


def test_cli_runs_patchmatch_without_a_prompt(tmp_path):
    image = chelsea(160, 120)
    body = request(image, ellipse_mask(image.size, (50, 40, 100, 80)), modelId="patchmatch", seed=9, numSamples=1)
    done = subprocess.run([sys.executable, "-m", "inpaint", "generate", "-", "--out", str(tmp_path / "out")],
                          input=json.dumps(body), cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "INPAINT_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "success" and len(list((tmp_path / "out").glob("*.png"))) == 1


@pytest.mark.figure  # draws a README picture: `python -m bench.figures`
def test_patchmatch_continues_texture_where_telea_blurs_and_the_readme_shows_it(engine):
    """On a brick wall with a hole, PatchMatch's fill has the wall's fine detail and OpenCV's has little; the
    figure in the README (original, hole, Telea, PatchMatch) is made here by the engine."""
    wall = Image.fromarray(photos.brick()).convert("RGB").crop((96, 96, 352, 352))
    hole = ellipse_mask(wall.size, (78, 88, 178, 168))
    inside = np.asarray(hole) >= 128
    fills = {}
    for model_id in ("opencv-telea", "patchmatch"):
        _, [result] = run(engine, request(wall, hole, modelId=model_id, seed=1, numSamples=1))
        fills[model_id] = Image.fromarray(pixels(engine, result))

    def detail(image: Image.Image) -> float:  # mean |Laplacian| of the grey image inside the hole
        grey = np.asarray(image.convert("L"), dtype=float)
        laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        return float(np.abs(laplacian)[inside[1:-1, 1:-1]].mean())

    original = detail(wall)
    assert detail(fills["patchmatch"]) > 0.6 * original > detail(fills["opencv-telea"])
    marked = wall.copy()
    marked.paste((255, 45, 85), mask=hole)
    figure = Image.new("RGB", (4 * 256 + 3 * 8, 256), "white")
    for i, image in enumerate([wall, marked, fills["opencv-telea"], fills["patchmatch"]]):
        figure.paste(image, (i * 264, 0))
    figure.save(figure_path("patchmatch-vs-telea.png"), optimize=True)
