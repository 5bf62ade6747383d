"""Peak resident memory of one request, measured in a fresh child process per configuration.

`python -m bench.memory '{"samples": 8, ...}'` loads the benchmark model, runs one request and prints
one JSON line: the peak RSS during the request, the RSS once the model was loaded, and timings.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    return _status_mb("VmRSS") or float("nan")


def _maxrss_mb() -> float:
    # VmHWM is the address space's own high-water mark; ru_maxrss also keeps the peak seen by any thread
    # that has exited, so it would not restart with clear_refs once loading threads are gone.
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _child(params: dict) -> dict:
    sys.path.insert(0, str(REPO))
    from bench import models
    from inpaint.events import results
    from tests.support.images import data_url, photo, rect_mask

    side, samples = params["side"], params["samples"]
    data_dir = Path(tempfile.mkdtemp(prefix="memory-", dir=models.CACHE_DIR))
    try:
        engine = models.engine(data_dir / "data")
        engine.pipelines.get(models.MID_MODEL_ID)
        load_peak_mb = _maxrss_mb()
        loaded_mb = _rss_mb()
        # Loading has a transient peak of its own; the high-water mark restarts here, so the peak
        # below is the request's (Linux: writing 5 to clear_refs resets it to the current RSS).
        reset = _reset_peak()
        body = {
            "modelId": models.MID_MODEL_ID, "prompt": "a red boat", "seed": 1,
            "image": data_url(photo(side, side)),
            "mask": data_url(rect_mask(side, side, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))),
            "width": side, "height": side, "numInferenceSteps": params["steps"], "strength": 1.0,
            "numSamples": samples,
        }
        start = time.perf_counter()
        assets = results(engine.run(engine.prepare(body)))
        seconds = time.perf_counter() - start
        assert len(assets) == samples
        engine.store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"samples": samples, "peak_mb": _maxrss_mb(), "loaded_mb": loaded_mb, "load_peak_mb": load_peak_mb,
            "peak_reset": reset, "seconds": seconds, "max_batch": engine.max_batch}


def measure(params: dict, *, threads: int | None = None) -> subprocess.Popen:
    """Start one child for `params`; read its answer with `result(proc)`."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "bench.memory", json.dumps(params)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the memory child {proc.args[-1]} exited with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    answer = _child(json.loads(sys.argv[1]))
    print(json.dumps(answer), flush=True)
