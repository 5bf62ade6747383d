"""Workers on a real Ray cluster started here (two CPU workers, the tiny models): jobs at the same time, results
equal to the local engine's, previews and progress, cancel, a worker killed mid-job, the cluster lost."""

import tempfile
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from inpaint import ray_workers  # after the skip: ray is an optional install
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Done, Failed, Preview, Progress, Result, Warned
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache
from tests.support.queues import run_jobs, started_queue
from tests.support.workers import tiny_body

pytestmark = pytest.mark.torch
CATALOG = Catalog.load()


@pytest.fixture(scope="module")
def cluster():
    # Ray's socket paths must stay under ~100 characters: a short folder of its own, not pytest's tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray_workers.init(None, num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def engine(tmp_path_factory, models_dir):
    store = AssetStore(tmp_path_factory.mktemp("ray-data"))
    return Engine(CATALOG, store, PipelineCache(CATALOG, models_dir, max_pipelines=3, device="cpu"), max_batch=1)


@pytest.fixture(scope="module")
def workers(cluster, engine, models_dir):
    engine.pipelines.get("tiny-sd-1_5")  # built once here: two actors would build it into one folder at once
    workers = ray_workers.connect(engine, None, count=2, models_dir=str(models_dir))
    for worker in workers:  # each loads its model now, so the tests time the generations alone
        assert list(worker.run(engine.prepare(tiny_body())))[-1] == Done()
    return workers


def pixels(store, asset_id):
    return np.asarray(store.open_image(asset_id).convert("RGB"))


def timed(stream):
    """The events of a stream, each with the time it arrived."""
    return [(time.monotonic(), event) for event in stream]


def test_two_jobs_run_at_once_with_previews_progress_and_the_local_engines_results(engine, workers):
    bodies = [tiny_body(seed=seed, numInferenceSteps=40, intermediateImages=True) for seed in (3, 4)]
    requests = [engine.prepare(body) for body in bodies]
    streams: list[list] = [[], []]
    threads = [threading.Thread(target=lambda i=i: streams[i].extend(timed(workers[i].run(requests[i]))))
               for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert all(isinstance(stream[-1][1], Done) for stream in streams), [stream[-1] for stream in streams]
    # Both denoised at the same time: each one's first preview came before the other's last.
    previews = [[t for t, event in stream if isinstance(event, Preview)] for stream in streams]
    assert len(previews[0]) == len(previews[1]) > 10  # the steps that strength runs
    assert previews[0][0] < previews[1][-1] and previews[1][0] < previews[0][-1]
    assert all(any(isinstance(event, Progress) and event.fraction == 1.0 for _, event in stream) for stream in streams)
    # Stored here, on the API node, with the pixels the local engine makes from the same seed.
    for request, stream in zip(requests, streams):
        [remote] = [event.asset for _, event in stream if isinstance(event, Result)]
        assert engine.store.get(remote.id).seed == request.seed
        local = [e.asset for e in engine.run(engine.prepare(tiny_body(seed=request.seed, numInferenceSteps=40)))
                 if isinstance(e, Result)]
        assert np.array_equal(pixels(engine.store, remote.id), pixels(engine.store, local[0].id))


def test_jobs_of_the_queue_run_on_the_ray_workers(engine, workers):
    with started_queue(engine, workers) as queue:
        answers = run_jobs(queue, [engine.prepare(tiny_body(seed=seed, numSamples=2, intermediateImages=True))
                                   for seed in (7, 9)])
    assert [a["status"] for a in answers] == ["success", "success"]
    assert [a["metadata"]["seeds"] for a in answers] == [[7, 8], [9, 10]]
    for answer in answers:
        previews = answer["metadata"]["intermediateImages"]
        assert len(previews) == 4 and all(engine.store.get(p).kind == "preview" for p in previews)


def test_cancel_stops_a_remote_run_within_a_step(engine, workers):
    request = engine.prepare(tiny_body(numInferenceSteps=150, intermediateImages=True, width=256, height=256))
    cancel, events = threading.Event(), []
    for event in workers[0].run(request, cancel):
        events.append(event)
        if isinstance(event, Preview) and event.step == 3:
            cancel.set()
    assert events[-1] == Failed("canceled", "stopped")
    steps = [event.step for event in events if isinstance(event, Preview)]
    assert steps[-1] < 150 and not any(isinstance(event, Result) for event in events)


def kill_after_results(worker, request, kills_after: list[int]):
    """The run's events; the worker's actor is killed once `kills_after[0]` results arrived, and so on."""
    events, results = [], 0
    for event in worker.run(request):
        events.append(event)
        if isinstance(event, Result):
            results += 1
            if kills_after and results == kills_after[0]:
                kills_after.pop(0)
                ray.kill(worker.actor, no_restart=True)
    return events


def test_a_worker_killed_mid_job_is_replaced_and_the_job_goes_on_without_duplicates(engine, workers):
    request = engine.prepare(tiny_body(seed=20, numSamples=3, numInferenceSteps=8))
    before = ray.get(workers[1].actor.pid.remote())
    events = kill_after_results(workers[1], request, [1])
    assert events[-1] == Done() and Warned(ray_workers.RETRIED) in events
    seeds = [event.asset.seed for event in events if isinstance(event, Result)]
    assert seeds == [20, 21, 22]  # the first result kept, none made twice
    assert sorted(a.seed for a in engine.store.list(include_hidden=True) if a.kind == "result"
                  and a.job_id is None and a.seed in (20, 21, 22)) == [20, 21, 22]
    assert ray.get(workers[1].actor.pid.remote()) != before  # a new actor took the dead one's place


def test_a_second_death_fails_the_job_saying_what_was_kept(engine, workers):
    request = engine.prepare(tiny_body(seed=40, numSamples=4, numInferenceSteps=4))
    events = kill_after_results(workers[1], request, [1, 2])
    seeds = [event.asset.seed for event in events if isinstance(event, Result)]
    # A kill takes a moment: a result the actor sent meanwhile is kept too.
    assert 2 <= len(seeds) < 4 and seeds == list(range(40, 40 + len(seeds)))
    assert isinstance(events[-1], Failed) and events[-1].kind == "error"
    assert "stopped twice" in events[-1].message and f"{len(seeds)} of 4 results were kept" in events[-1].message


def test_losing_the_cluster_fails_the_running_job_cleanly(engine, workers):
    # Last in this module: the cluster is gone afterwards.
    request = engine.prepare(tiny_body(numInferenceSteps=150, intermediateImages=True, width=256, height=256))
    events = []
    for event in workers[0].run(request):
        events.append(event)
        if isinstance(event, Preview) and event.step == 2:
            ray.shutdown()
    assert isinstance(events[-1], Failed) and events[-1].kind == "error"
    assert "Ray cluster stopped answering" in events[-1].message
    # The next jobs fail at once, saying so, and no cluster was started here in its place.
    for worker in workers:
        last = list(worker.run(engine.prepare(tiny_body())))[-1]
        assert isinstance(last, Failed) and "Ray" in last.message, last
    assert not ray.is_initialized()
