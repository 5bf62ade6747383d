"""`python -m bench.patchmatch_sizes`: how long PatchMatch takes through the engine at 1, 4 and 16 MP with a large
hole (the middle half of each side: a quarter of the picture), beside opencv-telea on the same requests: the
figures of the README's model table. One JSON line per size on stdout.

Engine time: prepare (decode and store the inputs) and run to the stored result, in this process, median of
ROUNDS rounds after one that warms the libraries up.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import models
from .request_path import _body, _mask, _photo, _png
from .timing import interleaved

SIDES = (1024, 2048, 4096)  # 1, 4 and 16 MP
ROUNDS = 3
MODELS = ("patchmatch", "opencv-telea")


def main() -> int:
    models.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="patchmatch-sizes-", dir=models.CACHE_DIR))
    try:
        engine = models.engine(data_dir / "data")
        for side in SIDES:
            image_png, mask = _png(_photo(side)), _mask(side, "large")
            bodies = {model_id: _body(image_png, mask, model_id) for model_id in MODELS}
            times = interleaved({model_id: lambda body=body: _engine_run(engine, body)
                                 for model_id, body in bodies.items()}, ROUNDS, warmup=1 if side == SIDES[0] else 0)
            print(json.dumps({"megapixels": side * side / 2**20, "side": side,
                              **{model_id: round(statistics.median(seconds), 2) for model_id, seconds in times.items()}}),
                  file=sys.__stdout__, flush=True)
        engine.store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def _engine_run(engine, body: dict) -> None:
    started = time.perf_counter()
    events = list(engine.run(engine.prepare(body)))
    if type(events[-1]).__name__ != "Done":
        raise RuntimeError(f"the request ended {events[-1]} after {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
