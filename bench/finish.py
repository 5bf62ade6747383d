"""Results finished in parallel: the time from a batch's last denoising step to the job's end (its results colour
matched, merged back, measured, encoded and stored), with 4 samples in the batch against 1, through the engine on
the CPU with the shipped tiny SD 1.5. One after another the 4 would take about 4 times the 1; on a pool of
finishing threads they overlap."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Done, Failed, Progress
from inpaint.generate import FINISH_WORKERS, Engine
from inpaint.pipelines import PipelineCache
from tests.support.images import data_url, rect_mask

from . import models, photos
from .timing import Metric, interleaved

TINY = "tiny-sd-1_5"
SAMPLES = 4
SIDES = {"quick": 1024, "full": 2048}  # the picture: merging, the seam report and the PNG grow with it
REGION_PX = 256  # the generated size: the tiny model's denoising stays a small part of the job


def finish_overlap(profile, work_dir: Path) -> Metric:
    catalog = Catalog.load()
    engine = Engine(catalog, AssetStore(work_dir / "finish"),
                    PipelineCache(catalog, models.CACHE_DIR / "models", max_pipelines=1, device="cpu"),
                    max_batch=SAMPLES)
    side = SIDES[profile.name]
    mark = side // 4
    body = {"modelId": TINY, "prompt": "a photograph", "image": data_url(photos.crop("astronaut", side)),
            "mask": data_url(rect_mask(side, side, (side // 2 - mark, side // 2 - mark, side // 2 + mark,
                                                    side // 2 + mark))),
            "seed": 7, "numInferenceSteps": 2, "width": REGION_PX, "height": REGION_PX}
    tails: dict[int, list[float]] = {1: [], SAMPLES: []}

    def job(samples: int) -> None:
        last_step = None
        for event in engine.run(engine.prepare({**body, "numSamples": samples})):
            # The first Progress at 1.0 is the last step's (the results' own comes once they are stored).
            if isinstance(event, Progress) and event.fraction >= 1 and last_step is None:
                last_step = time.perf_counter()
            elif isinstance(event, Done):
                tails[samples].append(time.perf_counter() - last_step)
            elif isinstance(event, Failed):
                raise RuntimeError(f"the job failed: {event}")

    interleaved({str(samples): lambda samples=samples: job(samples) for samples in tails}, profile.rounds, warmup=1)
    for samples in tails:
        del tails[samples][0]  # the warm-up round's
    ratio = statistics.median(many / one for many, one in zip(tails[SAMPLES], tails[1]))
    engine.store.close()
    detail = (f"from the last denoising step to the job's end (Done), {SAMPLES} samples in one batch against 1, "
              f"{TINY} on the CPU generating {REGION_PX}x{REGION_PX} for a {side}x{side} photograph with the middle "
              f"{2 * mark} px square masked, {FINISH_WORKERS} finishing threads; medians of {len(tails[1])} "
              f"interleaved rounds' ratios: 1 sample {statistics.median(tails[1]):.3f} s, {SAMPLES} samples "
              f"{statistics.median(tails[SAMPLES]):.3f} s (one after another they would take about {SAMPLES}x)")
    return Metric("finish_overlap", round(ratio, 2), "report", "ratio", detail)
