"""`python -m bench [--quick] [--only NAME,...]`: one JSON line per metric on stdout, logs on stderr.

Every run keeps the figures it measured in bench/results.json (a metric it could not measure keeps its figure)
and rewrites bench/results.md from them. Exit status 1 when a metric could not be measured (an error, not a
missed goal).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ORDER = ("startup", "classical_request_vs_limit", "classical_throughput_2048", "patchmatch_large_vs_telea",
         "memory_rise_2048", "classical_quality", "cli_classical_overhead", "patchmatch_engine_overhead",
         "batch_overhead", "finish_overlap", "compat_overhead", "engine_overhead", "rest_overhead",
         "image_size_scaling", "preview_overhead", "preview_vs_vae", "warm_cache", "memory_128", "outside_mask_drift",
         "region_resolution", "seam_delta_e", "multi_region_cost", "outside_mask_drift_modes", "gpu", "gpu_time_estimate_error", "workers_throughput", "ray_overhead",
         "segment_second_click_ratio", "grabcut_iou", "huge_picture_refusal", "mask_grow_scaling")
SCALE = ("workers_throughput", "ray_overhead")
CLASSICAL = ("classical_request_vs_limit", "classical_throughput_2048", "patchmatch_large_vs_telea", "memory_rise_2048",
             "classical_quality", "cli_classical_overhead", "patchmatch_engine_overhead", "compat_overhead")
# Regions, colour matching and seams: the shipped tiny and classical models, not the timed benchmark model.
SEAMS = ("region_resolution", "seam_delta_e", "multi_region_cost", "outside_mask_drift_modes")
# Selecting objects: their own models (SAM 2.1 tiny's size, GrabCut), not the timed benchmark model.
SEGMENT = ("segment_second_click_ratio", "grabcut_iou")
# What the guards against hostile input cost: no model at all.
GUARDS = ("huge_picture_refusal", "mask_grow_scaling")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds: under a minute")
    parser.add_argument("--only", default="", help=f"comma-separated metrics to run, of: {', '.join(ORDER)}")
    parser.add_argument("--results", type=Path, default=None,
                        help="the table to write (default bench/results.md), its figures beside it as .json")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(ORDER))
    if unknown:
        parser.error(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    selected = [name for name in ORDER if not only or name in only]

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="bench: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    command = "python -m bench" + " --quick" * args.quick + (f" --only {','.join(only)}" if only else "")
    # Libraries may print; stdout carries the JSON lines only.
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args.quick, selected, args.results, command)


def _run(quick: bool, selected: list[str], results: Path | None, command: str) -> int:
    # The metric modules are imported where they are used: a GPU machine may lack the server's packages.
    from . import metrics, models, report
    from .timing import Metric, emit, log

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    profile = metrics.QUICK if quick else metrics.FULL
    models.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="run-", dir=models.CACHE_DIR))
    done: list[Metric] = []
    failed = False

    def record(name: str, measure) -> None:
        nonlocal failed
        log.info("%s ...", name)
        start = time.perf_counter()
        try:
            produced = measure()
        except Exception as exc:
            failed = True
            traceback.print_exc(file=sys.stderr)
            produced = Metric(name, None, "-", "-", f"error: {type(exc).__name__}: {exc}")
        log.info("%s: %.1f s", name, time.perf_counter() - start)
        for metric in produced if isinstance(produced, list) else [produced]:
            emit(metric)
            done.append(metric)

    try:
        # First, while this process holds no model: its servers are children that need the CPUs and memory.
        if "startup" in selected:
            from . import startup

            record("startup", lambda: startup.run(profile.rounds))
        for name in CLASSICAL:  # classical models: no diffusion model either
            if name in selected:
                from . import classical, compat, request_path

                module = next(module for module in (request_path, compat, classical) if hasattr(module, name))
                record(name, lambda measure=getattr(module, name): measure(profile, work_dir))
        if "batch_overhead" in selected:
            from . import batch

            record("batch_overhead", lambda: batch.batch_overhead(profile, work_dir))
        if "finish_overlap" in selected:  # the shipped tiny model, not the timed benchmark model
            from . import finish

            record("finish_overlap", lambda: finish.finish_overlap(profile, work_dir))
        for name in SEAMS:
            if name in selected:
                from . import seams

                record(name, lambda measure=getattr(seams, name): measure(profile, work_dir))
        for name in SEGMENT:
            if name in selected:
                from . import segment

                record(name, lambda measure=getattr(segment, name): measure(profile, work_dir))
        for name in GUARDS:
            if name in selected:
                from . import guards

                record(name, lambda measure=getattr(guards, name): measure(profile, work_dir))
        # The other metrics time the loaded model; without them, nothing waits for it.
        without_model = {"startup", *CLASSICAL, "batch_overhead", "finish_overlap", *SEAMS, *SEGMENT, *GUARDS,
                         "gpu_time_estimate_error", *SCALE}
        bench = metrics.Bench(profile, work_dir) if set(selected) - without_model else None
        if bench is not None:
            log.info("%s run; model %s loaded in %.1f s, ready after %.1f s", profile.name, models.MID_MODEL_ID,
                     bench.load_s, time.perf_counter() - started)
        timed = {"engine_overhead": metrics.engine_overhead, "rest_overhead": metrics.rest_overhead,
                 "image_size_scaling": metrics.image_size_scaling, "preview_overhead": metrics.preview_overhead,
                 "preview_vs_vae": metrics.preview_vs_vae}
        for name, measure in timed.items():
            if name in selected:
                record(name, lambda measure=measure: measure(bench))

        # The memory children run while the untimed metrics do (a model load here is not a ratio).
        children = metrics.memory_start(bench) if "memory_128" in selected else []
        try:
            if "warm_cache" in selected:
                record("warm_cache", lambda: metrics.warm_cache(bench))
            drift = _attempt(lambda: metrics.outside_mask_drift(bench)) if "outside_mask_drift" in selected else None
            if children:
                record("memory_128", lambda: metrics.memory_finish(bench, children))
            if drift is not None:
                record("outside_mask_drift", drift)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        if "gpu" in selected:
            from . import gpu

            record("gpu", lambda: gpu.run(work_dir, rounds=profile.rounds))
        if "gpu_time_estimate_error" in selected:
            from . import gpu_time

            record("gpu_time_estimate_error", lambda: gpu_time.run(work_dir, quick=quick))
        for name in SCALE:  # their own engines and workers, torch on one thread each
            if name in selected:
                from . import scale

                measure = getattr(scale, name)
                record(name, lambda measure=measure: measure(profile, work_dir))
        if bench is not None:
            bench.engine.store.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    seconds = time.perf_counter() - started
    log.info("%s run done in %.0f s", profile.name, seconds)
    results = results or report.RESULTS
    run = report.run(command, seconds=seconds, load=f"{load_start:.2f} / {os.getloadavg()[0]:.2f}")
    report.record(done, run, figures=results.with_suffix(".json"), results=results)
    log.info("wrote %s", results)
    return 1 if failed else 0


def _attempt(measure):
    """Measure now, report later: a function giving back the result or raising what the measure raised."""
    try:
        result = measure()
    except Exception as exc:
        def fail(exc=exc):
            raise exc
        return fail
    return lambda: result


if __name__ == "__main__":
    sys.exit(main())
