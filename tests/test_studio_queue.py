"""The studio's runs through the server's job queue: they take their turn on its workers with the REST jobs."""

import threading
from types import SimpleNamespace

import gradio as gr
import pytest

from inpaint import ui
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Done, Failed, Preview, Waiting
from inpaint.generate import Engine
from inpaint.errors import QueueFull
from inpaint.pipelines import PipelineCache
from inpaint.workers import local_workers
from tests.support.images import photo
from tests.support.queues import run_jobs, started_queue
from tests.support.studio import BOX, SIZE, handler, merged, painted
from tests.support.workers import meeting_point, tiny_body

CATALOG = Catalog.load()


@pytest.fixture
def engine(tmp_path, models_dir):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"),
                    PipelineCache(CATALOG, models_dir, max_pipelines=3, device="cpu"))
    engine.pipelines.get("tiny-sd-1_5")  # built once here: two workers would build it into one folder at once
    return engine


def studio_run(demo, session: str, **given) -> list[dict]:
    """The studio's run handler, as the page drives it: one dict of updates per message."""
    args = {**painted(photo(SIZE, SIZE), BOX), "prompt": "a red apple", "modelId": "tiny-sd-1_5",
            "numSamples": 1, "numInferenceSteps": 2, "seed": 7, "randomizeSeed": False, "autoSize": False,
            "width": 64, "height": 64, "state": {}}
    return handler(demo, "inpaint")(**{**args, **given}, request=SimpleNamespace(session_hash=session))


def test_a_studio_run_and_a_rest_job_run_at_once_on_the_two_workers(engine):
    workers = local_workers(engine, ("cpu", "cpu"))
    meeting_point(workers)  # each generation waits for another: they pass only when two run at once
    with started_queue(engine, workers) as queue:
        demo = ui.build_demo(engine, default_model="opencv-telea", jobs=queue)
        outputs = []
        studio = threading.Thread(target=lambda: outputs.extend(studio_run(demo, "s1")))
        studio.start()
        [job] = run_jobs(queue, [engine.prepare(tiny_body(seed=5))])
        studio.join(timeout=120)
    page = merged(outputs)
    assert job["status"] == "success", job["metadata"]["error"]
    assert page[demo.studio.ui.status].startswith("**Done**"), page[demo.studio.ui.status]
    # Not a job: its result names none, as the studio's always did.
    [result] = page[demo.studio.ui.session]["results"]
    assert engine.store.get(result["id"]).job_id is None


def test_stop_of_a_studio_run_through_the_queue_ends_it_within_a_step(engine):
    with started_queue(engine) as queue:
        demo = ui.build_demo(engine, default_model="opencv-telea", jobs=queue)
        studio_ui, stop = demo.studio.ui, handler(demo, "stop")
        steps = []
        for out in studio_run(demo, "stopper", numInferenceSteps=150, strength=1.0, intermediateImages=True):
            if isinstance(out.get(studio_ui.preview), str):  # a preview's file, named after its step
                steps.append(int(out[studio_ui.preview].rsplit("-", 1)[1].split(".")[0]))
                if len(steps) == 1:
                    assert "Stopping" in stop(SimpleNamespace(session_hash="stopper"))
        last = out[studio_ui.status]
        # The worker is free again at once: a job submitted now runs to its end.
        [job] = run_jobs(queue, [engine.prepare(tiny_body())], timeout=60)
    assert last.startswith("**Stopped**") and steps == [1], (last, steps)
    assert job["status"] == "success"


def test_a_run_through_the_queue_streams_the_engines_events_and_cancels_within_a_step(engine):
    with started_queue(engine) as queue:
        events = list(queue.run(engine.prepare(tiny_body(numInferenceSteps=3, intermediateImages=True))))
        assert [e.step for e in events if isinstance(e, Preview)] == [1, 2, 3] and events[-1] == Done()
        cancel, steps = threading.Event(), []
        for event in queue.run(engine.prepare(tiny_body(numInferenceSteps=150, intermediateImages=True)), cancel):
            if isinstance(event, Preview):
                steps.append(event.step)
                cancel.set()
    assert event == Failed("canceled", "stopped") and steps[-1] <= 2


def test_a_run_waits_for_a_busy_worker_and_a_cancel_ends_it_before_it_starts(engine):
    with started_queue(engine) as queue:
        busy = queue.run(engine.prepare(tiny_body(numInferenceSteps=150, intermediateImages=True)))
        assert any(isinstance(event, Preview) for event in busy)  # the one worker is generating
        cancel = threading.Event()
        waiting = queue.run(engine.prepare(tiny_body()), cancel)
        assert next(waiting) == Waiting()
        cancel.set()
        assert list(waiting) == [Failed("canceled", "stopped")]
        busy.close()  # returns once the worker let go of it
        assert not engine.device_lock.locked()


def test_a_full_queue_refuses_a_studio_run_in_plain_words(engine):
    with started_queue(engine, max_queue=0) as queue:
        with pytest.raises(QueueFull):
            queue.run(engine.prepare(tiny_body()))
        demo = ui.build_demo(engine, default_model="opencv-telea", jobs=queue)
        outputs = []
        with pytest.raises(gr.Error, match="the queue is full"):
            outputs.extend(studio_run(demo, "s1"))
    assert merged(outputs)[demo.studio.ui.status].startswith("**Not started** · the queue is full")
