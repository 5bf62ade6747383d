"""Tiny pipelines, the pipeline cache, per-request schedulers, LoRA concepts and latent previews."""

import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from diffusers import FluxFillPipeline
from PIL import Image

from inpaint import families, pipelines, tiny
from inpaint.catalog import MODEL_TYPES, Catalog, ModelEntry
from inpaint.errors import ModelUnavailable, RequestError
from inpaint.families import SCHEDULERS
from inpaint.families.diffusion import make_scheduler, request_pipeline
from inpaint.pipelines import PipelineCache, concepts_applied
from inpaint.previews import latents_to_preview, unpack_flux_latents

TINY = {"sd-1_5": "tiny-sd-1_5", "sd-xl": "tiny-sd-xl", "flux.1": "tiny-flux.1"}
WIDTH, HEIGHT = 96, 64  # not square, so swapped axes show; multiples of 16 for Flux


def generate(loaded, *, seed=0, scheduler=None, width=WIDTH, height=HEIGHT, steps=2, **kwargs):
    """A 2-step inpaint of a grey image with a centred mask; float output for exact comparisons."""
    image = Image.new("RGB", (width, height), (120, 130, 140))
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    pipe = request_pipeline(loaded, scheduler or make_scheduler(loaded))
    return pipe(prompt="a red apple", image=image, mask_image=mask, width=width, height=height,
                num_inference_steps=steps, strength=1.0, generator=torch.Generator("cpu").manual_seed(seed),
                output_type="np", **kwargs).images


def custom_catalog(*entries: ModelEntry) -> Catalog:
    return Catalog([*Catalog.load().entries(), *entries])


# ---- tiny models: built from configs, loaded with from_pretrained ----------------------------

@pytest.mark.parametrize("family", TINY)
def test_tiny_model_is_saved_loaded_and_generates(pipeline_cache, models_dir, family):
    loaded = pipeline_cache.get(TINY[family])
    assert (models_dir / TINY[family] / "model_index.json").is_file()
    assert type(loaded.pipe).__name__ == families.get(family).pipeline_class
    assert (loaded.family.name, loaded.device.type, loaded.dtype) == (family, "cpu", torch.float32)
    assert loaded.pipe.vae_scale_factor == 8  # the real latent ratio

    first = generate(loaded, seed=7)
    assert first.shape == (1, HEIGHT, WIDTH, 3)
    assert np.isfinite(first).all() and first.std() > 0
    np.testing.assert_array_equal(generate(loaded, seed=7), first)  # same seed, same pixels
    assert not np.array_equal(generate(loaded, seed=8), first)


def test_pil_output_has_the_requested_size(pipeline_cache):
    pipe = request_pipeline(loaded := pipeline_cache.get("tiny-sd-1_5"), make_scheduler(loaded))
    images = pipe(prompt="x", image=Image.new("RGB", (128, 64)), mask_image=Image.new("L", (128, 64), 255),
                  width=128, height=64, num_inference_steps=2, num_images_per_prompt=2).images
    assert [image.size for image in images] == [(128, 64), (128, 64)]


def test_loading_is_from_pretrained_and_reproducible(pipeline_cache, models_dir, monkeypatch):
    pipeline_cache.get("tiny-sd-1_5")  # built and saved
    sources, real = [], pipelines._from_pretrained

    def recording(cls, source, **kwargs):
        sources.append(source)
        return real(cls, source, **kwargs)

    monkeypatch.setattr(pipelines, "_from_pretrained", recording)
    again = PipelineCache(Catalog.load(), models_dir, max_pipelines=1, device="cpu").get("tiny-sd-1_5")
    assert sources == [models_dir / "tiny-sd-1_5"]
    first = pipeline_cache.get("tiny-sd-1_5").pipe.unet.state_dict()
    assert again.pipe.unet is not pipeline_cache.get("tiny-sd-1_5").pipe.unet
    assert all(torch.equal(first[name], tensor) for name, tensor in again.pipe.unet.state_dict().items())


