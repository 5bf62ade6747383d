"""gpu_time_estimate_error: how well the ZeroGPU duration's cost model predicts the time of a call.

The cost model (inpaint/zerogpu.py) is per device and per family:

    seconds = call_s + samples * MP * (sample_s_per_mp + steps_run * step_s_per_mp)

Its ZeroGPU table is for a GPU slice and cannot be checked here; what can be checked is the model's form, and
the way a table is calibrated. So on this machine (the CPU, tiny random-weight models of each family, built
offline) the bench calibrates a CPU table and checks it on other requests:

1. Each pipeline is loaded (not timed: on a Space the models are placed at startup) and warmed up: its first
   call pays for lazy initialisation.
2. Per family, six calibration requests that span the steps, the strength, the samples and the processing
   size, and ten evaluation requests (family, steps, strength, samples, size) that are none of them, are
   timed in rounds: each round runs every request once, in a shuffled order (another each round), so that a
   drift of the machine's load, or a switch from another family's pipeline, hits calibration and evaluation
   alike. A request's time is its median over the rounds.
3. Per family, call_s, sample_s_per_mp and step_s_per_mp are fitted to the calibration medians by least
   squares of the relative error (each row divided by its measured time, numpy.linalg.lstsq) under the
   constraint that all three are >= 0: with three unknowns the non-negative fit is exact by trying every
   subset of them and keeping the best fit whose coefficients are all >= 0.
4. The evaluation requests are predicted from that table (zerogpu.request_seconds with costs=) and compared
   with their medians: the value is the worst max(r, 1/r) of r = predicted / measured, reported with the
   median and the range of r and each request's figures.

Near 1 means the form holds and the calibration recovers it; on a GPU the same fit gives that device's table.
Tiny models on a CPU spend relatively much per call and per step outside the megapixel work (Python, the
scheduler, the text encoders), so the sizes are large enough for the tiny models' compute to show: call_s
takes the per-call part, and the per-step part not proportional to the megapixels is what remains of error,
with the VAE encode that a strength below 1 adds per sample (which the calibration spans, so the fit averages it).
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from pathlib import Path

import numpy as np

from inpaint import zerogpu
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.families import GpuCost
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from inpaint.events import results
from tests.support.images import data_url, photo, rect_mask

from .timing import Metric, log

GOAL = "<= 1.5"  # the worst ratio's distance from 1, as max(r, 1/r)
MODELS = {"sd-1_5": "tiny-sd-1_5", "sd-xl": "tiny-sd-xl", "flux.1": "tiny-flux.1"}
# Requests as (steps, strength, samples, side), sides within each tiny family's range (SDXL's starts at 512).
CALIBRATION = {
    "sd-1_5": [(1, 1.0, 1, 192), (2, 0.5, 4, 256), (12, 1.0, 1, 192), (10, 0.75, 2, 256), (4, 1.0, 3, 224),
               (24, 0.5, 1, 256)],
    "sd-xl": [(1, 1.0, 1, 512), (2, 0.5, 3, 576), (6, 1.0, 1, 512), (4, 0.75, 2, 576), (2, 1.0, 2, 512),
              (12, 0.5, 1, 576)],
    "flux.1": [(1, 1.0, 1, 192), (2, 0.5, 4, 256), (12, 1.0, 1, 192), (10, 0.75, 2, 256), (4, 1.0, 3, 224),
               (24, 0.5, 1, 256)],
}
HELD_OUT = [("sd-1_5", 8, 0.5, 1, 224), ("sd-1_5", 20, 0.75, 2, 192), ("sd-1_5", 6, 1.0, 3, 256),
            ("sd-xl", 6, 0.75, 1, 576), ("sd-xl", 4, 1.0, 2, 512), ("sd-xl", 4, 0.5, 3, 512),
            ("flux.1", 8, 1.0, 1, 256), ("flux.1", 16, 0.5, 2, 192), ("flux.1", 5, 1.0, 3, 224),
            ("flux.1", 12, 0.75, 1, 224)]
ROUNDS = {True: 3, False: 5}  # quick, full


def _prepared(engine: Engine, family: str, steps: int, strength: float, samples: int, side: int):
    body = {"modelId": MODELS[family], "prompt": "a boat", "image": data_url(photo(side, side, seed=3)),
            "mask": data_url(rect_mask(side, side, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))),
            "width": side, "height": side, "numInferenceSteps": steps, "strength": strength,
            "numSamples": samples, "seed": 1}
    return engine.prepare(body)


def _timed(engine: Engine, request) -> float:
    start = time.perf_counter()
    results(engine.run(request))
    return time.perf_counter() - start


def _terms(request) -> tuple[float, float]:
    """The model's sample and step terms of a request: samples x MP, and that x the steps run."""
    sample_mp = max(1, request.num_samples) * request.width * request.height / 1e6
    return sample_mp, sample_mp * zerogpu.steps_run(request.num_inference_steps, request.strength)


