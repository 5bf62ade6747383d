"""bench/results.md: the machine, the versions, the date and one table row per metric."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import models
from .timing import Metric

RESULTS = Path(__file__).with_name("results.md")
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
- `workers_throughput` and `ray_overhead` (`bench/scale.py`) time the tiny SD 1.5 of the catalog with torch on one
  thread per worker: a job queue over two local workers (two engines on the CPU, `INPAINT_DEVICES=cpu,cpu`) or two
  Ray actors of a local cluster (`num_cpus=1` each), against one; and one request through a Ray actor against the
  local engine. On a shared machine other work takes cores from them: the load average is in the header.
- Run `python -m bench` to rewrite this file; `python -m bench --quick` prints the same metrics in under a minute
  (smaller sizes, fewer rounds) and leaves it alone.
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


def machine() -> dict[str, str]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, RAM {_memory_gb()}",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "os": f"{platform.system()} {platform.release()}, Python {sys.version.split()[0]}",
        "versions": ", ".join(f"{name} {version}" for name, version in versions.items()),
    }


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write(metrics: list[Metric], info: dict[str, str], *, profile: str, seconds: float, load: str,
          path: Path = RESULTS) -> None:
    verdict = {True: "yes", False: "**no**", None: "-"}
    lines = [
        "# Benchmark results",
        "",
        f"`python -m bench` ({profile} run, {seconds / 60:.1f} min), {info['date']}.",
        "",
        f"- Machine: {info['cpu']}; GPU: {info['gpu']}; {info['os']}",
        f"- Load average (1 min) at the start and the end: {load}",
        f"- Versions: {info['versions']}",
        "",
        "| metric | value | unit | goal | holds | detail |",
        "|---|---|---|---|---|---|",
    ]
    for m in metrics:
        value = "null" if m.value is None else m.value
        lines.append(f"| `{m.metric}` | {value} | {_cell(m.unit)} | {_cell(m.goal)} | {verdict[m.holds()]} | "
                     f"{_cell(m.detail)} |")
    lines += ["", METHOD]
    for section in (STUDIO, HARDENING):
        if section.exists():
            lines += [section.read_text().strip(), ""]
    path.write_text("\n".join(lines))
