"""bench/results.md, written from bench/results.json: the latest figure of each metric, the run it came from (date,\nmachine, versions), how the figures are made."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import models
from .timing import Metric

RESULTS = Path(__file__).with_name("results.md")
FIGURES = Path(__file__).with_name("results.json")
DETAIL_CHARS = 160  # a table cell: the whole detail is in FIGURES
# The studio in a browser (tests/test_browser.py) and load, faults and hostile input (tests/test_hardening.py)
# are measured by tests; their figures are kept here and printed below the benchmark's table, so one page holds
# every figure.
STUDIO = Path(__file__).with_name("studio.md")
HARDENING = Path(__file__).with_name("hardening.md")
PACKAGES = ("torch", "diffusers", "transformers", "pillow", "numpy", "fastapi", "uvicorn")

METHOD = f"""\
## How these figures are made

- The timed model is `{models.MID.name}`: a `StableDiffusionInpaintPipeline` with SD 1.5's layout
  (UNet of 4 levels x 2 layers, block widths {models.MID.unet_channels}, cross-attention on the two middle
  levels; a 4-block VAE of widths {models.MID.vae_channels}, so latents are 1/8 of the image; a
  {models.MID.text_layers}-layer CLIP text encoder of width {models.MID.text_dim}), random weights built from
  configs, saved with `save_pretrained` and loaded through the engine's pipeline cache from a catalog entry,
  like any local model. Its VAE encode/decode to UNet-step cost proportions are those of the real model, so
  compute dominates as it does with real weights.
- Ratios are medians, over interleaved rounds (A B, B A, ...) in one process after one untimed warm-up, of the
  ratio within each round. The machine may be shared: the detail column gives the median and minimum times.
- `ours` always starts from the request body with data URLs and ends with the result PNGs stored (their WebP
  renditions are made when first asked for; `rest_overhead` asks for them).
- `startup`: `python app.py` until `GET /` answers, against `python -c "import gradio, fastapi"`, alternating.
- `classical_request_vs_limit` and `classical_throughput_2048` need no model: `opencv-telea` (and `patchmatch`)
  through the REST server in its own process against the same work (decode, the library call, one PNG) done in
  one process.
- `compat_overhead` (`bench/compat.py`): one `opencv-telea` request through OpenAI's image edits (multipart)
  and AUTOMATIC1111's img2img (JSON), each against our own round trip, on the REST server in its own process.
- `classical_quality`, `cli_classical_overhead`, `patchmatch_engine_overhead`: the classical families on real
  photographs that scikit-image ships (holes with known ground truth; see `bench/classical.py`).
- `batch_overhead`: `python -m inpaint batch`'s code over a folder of those photographs against the same requests
  made one by one, in one process on one engine (`bench/batch.py`).
- `finish_overlap` (`bench/finish.py`): the time from a batch's last denoising step to the job's end, 4 samples
  against 1, with the shipped tiny SD 1.5 on a large photograph: the results are finished on a small pool.
- `gpu_time_estimate_error`: the ZeroGPU duration model calibrated on this machine with the tiny models, then
  its prediction against the measured time of other requests.
- `region_resolution`, `seam_delta_e`, `multi_region_cost`, `outside_mask_drift_modes`: the shipped tiny and
  classical models through the engine, on photographs that scikit-image ships (see `bench/seams.py`).
- Peak memory is the `ru_maxrss` of a fresh child process per configuration.
- `huge_picture_refusal` and `mask_grow_scaling` (`bench/guards.py`): what the guards against hostile input cost,
  in one process: a 13300x13300 PNG refused by its header against a 1x1 PNG refused once decoded (REST, a
  TestClient), and a 4096x4096 mask grown by 64 px against by 8 px.
- `workers_throughput` and `ray_overhead` (`bench/scale.py`) time the tiny SD 1.5 of the catalog with torch on one
  thread per worker: a job queue over two local workers (two engines on the CPU, `INPAINT_DEVICES=cpu,cpu`) or two
  Ray actors of a local cluster (`num_cpus=1` each), against one; and one request through a Ray actor against the
  local engine. On a shared machine other work takes cores from them: the load average is in the header.