def test_tiny_build_replaces_atomically(tmp_path, monkeypatch):
    def crash(folder):
        (folder / "model_index.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "_sd15", crash)
    with pytest.raises(RuntimeError):
        tiny.build("sd-1_5", tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # no half model, no temporary left behind
    with pytest.raises(ValueError, match="sd-1_5"):
        tiny.build("sd-2", tmp_path / "model")


# ---- the cache ---------------------------------------------------------------------------------

def test_concurrent_first_requests_build_and_load_once(tmp_path, monkeypatch):
    builds, loads = [], []
    real_build, real_load = tiny.build, pipelines._from_pretrained

    def slow_load(cls, source, **kwargs):
        loads.append(source)
        time.sleep(0.2)  # widen the window in which a second loader could slip in
        return real_load(cls, source, **kwargs)

    monkeypatch.setattr(tiny, "build", lambda kind, folder: builds.append(kind) or real_build(kind, folder))
    monkeypatch.setattr(pipelines, "_from_pretrained", slow_load)
    cache = PipelineCache(Catalog.load(), tmp_path, device="cpu")
    start, results = threading.Barrier(8), []

    def request():
        start.wait()
        results.append(cache.get("tiny-sd-1_5"))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(builds), len(loads), len(results)) == (1, 1, 8)
    assert all(result is results[0] for result in results)


def test_lru_evicts_beyond_max_and_frees_the_pipeline(models_dir):
    cache = PipelineCache(Catalog.load(), models_dir, max_pipelines=2, device="cpu")
    cache.get("tiny-sd-1_5")
    unet = weakref.ref(cache.get("tiny-sd-xl").pipe.unet)
    cache.get("tiny-sd-1_5")  # now the most recently used
    cache.get("tiny-flux.1")
    assert cache.cached_ids() == ["tiny-sd-1_5", "tiny-flux.1"]
    gc.collect()
    assert unet() is None  # no reference left anywhere: the memory is really given back


def test_only_diffusion_base_models_load(pipeline_cache):
    with pytest.raises(ValueError, match="opencv"):
        pipeline_cache.get("opencv-telea")
    with pytest.raises(ValueError, match="LoRA"):
        pipeline_cache.get("tiny-sd-1_5-lora")
    with pytest.raises(RequestError, match="no-such-model"):
        pipeline_cache.get("no-such-model")


def test_missing_local_folder_is_unavailable_and_evicts_nothing(tmp_path, models_dir):
    folder = tmp_path / "my-model"
    entry = ModelEntry(id="my-model", type=MODEL_TYPES["sd-1_5"], source=str(folder))
    cache = PipelineCache(custom_catalog(entry), models_dir, max_pipelines=1, device="cpu")
    cache.get("tiny-sd-1_5")
    with pytest.raises(ModelUnavailable, match="my-model.*does not exist"):
        cache.get("my-model")
    folder.mkdir()
    with pytest.raises(ModelUnavailable, match="model_index.json"):
        cache.get("my-model")
    assert cache.cached_ids() == ["tiny-sd-1_5"]


@pytest.mark.parametrize("offline", ["1", None])
def test_uncached_hub_model_fails_naming_it(tmp_path, monkeypatch, offline):
    # With a network the Hub answers "not found"; without one the probe fails: an error naming the repo either way.
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = "inpaint-tests/no-such-repo-4f1c"
    entry = ModelEntry(id="remote", type=MODEL_TYPES["sd-xl"], source=f"hub:{repo}")
    with pytest.raises(ModelUnavailable, match=repo) as raised:
        PipelineCache(custom_catalog(entry), tmp_path, device="cpu").get("remote")
    if offline:
        assert "HF_HUB_OFFLINE" in str(raised.value)


def test_gated_hub_model_names_token_and_licence(tmp_path, monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(url, **kwargs):
        raise GatedRepoError("gated", response=httpx2.Response(403, request=httpx2.Request("HEAD", url)))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pipelines, "hub_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", gated)
    entry = ModelEntry(id="gated", type=MODEL_TYPES["flux.1"], source="hub:inpaint-tests/gated-4f1c")
    with pytest.raises(ModelUnavailable, match="HF_TOKEN") as raised:
        PipelineCache(custom_catalog(entry), tmp_path, device="cpu").get("gated")
    assert "licence" in str(raised.value)


# ---- schedulers: a new one per request, the cached one untouched -------------------------------

@pytest.mark.parametrize("name", [name for name, (kind, _) in SCHEDULERS.items() if kind == "sd"])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # thousands from numpy 2 inside diffusers' k-schedulers
def test_every_sd_scheduler_runs_without_touching_the_cached_one(pipeline_cache, name):
    loaded = pipeline_cache.get("tiny-sd-1_5")
    cached, config = loaded.pipe.scheduler, dict(loaded.pipe.scheduler.config)
    scheduler = make_scheduler(loaded, name)
    assert type(scheduler).__name__ == name and scheduler is not cached
    images = generate(loaded, scheduler=scheduler)
    assert images.shape == (1, HEIGHT, WIDTH, 3) and np.isfinite(images).all()
    assert loaded.pipe.scheduler is cached and dict(cached.config) == config
    assert cached.num_inference_steps is None  # never set_timesteps'ed: no request ran on it


def test_flux_takes_its_default_or_the_named_scheduler(pipeline_cache):
    # Which scheduler can drive which model is schema.resolve's rule (tests/test_schema.py).
    flux = pipeline_cache.get("tiny-flux.1")
    assert type(make_scheduler(flux, "FlowMatchEulerDiscreteScheduler")).__name__ == "FlowMatchEulerDiscreteScheduler"
    default = make_scheduler(flux)
    assert type(default) is type(flux.pipe.scheduler) and default is not flux.pipe.scheduler


def test_request_pipeline_shares_weights_not_scheduler(pipeline_cache):
    loaded = pipeline_cache.get("tiny-sd-xl")
    config = dict(loaded.pipe.config)
    pipe = request_pipeline(loaded, make_scheduler(loaded, "DDIMScheduler"))
    assert pipe.unet is loaded.pipe.unet and pipe.vae is loaded.pipe.vae
    assert pipe.config["scheduler"][1] == "DDIMScheduler"
    assert dict(loaded.pipe.config) == config and type(loaded.pipe.scheduler).__name__ == "EulerDiscreteScheduler"


# ---- LoRA concepts ------------------------------------------------------------------------------

def test_concepts_scale_and_cleanup(pipeline_cache):
    loaded = pipeline_cache.get("tiny-sd-1_5")
    lora = pipeline_cache.lora_file(Catalog.load().get("tiny-sd-1_5-lora"), "epoch-2")
    assert lora.name == "epoch-2.safetensors"
    bare = generate(loaded)
    with loaded.lock:
        with concepts_applied(loaded, [(lora, 0.0)]):
            zero = generate(loaded)
        with concepts_applied(loaded, [(lora, 1.0)]):
            one = generate(loaded)
        with pytest.raises(RuntimeError, match="mid-request"), concepts_applied(loaded, [(lora, 1.0)]):
            raise RuntimeError("mid-request")
    np.testing.assert_array_equal(zero, bare)
    assert np.abs(one - bare).max() > 1e-3
    assert not any("lora" in name for name, _ in loaded.pipe.unet.named_modules())
    np.testing.assert_array_equal(generate(loaded), bare)  # the bare model again, bit for bit


def test_lora_epochs_differ(pipeline_cache):
    # An epoch the entry does not have is schema.resolve's to refuse (tests/test_schema.py).
    entry = Catalog.load().get("tiny-sd-1_5-lora")
    loaded = pipeline_cache.get(entry.compliant_model_ids[0])
    outputs = []
    for epoch in entry.epochs:
        with loaded.lock, concepts_applied(loaded, [(pipeline_cache.lora_file(entry, epoch), 1.0)]):
            outputs.append(generate(loaded))
    assert not np.array_equal(*outputs)


# ---- latent previews ------------------------------------------------------------------------------

@pytest.mark.parametrize("family", TINY)
def test_previews_of_a_run_have_latent_size(pipeline_cache, family):
    previews = []

    def on_step(pipe, step, timestep, tensors):
        previews.append(latents_to_preview(families.get(family), tensors["latents"], height=HEIGHT, width=WIDTH))
        return {}

    generate(pipeline_cache.get(TINY[family]), num_images_per_prompt=2, callback_on_step_end=on_step)
    assert len(previews) >= 2  # one per step (PNDM adds a warm-up step)
    assert all([image.size for image in step] == [(WIDTH // 8, HEIGHT // 8)] * 2 for step in previews)
    assert all(image.mode == "RGB" for image in previews[-1])


def test_preview_projection():
    # Zero latents show each family's bias colour; a narrower latent falls back to its first channels.
    grey_sd15, = latents_to_preview(families.SD15, torch.zeros(1, 4, 2, 3), height=16, width=24)
    assert grey_sd15.size == (3, 2) and grey_sd15.getpixel((0, 0)) == (128, 128, 128)
    sdxl, = latents_to_preview(families.SDXL, torch.zeros(1, 4, 2, 2), height=16, width=16)
    assert sdxl.getpixel((0, 0)) == (141, 125, 127)  # bias (0.1084, -0.0175, -0.0011) in [-1, 1]
    narrow, = latents_to_preview(families.SD15, torch.ones(1, 2, 1, 1), height=8, width=8)
    assert narrow.getpixel((0, 0)) == (255, 255, 128)


def test_flux_unpacking_inverts_packing():
    latents = torch.randn(2, 16, 6, 4)  # a 48x32 image: 6x4 latents, packed as 3x2 patches of 2x2
    packed = FluxFillPipeline._pack_latents(latents, 2, 16, 6, 4)
    assert packed.shape == (2, 6, 64)
    assert torch.equal(unpack_flux_latents(packed, height=48, width=32), latents)
