"""ZeroGPU: the duration each call asks for, the per-Space sample cap, startup placement, and the process boundary.

ZeroGPU cannot run here, so a stand-in does what it does to the GPU function: the duration callable is
called with the call's arguments in this process, then the function runs in another process (a spawn:
nothing is shared but what is pickled), its arguments and every value it yields pickled across. The
models are placed in that process at its start, as a Space places them at import, before any call.
"""

from __future__ import annotations

import importlib
import multiprocessing
import pickle
from pathlib import Path

import pytest

from inpaint import zerogpu
from inpaint.errors import JobCanceled, ModelUnavailable, RequestError

FAMILIES = ["sd-1_5", "sd-xl", "flux.1"]


def seconds(family="sd-1_5", *, steps=30, strength=0.75, samples=4, side=512, loading=False) -> float:
    return zerogpu.estimate_seconds(family, steps=steps, strength=strength, samples=samples, width=side,
                                    height=side, loading=loading)


# ---- the duration: torch-free -------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_the_estimate_grows_with_steps_strength_samples_and_size(family):
    assert [seconds(family, steps=s) for s in (5, 10, 30, 60)] == sorted(seconds(family, steps=s) for s in (5, 10, 30, 60))
    assert seconds(family, steps=10) < seconds(family, steps=50)
    assert seconds(family, strength=0.3) < seconds(family, strength=1.0)
    assert seconds(family, samples=1) < seconds(family, samples=2) < seconds(family, samples=8)
    assert seconds(family, side=512) < seconds(family, side=768) < seconds(family, side=1024)
    assert seconds(family) < seconds(family, loading=True)


def test_the_duration_is_within_its_bounds_and_monotonic():
    grid = [(family, steps, samples, side) for family in FAMILIES for steps in (1, 20, 50, 150)
            for samples in (1, 4, 16, 128) for side in (64, 512, 1024, 2048)]
    for family, steps, samples, side in grid:
        asked = zerogpu.bounded(seconds(family, steps=steps, samples=samples, side=side))
        assert zerogpu.FLOOR_S <= asked <= zerogpu.CEILING_S
        assert isinstance(asked, int)
        for bigger in ({"steps": steps * 2}, {"samples": samples * 2}, {"side": side * 2}):
            more = {"steps": steps, "samples": samples, "side": side} | bigger
            assert zerogpu.bounded(seconds(family, **more)) >= asked
    assert zerogpu.bounded(0.1) == zerogpu.FLOOR_S
    assert zerogpu.bounded(1e6) == zerogpu.CEILING_S
    # The page's defaults on the default model fit in an anonymous visitor's daily 2 minutes, with room.
    assert zerogpu.bounded(seconds("sd-1_5")) < 60


def test_classical_models_and_erasers_cost_next_to_nothing_and_flux_the_most():
    for family in ("opencv", "patchmatch", "lama", "mi-gan"):
        assert zerogpu.bounded(seconds(family, side=2048)) == zerogpu.FLOOR_S
    assert seconds("flux.1") > seconds("sd-xl") > seconds("sd-1_5")


def test_steps_run_as_diffusers_counts_them():
    assert zerogpu.steps_run(30, 0.75) == 22
    assert zerogpu.steps_run(30, 1.0) == 30
    assert zerogpu.steps_run(4, 0.01) == 1


def test_samples_are_capped_with_a_reason():
    assert zerogpu.cap_samples(2, default=4, limit=4) == (2, None)
    assert zerogpu.cap_samples(None, default=4, limit=4) == (None, None)  # the contract's default fits
    value, note = zerogpu.cap_samples(16, default=4, limit=4)
    assert value == 4 and "at most 4" in note and "asked 16" in note
    value, note = zerogpu.cap_samples(None, default=4, limit=2)  # the default itself is over the cap
    assert value == 2 and "asked 4" in note


def test_zerogpu_is_told_by_the_spaces_package(monkeypatch):
    from spaces.config import Config

    monkeypatch.setattr(Config, "zero_gpu", False)
    assert not zerogpu.is_zerogpu()
    monkeypatch.setattr(Config, "zero_gpu", True)
    assert zerogpu.is_zerogpu()


def test_preload_ids_start_with_the_default_model(monkeypatch):
    from inpaint import settings

    monkeypatch.setattr(settings, "DEFAULT_MODEL", "tiny-sd-1_5")
    monkeypatch.setenv("INPAINT_PRELOAD", " tiny-sd-xl, ,tiny-sd-1_5,tiny-flux.1")
    assert zerogpu.preload_ids() == ["tiny-sd-1_5", "tiny-sd-xl", "tiny-flux.1"]


