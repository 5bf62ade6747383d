"""What a folder batch costs over its requests (`batch_overhead`): `python -m inpaint batch`'s code over N real
photographs in one process, against the same N requests made one after the other as `python -m inpaint generate`
makes one (read the files, prepare, run the job, copy each result out, save the job), on the same engine."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from inpaint import batch, imageops
from inpaint.jobs import Job
from inpaint.runs import Local, run_into

from . import photos
from .classical import classical_engine
from .timing import Metric, interleaved, log, median_ratio, summary

MODEL_ID = "opencv-telea"  # the fastest model: what the batch adds weighs most against it
PICTURES = {"quick": 8, "full": 16}
SIDE = {"quick": 256, "full": 512}
ROUNDS = {"quick": 9, "full": 11}
SEED = 1234


def _pictures(folder: Path, count: int, side: int) -> tuple[Path, Path]:
    """`count` crops of the photographs in pictures/, each with an object-sized hole of the same name in masks/."""
    pictures, masks = folder / "pictures", folder / "masks"
    pictures.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(SEED)
    for index in range(count):
        image = photos.crop(photos.NAMES[index % len(photos.NAMES)], side)
        image.save(pictures / f"{index:03d}.png")
        photos.hole(image.size, rng).save(masks / f"{index:03d}.png")
    return pictures, masks


def _one_by_one(engine, pictures: list[batch.Picture], base: dict, out: Path) -> None:
    """What a script calling the engine per picture does, as the generate command does for its one request."""
    for picture in pictures:
        body = {**base, "image": imageops.bytes_data_url(picture.path.read_bytes()),
                "mask": imageops.bytes_data_url(picture.mask.read_bytes())}
        run_into(engine, Job(engine.prepare(body)), lambda asset_id, seed, stem=picture.path.stem:
                 out / f"{stem}-{seed}.png")


def batch_overhead(profile, work_dir: Path) -> Metric:
    count, side, rounds = PICTURES[profile.name], SIDE[profile.name], ROUNDS[profile.name]
    folder = Path(tempfile.mkdtemp(prefix="batch-overhead-", dir=work_dir))
    engine = classical_engine(folder / "data")
    try:
        masks = _pictures(folder, count, side)[1]
        found = batch.pictures(folder / "pictures", masks)
        base = {"modelId": MODEL_ID, "seed": SEED, "numSamples": 1}
        runner = Local(engine)

        def fresh(name: str) -> Path:  # both write into an empty folder: new files cost what new files cost
            shutil.rmtree(folder / name, ignore_errors=True)
            (folder / name).mkdir()
            return folder / name

        def batched() -> None:
            lines = batch.run(found, masks, base, runner, fresh("batch"))
            if [line["status"] for line in lines] != ["success"] * count:
                raise RuntimeError(f"the batch did not succeed: {lines}")

        def separate() -> None:
            _one_by_one(engine, found, base, fresh("separate"))

        times = interleaved({"batch": batched, "separate": separate}, rounds, warmup=1)
        for path in (folder / "separate").glob("*.png"):
            if not np.array_equal(np.asarray(Image.open(path)),
                                  np.asarray(Image.open(folder / "batch" / path.name))):
                raise RuntimeError(f"the batch's {path.name} differs from the request's")
        ratio = median_ratio(times, "batch", "separate")
        log.info("  batch / separate: %.3f", ratio)
    finally:
        engine.store.close()
        shutil.rmtree(folder, ignore_errors=True)
    detail = (f"`batch.run` (what `python -m inpaint batch --images DIR --masks DIR` runs in process: pairing, "
              f"data URLs, results.jsonl, progress) over {count} photographs of {side}x{side} with object-sized "
              f"holes, {MODEL_ID}, numSamples 1, into an empty folder, against the same {count} requests one after "
              "the other as `generate` makes one into an empty folder (prepare, then `runs.run_into`: the job run, "
              "each result copied out, the job saved) on the same engine; identical result files checked; "
              f"medians of {rounds} interleaved rounds of per-round ratios; {summary(times)}")
    return Metric("batch_overhead", round(ratio, 3), "<= 1.05", "ratio", detail)