def fit(terms: list[tuple[float, float]], seconds: list[float]) -> GpuCost:
    """call_s, sample_s_per_mp and step_s_per_mp, all >= 0, with the least squared relative error over
    (samples x MP, samples x MP x steps run) -> seconds. Every subset of the three is fitted; the best fit whose
    coefficients are all >= 0 is the non-negative least-squares solution."""
    measured = np.asarray(seconds, dtype=float)
    a = np.array([[1.0, x, y] for x, y in terms]) / measured[:, None]
    b = np.ones(len(measured))
    best: tuple[float, np.ndarray] | None = None
    for size in (3, 2, 1):
        for columns in itertools.combinations(range(3), size):
            solved, *_ = np.linalg.lstsq(a[:, columns], b, rcond=None)
            if (solved < 0).any():
                continue
            coefficients = np.zeros(3)
            coefficients[list(columns)] = solved
            error = float(np.sum((a @ coefficients - b) ** 2))
            if best is None or error < best[0]:
                best = (error, coefficients)
    if best is None:  # no positive fit at all (times that fall with the work): the mean time per call
        best = (0.0, np.array([float(np.mean(measured)), 0.0, 0.0]))
    call_s, sample_s, step_s = (float(c) for c in best[1])
    return GpuCost(call_s=call_s, step_s_per_mp=step_s, sample_s_per_mp=sample_s)


def run(work_dir: Path, *, quick: bool = True) -> Metric:
    catalog = Catalog.load()
    engine = Engine(catalog, AssetStore(work_dir / "gpu-time-data"),
                    PipelineCache(catalog, work_dir / "gpu-time-models", max_pipelines=3, device="cpu"))
    rounds = ROUNDS[quick]
    try:
        for family, model_id in MODELS.items():
            engine.pipelines.get(model_id)  # placed first, as on a Space: the load is not timed
            side = min(s for *_, s in CALIBRATION[family])
            for _ in range(2):  # warm-up: lazy initialisation on the first call
                _timed(engine, _prepared(engine, family, 2, 1.0, 1, side))
        plan = [(family, spec) for family, specs in CALIBRATION.items() for spec in specs]
        plan += [(family, tuple(spec)) for family, *spec in HELD_OUT]
        times: dict[int, list[float]] = {index: [] for index in range(len(plan))}
        requests: dict[int, object] = {}
        for round_ in range(rounds):
            order = list(range(len(plan)))
            random.Random(round_).shuffle(order)
            started = time.perf_counter()
            for index in order:
                family, spec = plan[index]
                requests[index] = request = _prepared(engine, family, *spec)
                times[index].append(_timed(engine, request))
            log.info("  round %d/%d: %.1f s", round_ + 1, rounds, time.perf_counter() - started)
        median = {index: statistics.median(ts) for index, ts in times.items()}

        costs: dict[str, GpuCost] = {}
        for family in CALIBRATION:
            indices = [i for i, (f, _) in enumerate(plan) if f == family][:len(CALIBRATION[family])]
            costs[family] = fit([_terms(requests[i]) for i in indices], [median[i] for i in indices])
            for i in indices:
                log.info("  %s %s: %.3f s, fitted %.3f s", family, plan[i][1], median[i],
                         zerogpu.request_seconds(requests[i], costs=costs))
        ratios, rows = [], []
        for index in range(len(plan) - len(HELD_OUT), len(plan)):
            family, (steps, strength, samples, side) = plan[index]
            predicted = zerogpu.request_seconds(requests[index], costs=costs)
            ratios.append(predicted / median[index])
            rows.append(f"{family} {steps}x{strength} n{samples} {side}px {predicted:.2f}/{median[index]:.2f}s")
    finally:
        engine.store.close()
    worst = max(max(r, 1 / r) for r in ratios)
    table = ", ".join(f"{f}: {c.call_s:.3f} s + {c.sample_s_per_mp:.2f} s/sample/MP + "
                      f"{c.step_s_per_mp:.3f} s/step/MP" for f, c in costs.items())
    return Metric("gpu_time_estimate_error", round(worst, 3), GOAL, "ratio",
                  f"predicted/measured (medians of {rounds} interleaved rounds) over {len(ratios)} evaluation CPU "
                  f"requests: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}; "
                  f"CPU calibration from {sum(map(len, CALIBRATION.values()))} other requests (non-negative "
                  f"relative least squares): {table}; {'; '.join(rows)}")