- `python -m bench` measures every metric; `--quick` the same metrics at smaller sizes and fewer rounds (its
  rows say so in their run's command); `--only a,b` those named. Each run replaces the figures it measured.
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GB"
    except OSError:
        pass
    return "?"


def run(command: str, *, seconds: float, load: str) -> dict[str, str]:
    """What the table says of a run: its date (which names it), command, length, load, machine and versions."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "minutes": round(seconds / 60, 1),
        "load": load,
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, RAM "
                   f"{_memory_gb()}; GPU: {gpu}; {platform.system()} {platform.release()}, Python "
                   f"{sys.version.split()[0]}",
        "versions": ", ".join(f"{name} {version}" for name, version in versions.items()),
    }


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def brief(detail: str, limit: int = DETAIL_CHARS) -> str:
    """The start of a metric's detail for the table: whole up to `limit` characters, else cut at the last clause
    (or word) that fits. The whole detail stays in the figures file."""
    if len(detail) <= limit:
        return detail
    head = detail[:limit]
    for mark in ("; ", ": ", ", ", " "):
        cut = head.rfind(mark)
        if cut > limit // 2:
            return head[:cut].rstrip(" ,;:") + " …"
    return head + " …"


def load(path: Path = FIGURES) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "metrics": {}}


def record(metrics: list[Metric], run: dict[str, str], *, figures: Path = FIGURES, results: Path = RESULTS) -> None:
    """Keeps each measured metric's figure (one not measured, an error, keeps the figure it had), drops the runs
    no figure comes from any more, and rewrites the table from what is kept."""
    kept = load(figures)
    measured = {m.metric: {**m.to_json(), "run": run["date"]} for m in metrics if m.value is not None}
    if measured:
        kept["runs"][run["date"]] = run
        kept["metrics"].update({name: {k: v for k, v in figure.items() if k != "metric"}
                                for name, figure in measured.items()})
    used = {figure["run"] for figure in kept["metrics"].values()}
    kept["runs"] = {date: info for date, info in sorted(kept["runs"].items()) if date in used}
    figures.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    results.write_text(markdown(kept))


def markdown(kept: dict) -> str:
    """bench/results.md: the runs the figures come from, then one row per metric, then how they are made and the
    figures the tests measure."""
    verdict = {True: "yes", False: "**no**", None: "-"}
    names = {date: chr(ord("A") + index) for index, date in enumerate(kept["runs"])}
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench` (and `--quick`, `--only ...`): each run replaces the figures it measured in "
        f"[`{FIGURES.name}`]({FIGURES.name}), which holds every metric's whole detail, and rewrites this page from it. "
        f"Earlier figures: `git log -p bench/{FIGURES.name}`.",
        "",
        "| run | date | command | minutes | load (1 min, start / end) | machine | versions |",
        "|---|---|---|---|---|---|---|",
    ]
    for date, run in kept["runs"].items():
        lines.append(f"| {names[date]} | {date} | `{_cell(run['command'])}` | {run['minutes']} | {run['load']} | "
                     f"{_cell(run['machine'])} | {_cell(run['versions'])} |")
    lines += ["", "| metric | value | unit | goal | holds | run | detail |", "|---|---|---|---|---|---|---|"]
    for name, figure in kept["metrics"].items():
        holds = Metric(name, figure["value"], figure["goal"], figure["unit"], figure["detail"]).holds()
        lines.append(f"| `{name}` | {figure['value']} | {_cell(figure['unit'])} | {_cell(figure['goal'])} | "
                     f"{verdict[holds]} | {names[figure['run']]} | {_cell(brief(figure['detail']))} |")
    lines += ["", METHOD]
    for section in (STUDIO, HARDENING):
        if section.exists():
            lines += [section.read_text().strip(), ""]
    return "\n".join(lines)
