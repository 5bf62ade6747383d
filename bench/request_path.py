"""The request path against its limit: a classical model's REST round trip against the same work done in one
process (decode the input, the library call, encode one PNG), at several sizes and with concurrent clients.

OpenCV's Telea works on the hole and its border only, so its limit calls it on the whole image. PatchMatch
searches the whole image it is given, so its limit gives it the region the engine gives it (the mask's box
plus context): the same work, not a harder one, up to 512x512; past that the engine fills the region coarse to
fine (inpaint/families/coarse_fine.py), less work than the limit's library call on it."""

from __future__ import annotations

import base64
import io
import math
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import gradio
import httpx
import numpy as np
import patchmatch
from PIL import Image

from inpaint import imageops, png
from inpaint.assets import PNG_LEVEL

from . import memory
from .timing import Metric, interleaved, log

# A real photograph shipped with a runtime dependency (no download), enlarged to each size.
PHOTO = Path(gradio.__file__).parent / "media_assets" / "images" / "tower.jpg"
SERVER = ("import sys, uvicorn; from inpaint.api import create_app; "
          "uvicorn.run(create_app(with_ui=False), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')")
# The transport alone: the same exchanges with the same bytes against a server that does no work (it parses the
# JSON body and sends a result file), in its own process. No round trip can be faster than this plus the limit.
BARE_SERVER = """
import json, sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
app = FastAPI()
@app.post("/generate/inpaint")
async def generate(request: Request):
    json.loads(await request.body())
    return {"job": {"status": "success"}}
@app.get("/result")
def result():
    return FileResponse(sys.argv[2])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
TELEA_RADIUS = 3  # as the engine runs opencv-telea
PATCH_RADIUS = 3  # as the catalog's patchmatch entry runs it (source patchmatch:3)
MODELS = ("opencv-telea", "patchmatch")
LONG_POLL_S = 30
MEASURED_S, MAX_ROUNDS = 1.5, 25
SIZES = {"quick": (512, 1024), "full": (512, 1024, 2048)}
# PatchMatch against Telea on a large hole: its fill is made at a bounded size, Telea's work grows with the hole.
LARGE_HOLE_SIDES = (1024, 2048)
LARGE_HOLE_ROUNDS = {"quick": 2, "full": 5}
MEMORY_ROUNDS = {"quick": 3, "full": 5}
THROUGHPUT_CLIENTS = 4
THROUGHPUT_REQUESTS = {"quick": 8, "full": 16}


def _photo(side: int) -> Image.Image:
    with Image.open(PHOTO) as photo:
        return photo.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


def _mask(side: int, kind: str) -> Image.Image:
    """A small mark (a 64 px square, an object to remove) or a large one (the middle half of each side)."""
    half = 32 if kind == "small" else side // 4
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, (side // 2 - half, side // 2 - half, side // 2 + half, side // 2 + half))
    return mask


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def the_limit(image_png: bytes, mask_np: np.ndarray, model_id: str = "opencv-telea", *,
              own_encoder: bool = False) -> bytes:
    """The work itself, as a 10-line script does it: decode, inpaint, encode one PNG at the store's level (with
    `own_encoder`, by the store's own encoder, a stricter limit)."""
    rgb_np = cv2.cvtColor(cv2.imdecode(np.frombuffer(image_png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if model_id == "patchmatch":
        left, top, right, bottom = imageops.crop_box(Image.fromarray(mask_np))
        patchmatch.set_random_seed(0)
        rgb_np[top:bottom, left:right] = patchmatch.inpaint(rgb_np[top:bottom, left:right],
                                                            mask_np[top:bottom, left:right], patch_size=PATCH_RADIUS)
    else:
        rgb_np = cv2.inpaint(rgb_np, mask_np, TELEA_RADIUS, cv2.INPAINT_TELEA)  # per pixel: RGB as well as BGR
    result = Image.fromarray(rgb_np)
    if own_encoder:
        return png.encode(result)
    buffer = io.BytesIO()
    result.save(buffer, "PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def _rounds(profile, variants: dict) -> int:
    """As many rounds as fill about MEASURED_S (at least the profile's, at most MAX_ROUNDS): a 30 ms case measured
    5 times is at the mercy of one slow round. A first round warms the variants up; a quick one is timed again."""
    def one_round() -> float:
        started = time.perf_counter()
        for variant in variants.values():
            variant()
        return time.perf_counter() - started

    round_s = one_round()
    if round_s * profile.rounds < MEASURED_S:
        round_s = one_round()
    return max(profile.rounds, min(MAX_ROUNDS, math.ceil(MEASURED_S / round_s)))


@contextmanager
def rest_server(work_dir: Path, script: str = SERVER, *args: str, ready: str = "/models"):
    """The server's URL, in its own process, as `python app.py` runs it (or `script`, answering `ready` once up)."""
    with rest_process(work_dir, script, *args, ready=ready) as (url, _):
        yield url


@contextmanager
def rest_process(work_dir: Path, script: str = SERVER, *args: str, ready: str = "/models"):
    """rest_server's URL and its process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INPAINT_DATA_DIR": str(work_dir / "request-path"), "HF_HUB_OFFLINE": "1",
           "INPAINT_ALLOWED_HOSTS": "127.0.0.1"}
    server = subprocess.Popen([sys.executable, "-c", script, str(port), *args], env=env, cwd=memory.REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}{ready}", timeout=5).raise_for_status()
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the REST server did not start") from None
                time.sleep(0.1)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=60)


def round_trip(client: httpx.Client, body: dict) -> bytes:
    """POST the request (waiting for its end, as a client of a quick model does), follow the job by long-poll
    while it is still running, GET the result's original PNG."""
    job = client.post("/generate/inpaint", params={"wait": LONG_POLL_S}, json=body).raise_for_status().json()["job"]
    while job["status"] in ("queued", "in-progress"):
        job = client.get(f"/jobs/{job['jobId']}", params={"wait": LONG_POLL_S}).raise_for_status().json()["job"]
    if job["status"] != "success":
        raise RuntimeError(f"the job ended {job['status']}: {job['metadata']['error']}")
    [asset_id] = job["metadata"]["assetIds"]
    return client.get(f"/assets/{asset_id}/file", params={"original": "true"}).raise_for_status().content


def _body(image_png: bytes, mask: Image.Image, model_id: str = "opencv-telea") -> dict:
    return {"modelId": model_id, "image": _data_url(image_png), "mask": _data_url(_png(mask)), "numSamples": 1,
            "seed": 0}


def transport_floor(work_dir: Path, body: dict, result_png: bytes, rounds: int) -> float:
    """Seconds of the round trip's exchanges alone, with the same bytes, against a server doing no work."""
    result_file = work_dir / "floor-result.png"
    result_file.write_bytes(result_png)
    with rest_server(work_dir, BARE_SERVER, str(result_file), ready="/result") as url, \
            httpx.Client(base_url=url, timeout=600) as client:
        def exchanges() -> None:
            client.post("/generate/inpaint", params={"wait": LONG_POLL_S}, json=body).raise_for_status()
            client.get("/result").raise_for_status()
        return statistics.median(interleaved({"floor": exchanges}, rounds, warmup=1)["floor"])


def classical_request_vs_limit(profile, work_dir: Path) -> Metric:
    rows, floors = [], {}
    with rest_server(work_dir) as url, httpx.Client(base_url=url, timeout=600) as client:
        for model_id in MODELS:
            for side in SIZES[profile.name]:
                image_png = _png(_photo(side))
                for kind in ("small", "large"):
                    if (model_id, side, kind) == ("patchmatch", 2048, "large"):
                        continue  # the limit calls the library on the whole 2048 px region: over a minute a round
                    mask = _mask(side, kind)
                    body, mask_np = _body(image_png, mask, model_id), np.asarray(mask)
                    variants = {"rest": lambda: round_trip(client, body),
                                "limit": lambda: the_limit(image_png, mask_np, model_id)}
                    if model_id == "opencv-telea":  # the library call is cheap: the encoder is much of the work
                        variants["limit_own"] = lambda: the_limit(image_png, mask_np, model_id, own_encoder=True)
                    times = interleaved(variants, _rounds(profile, variants), warmup=0)
                    ratio = statistics.median(a / b for a, b in zip(times["rest"], times["limit"]))
                    own = (statistics.median(a / b for a, b in zip(times["rest"], times["limit_own"]))
                           if "limit_own" in times else None)
                    rows.append((model_id, side, kind, ratio, statistics.median(times["rest"]),
                                 statistics.median(times["limit"]), len(times["rest"]), own))
                    log.info("  %s, %d px, %s mask: %.2f", model_id, side, kind, ratio)
                    if model_id == "opencv-telea" and kind == "small":
                        floors[side] = (body, the_limit(image_png, mask_np))
    floors = {side: transport_floor(work_dir, body, result, MAX_ROUNDS) for side, (body, result) in floors.items()}
    worst = max(rows, key=lambda row: row[3])
    detail = ("a real photograph enlarged to each size, PNG data URLs in; REST = POST /generate/inpaint?wait="
              f"{LONG_POLL_S} (answers once the job ended), GET the result with original=true, against the server "
              "in its own process / the limit = decode the PNG + the library call (cv2.inpaint on the whole image; "
              f"patchmatch.inpaint on the engine's region) + encode one PNG with Pillow at level {PNG_LEVEL} (the "
              "store writes its own, inpaint.png: ISA-L on both cores), in one process; medians of "
              f"interleaved rounds ({profile.rounds} or more: a quick case gets as many as fill about {MEASURED_S} s, "
              f"up to {MAX_ROUNDS}); "
              + "; ".join(f"{model} {side} px {kind} mask {ratio:.2f} ({rest:.3f} s vs {limit:.3f} s, {rounds} rounds)"
                          for model, side, kind, ratio, rest, limit, rounds, _ in rows)
              + f"; worst: {worst[0]} {worst[1]} px {worst[2]} mask. Against a stricter limit that encodes with the "
              "store's own encoder (inpaint.png) instead of Pillow's: "
              + ", ".join(f"{side} px {kind} {own:.2f}" for _, side, kind, _, _, _, _, own in rows if own is not None)
              + ". The transport alone (the same two exchanges with the same bytes against a bare FastAPI server "
              "doing no work): "
              + ", ".join(f"{side} px {floor * 1000:.0f} ms" for side, floor in floors.items())
              + "; for opencv-telea's small mask, (limit + transport) / limit is "
              + ", ".join(f"{(limit + floors[side]) / limit:.2f} at {side} px"
                          for model, side, kind, _, _, limit, _, _ in rows if model == "opencv-telea" and kind == "small"))
    return Metric("classical_request_vs_limit", round(worst[3], 3), "<= 1.3", "ratio", detail)


def _limit_worker(image_png: bytes, mask_np: np.ndarray, count: int) -> None:
    for _ in range(count):
        the_limit(image_png, mask_np)


def classical_throughput_2048(profile, work_dir: Path) -> Metric:
    side, requests = 2048, THROUGHPUT_REQUESTS[profile.name]
    image_png, mask = _png(_photo(side)), _mask(side, "small")
    body, mask_np = _body(image_png, mask), np.asarray(mask)
    with rest_server(work_dir) as url:
        with httpx.Client(base_url=url, timeout=600) as warm:
            round_trip(warm, body)
        failures: list[Exception] = []

        def client_loop(count: int) -> None:
            with httpx.Client(base_url=url, timeout=600) as client:
                for _ in range(count):
                    try:
                        round_trip(client, body)
                    except Exception as exc:
                        failures.append(exc)

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(requests // THROUGHPUT_CLIENTS,))
                   for _ in range(THROUGHPUT_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ours_s = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"{len(failures)} round trips failed: {failures[0]}")
    # The limit on both cores: two processes, each doing half the requests' work back to back.
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    workers = [context.Process(target=_limit_worker, args=(image_png, mask_np, requests // 2)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    limit_s = time.perf_counter() - started  # includes the two processes' start: a little in the limit's disfavour
    ours, limit = requests / ours_s, requests / limit_s
    detail = (f"{THROUGHPUT_CLIENTS} concurrent clients, {requests} round trips of opencv-telea at {side}x{side} with "
              f"a 64 px mask: {ours:.2f} requests/s; the limit's work in 2 processes: {limit:.2f} requests/s")
    return Metric("classical_throughput_2048", round(ours / limit, 3), ">= 0.7", "ratio", detail)


def patchmatch_large_vs_telea(profile, work_dir: Path) -> Metric:
    rows = []
    with rest_server(work_dir) as url, httpx.Client(base_url=url, timeout=600) as client:
        for side in LARGE_HOLE_SIDES:
            image_png, mask = _png(_photo(side)), _mask(side, "large")
            bodies = {model_id: _body(image_png, mask, model_id) for model_id in ("patchmatch", "opencv-telea")}
            times = interleaved({model_id: lambda body=body: round_trip(client, body)
                                 for model_id, body in bodies.items()}, LARGE_HOLE_ROUNDS[profile.name], warmup=1)
            rows.append((side, statistics.median(a / b for a, b in zip(times["patchmatch"], times["opencv-telea"])),
                         statistics.median(times["patchmatch"]), statistics.median(times["opencv-telea"])))
            log.info("  %d px: %.2f", side, rows[-1][1])
    worst = max(rows, key=lambda row: row[1])
    detail = ("the same REST round trip (POST /generate/inpaint?wait, GET the result's original PNG, the server in its "
              "own process) with patchmatch / with opencv-telea, on a real photograph enlarged to each size with a "
              "hole of the middle half of each side (25% of the picture; the region around it is the whole picture); "
              "medians of interleaved rounds of per-round ratios; "
              + "; ".join(f"{side} px {ratio:.2f} ({pm:.2f} s vs {telea:.2f} s)" for side, ratio, pm, telea in rows)
              + f"; worst: {worst[0]} px")
    return Metric("patchmatch_large_vs_telea", round(worst[1], 3), "<= 5", "ratio", detail)


def memory_rise_2048(profile, work_dir: Path) -> Metric:
    side = 2048
    image_png, mask = _png(_photo(side)), _mask(side, "large")
    body = _body(image_png, mask)
    picture_mb = side * side * 3 / 1e6
    rises = []
    with rest_process(work_dir) as (url, server), httpx.Client(base_url=url, timeout=600) as client:
        round_trip(client, body)  # the first request imports and builds what every later one shares
        for _ in range(MEMORY_ROUNDS[profile.name]):
            idle_mb = _server_mb(server.pid, "VmRSS")
            if not _reset_peak(server.pid):
                raise RuntimeError("the server's peak RSS cannot be reset here (/proc/PID/clear_refs)")
            round_trip(client, body)
            rises.append(_server_mb(server.pid, "VmHWM") - idle_mb)
            log.info("  rise %.0f MB above %.0f MB", rises[-1], idle_mb)
    rise = statistics.median(rises)
    detail = (f"the server's peak RSS during one opencv-telea REST round trip at {side}x{side} (a real photograph, "
              f"the middle half of each side masked, PNG data URLs in, the result's original PNG fetched), above its "
              f"RSS just before it (after a first request), over the decoded picture's {picture_mb:.1f} MB; median "
              f"of {len(rises)} requests: {rise:.0f} MB ({', '.join(f'{r:.0f}' for r in rises)})")
    return Metric("memory_rise_2048", round(rise / picture_mb, 2), "<= 5", "ratio", detail)


def _server_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024 * 1.048576  # kB -> MB, as the picture's size is counted
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _reset_peak(pid: int) -> bool:
    """Restarts the process's high-water mark (VmHWM) at its current RSS (Linux: 5 into clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False
