"""Hardening, measured: load on a real server, faults (SIGKILL, failing and out-of-memory pipelines, a full
disk), hostile input, auth over every route and file URL, and a long fuzz (opt-in)."""

import asyncio
import base64
import errno
import io
import json
import os
import platform
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis import checks
from schemathesis.generation import GenerationMode
from starlette.routing import Mount, WebSocketRoute

from inpaint import api, assets, imageops, web_security
from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.families import diffusion
from inpaint.jobs import INTERRUPTED
from tests.support.api import BAD_BODIES, FINAL, KEY, TINY, assert_error, b64_url, body, listed_ids, submit, wait
from tests.support.fuzz import CHECKS, RUNS
from tests.support.images import bomb_png, data_url, encoded, photo, rect_mask
from tests.support.servers import loopback_socket, server_env, start_server, stop_server

LONG = pytest.mark.long  # skipped unless INPAINT_LONG_TESTS=1 (tests/conftest.py)


# ---- the store as the server left it on disk ------------------------------------------------------

def store_rows(data: Path) -> list[tuple]:
    """The asset rows as the file on disk has them, read by a connection of our own."""
    with closing(sqlite3.connect(data / "inpaint.db")) as db:
        return db.execute("SELECT id, kind, job_id, seed, hidden FROM assets ORDER BY seq").fetchall()


def integrity(data: Path) -> list[str]:
    with closing(sqlite3.connect(data / "inpaint.db")) as db:
        checks = [row[0] for row in db.execute("PRAGMA integrity_check")]
        return checks + [repr(row) for row in db.execute("PRAGMA foreign_key_check")]


def files_by_asset(data: Path) -> dict[str, set[str]]:
    """Every file of the asset folder by the asset id it belongs to (temp files included)."""
    found: dict[str, set[str]] = {}
    for path in (data / "files").iterdir():
        found.setdefault(path.name.lstrip(".").split(".")[0], set()).add(path.name)
    return found


def assert_files_match_rows(data: Path, rows: list[tuple], *, in_flight: int = 0) -> None:
    """Each row has its complete original (and maybe the WebP rendition made when it was first asked for);
    files without a row belong to at most `in_flight` puts."""
    files = files_by_asset(data)
    for asset_id, *_ in rows:
        [original] = [name for name in files.get(asset_id, ()) if not name.endswith((".webp", ".tmp"))] or [None]
        assert original and files[asset_id] <= {original, f"{asset_id}.webp"}, (asset_id, files.get(asset_id))
        with Image.open(data / "files" / original) as image:
            image.load()  # complete, not a prefix
    leftovers = set(files) - {row[0] for row in rows}
    assert len(leftovers) <= in_flight, {name: files[name] for name in leftovers}


# ---- load: 32 clients against a real server -----------------------------------------------------------

@dataclass
class LoadStats:
    posts: Counter = field(default_factory=Counter)
    job_get_s: list[float] = field(default_factory=list)
    ui_get_s: list[float] = field(default_factory=list)
    ui_statuses: Counter = field(default_factory=Counter)
    jobs: list[dict] = field(default_factory=list)
    requests: dict[str, dict] = field(default_factory=dict)


