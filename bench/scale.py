"""Scaling out: jobs per minute with two workers against one, on local devices (INPAINT_DEVICES=cpu,cpu) and as
Ray actors, and one request through a Ray worker against the local engine.

Every worker runs torch on one thread, so two workers can use the machine's two cores; the model is the tiny
SD 1.5 of the catalog (random weights, built into the run's folder), at a size where its compute dominates."""

from __future__ import annotations

import base64
import io
import statistics
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw

from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Done
from inpaint.generate import Engine
from inpaint.jobs import JobQueue
from inpaint.pipelines import PipelineCache
from inpaint.workers import local_workers

from . import photos
from .metrics import Profile
from .timing import Metric, log

MODEL_ID = "tiny-sd-1_5"


def _body(side: int, steps: int, seed: int) -> dict:
    image = photos.load("astronaut").resize((side, side))
    mask = Image.new("L", image.size)
    ImageDraw.Draw(mask).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=255)

    def data_url(picture: Image.Image) -> str:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    return {"modelId": MODEL_ID, "prompt": "a face", "image": data_url(image), "mask": data_url(mask), "seed": seed,
            "numSamples": 1, "numInferenceSteps": steps, "strength": 1.0, "width": side, "height": side}


def _sizes(profile: Profile) -> tuple[int, int, int]:
    """Side, steps and jobs per measurement."""
    return (192, 6, 4) if profile.name == "quick" else (512, 12, 8)


def _engine(work_dir: Path) -> Engine:
    catalog = Catalog.load()
    return Engine(catalog, AssetStore(work_dir / "scale-data"),
                  PipelineCache(catalog, work_dir / "scale-models", max_pipelines=1, device="cpu"))


def _jobs_per_minute(engine: Engine, workers: list, bodies: list[dict]) -> float:
    """Jobs per minute through a job queue over `workers`, all submitted at once (inputs prepared before)."""
    queue = JobQueue(engine, max_queue=len(bodies), retention_days=None, workers=workers)
    requests = [engine.prepare(body) for body in bodies]
    queue.start()
    try:
        start = time.perf_counter()
        jobs = [queue.submit(request) for request in requests]
        while any(queue.get(job.job_id)["status"] not in ("success", "failure", "canceled") for job in jobs):
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        failed = [queue.get(job.job_id)["metadata"]["error"] for job in jobs if job.status != "success"]
    finally:
        queue.stop()
    if failed:
        raise RuntimeError(f"jobs failed: {failed[:2]}")
    return 60 * len(bodies) / seconds