def test_a_failure_crosses_the_boundary_as_it_is_and_raises_as_its_own_class():
    from inpaint.events import failure

    for exc in (RequestError("modelId", "no such model", status=404), ModelUnavailable("m", "needs the Hub"),
                JobCanceled(), KeyError("x")):
        failed = failure(exc)
        assert pickle.loads(pickle.dumps(failed)) == failed
        back = failed.error()
        if type(exc).__module__.startswith("inpaint"):
            assert type(back) is type(exc) and str(back) == str(exc)
        else:  # not this package's: its name and message, in a RuntimeError
            assert isinstance(back, RuntimeError) and "KeyError" in str(back)
    again = failure(RequestError("modelId", "no such model", status=404)).error()
    assert (again.field, again.message, again.status) == ("modelId", "no such model", 404)


# ---- placement at startup and the call in another process: with the tiny models ---------------------

def _space_engine(models_dir: Path, data_dir: Path):
    from inpaint.assets import AssetStore
    from inpaint.catalog import Catalog
    from inpaint.generate import Engine
    from inpaint.pipelines import PipelineCache

    catalog = Catalog.load()
    return Engine(catalog, AssetStore(data_dir), PipelineCache(catalog, models_dir, max_pipelines=2, device="cpu"))


def _count_loads():
    """Count the real loads of this process from now: the pipeline cache's single from_pretrained call site."""
    from inpaint import pipelines

    loads = []
    real = pipelines._from_pretrained

    def counted(cls, source, **kwargs):
        loads.append(str(source))
        return real(cls, source, **kwargs)

    pipelines._from_pretrained = counted
    return loads


_KEEP = []  # the worker's engine: ui.ENGINES holds it weakly


def _worker(startup: tuple, function: tuple[str, str], args: tuple, conn) -> None:
    """The GPU process: the Space's startup (placement), then the call; everything sent back is pickled."""
    models_dir, data_dir, engine_key, preload = startup
    from inpaint.ui import device as ui

    loads = _count_loads()
    engine = _space_engine(models_dir, data_dir)
    _KEEP.append(engine)
    ui.ENGINES[engine_key] = engine
    zerogpu.preload(engine.pipelines, preload)
    conn.send(("__startup_loads__", len(loads)))
    before = len(loads)
    module, name = function
    try:
        for event in getattr(importlib.import_module(module), name)(*args):
            conn.send(("event", event))
    finally:
        conn.send(("__call_loads__", len(loads) - before))
        conn.send(("__end__", None))
        conn.close()


class StandInGPU:
    """spaces.GPU as ZeroGPU runs it, for a generator function given by module and name."""

    def __init__(self, startup: tuple):
        self.startup = startup
        self.durations: list[int] = []
        self.counts: dict[str, int] = {}

    def __call__(self, function: tuple[str, str], duration):
        def call(*args):
            self.durations.append(duration(*args) if callable(duration) else duration or zerogpu.DEFAULT_DURATION_S)
            context = multiprocessing.get_context("spawn")
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_worker, args=(self.startup, function, args, sender), daemon=True)
            process.start()
            sender.close()
            try:
                while True:
                    kind, value = receiver.recv()
                    if kind == "__end__":
                        return
                    if kind.startswith("__"):
                        self.counts[kind.strip("_")] = value
                    else:
                        yield value
            finally:
                process.join(120)
                assert process.exitcode == 0

        return call


@pytest.fixture
def space(models_dir, tmp_path, monkeypatch):
    """A Space on the stand-in ZeroGPU: this process is the main one, tiny-sd-1_5 placed at startup in both."""
    from inpaint.ui import device as ui

    data_dir = tmp_path / "data"
    engine = _space_engine(models_dir, data_dir)
    assert zerogpu.preload(engine.pipelines, ["tiny-sd-1_5"]) == ["tiny-sd-1_5"]
    key = f"engine-test-{id(engine):x}"
    monkeypatch.setitem(ui.ENGINES, key, engine)
    gpu = StandInGPU((models_dir, data_dir, key, ["tiny-sd-1_5"]))
    monkeypatch.setattr(ui, "run_on_device", gpu(("inpaint.ui.device", "run_on_device"), ui.gpu_seconds))
    yield engine, key, gpu
    engine.store.close()


def _request(engine, model_id: str, **extra):
    from tests.support.images import data_url, photo, rect_mask

    body = {"modelId": model_id, "prompt": "a boat", "image": data_url(photo(64, 64)),
            "mask": data_url(rect_mask(64, 64, (16, 16, 48, 48))), "width": 64, "height": 64,
            "numInferenceSteps": 2, "strength": 1.0, "numSamples": 2, "seed": 7, "intermediateImages": True} | extra
    return engine.prepare(body)