def load_requests(size: int, tiny_samples: int) -> list[dict]:
    image, mask = photo(size, size, seed=11), rect_mask(size, size, (size // 3, size // 3, 2 * size // 3, 2 * size // 3))
    common = {"prompt": "fill", "image": data_url(image), "mask": data_url(mask)}
    return [{**common, "modelId": "opencv-telea"},
            {**common, **TINY, "numSamples": tiny_samples}]


async def load_client(http: httpx.AsyncClient, index: int, jobs: int, requests: list[dict], stats: LoadStats,
                      deadline: float) -> None:
    for n in range(jobs):
        request = {**requests[(index + n) % len(requests)], "seed": index * 1000 + n}
        for _ in range(1000):  # each 429 waits at least a second: the deadline ends this loop first
            response = await http.post("/generate/inpaint", json=request)
            stats.posts[response.status_code] += 1
            if response.status_code == 200:
                break
            # A clean 429: the one error shape, and when to come back.
            assert response.status_code == 429, response.text
            assert response.json() == {"error": {"field": "job", "message": response.json()["error"]["message"],
                                                 "status": 429}}
            # A polite client: at least Retry-After, with jitter so the retries do not arrive in step.
            await asyncio.sleep(random.uniform(1.0, 1.5) * float(response.headers["retry-after"]))
            assert time.monotonic() < deadline, "a client could not get a job in"
        job = response.json()["job"]
        stats.requests[job["jobId"]] = request
        while job["status"] not in FINAL:
            assert time.monotonic() < deadline, f"job {job['jobId']} did not finish: {job['status']}"
            await asyncio.sleep(0.25)
            started = time.perf_counter()
            response = await http.get(f"/jobs/{job['jobId']}")
            stats.job_get_s.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            job = response.json()["job"]
        stats.jobs.append(job)


async def ui_probe(http: httpx.AsyncClient, stats: LoadStats, done: asyncio.Event) -> None:
    while not done.is_set():
        for path in ("/", "/config"):
            started = time.perf_counter()
            response = await http.get(path)
            stats.ui_get_s.append(time.perf_counter() - started)
            stats.ui_statuses[response.status_code] += 1
        await asyncio.sleep(0.5)


async def run_load(url: str, *, clients: int, jobs: int, requests: list[dict], timeout: float) -> tuple[LoadStats, float]:
    stats, done = LoadStats(), asyncio.Event()
    deadline = time.monotonic() + timeout
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        probe = asyncio.create_task(ui_probe(http, stats, done))
        started = time.perf_counter()
        try:
            await asyncio.gather(*(load_client(http, i, jobs, requests, stats, deadline) for i in range(clients)))
        finally:
            elapsed = time.perf_counter() - started
            done.set()
            await probe
    return stats, elapsed


def check_load(url: str, data: Path, proc: subprocess.Popen, stats: LoadStats, clients: int, jobs: int) -> dict:
    """Every accepted job finished with all its samples; no asset lost or duplicated; a 429 stored nothing."""
    assert len(stats.jobs) == clients * jobs == stats.posts[200]
    assert set(stats.posts) <= {200, 429}
    expected_results = 0
    result_ids, input_ids = [], []
    for job in stats.jobs:
        meta, request = job["metadata"], stats.requests[job["jobId"]]
        samples = request.get("numSamples", 1)
        assert job["status"] == "success" and meta["error"] is None, job
        assert len(meta["assetIds"]) == samples and meta["seeds"] == [request["seed"] + i for i in range(samples)]
        assert [asset["id"] for asset in meta["assets"]] == meta["assetIds"]
        expected_results += samples
        result_ids += meta["assetIds"]
        input_ids.append(meta["input"]["image"])
    assert len(set(result_ids)) == len(result_ids) == expected_results
    assert len(set(input_ids)) == len(input_ids)
    size = Image.open(io.BytesIO(base64.b64decode(stats.requests[stats.jobs[0]["jobId"]]["image"].split(",")[1]))).size
    with httpx.Client(base_url=url, timeout=60) as http:
        listed = []
        while page := http.get("/assets", params={"limit": 1000, "offset": len(listed)}).json()["assets"]:
            listed += [asset["id"] for asset in page]
        assert len(listed) == len(set(listed)) == len(result_ids) + len(input_ids)
        assert set(listed) == set(result_ids) | set(input_ids)
        for job in stats.jobs:
            for asset_id in job["metadata"]["assetIds"]:
                asset = http.get(f"/assets/{asset_id}").json()["asset"]
                assert asset["jobId"] == job["jobId"] and asset["parentId"] == job["metadata"]["input"]["image"]
                with Image.open(io.BytesIO(http.get(asset["url"]).content)) as webp:
                    assert webp.size == size
    assert stop_server(proc) == -signal.SIGTERM
    # On disk: one image, one mask and the samples per accepted job, and not one row or file more.
    rows = store_rows(data)
    assert Counter(kind for _, kind, *_ in rows) == {"image": len(input_ids), "mask": len(input_ids),
                                                     "result": expected_results}
    assert integrity(data) == ["ok"]
    assert_files_match_rows(data, rows)
    return {"results": expected_results, "rows": len(rows)}


def load_figures(stats: LoadStats, elapsed: float, checked: dict, clients: int, jobs: int) -> str:
    gets = sorted(stats.job_get_s)
    cut = statistics.quantiles(gets, n=100) if len(gets) > 1 else gets * 99
    return (f"load: {clients} clients x {jobs} jobs on {os.cpu_count()} cores ({platform.machine()}): "
            f"{len(stats.jobs)} jobs in {elapsed:.1f} s = {len(stats.jobs) / elapsed:.2f} jobs/s; "
            f"POST /generate/inpaint 200: {stats.posts[200]}, 429: {stats.posts[429]}; "
            f"GET /jobs/{{id}} x{len(gets)}: p50 {cut[49] * 1000:.0f} ms, p95 {cut[94] * 1000:.0f} ms, "
            f"max {gets[-1] * 1000:.0f} ms; UI GETs x{len(stats.ui_get_s)} all {dict(stats.ui_statuses)}, "
            f"max {max(stats.ui_get_s) * 1000:.0f} ms; assets checked: {checked['results']} results, "
            f"{checked['rows']} rows with their files")


@pytest.mark.parametrize("clients, jobs, size, tiny_samples, timeout", [
    pytest.param(32, 2, 96, 1, 300, id="32x2"),
    pytest.param(32, 8, 96, 2, 1800, id="32x8", marks=LONG),
])
def test_load_every_accepted_job_finishes_and_nothing_is_lost(tmp_path, models_dir, capsys,
                                                              clients, jobs, size, tiny_samples, timeout):
    data = tmp_path / "data"
    # A short queue, so that 32 clients meet the 429 and retry.
    env = server_env(data, models_dir, INPAINT_MAX_QUEUE="8")
    with loopback_socket() as (sock, url):
        proc = start_server(sock, url, env, tmp_path / "server.log", ui=True)
        try:
            stats, elapsed = asyncio.run(run_load(url, clients=clients, jobs=jobs, timeout=timeout,
                                                  requests=load_requests(size, tiny_samples)))
            assert stats.ui_statuses and set(stats.ui_statuses) == {200}  # the UI answered all along
            checked = check_load(url, data, proc, stats, clients, jobs)
        finally:
            stop_server(proc)
    with capsys.disabled():
        print(f"\n{load_figures(stats, elapsed, checked, clients, jobs)}")


# ---- faults ---------------------------------------------------------------------------------------------

def test_sigkill_mid_job_then_restart_on_the_same_folder(tmp_path, models_dir):
    data = tmp_path / "data"
    env = server_env(data, models_dir, INPAINT_MAX_BATCH="1")  # one sample per call: results arrive one by one
    image, mask = photo(96, 96, seed=21), rect_mask(96, 96, (30, 30, 66, 66))
    with loopback_socket() as (sock, url), httpx.Client(base_url=url, timeout=60) as http:
        proc = start_server(sock, url, env, tmp_path / "first.log")
        try:
            done = wait(http, submit(http, body(image, mask))["jobId"])
            assert done["status"] == "success"
            kept = {asset_id: http.get(f"/assets/{asset_id}/file?original=true").content
                    for asset_id in [done["metadata"]["input"]["image"], *done["metadata"]["assetIds"]]}
            slow = submit(http, body(image, mask, **{**TINY, "numInferenceSteps": 20}, numSamples=40,
                                     intermediateImages=True))
            queued = submit(http, body(image, mask))
            running = wait(http, slow["jobId"], until=lambda j: len(j["metadata"]["assetIds"]) >= 2 or
                           j["status"] in FINAL)
            assert running["status"] == "in-progress"
            assert stop_server(proc, signal.SIGKILL) == -signal.SIGKILL
        finally:
            stop_server(proc)

        # The store as the kill left it: a sound database, every row with its complete files.
        assert integrity(data) == ["ok"]
        rows = store_rows(data)
        assert_files_match_rows(data, rows, in_flight=1)

        proc = start_server(sock, url, env, tmp_path / "second.log")
        try:
            again = http.get(f"/jobs/{done['jobId']}").json()["job"]
            assert again["status"] == "success" and again["metadata"]["assetIds"] == done["metadata"]["assetIds"]
            for asset_id, content in kept.items():
                assert http.get(f"/assets/{asset_id}/file?original=true").content == content
            killed = http.get(f"/jobs/{slow['jobId']}").json()["job"]
            meta = killed["metadata"]
            assert killed["status"] == "failure" and meta["error"] == INTERRUPTED
            # Nothing the job made is lost: every result and preview stored for it is on the job, in order.
            made = [(row[0], row[3]) for row in rows if row[2] == slow["jobId"] and row[1] == "result"]
            assert list(zip(meta["assetIds"], meta["seeds"])) == made
            assert len(made) >= len(running["metadata"]["assetIds"]) >= 2
            assert [s - meta["input"]["seed"] for s in meta["seeds"]] == list(range(len(made)))
            assert meta["intermediateImages"] == [row[0] for row in rows if row[2] == slow["jobId"] and
                                                  row[1] == "preview"]
            for asset_id in meta["assetIds"]:
                assert http.get(f"/assets/{asset_id}/file").status_code == 200
            never_run = http.get(f"/jobs/{queued['jobId']}").json()["job"]
            assert never_run["status"] == "failure" and never_run["metadata"]["error"] == INTERRUPTED
            # And the restarted server works.
            assert wait(http, submit(http, body(image, mask))["jobId"])["status"] == "success"
        finally:
            assert stop_server(proc) == -signal.SIGTERM
    assert integrity(data) == ["ok"]


class FlakyPipeline:
    """Stands in for the per-request pipeline of the `number`-th micro-batch: fails as told, else runs the real one."""

    def __init__(self, real, fail, number: int):
        self.real, self.fail, self.number, self.batch = real, fail, number, None

    def __call__(self, **kwargs):
        self.batch = len(kwargs["generator"])
        self.fail(self.number, self.batch)
        return self.real(**kwargs)


@pytest.fixture
def test_pipeline(monkeypatch):
    made = []

    def install(fail):
        def request_pipeline(loaded, scheduler):
            made.append(FlakyPipeline(real_request_pipeline(loaded, scheduler), fail, len(made) + 1))
            return made[-1]
        real_request_pipeline = diffusion.request_pipeline
        monkeypatch.setattr(diffusion, "request_pipeline", request_pipeline)
        return made

    return install


def test_out_of_memory_in_a_job_halves_the_micro_batch_and_completes(client, engine, test_pipeline):
    engine.max_batch = 4

    def oom_above_one(call, batch):
        if batch > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    made = test_pipeline(oom_above_one)
    job = wait(client, submit(client, body(**TINY, numSamples=5, seed=40))["jobId"])
    assert job["status"] == "success" and job["metadata"]["error"] is None
    assert job["metadata"]["seeds"] == [40, 41, 42, 43, 44] and len(set(job["metadata"]["assetIds"])) == 5
    assert [pipe.batch for pipe in made] == [4, 2, 1, 1, 1, 1, 1]
    for asset in job["metadata"]["assets"]:
        assert client.get(asset["url"]).status_code == 200


def test_a_pipeline_failing_mid_batch_fails_the_job_and_keeps_its_samples(client, engine, test_pipeline):
    def third_call_breaks(call, batch):
        if call == 3:
            raise RuntimeError("simulated pipeline failure")

    test_pipeline(third_call_breaks)
    job = wait(client, submit(client, body(**TINY, numSamples=4, seed=50))["jobId"])
    meta = job["metadata"]
    assert job["status"] == "failure" and "RuntimeError: simulated pipeline failure" in meta["error"]
    assert meta["seeds"] == [50, 51] and len(meta["assetIds"]) == 2
    for asset_id in meta["assetIds"]:
        assert engine.store.get(asset_id).job_id == job["jobId"]
        assert client.get(f"/assets/{asset_id}/file?original=true").status_code == 200
    assert set(meta["assetIds"]) <= listed_ids(client)


def filling_disk(monkeypatch, *, writes_before_full: int):
    """The asset store's files: after `writes_before_full` whole files, each write stores half its bytes
    and fails with ENOSPC, as a full disk does."""
    written = []

    class FullDisk(io.FileIO):
        def write(self, data):
            if len(written) < writes_before_full:
                written.append(self.name)
                return super().write(data)
            super().write(bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assets, "open", FullDisk, raising=False)
    return written


def test_disk_full_while_a_job_stores_a_result(client, engine, monkeypatch):
    files = engine.store.root / "files"
    # Image, mask and the first result are one file each (renditions are made when first asked for); the
    # second result finds the disk full.
    filling_disk(monkeypatch, writes_before_full=3)
    job = wait(client, submit(client, body(**TINY, numSamples=3))["jobId"])
    meta = job["metadata"]
    assert job["status"] == "failure" and "No space left on device" in meta["error"]
    assert len(meta["assetIds"]) == 1
    rows = engine.store.list(include_hidden=True)
    assert {asset.kind for asset in rows} == {"image", "mask", "result"} and len(rows) == 3
    assert_files_match_rows(engine.store.root, [(asset.id,) for asset in rows])
    assert engine.store.integrity_ok()

    # Uploads and new jobs meet the full disk with a clean answer that leaves nothing behind.
    before = sorted(files.iterdir())
    assert_error(client.post("/assets", json={"image": data_url(photo(64, 64))}), 507, "server", "disk is full")
    assert_error(client.post("/generate/inpaint", json=body()), 507, "server", "disk is full")
    assert sorted(files.iterdir()) == before and len(engine.store.list(include_hidden=True)) == 3

    # Space again: the same server goes on.
    monkeypatch.undo()
    assert wait(client, submit(client, body())["jobId"])["status"] == "success"


def test_interrupted_jobs_get_back_the_results_and_previews_stored_for_them(tmp_path):
    # A kill between an asset's row and the job's next save: the store has more than the job says.
    store = AssetStore(tmp_path)
    job_id = f"job_{'k' * 22}"
    first = store.put(photo(64, 64), kind="result", job_id=job_id, seed=7)
    store.save_job({"jobId": job_id, "status": "in-progress", "metadata": {
        "assetIds": [first.id], "seeds": [7], "intermediateImages": [], "error": None}})
    preview = store.put(photo(64, 64), kind="preview", hidden=True, job_id=job_id)
    second = store.put(photo(64, 64), kind="result", job_id=job_id, seed=8)
    store.put(photo(64, 64), kind="result", job_id=f"job_{'o' * 22}", seed=1)  # another job's
    assert store.fail_interrupted_jobs("stopped") == 1
    meta = store.get_job(job_id)["metadata"]
    assert (meta["assetIds"], meta["seeds"], meta["intermediateImages"]) == ([first.id, second.id], [7, 8],
                                                                            [preview.id])
    assert store.get_job(job_id)["status"] == "failure" and meta["error"] == "stopped"
    store.close()


# ---- hostile input: each a 4xx, decoding nothing past the pixel limit and storing nothing ------------------


def animated(fmt: str, frames: list[Image.Image]) -> bytes:
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:])


