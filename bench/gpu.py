"""GPU metrics: the engine against the raw pipeline call with an SD-1.5-sized model, eager and compiled."""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from inpaint.events import Failed, Progress
from tests.support.images import data_url, photo, rect_mask

from . import models
from .timing import Metric, interleaved, log, median_ratio, summary

GOAL = ">= 0.97"
PROMPT = "a wooden boat on a lake"
SEED = 1234


def skipped(reason: str) -> list[Metric]:
    return [Metric("gpu_speed_ratio", None, GOAL, "ratio",
                   f"skipped: {reason}; with a CUDA device this measures the engine's it/s / the raw pipeline "
                   f"call's on a real-size SD 1.5 pipeline in fp16 (512x512, 30 steps, 4 samples), eager "
                   f"(gpu_speed_ratio) and with the UNet compiled (gpu_compile_speed_ratio), the peak VRAM of "
                   f"both (gpu_peak_vram), and two mask regions against one (gpu_multi_region_cost)")]


def run(work_dir: Path, *, rounds: int) -> list[Metric]:
    if not torch.cuda.is_available():
        return skipped("no CUDA device is present (torch.cuda.is_available() is False)")
    return measure(work_dir, shape=models.REAL, device="cuda", side=512, steps=30, samples=4, rounds=rounds)


def measure(work_dir: Path, *, shape: models.Shape, device: str, side: int, steps: int, samples: int,
            rounds: int, compile_unet: bool = True) -> list[Metric]:
    """Ours vs raw at full strength (all `steps` run), eager and with the UNet compiled.

    it/s is the denoising loop's rate, timed from the first to the last step's end (the device synchronised
    at each, in both); the end-to-end time of the whole call (ours: data URL in, PNG + WebP stored) is
    reported beside it.
    """
    model_id = models.REAL_MODEL_ID if shape is models.REAL else models.MID_MODEL_ID
    engine = models.engine(work_dir / "gpu-data", shape, device=device, max_batch=samples)
    loaded = engine.pipelines.get(model_id)
    pipe, cuda = loaded.pipe, device == "cuda"
    image = photo(side, side, seed=6)
    mask = rect_mask(side, side, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    body = {"modelId": model_id, "prompt": PROMPT, "seed": SEED, "image": data_url(image), "mask": data_url(mask),
            "width": side, "height": side, "numInferenceSteps": steps, "strength": 1.0, "numSamples": samples}
    stored_mask = engine.store.open_image(engine.prepare(body).mask_asset_id).convert("L")
    rates: dict[str, list[float]] = {"ours": [], "raw": []}

    def tick(ticks: list[float]) -> None:
        if cuda:
            torch.cuda.synchronize()
        ticks.append(time.perf_counter())

    def rate(ticks: list[float]) -> float:
        return (steps - 1) / (ticks[steps - 1] - ticks[0])  # the first `steps` ticks are the step ends

    def ours() -> None:
        ticks: list[float] = []
        for event in engine.run(engine.prepare(body)):
            if isinstance(event, Progress):
                tick(ticks)
            elif isinstance(event, Failed):
                raise event.error()
        rates["ours"].append(rate(ticks))

    def raw() -> None:
        ticks: list[float] = []

        def on_step_end(pipe, step, timestep, callback_kwargs):
            tick(ticks)
            return callback_kwargs

        pipe(prompt=[PROMPT] * samples, image=[image] * samples, mask_image=[stored_mask] * samples,
             width=side, height=side, strength=1.0, num_inference_steps=steps, guidance_scale=7.5,
             generator=[torch.Generator().manual_seed(SEED + i) for i in range(samples)], output_type="pil",
             callback_on_step_end=on_step_end)
        rates["raw"].append(rate(ticks))

    def compare(name: str, extra: str) -> tuple[Metric, dict]:
        rates["ours"].clear(), rates["raw"].clear()
        times = interleaved({"raw": raw, "ours": ours}, rounds)  # the warm-up run also compiles, if asked
        del rates["ours"][0], rates["raw"][0]  # the warm-up's
        ratio = statistics.median(o / r for o, r in zip(rates["ours"], rates["raw"]))
        detail = (f"denoising it/s, ours / raw: {statistics.median(rates['ours']):.2f} / "
                  f"{statistics.median(rates['raw']):.2f} it/s{extra}; whole call (ours: data URL in, PNG + WebP "
                  f"stored) ours / raw = {median_ratio(times, 'ours', 'raw'):.3f}; {setting}; {summary(times)}")
        return Metric(name, round(ratio, 3), GOAL, "ratio", detail), times

    def peak_vram_gb(fn) -> float:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fn()
        return torch.cuda.max_memory_allocated() / 2**30

    setting = (f"{shape.name} pipeline (random weights) in {str(loaded.dtype).removeprefix('torch.')} on "
               f"{torch.cuda.get_device_name() if cuda else device}, {side}x{side}, {steps} steps, {samples} samples "
               f"in one batch, merge mode with the region = the whole image; medians of {rounds} interleaved rounds")
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # random fp16 weights may decode to NaN pixels
        eager, eager_times = compare("gpu_speed_ratio", "")
        metrics = [eager]
        if cuda:
            from .seams import multi_region_metric

            metrics.append(multi_region_metric(
                "gpu_multi_region_cost", engine, model_id, steps=steps, samples=1, rounds=rounds,
                note=f"{shape.name} pipeline (random weights) in {str(loaded.dtype).removeprefix('torch.')} on "
                     f"{torch.cuda.get_device_name()}, eager: the batch of two crops against one"))
        if cuda:
            vram = {"ours": peak_vram_gb(ours), "raw": peak_vram_gb(raw)}
            metrics.append(Metric("gpu_peak_vram", round(vram["ours"] / vram["raw"], 3), "report", "ratio",
                                  f"peak allocated VRAM, ours {vram['ours']:.2f} GB / raw {vram['raw']:.2f} GB; "
                                  f"{setting}"))
        if compile_unet:
            eager_raw = statistics.median(rates["raw"])
            start = time.perf_counter()
            pipe.unet.compile()  # in place: the engine's per-request pipelines share this module
            compiled, _ = compare("gpu_compile_speed_ratio", "")
            log.info("compiled UNet: %.0f s including compilation", time.perf_counter() - start)
            speedup = statistics.median(rates["raw"]) / eager_raw
            metrics.append(dataclasses.replace(compiled, detail=f"pipe.unet.compile(): the raw loop runs "
                                                                f"{speedup:.2f}x its eager rate; " + compiled.detail))
    engine.store.close()
    return metrics
