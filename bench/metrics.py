"""The CPU metrics of the benchmark, each a function of the shared Bench returning a Metric."""

from __future__ import annotations

import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inpaint import families, imageops, pipelines
from inpaint.jobs import Job, run_job
from inpaint.previews import latents_to_preview
from inpaint.events import results
from tests.support.images import data_url, photo, rect_mask

from . import memory, models
from .timing import Metric, interleaved, median_ratio, median_time, summary

PROMPT = "a wooden boat on a lake"
SEED = 1234
GUIDANCE = 7.5  # SD 1.5's default: classifier-free guidance doubles the UNet batch, as in real use
REST_WAIT_S = 30  # the REST client's long-poll: the server answers once the job ended or changed, or after this
REST_SERVER = ("import sys, uvicorn; from inpaint.api import create_app; "
               "uvicorn.run(create_app(with_ui=False), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')")


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and repeats of a run. Timed requests generate `side` x `side` at `steps` (x 0.75 strength)."""

    name: str
    side: int
    steps: int
    samples: int
    rounds: int
    memory_side: int
    drift_size: tuple[int, int]
    memory_counts: tuple[int, int] = (8, 128)


QUICK = Profile("quick", side=256, steps=4, samples=1, rounds=3, memory_side=64, drift_size=(384, 256))
# Stricter than the API's default request (30 steps, 4 samples): the engine's fixed costs weigh more.
FULL = Profile("full", side=512, steps=20, samples=2, rounds=5, memory_side=512, drift_size=(768, 512))


class Bench:
    """One engine over a fresh store with the mid-size model loaded, shared by the metrics."""

    def __init__(self, profile: Profile, work_dir: Path):
        self.profile = profile
        self.work_dir = work_dir
        self.engine = models.engine(work_dir / "data")
        start = time.perf_counter()
        self.loaded = self.engine.pipelines.get(models.MID_MODEL_ID)
        self.load_s = time.perf_counter() - start
        # One untimed run of each path at the profile's size: first calls build kernels and caches.
        side = profile.side
        warm = self.body(photo(side, side), _centered_half_mask(side))
        self.run(warm)
        self.loaded.pipe(prompt=PROMPT, image=photo(side, side), mask_image=_centered_half_mask(side), width=side,
                         height=side, num_inference_steps=profile.steps, strength=0.75, guidance_scale=GUIDANCE,
                         generator=torch.Generator().manual_seed(SEED))

    def body(self, image: Image.Image, mask: Image.Image, **fields) -> dict:
        p = self.profile
        return {"modelId": models.MID_MODEL_ID, "prompt": PROMPT, "seed": SEED, "guidance": GUIDANCE,
                "image": data_url(image), "mask": data_url(mask), "numInferenceSteps": p.steps,
                "numSamples": p.samples, "width": p.side, "height": p.side, **fields}

    def run(self, body: dict) -> list:
        return results(self.engine.run(self.engine.prepare(body)))

    def setting(self) -> str:
        p = self.profile
        steps = int(p.steps * 0.75)
        return (f"{models.MID.name} pipeline, {p.side}x{p.side}, {p.steps} steps x strength 0.75 = {steps} run, "
                f"{p.samples} sample(s), guidance {GUIDANCE}, medians of {p.rounds} interleaved rounds")


def _centered_half_mask(side: int) -> Image.Image:
    # Grown by 8 px and padded with context, this box's crop is the whole image: merge mode then
    # generates exactly the region the raw call does.
    return rect_mask(side, side, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))


def _asset_np(bench: Bench, asset) -> np.ndarray:
    return np.asarray(bench.engine.store.open_image(asset.id).convert("RGB"))


# ---- engine_overhead -----------------------------------------------------------------------------

def engine_overhead(bench: Bench) -> Metric:
    p, pipe = bench.profile, bench.loaded.pipe
    image, mask = photo(p.side, p.side, seed=1), _centered_half_mask(p.side)
    merge = bench.body(image, mask)
    whole = bench.body(image, mask, disableMerging=True)
    prepared = bench.engine.prepare(merge)
    stored_mask = bench.engine.store.open_image(prepared.mask_asset_id).convert("L")
    assert imageops.crop_box(stored_mask) == (0, 0, p.side, p.side), "the merge region must be the whole image"

    def raw(batch: int = p.samples) -> list[Image.Image]:
        # What a diffusers user writes for the same result: one image copy and one generator per sample
        # (the engine's per-sample reproducibility), the mask the engine prepared (grown by 8 px); all the samples
        # in one call, or in calls of `batch` samples.
        images = []
        for first in range(0, p.samples, batch):
            seeds = [SEED + i for i in range(first, min(first + batch, p.samples))]
            images += pipe(prompt=[PROMPT] * len(seeds), image=[image] * len(seeds),
                           mask_image=[stored_mask] * len(seeds), width=p.side, height=p.side, strength=0.75,
                           num_inference_steps=p.steps, guidance_scale=GUIDANCE, output_type="pil",
                           generator=[torch.Generator().manual_seed(seed) for seed in seeds]).images
        return images

    def raw_one_image() -> list[Image.Image]:
        # The shortest call: one image for the batch, so the VAE encodes it once, not once per sample.
        return pipe(prompt=PROMPT, image=image, mask_image=stored_mask, num_images_per_prompt=p.samples,
                    width=p.side, height=p.side, strength=0.75, num_inference_steps=p.steps,
                    guidance_scale=GUIDANCE, output_type="pil",
                    generator=[torch.Generator().manual_seed(SEED + i) for i in range(p.samples)]).images

    # Same work: the engine's whole-image results equal the raw calls' pixel for pixel, once its colour match (on
    # by default, a step raw diffusers lacks) is off, when the raw calls batch the samples as the engine does on
    # this device (a batch of two is not bit for bit two calls of one: the float sums run in another order).
    ours_np = [_asset_np(bench, asset) for asset in bench.run({**whole, "colorMatch": "none"})]
    identical = all(np.array_equal(a, np.asarray(b)) for a, b in zip(ours_np, raw(bench.engine.max_batch)))
    variants = {"raw": raw, "merge": lambda: bench.run(merge), "whole": lambda: bench.run(whole)}
    if p.samples > 1:
        variants["raw_1img"] = raw_one_image
    times = interleaved(variants, p.rounds, warmup=0)
    value = median_ratio(times, "merge", "raw")
    detail = (f"ours = prepare(data URLs) + generate + PNG/WebP results stored, merge mode (default) with the "
              f"region = the whole {p.side}x{p.side} image; whole-image mode (disableMerging) / raw = "
              f"{median_ratio(times, 'whole', 'raw'):.3f}; engine and raw results identical (raw in the engine's "
              f"micro-batches of {bench.engine.max_batch} here): {identical}; ")
    if p.samples > 1:
        detail += (f"raw with one shared image (VAE encodes once, samples not reproducible alone) / raw = "
                   f"{median_ratio(times, 'raw_1img', 'raw'):.3f}; ")
    detail += f"{bench.setting()}; {summary(times)}"
    return Metric("engine_overhead", round(value, 3), "<= 1.05", "ratio", detail)


# ---- rest_overhead -------------------------------------------------------------------------------

def rest_overhead(bench: Bench) -> Metric:
    import httpx

    p = bench.profile
    body = bench.body(photo(p.side, p.side, seed=2), _centered_half_mask(p.side))
    # The server in its own process, as `python app.py` runs it, over the same catalog and model folder; the
    # client long-polls as the README's round trip does (a client that polls instead costs the generation a
    # little: every poll holds the server's GIL for about a millisecond that its generation thread also wants).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INPAINT_CATALOG": str(models.catalog_path()), "HF_HUB_OFFLINE": "1",
           "INPAINT_MODELS_DIR": str(models.CACHE_DIR / "models"), "INPAINT_DATA_DIR": str(bench.work_dir / "rest")}
    server = subprocess.Popen([sys.executable, "-c", REST_SERVER, str(port)], env=env, cwd=memory.REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

    def rest() -> None:
        wait = {"wait": REST_WAIT_S}
        job = client.post("/generate/inpaint", json=body, params=wait).raise_for_status().json()["job"]
        while job["status"] in ("queued", "in-progress"):
            job = client.get(f"/jobs/{job['jobId']}", params=wait).raise_for_status().json()["job"]
        if job["status"] != "success":
            raise RuntimeError(f"REST job ended {job['status']}: {job['metadata']['error']}")
        for asset in job["metadata"]["assets"]:
            client.get(asset["url"]).raise_for_status()

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client.get("/models").raise_for_status()
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the REST server did not start") from None
                time.sleep(0.2)
        times = interleaved({"engine": lambda: bench.run(body), "rest": rest}, p.rounds, warmup=1)
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)
    value = median_ratio(times, "rest", "engine")
    detail = (f"POST /generate/inpaint?wait={REST_WAIT_S} (JSON with data URLs; it answers once the job ended), "
              f"GET /jobs/{{id}}?wait={REST_WAIT_S} while it runs on, GET each result's file (WebP rendition), "
              f"against the server in its own process on loopback / engine prepare + generate in this one, merge "
              f"mode; {bench.setting()}; {summary(times)}")
    return Metric("rest_overhead", round(value, 3), "<= 1.10", "ratio", detail)


# ---- image_size_scaling --------------------------------------------------------------------------

def image_size_scaling(bench: Bench) -> Metric:
    p = bench.profile
    bodies = {}
    for side in (512, 2048):
        center = side // 2
        mask = rect_mask(side, side, (center - 64, center - 64, center + 64, center + 64))  # 128x128
        bodies[side] = bench.body(photo(side, side, seed=3), mask)
    times = interleaved({"512": lambda: bench.run(bodies[512]), "2048": lambda: bench.run(bodies[2048])}, p.rounds, warmup=0)
    value = median_ratio(times, "2048", "512")
    detail = (f"merge mode, the same 128x128 mask in the centre of a 2048x2048 / a 512x512 photo-like image "
              f"(data URL in, full-size PNG + WebP results stored); {bench.setting()}; {summary(times)}")
    return Metric("image_size_scaling", round(value, 3), "<= 1.3", "ratio", detail)


# ---- previews ------------------------------------------------------------------------------------

def preview_overhead(bench: Bench) -> Metric:
    p = bench.profile
    image, mask = photo(p.side, p.side, seed=4), _centered_half_mask(p.side)
    bodies = {flag: bench.body(image, mask, intermediateImages=flag) for flag in (False, True)}
    steps_run = []

    def job(flag: bool) -> None:
        # A job as the REST API runs it: with previews, each step's strip is stored as a preview asset.
        done = run_job(bench.engine, Job(bench.engine.prepare(bodies[flag])))
        if done.status != "success":
            raise RuntimeError(f"job ended {done.status}: {done.error}")
        if flag:
            steps_run.append(len(done.previews))

    times = interleaved({"off": lambda: job(False), "on": lambda: job(True)}, p.rounds, warmup=0)
    value = median_ratio(times, "on", "off")
    per_step_ms = (statistics.median(times["on"]) - statistics.median(times["off"])) / max(1, steps_run[-1]) * 1000
    detail = (f"a job (engine + job bookkeeping) with intermediateImages true / false; previews every step "
              f"({steps_run[-1]} per job), each stored as a preview asset; ~{per_step_ms:.1f} ms per preview "
              f"(median difference / previews); {bench.setting()}; {summary(times)}")
    return Metric("preview_overhead", round(value, 3), "<= 1.05", "ratio", detail)


def preview_vs_vae(bench: Bench) -> Metric:
    p, pipe = bench.profile, bench.loaded.pipe
    generator = torch.Generator().manual_seed(SEED)
    latents = torch.randn(p.samples, 4, p.side // 8, p.side // 8, generator=generator)

    def ours() -> None:
        latents_to_preview(families.SD15, latents, height=p.side, width=p.side)

    @torch.no_grad()
    def vae() -> None:
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        pipe.image_processor.postprocess(decoded, output_type="pil")

    repeats = max(3, p.rounds)
    ours_s, vae_s = median_time(ours, repeats * 4), median_time(vae, repeats)
    detail = (f"one step's previews of {p.samples} sample(s) at {p.side}x{p.side}: latent-to-RGB projection "
              f"{ours_s * 1000:.2f} ms vs VAE decode + to PIL {vae_s * 1000:.0f} ms (medians)")
    return Metric("preview_vs_vae", round(ours_s / vae_s, 5), "report", "ratio", detail)


# ---- warm_cache ----------------------------------------------------------------------------------

def warm_cache(bench: Bench) -> Metric:
    engine = models.engine(bench.work_dir / "warm-cache")  # its own cache: the first load is cold
    loads: list[tuple[str, float]] = []
    real_from_pretrained = pipelines._from_pretrained

    def counted(cls, source, **kwargs):
        start = time.perf_counter()
        try:
            return real_from_pretrained(cls, source, **kwargs)
        finally:
            loads.append((str(source), time.perf_counter() - start))

    side = 64  # the cheapest request: the cache is what is timed here, not the generation
    body = {"prompt": PROMPT, "seed": SEED, "image": data_url(photo(side, side)), "strength": 1.0,
            "mask": data_url(_centered_half_mask(side)), "numInferenceSteps": 1, "numSamples": 1,
            "width": side, "height": side}

    def request(model_id: str) -> float:
        """Seconds spent in model loading (from_pretrained) during one whole request."""
        before = sum(s for _, s in loads)
        results(engine.run(engine.prepare({**body, "modelId": model_id})))
        return sum(s for _, s in loads) - before

    pipelines._from_pretrained = counted
    try:
        first = request(models.MID_MODEL_ID)
        second = request(models.MID_MODEL_ID)
        count_after_second = len(loads)
        request(models.MID_MODEL_ID_B)  # now both are cached (max_pipelines=2)
        switch_load, switches = 0.0, []
        for index in range(10):
            target = (models.MID_MODEL_ID, models.MID_MODEL_ID_B)[index % 2]
            start = time.perf_counter()
            engine.pipelines.get(target)
            switches.append(time.perf_counter() - start)
            switch_load += request(target)
    finally:
        pipelines._from_pretrained = real_from_pretrained
        engine.store.close()
    detail = (f"first request: {first:.3f} s in from_pretrained; second request of the same model: {second:.3f} s "
              f"({count_after_second} load(s) in all); switching between two cached models "
              f"({models.MID_MODEL_ID}, {models.MID_MODEL_ID_B}): cache lookup median "
              f"{statistics.median(switches) * 1e6:.0f} us, {switch_load:.3f} s of loading over 10 alternating requests "
              f"(CPU: models stay in memory, nothing moves)")
    return Metric("warm_cache", round(second, 6), "== 0", "s", detail)


# ---- memory_128 ----------------------------------------------------------------------------------

def memory_start(bench: Bench) -> list:
    """Start both children at once, each on its share of the cores; their RSS is their own."""
    p = bench.profile
    threads = max(1, (os.cpu_count() or 2) // 2)
    return [memory.measure({"side": p.memory_side, "steps": 1, "samples": count}, threads=threads)
            for count in p.memory_counts]


def memory_finish(bench: Bench, children: list) -> Metric:
    p = bench.profile
    small, large = (memory.result(child) for child in children)
    value = large["peak_mb"] / small["peak_mb"]
    growth = (large["peak_mb"] - large["loaded_mb"]) / max(1e-9, small["peak_mb"] - small["loaded_mb"])
    during = "during the request" if small["peak_reset"] and large["peak_reset"] else "over the process's life"
    detail = (f"peak RSS {during}, in a fresh process per request, numSamples {p.memory_counts[1]} / "
              f"{p.memory_counts[0]}: {large['peak_mb']:.0f} MB / {small['peak_mb']:.0f} MB; RSS with the model "
              f"loaded before it {large['loaded_mb']:.0f} / {small['loaded_mb']:.0f} MB (growth above that "
              f"{growth:.2f}x; loading itself peaked at {large['load_peak_mb']:.0f} MB); micro-batches of "
              f"{large['max_batch']}; merge mode at {p.memory_side}x{p.memory_side}, 1 step, strength 1; "
              f"{large['seconds']:.0f} s / {small['seconds']:.0f} s")
    if p.memory_side != FULL.memory_side:
        detail = f"quick run: at {p.memory_side}x{p.memory_side}, not {FULL.memory_side}x{FULL.memory_side}; " + detail
    return Metric("memory_128", round(value, 3), "<= 1.5", "ratio", detail)


# ---- outside_mask_drift --------------------------------------------------------------------------

def outside_mask_drift(bench: Bench) -> Metric:
    p, pipe = bench.profile, bench.loaded.pipe
    width, height = p.drift_size
    image = photo(width, height, seed=5)
    mask = rect_mask(width, height, (width // 2 - 48, height // 2 - 40, width // 2 + 48, height // 2 + 40))
    body = bench.body(image, mask, numSamples=1)
    request = bench.engine.prepare(body)
    [ours] = results(bench.engine.run(request))
    # "Outside the mask": outside the mask as the engine stored it (the user's, grown by 8 px).
    outside_np = np.asarray(bench.engine.store.open_image(request.mask_asset_id).convert("L")) == 0
    image_np = np.asarray(image).astype(np.int16)
    ours_diff = np.abs(_asset_np(bench, ours).astype(np.int16) - image_np)[outside_np]

    # The common demo: the whole image squeezed to the model's size, generated, stretched back.
    size = (p.side, p.side)
    squeezed_mask = mask.resize(size, Image.Resampling.NEAREST)
    demo = pipe(prompt=PROMPT, image=image.resize(size, Image.Resampling.BICUBIC), mask_image=squeezed_mask,
                width=p.side, height=p.side, strength=0.75, num_inference_steps=p.steps, guidance_scale=GUIDANCE,
                generator=torch.Generator().manual_seed(SEED), output_type="pil").images[0]
    demo_np = np.asarray(demo.resize((width, height), Image.Resampling.BICUBIC)).astype(np.int16)
    demo_diff = np.abs(demo_np - image_np)[outside_np]
    # With random weights the demo's VAE round trip is noise; what any model would still do to those
    # pixels is the resize round trip alone, measured on the input itself.
    resized_np = np.asarray(image.resize(size, Image.Resampling.BICUBIC).resize((width, height), Image.Resampling.BICUBIC))
    resize_diff = np.abs(resized_np.astype(np.int16) - image_np)[outside_np]
    seam_px = bench.engine.catalog.get(models.MID_MODEL_ID).family.seam_px
    detail = (f"{width}x{height} photo-like image, 96x80 mask; max |difference| from the input outside the stored mask "
              f"(the user's mask grown by {seam_px} px), 0..255: ours (merge mode) {int(ours_diff.max())}; "
              f"the demo approach (resize to {p.side}x{p.side}, generate, resize back) {int(demo_diff.max())} here "
              f"(random weights: its VAE output is noise), and the resize round trip alone, i.e. a perfect model, "
              f"{int(resize_diff.max())} (mean {resize_diff.mean():.1f}, "
              f"{np.mean(resize_diff.max(axis=-1) > 0) * 100:.0f}% of those pixels changed)")
    return Metric("outside_mask_drift", int(ours_diff.max()), "== 0", "max |px diff|", detail)