def truncated_png(fraction: float) -> str:
    png = encoded(photo(128, 96, seed=4))
    return b64_url(png[:int(len(png) * fraction)])


def raw_body(fields: dict, **raw: str) -> bytes:
    """A JSON body with some values written as raw JSON text (NaN, Infinity, deep nesting)."""
    text = json.dumps(fields)[:-1]
    return (text + "".join(f', "{name}": {value}' for name, value in raw.items()) + "}").encode()


def without(fields: dict, *names: str) -> dict:
    return {k: v for k, v in fields.items() if k not in names}


MB = 2**20
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'
HTML = b"<!doctype html><html><script>alert(document.cookie)</script></html>"
DEEP = 900  # deep, yet within what the JSON parser accepts: validation must cope
# name -> (path, body bytes, status, field); bodies are built when the test runs (some are 60 MB).
HOSTILE = {
    "decompression bomb PNG, 30000x30000": lambda: (body() | {"image": b64_url(bomb_png(30000, 30000))}, 400, "image"),
    "decompression bomb PNG over 40 MP within the side limit": lambda: (
        body() | {"image": b64_url(bomb_png(8000, 8000))}, 400, "image"),
    "decompression bomb PNG as the mask": lambda: (body() | {"mask": b64_url(bomb_png(30000, 30000))}, 400, "mask"),
    "decompression bomb PNG uploaded": lambda: ("/assets", {"image": b64_url(bomb_png(30000, 30000))}, 400, "image"),
    "header-only PNG declaring 100000x100000": lambda: (body() | BAD_BODIES["huge declared size"][0], 400, "image"),
    "60 MB body": lambda: (b'{"modelId": "opencv-telea", "prompt": "' + b"x" * (60 * MB) + b'"}', 413, "body"),
    "60 MB upload": lambda: ("/assets", b'{"image": "data:image/png;base64,' + b"A" * (60 * MB) + b'"}', 413, "body"),
    "60 MB streamed without a length": lambda: ((b"x" * MB for _ in range(60)), 413, "body"),
    "data URL of type text/html": lambda: (body() | {"image": b64_url(HTML, "text/html")}, 400, "image"),
    "data URL of type image/svg+xml": lambda: (body() | {"image": b64_url(SVG, "image/svg+xml")}, 400, "image"),
    "data URL of type image/gif": lambda: (body() | {"image": b64_url(b"GIF89a", "image/gif")}, 400, "image"),
    "mask data URL of type application/octet-stream": lambda: (
        body() | {"mask": b64_url(b"\x00" * 64, "application/octet-stream")}, 400, "mask"),
    "SVG disguised as PNG": lambda: (body() | {"image": b64_url(SVG)}, 400, "image"),
    "HTML disguised as PNG": lambda: (body() | {"image": b64_url(HTML)}, 400, "image"),
    "HTML disguised as WebP": lambda: (body() | {"image": b64_url(HTML, "image/webp")}, 400, "image"),
    "SVG mask disguised as PNG": lambda: (body() | {"mask": b64_url(SVG)}, 400, "mask"),
    "SVG disguised as PNG uploaded": lambda: ("/assets", {"image": b64_url(SVG)}, 400, "image"),
    "PNG truncated after its signature": lambda: (body() | {"image": truncated_png(0.003)}, 400, "image"),
    "PNG truncated in its header": lambda: (body() | {"image": truncated_png(0.0008)}, 400, "image"),
    "PNG truncated at half": lambda: (body() | {"image": truncated_png(0.5)}, 400, "image"),
    "PNG truncated at 90%": lambda: (body() | {"image": truncated_png(0.9)}, 400, "image"),
    "truncated PNG uploaded": lambda: ("/assets", {"image": truncated_png(0.5)}, 400, "image"),
    "animated PNG": lambda: (body() | {"image": b64_url(animated("PNG", [photo(128, 96), photo(128, 96, 1)]))},
                             400, "image"),
    "animated WebP": lambda: (body() | {"image": b64_url(animated("WEBP", [photo(128, 96), photo(128, 96, 1)]),
                                                         "image/webp")}, 400, "image"),
    "animated mask": lambda: (body() | {"mask": b64_url(animated("PNG", [rect_mask(128, 96, (9, 9, 50, 50)),
                                                                       rect_mask(128, 96, (0, 0, 9, 9))]))},
                              400, "mask"),
    "animated PNG uploaded": lambda: ("/assets", {"image": b64_url(animated("PNG", [photo(64, 64), photo(64, 64, 1)]))},
                                      400, "image"),
    "mask of another aspect ratio": lambda: (body() | {"mask": data_url(rect_mask(96, 96, (9, 9, 50, 50)))},
                                             400, "mask"),
    "1 MB prompt": lambda: (body(prompt="a cat " * (MB // 6)), 400, "prompt"),
    "1 MB unicode prompt": lambda: (body(prompt="猫🐱\u202e\u200b" * (MB // 4)), 400, "prompt"),
    "1 MB negative prompt": lambda: (body(negativePrompt="x" * MB), 400, "negativePrompt"),
    "1 MB model id": lambda: (body(modelId="m" * MB), 400, "modelId"),
    "NaN strength": lambda: (raw_body(without(body(), "strength"), strength="NaN"), 400, "strength"),
    "Infinity guidance": lambda: (raw_body(body(), guidance="Infinity"), 400, "guidance"),
    "-Infinity guidance": lambda: (raw_body(body(), guidance="-Infinity"), 400, "guidance"),
    "1e999 guidance": lambda: (raw_body(body(), guidance="1e999"), 400, "guidance"),
    "NaN seed": lambda: (raw_body(body(), seed="NaN"), 400, "seed"),
    "Infinity numSamples": lambda: (raw_body(body(), numSamples="Infinity"), 400, "numSamples"),
    "NaN concept scale": lambda: (raw_body(body(), concepts='[{"modelId": "tiny-sd-1_5-lora", "scale": NaN}]'),
                                  400, "concepts.0.scale"),
    "negative seed": lambda: (body(seed=-1), 400, "seed"),
    "negative seed string": lambda: (body(seed="-1"), 400, "seed"),
    "float seed": lambda: (body(seed=1.5), 400, "seed"),
    "5000-digit seed": lambda: (body(seed="9" * 5000), 400, "seed"),
    "negative numSamples": lambda: (body(numSamples=-1), 400, "numSamples"),
    "10**30 numSamples": lambda: (body(numSamples=10**30), 400, "numSamples"),
    "negative width": lambda: (body(width=-64), 400, "width"),
    "negative height": lambda: (body(height=-8), 400, "height"),
    "negative steps": lambda: (body(numInferenceSteps=-1), 400, "numInferenceSteps"),
    "negative strength": lambda: (body(strength=-0.5), 400, "strength"),
    "negative guidance": lambda: (body(guidance=-1), 400, "guidance"),
    "negative negativePromptStrength": lambda: (body(negativePromptStrength=-1), 400, "negativePromptStrength"),
    "concept scale -3": lambda: (body(concepts=[{"modelId": "tiny-sd-1_5-lora", "scale": -3}]), 400,
                                 "concepts.0.scale"),
    "concepts nested 900 deep": lambda: (raw_body(body(), concepts="[" * DEEP + "]" * DEEP), 400, "concepts.0"),
    "concept modelId nested 900 deep": lambda: (
        raw_body(body(), concepts='[{"modelId": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}]"), 400, "concepts.0.modelId"),
    "concepts as an object": lambda: (body(concepts={"modelId": "tiny-sd-1_5-lora"}), 400, "concepts"),
    "concepts of mixed junk": lambda: (body(concepts=[1, "a", None, [], {}]), 400, "concepts.0"),
    "concept modelId as a query object": lambda: (body(concepts=[{"modelId": {"$ne": None}}]), 400,
                                                  "concepts.0.modelId"),
    "concept with an extra field": lambda: (body(concepts=[{"modelId": "tiny-sd-1_5-lora", "__proto__": {}}]),
                                            400, "concepts.0.__proto__"),
    "1000 concepts": lambda: (body(concepts=[{"modelId": "tiny-sd-1_5-lora"}] * 1000), 400, "concepts"),
    "image id with SQL": lambda: (body() | {"image": "asset_' OR '1'='1"}, 400, "image"),
    "imageId with SQL": lambda: (without(body(imageId="asset_x'; DROP TABLE assets;--"), "image"), 400, "imageId"),
    "maskId with SQL": lambda: (without(body(maskId="asset_' UNION SELECT * FROM jobs --"), "mask"), 400, "maskId"),
    "parentId with SQL": lambda: (body(parentId="asset_') OR 1=1; --"), 400, "parentId"),
    "image id with traversal": lambda: (body() | {"image": "asset_" + "../" * 8 + "etc/passwd"}, 400, "image"),
    "maskId with traversal": lambda: (without(body(maskId="..\\..\\inpaint.db"), "mask"), 400, "maskId"),
    "image id with a NUL byte": lambda: (body() | {"image": f"asset_{'a' * 21}\x00"}, 400, "image"),
    "parentId that does not exist": lambda: (body(parentId=f"asset_{'p' * 22}"), 404, "parentId"),
    "parentId that does not exist, uploaded": lambda: (
        "/assets", {"image": data_url(photo(64, 64)), "parentId": f"asset_{'p' * 22}"}, 404, "parentId"),
    "parentId with SQL, uploaded": lambda: ("/assets", {"image": data_url(photo(64, 64)), "parentId": "asset_' --"},
                                            400, "parentId"),
}


def send(client: TestClient, case) -> httpx.Response:
    path, content, status, field = case if len(case) == 4 else ("/generate/inpaint", *case)
    if isinstance(content, dict):
        content = json.dumps(content).encode()
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("name", HOSTILE, ids=list(HOSTILE))
def test_hostile_input_is_a_4xx_that_decodes_and_stores_nothing(client, engine, decoded_sizes, name):
    # Refused by what it declares, before its pixels: its speed is `huge_picture_refusal` in bench/.
    case = HOSTILE[name]()
    response = send(client, case)
    status, field = case[-2:]
    assert_error(response, status, field)
    assert all(width * height <= imageops.MAX_PIXELS for width, height in decoded_sizes), decoded_sizes
    assert len(response.content) < 1000  # a huge input is never echoed back
    assert engine.store.list(include_hidden=True) == [] and not any((engine.store.root / "files").iterdir())


@pytest.mark.parametrize("method, path, field", [
    ("GET", "/assets/asset_' OR '1'='1", "assetId"), ("GET", "/assets/asset_x'; DROP TABLE assets;--/file", "assetId"),
    ("GET", "/jobs/job_' OR 1=1 --", "jobId"), ("POST", "/jobs/job_'; DELETE FROM jobs; --/cancel", "jobId"),
    ("GET", "/assets/asset_%2e%2e%2f%2e%2e%2finpaint.db", "path"), ("GET", "/jobs/job_%00", "jobId"),
])
def test_hostile_ids_in_paths_are_not_found_and_change_nothing(client, engine, method, path, field):
    kept = engine.store.put(photo(64, 64))
    response = client.request(method, path)
    assert_error(response, 404, field)
    assert [asset.id for asset in engine.store.list(include_hidden=True)] == [kept.id] and engine.store.integrity_ok()


def test_unicode_prompts_are_taken_as_they_are(client):
    prompt = "一只猫 🐱 в шляпе, \u202eright-to-left\u202c, zero\u200bwidth, e\u0301, NUL\x00 ok"
    job = wait(client, submit(client, body(prompt=prompt, negativePrompt="🚫" * 4000))["jobId"])
    assert job["status"] == "success" and job["metadata"]["input"]["prompt"] == prompt


# ---- auth: every route and file refuses without the key; the UI needs a login --------------------------

def wrong_credentials() -> dict[str, dict]:
    basic = base64.b64encode(f"{KEY}:".encode()).decode()  # the key as the user name, no password
    return {"none": {}, "wrong bearer": {"Authorization": "Bearer wrong"},
            "key prefix": {"Authorization": f"Bearer {KEY[:-1]}"}, "key plus one": {"Authorization": f"Bearer {KEY}x"},
            "wrong basic": {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()},
            "key as the user name": {"Authorization": f"Basic {basic}"},
            "other scheme": {"Authorization": f"Token {KEY}"}, "key as a query": {}}


@pytest.fixture
def keyed(engine):
    # Hundreds of wrong keys on purpose: the throttle of repeated failures is tested on its own.
    with TestClient(create_app(engine, api_key=KEY, max_auth_failures=10_000, with_ui=False)) as client:
        yield client


def test_every_route_and_file_refuses_without_the_key(keyed, engine):
    good = {"Authorization": f"Bearer {KEY}"}
    authed = TestClient(keyed.app, headers=good)  # the same app and worker, with the key
    job = wait(authed, submit(authed, body(hideResults=True))["jobId"])
    job_id = job["jobId"]
    hidden_id = job["metadata"]["assetIds"][0]
    ids = {"jobId": job_id, "assetId": hidden_id, "modelId": "opencv-telea"}
    assert keyed.get(f"/assets/{hidden_id}/file", auth=("anyone", KEY)).status_code == 200
    operations = [(method.upper(), path.format(**ids)) for path, methods in keyed.get("/openapi.json").json()["paths"]
                  .items() for method in methods]
    assert len(operations) >= 10  # every documented operation; test_every_route_the_app_serves_… walks the rest
    urls = operations + [("GET", f"/assets/{hidden_id}/file?original=true"), ("HEAD", f"/assets/{hidden_id}/file"),
                         ("GET", f"/assets/{job['metadata']['input']['maskId']}/file"), ("GET", "/jobs"),
                         ("DELETE", f"/assets/{hidden_id}"), ("GET", "/models/x/../../assets"), ("OPTIONS", "/models")]
    for method, url in urls:
        for name, headers in wrong_credentials().items():
            target = url + ("&" if "?" in url else "?") + f"key={KEY}&api_key={KEY}" if name == "key as a query" else url
            response = keyed.request(method, target, headers=headers)
            assert response.status_code == 401, (method, target, name, response.text)
            assert response.headers["www-authenticate"] == 'Bearer realm="inpaint"'
            if method != "HEAD":
                assert response.json()["error"]["field"] == "authorization"
                assert hidden_id not in response.text and job_id not in response.text
        assert keyed.request(method, url, headers=good).status_code != 401, (method, url)


def served_routes(routes, prefix: str = ""):
    """(path, methods) of every route an app serves: its own, its included routers' and its mounted apps' (the
    studio's, under /), by the path templates they match."""
    for route in routes:
        if isinstance(route, Mount):
            yield from served_routes(route.routes, prefix + route.path)
        elif hasattr(route, "original_router"):  # an included router
            yield from served_routes(route.original_router.routes, prefix)
        elif isinstance(route, WebSocketRoute):
            yield prefix + route.path, {"WEBSOCKET"}
        else:
            yield prefix + route.path, set(route.methods)


# With a key, what answers without it: the studio's login page and the static files it loads, and the API's docs.
# Explicit: a new route that answers without the key fails here until it is listed (and so decided on).
PUBLIC_ROUTES = {
    ("GET", "/"), ("HEAD", "/"), ("POST", "/login"), ("POST", "/login/"),
    ("GET", "/assets/{path:path}"), ("GET", "/static/{path:path}"), ("GET", "/svelte/{path:path}"),
    ("GET", "/favicon.ico"), ("GET", "/theme.css"), ("GET", "/gradio_api/theme.css"), ("GET", "/robots.txt"),
    ("GET", "/manifest.json"), ("GET", "/pwa_icon"), ("GET", "/pwa_icon/{size}"),
    ("GET", "/openapi.json"), ("HEAD", "/openapi.json"), ("GET", "/docs"),
}


def test_every_route_the_app_serves_needs_the_key_but_the_public_ones(engine):
    app = create_app(engine, api_key=KEY, max_auth_failures=10_000, with_ui=True)
    answered = set()
    with TestClient(app) as client:
        for template, methods in served_routes(app.routes):
            path = re.sub(r"\{[^}]*:asset_id\}", "asset_" + "a" * 22, template)
            path = re.sub(r"\{[^}]+\}", "x", path.replace("{size}", "192"))
            for method in methods - {"WEBSOCKET"}:
                response = client.request(method, path)
                if response.status_code == 401:  # in the shape of the API the route belongs to
                    assert response.headers["www-authenticate"] == 'Bearer realm="inpaint"', (method, path)
                else:
                    answered.add((method, template))
    assert answered == PUBLIC_ROUTES
    # Gradio's own routes that check no login (cancel, reset) are behind the key too.
    with TestClient(app) as client:
        for path in ("/gradio_api/cancel", "/gradio_api/reset"):
            assert client.post(path, json={"session_hash": "x", "fn_index": 0, "event_id": "x"}).status_code == 401
        assert client.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        assert client.post("/gradio_api/reset", json={"session_hash": "x", "fn_index": 0, "event_id": "x"}
                           ).status_code != 401  # logged in
    # A route added the usual FastAPI way, to the app itself, is behind the key as well (KeyGuard, in front of all).
    # (After the studio is mounted at /, the mount would take its path first: the API alone here.)
    app = create_app(engine, api_key=KEY, with_ui=False)
    app.get("/added-later")(lambda: {"ok": True})
    with TestClient(app) as client:
        assert client.get("/added-later").status_code == 401
        assert client.get("/added-later", headers={"Authorization": f"Bearer {KEY}"}).json() == {"ok": True}


def dependency_calls(dependant):
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from dependency_calls(dependency)


def test_every_api_route_is_included_through_the_key_check(engine, monkeypatch):
    # A route added to a resource's router the usual FastAPI way (the router's routes restored afterwards).
    monkeypatch.setattr(api.jobs.router, "routes", list(api.jobs.router.routes))
    api.jobs.router.get("/jobs/{jobId}/added-later")(lambda jobId: {"ok": jobId})
    app = create_app(engine, api_key=KEY, with_ui=True)
    unchecked = {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
                 and api.auth.require_key not in set(dependency_calls(route.dependant)) for method in route.methods}
    assert unchecked <= PUBLIC_ROUTES, unchecked - PUBLIC_ROUTES
    # The router's check holds on its own: with the guard in front letting every path through, still 401.
    monkeypatch.setattr(api, "is_public", lambda method, path: True)
    for app in (create_app(engine, api_key=KEY, with_ui=True), create_app(engine, api_key=KEY, with_ui=False)):
        with TestClient(app) as client:
            for method, path in [("GET", f"/jobs/job_{'a' * 22}/added-later"), ("GET", "/models"),
                                 ("POST", "/generate/inpaint"), ("GET", "/v1/models"), ("GET", "/sdapi/v1/options"),
                                 ("GET", "/jobs/nope/nope")]:
                response = client.request(method, path)
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == 'Bearer realm="inpaint"'
            added = client.get(f"/jobs/job_{'a' * 22}/added-later", headers={"Authorization": f"Bearer {KEY}"})
            assert added.json() == {"ok": f"job_{'a' * 22}"}


def test_unknown_ids_in_paths_are_not_found(client):
    # Every documented path with an id, every method: a well-formed id that names nothing, and one that cannot exist.
    examples = {"jobId": ("job_" + "z" * 22, "nope"), "assetId": ("asset_" + "z" * 22, "asset_nope"),
                "modelId": ("no-such-model",)}
    checked = 0
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        for name in re.findall(r"\{(\w+)\}", template):
            for unknown in examples[name]:
                for method in operations:
                    response = client.request(method.upper(), template.replace(f"{{{name}}}", unknown))
                    assert_error(response, 404, name, unknown)
                    checked += 1
    assert checked >= 10


def test_keys_are_compared_in_constant_time(engine, monkeypatch):
    compared = []
    real = web_security.secrets.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web_security.secrets, "compare_digest", spy)
    with TestClient(create_app(engine, api_key=KEY, with_ui=False)) as client:
        assert client.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/models", auth=("me", "nope")).status_code == 401
        assert client.get("/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    # The right key is compared twice: by the guard in front of the app, and by the API router's own check.
    assert compared == [(b"nope", KEY.encode()), (b"nope", KEY.encode())] + [(KEY.encode(), KEY.encode())] * 2
    login = api.auth.ui_login(KEY)
    assert login("me", "nope") is False and login("me", KEY) is True
    assert compared[-2:] == [(b"nope", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_the_ui_and_its_api_need_a_login(engine):
    asset = engine.store.put(photo(64, 64), hidden=True)
    file_on_disk = engine.store.file_path(asset.id)
    gated = [("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/gradio_api/openapi.json"),
             ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/upload"), ("POST", "/gradio_api/call/inpaint"),
             ("POST", "/gradio_api/run/inpaint"), ("GET", "/gradio_api/queue/data"),
             ("GET", f"/gradio_api/file={file_on_disk}"), ("GET", f"/gradio_api/file/{file_on_disk}"),
             ("GET", "/monitoring")]
    with TestClient(create_app(engine, api_key=KEY, with_ui=True)) as client:
        for method, path in gated:
            response = client.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path, response.text[:200])
        assert "auth_required" in client.get("/").text  # the page is the login form
        assert client.post("/login", data={"username": "me", "password": KEY[:-1]}).status_code == 400
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        assert client.get("/config").status_code == 200 and client.get("/gradio_api/info").status_code == 200
        # A login is for the UI; the store's files are not the UI's to serve.
        assert client.get(f"/gradio_api/file={file_on_disk}").status_code in (403, 404)


def test_hidden_assets_are_not_reachable_by_listing(client, engine):
    shown = client.post("/assets", json={"image": data_url(photo(64, 64))}).json()["asset"]["id"]
    hidden = client.post("/assets", json={"image": data_url(photo(64, 64)), "hide": True}).json()["asset"]["id"]
    job = wait(client, submit(client, body(**TINY, numSamples=1, hide=True, hideResults=True,
                                           intermediateImages=True, parentId=shown))["jobId"])
    meta = job["metadata"]
    secret = {hidden, meta["input"]["image"], meta["input"]["maskId"], *meta["assetIds"], *meta["intermediateImages"]}
    assert len(secret) >= 5 and meta["assets"] == []
    for params in [{}, {"limit": 1000}, {"hidden": "true"}, {"include_hidden": "1"}, {"includeHidden": "true"},
                   {"kind": "mask"}, {"jobId": job["jobId"]}, {"originalAssets": "true"}]:
        listed = {asset["id"] for asset in client.get("/assets", params=params).json()["assets"]}
        assert listed == {shown}, params
    paged = [client.get("/assets", params={"limit": 1, "offset": i}).json()["assets"] for i in range(8)]
    assert [asset["id"] for page in paged for asset in page] == [shown]


# ---- the long fuzz ----------------------------------------------------------------------------------------

LONG_EXAMPLES = int(os.environ.get("INPAINT_FUZZ_EXAMPLES", "150"))  # per operation and mode: 15 x 150 = 2,250


@LONG
@pytest.mark.parametrize("method, path, mode", RUNS, ids=[f"{m} {p} {mode.value}" for m, p, mode in RUNS])
def test_long_fuzz_no_server_error_and_answers_conform(api_schema, method, path, mode):
    operation = api_schema[path][method]
    extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []

    # Not derandomized: each long run explores new inputs (CI's bounded run stays reproducible).
    @settings(max_examples=LONG_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def answers_as_documented(case):
        case.validate_response(case.call(), checks=CHECKS + extra)

    answers_as_documented()