def _warm(workers: list, engine: Engine, body: dict) -> None:
    """Each worker loads the model and runs once, untimed."""
    threads = [threading.Thread(target=lambda w=w: list(w.run(engine.prepare(body)))) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def workers_throughput(profile: Profile, work_dir: Path) -> list[Metric]:
    import torch

    side, steps, count = _sizes(profile)
    engine = _engine(work_dir)
    bodies = [_body(side, steps, seed) for seed in range(count)]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # per process: each worker thread runs its operators on one core
    try:
        two = local_workers(engine, ("cpu", "cpu"))
        _warm(two, engine, bodies[0])
        rates: dict[str, list[float]] = {"one": [], "two": []}
        for index in range(max(2, profile.rounds // 2)):  # alternating: drift in the machine's load hits both
            for name in ("one", "two") if index % 2 == 0 else ("two", "one"):
                rates[name].append(_jobs_per_minute(engine, two[:1] if name == "one" else two, bodies))
                log.info("  local %s worker(s): %.1f jobs/min", name, rates[name][-1])
    finally:
        torch.set_num_threads(threads_before)
    local = statistics.median(rates["two"]) / statistics.median(rates["one"])
    setup = (f"{count} jobs of {MODEL_ID} at {side}x{side}, {steps} steps, strength 1, 1 sample, submitted at once "
             f"to a job queue; torch 1 thread per worker")
    metrics = [Metric("workers_throughput", round(local, 3), ">= 1.7", "x",
                      f"local workers (INPAINT_DEVICES=cpu,cpu: two engines on the CPU, threads of one process) / "
                      f"one; {setup}; jobs/min one {_fmt(rates['one'])}, two {_fmt(rates['two'])}")]
    metrics.append(_ray_throughput(engine, bodies, setup, work_dir, profile))
    return metrics


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _ray_cluster():
    import ray

    from inpaint import ray_workers

    # A short folder: Ray's socket paths must stay under ~100 characters.
    ray_workers.init(None, num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
                     log_to_driver=False)
    return ray, ray_workers


def _ray_throughput(engine: Engine, bodies: list[dict], setup: str, work_dir: Path, profile: Profile) -> Metric:
    try:
        ray, ray_workers = _ray_cluster()
    except ImportError:
        return Metric("workers_throughput_ray", None, ">= 1.6", "x", "skipped: ray is not installed")
    try:
        engine.pipelines.get(MODEL_ID)  # built here once: the actors load it from the same folder
        two = ray_workers.connect(engine, None, count=2, models_dir=str(work_dir / "scale-models"))
        _warm(two, engine, bodies[0])
        rates: dict[str, list[float]] = {"one": [], "two": []}
        for index in range(max(2, profile.rounds // 2)):
            for name in ("one", "two") if index % 2 == 0 else ("two", "one"):
                rates[name].append(_jobs_per_minute(engine, two[:1] if name == "one" else two, bodies))
                log.info("  ray %s worker(s): %.1f jobs/min", name, rates[name][-1])
    finally:
        ray.shutdown()
    ratio = statistics.median(rates["two"]) / statistics.median(rates["one"])
    return Metric("workers_throughput_ray", round(ratio, 3), ">= 1.6", "x",
                  f"two Ray actors (a local cluster of 2 CPUs, num_cpus=1 each) / one; {setup}; "
                  f"jobs/min one {_fmt(rates['one'])}, two {_fmt(rates['two'])}")


def ray_overhead(profile: Profile, work_dir: Path) -> Metric:
    """One request at a time, through a Ray worker (inputs sent as files, events streamed, results stored
    here) against the local engine; both on one torch thread."""
    import torch

    side, steps, _ = _sizes(profile)
    engine = _engine(work_dir)
    body = _body(side, steps, seed=1)
    try:
        ray, ray_workers = _ray_cluster()
    except ImportError:
        return Metric("ray_overhead", None, "<= 1.10", "ratio", "skipped: ray is not installed")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine.pipelines.get(MODEL_ID)
        [remote] = ray_workers.connect(engine, None, count=1, models_dir=str(work_dir / "scale-models"))
        times: dict[str, list[float]] = {"local": [], "ray": []}
        runners = {"local": engine, "ray": remote}
        for runner in runners.values():  # warm-up: the model loaded on both sides
            list(runner.run(engine.prepare(body)))
        for index in range(profile.rounds):
            for name in ("local", "ray") if index % 2 == 0 else ("ray", "local"):
                request = engine.prepare(body)
                start = time.perf_counter()
                *_, last = runners[name].run(request)
                times[name].append(time.perf_counter() - start)
                if last != Done():
                    raise RuntimeError(f"{name} run ended with {last}")
    finally:
        torch.set_num_threads(threads_before)
        ray.shutdown()
    ratio = statistics.median(r / lo for r, lo in zip(times["ray"], times["local"]))
    return Metric("ray_overhead", round(ratio, 3), "<= 1.10", "ratio",
                  f"Engine.run through one Ray actor (a local cluster; the stored input files sent, events streamed "
                  f"back, the result stored on this side) / Engine.run here; {MODEL_ID} at {side}x{side}, {steps} "
                  f"steps, 1 sample, torch 1 thread on both sides; medians of {profile.rounds} interleaved "
                  f"rounds of per-round ratios; local median {statistics.median(times['local']):.3f} s, ray median "
                  f"{statistics.median(times['ray']):.3f} s")