@pytest.mark.torch
def test_preload_places_the_pipelines_once_and_skips_what_has_no_weights(models_dir, tmp_path):
    engine = _space_engine(models_dir, tmp_path / "data")
    said = []
    placed = zerogpu.preload(engine.pipelines, ["opencv-telea", "no-such-model", "tiny-sd-1_5-lora", "tiny-sd-1_5"],
                             log=said.append)
    assert placed == ["tiny-sd-1_5"]  # the LoRA's base, once; the classical model has nothing to place
    assert engine.pipelines.cached_ids() == ["tiny-sd-1_5"]
    assert any("no-such-model" in line for line in said)
    engine.store.close()


@pytest.mark.torch
def test_a_preloaded_model_runs_in_another_process_without_a_load(space, tmp_path):
    from inpaint.events import Done, Loading, Preview, Progress, results
    from inpaint.ui import device as ui

    engine, key, gpu = space
    request = _request(engine, "tiny-sd-1_5")
    events = list(ui.studio_events(None, key, request, "run-1"))

    assert gpu.counts == {"startup_loads": 1, "call_loads": 0}  # placed at startup; nothing loaded in the call
    kinds = {type(event) for event in events}
    assert Loading not in kinds and Preview in kinds and Progress in kinds and events[-1] == Done()
    made = results(events)
    assert len(made) == 2 and engine.store.exists(made[0].id)  # written by the worker, read here
    preview = next(event for event in events if isinstance(event, Preview))
    assert len(preview.images) == min(2, engine.max_batch)  # one per sample of the pipeline call, decoded there
    assert gpu.durations == [zerogpu.gpu_duration(request)]  # asked without a load
    assert zerogpu.FLOOR_S <= gpu.durations[0] <= zerogpu.CEILING_S


@pytest.mark.torch
def test_a_model_not_placed_at_startup_loads_in_the_call_and_says_so(space, tmp_path):
    from inpaint.events import Loading, results
    from inpaint.ui import device as ui

    engine, key, gpu = space
    request = _request(engine, "tiny-flux.1", intermediateImages=False, numSamples=1)
    events = list(ui.studio_events(None, key, request, "run-2"))

    assert events[0] == Loading("tiny-flux.1")
    assert gpu.counts["call_loads"] == 1
    assert len(results(events)) == 1
    assert gpu.durations == [zerogpu.gpu_duration(request, loading=True)]
    assert gpu.durations[0] > zerogpu.gpu_duration(request) or gpu.durations[0] == zerogpu.CEILING_S


@pytest.mark.torch
def test_an_error_in_the_call_comes_back_as_a_failure_that_raises_as_its_own_class(space, tmp_path, monkeypatch):
    from inpaint.events import Failed
    from inpaint.ui import device as ui

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the worker inherits it: a Hub model is unavailable at once
    engine, key, _ = space
    request = _request(engine, "tiny-sd-1_5", numSamples=1).model_copy(
        update={"model_id": "sd-1_5-inpainting", "pipeline_model_id": "sd-1_5-inpainting"})
    *_, last = ui.studio_events(None, key, request, "run-3")
    assert isinstance(last, Failed) and (last.kind, last.field) == ("unavailable", "modelId")
    assert isinstance(last.error(), ModelUnavailable) and "HF_HUB_OFFLINE" in str(last.error())


def test_rest_refuses_models_with_weights_on_zerogpu_and_stores_nothing(tmp_path, monkeypatch):
    """There only the studio's function gets a GPU: a REST job with a diffusion model would fail; it is a 400."""
    from fastapi.testclient import TestClient

    from inpaint.api import create_app
    from inpaint.assets import AssetStore
    from inpaint.catalog import Catalog
    from inpaint.generate import Engine
    from inpaint.pipelines import PipelineCache
    from tests.support.images import data_url, photo, rect_mask

    monkeypatch.setattr(zerogpu, "is_zerogpu", lambda: True)
    catalog = Catalog.load()
    engine = Engine(catalog, AssetStore(tmp_path / "data"), PipelineCache(catalog, tmp_path / "models"))
    image = photo(96, 64)
    body = {"image": data_url(image), "mask": data_url(rect_mask(96, 64, (30, 20, 60, 40))), "numSamples": 1}
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        refused = client.post("/generate/inpaint", json={**body, "modelId": "tiny-sd-1_5", "prompt": "a cat"})
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "modelId"
        assert "patchmatch" in refused.json()["error"]["message"]
        assert engine.store.list(include_hidden=True) == []
        assert client.post("/generate/inpaint", json={**body, "modelId": "patchmatch"}).status_code == 200
    engine.store.close()
