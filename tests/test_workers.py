"""The engine's event stream, and local workers: one per INPAINT_DEVICES entry, running jobs at the same time."""

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Done, Failed, Loading, Preview, Progress, Result, Waiting
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from inpaint.workers import local_workers
from tests.support.queues import run_jobs, started_queue
from tests.support.workers import meeting_point, tiny_body

CATALOG = Catalog.load()


@pytest.fixture
def engine(tmp_path, models_dir):
    return Engine(CATALOG, AssetStore(tmp_path / "data"),
                  PipelineCache(CATALOG, models_dir, max_pipelines=3, device="cpu"))


def pixels(engine, asset_id):
    return np.asarray(engine.store.open_image(asset_id).convert("RGB"))


def test_a_run_streams_loading_previews_progress_results_then_done_as_plain_data(engine, monkeypatch):
    monkeypatch.setattr(engine, "max_batch", 2)  # both samples in one pipeline call: a preview shows each
    request = engine.prepare(tiny_body(numSamples=2, numInferenceSteps=3, intermediateImages=True))
    events = list(engine.run(request))
    assert events[0] == Loading("tiny-sd-1_5") and events[-1] == Done()
    previews = [e for e in events if isinstance(e, Preview)]
    assert [(p.step, p.steps, len(p.images)) for p in previews] == [(1, 3, 2), (2, 3, 2), (3, 3, 2)]
    results = [e.asset for e in events if isinstance(e, Result)]
    assert [a.seed for a in results] == [11, 12] and all(engine.store.exists(a.id) for a in results)
    fractions = [e.fraction for e in events if isinstance(e, Progress)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # Plain data: every event survives pickling (a stream may cross processes), pixels included.
    again = pickle.loads(pickle.dumps(events))
    first_preview = events.index(previews[0])
    assert again[-1] == Done() and again[:first_preview] == events[:first_preview]
    assert np.array_equal(np.asarray(again[first_preview].images[0]), np.asarray(previews[0].images[0]))
    # The model is cached now: a second run does not announce a load.
    assert not any(isinstance(e, Loading) for e in engine.run(engine.prepare(tiny_body())))


def test_cancel_ends_the_stream_with_canceled_within_a_step_keeping_earlier_results(engine):
    request = engine.prepare(tiny_body(numSamples=3, numInferenceSteps=6, intermediateImages=True))
    engine.max_batch = 1  # one sample per micro-batch: the first result is stored before the cancel
    cancel, steps, events = threading.Event(), [], []
    for event in engine.run(request, cancel):
        events.append(event)
        if isinstance(event, Preview):
            steps.append(event.step)
        if isinstance(event, Result):
            cancel.set()
    assert isinstance(events[-1], Failed) and events[-1].kind == "canceled"
    assert len([e for e in events if isinstance(e, Result)]) == 1
    assert steps[-1] <= 1 or steps.count(6) == 1  # the second sample stopped at its first step


def test_closing_the_stream_stops_the_generation_and_frees_the_device(engine):
    stream = engine.run(engine.prepare(tiny_body(numInferenceSteps=50, intermediateImages=True)))
    assert any(isinstance(event, Preview) for event in stream)  # the generation is under way
    stream.close()
    assert not engine.device_lock.locked()


def test_errors_become_one_failed_event_naming_what_went_wrong(engine):
    request = engine.prepare(tiny_body())
    engine.inputs.take(request.mask_asset_id)
    engine.store.delete_asset(request.mask_asset_id)  # gone before the run: the generation cannot read it
    *_, last = engine.run(request)
    assert last == Failed("bad-input", f"assetId: no asset {request.mask_asset_id}", "assetId", status=404)


def test_a_run_waiting_for_the_device_says_so_first(engine):
    request = engine.prepare(tiny_body())
    with engine.device_lock:
        stream = engine.run(request)
        assert next(stream) == Waiting()
    assert isinstance(list(stream)[-1], Done)


def test_two_device_entries_run_two_jobs_at_once_with_the_results_of_one(engine, tmp_path):
    alone = engine.prepare(tiny_body(seed=5))
    *_, reference = [e for e in engine.run(alone) if isinstance(e, Result)]
    workers = local_workers(engine, ("cpu", "cpu"))
    assert len(workers) == 2 and workers[1].store is engine.store and workers[1].pipelines is not engine.pipelines
    meeting_point(workers)
    with started_queue(engine, workers) as queue:
        answers = run_jobs(queue, [engine.prepare(tiny_body(seed=seed)) for seed in (5, 6)])
    assert [a["status"] for a in answers] == ["success", "success"], [a["metadata"]["error"] for a in answers]
    assert [a["metadata"]["seeds"] for a in answers] == [[5], [6]]
    # Seed 5 gives the same pixels on either worker as on the engine alone.
    assert np.array_equal(pixels(engine, answers[0]["metadata"]["assetIds"][0]), pixels(engine, reference.asset.id))


@pytest.mark.parametrize(("value", "expected"), [
    ("cpu,cpu", "('cpu', 'cpu')"), (" CPU , cpu ", "('cpu', 'cpu')"), ("", "('cpu',)"),
])
def test_inpaint_devices_lists_one_worker_per_entry(value, expected):
    done = subprocess.run([sys.executable, "-c", "from inpaint import settings; print(settings.DEVICES)"],
                          env={**os.environ, "INPAINT_DEVICES": value, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == expected, done.stderr


def test_a_bad_inpaint_devices_entry_stops_the_server_naming_it():
    done = subprocess.run([sys.executable, "-c", "import inpaint.settings"],
                          env={**os.environ, "INPAINT_DEVICES": "cpu,gpu1"}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1 and "INPAINT_DEVICES" in done.stderr and "'gpu1'" in done.stderr


@pytest.mark.parametrize("value", ["cuda:0", "cpu,cuda", "cuda:1"])
def test_a_device_this_machine_lacks_stops_the_server_naming_it(value):
    # No GPU is visible (CUDA_VISIBLE_DEVICES=""), whatever the machine has.
    done = subprocess.run([sys.executable, "-c", "import inpaint.settings"],
                          env={**os.environ, "INPAINT_DEVICES": value, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=60, check=False)
    named = value.split(",")[-1]
    assert done.returncode == 1 and f"INPAINT_DEVICES names {named!r}" in done.stderr, done.stderr
    assert "no GPU" in done.stderr
