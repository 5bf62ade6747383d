"""What the store lets go of on its own: expired previews and unused inputs, leftovers of failed writes, previews
beyond a job's quota; and the queue's side of deleting a job."""

import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from inpaint import assets, jobs, settings
from inpaint.assets import new_id
from inpaint.errors import RequestError
from inpaint.events import Done, Failed, Preview, Result
from inpaint.jobs import Job, JobQueue, record, run_job
from tests.support.store import files_of, noise, saved_job, stored_files

DAY = 24 * 60 * 60
LONG_AGO = "2020-01-01T00:00:00.000Z"
LONG_AGO_S = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()


@contextmanager
def long_ago():
    """Puts within the block are stamped LONG_AGO; a sweep without `now` runs at today's time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assets, "utc_now", lambda: LONG_AGO)
        yield


def ids(store):
    return {a.id for a in store.list(include_hidden=True, limit=1000)}


def test_retention_expires_old_previews_and_unused_inputs_but_keeps_results_and_named_inputs(store):
    job_id = new_id("job")
    with long_ago():
        image = store.put(noise(seed=1))
        mask = store.put(noise(seed=2), kind="mask", hidden=True, parent_id=image.id)
        result = store.put(noise(seed=3), kind="result", parent_id=image.id, job_id=job_id, seed=3)
        preview = store.put(noise(seed=4), kind="preview", hidden=True, parent_id=image.id, job_id=job_id)
        unused = store.put(noise(seed=5))  # an upload no job ever took
        store.put(noise(seed=6), kind="mask", hidden=True, parent_id=unused.id)  # its mask, as unused
        orphan_result = store.put(noise(seed=7), kind="result", parent_id=store.put(noise(seed=8)).id)
    saved_job(store, image=image, mask=mask, results=[result], previews=[preview], job_id=job_id)
    recent = store.put(noise(seed=9))  # unused too, but younger than the retention

    assert store.sweep_retention(30) == 3
    kept = {image.id, mask.id, result.id, recent.id, orphan_result.id, orphan_result.parent_id}
    assert ids(store) == kept
    assert stored_files(store) == sorted(f"{i}.png" for i in kept)  # originals: no rendition was asked for
    # The finished job no longer lists the preview it lost, and keeps everything else.
    after = store.get_job(job_id)["metadata"]
    assert after["intermediateImages"] == [] and after["assetIds"] == [result.id]
    assert after["input"]["image"] == image.id
    assert store.sweep_retention(30) == 0 and store.integrity_ok()


def test_retention_counts_days_back_from_now(store):
    with long_ago():
        asset = store.put(noise())
    assert store.sweep_retention(6, now=LONG_AGO_S + 5 * DAY) == 0 and store.exists(asset.id)
    assert store.sweep_retention(4, now=LONG_AGO_S + 5 * DAY) == 1 and not store.exists(asset.id)


def test_retention_defaults_now_to_the_clock(store):
    fresh = store.put(noise())
    assert store.sweep_retention(2, now=time.time() + 1 * DAY) == 0 and store.exists(fresh.id)
    assert store.sweep_retention(2, now=time.time() + 3 * DAY) == 1 and not store.exists(fresh.id)
    assert stored_files(store) == []


def test_retention_leaves_a_running_jobs_previews_and_a_preview_taken_as_input(store):
    running = new_id("job")
    with long_ago():
        image = store.put(noise(seed=1))
        running_preview = store.put(noise(seed=2), kind="preview", hidden=True, parent_id=image.id, job_id=running)
        reused = store.put(noise(seed=3), kind="preview", hidden=True)
    saved_job(store, "in-progress", image=image, job_id=running)
    saved_job(store, image=reused)
    before = store.get_job(running)
    assert store.sweep_retention(1) == 0
    assert {running_preview.id, reused.id} <= ids(store) and store.get_job(running) == before


@pytest.mark.parametrize("days", [0, 3651, -1, True, 1.5, None])
def test_retention_days_out_of_range_are_refused(store, days):
    with pytest.raises(ValueError):
        store.sweep_retention(days)


@pytest.mark.parametrize("raw, value", [("", None), ("  ", None), ("1", 1), (" 30 ", 30), ("3650", 3650)])
def test_retention_setting(monkeypatch, raw, value):
    monkeypatch.setenv("INPAINT_RETENTION_DAYS", raw)
    assert settings._optional_int("INPAINT_RETENTION_DAYS", 1, 3650) == value


@pytest.mark.parametrize("raw", ["0", "3651", "-5", "ten", "1.5"])
def test_retention_setting_refuses_rather_than_clamps(monkeypatch, raw):
    monkeypatch.setenv("INPAINT_RETENTION_DAYS", raw)
    with pytest.raises(SystemExit) as err:
        settings._optional_int("INPAINT_RETENTION_DAYS", 1, 3650)
    assert "INPAINT_RETENTION_DAYS" in str(err.value)


def test_stale_sweep_runs_on_demand_with_now(store, monkeypatch):
    kept = store.put(noise(seed=1))
    crashed = store.put(noise(seed=2))
    monkeypatch.setattr(store, "_unlink", lambda asset_ids: None)  # killed between the commit and the unlinks
    store.delete_asset(crashed.id)
    monkeypatch.undo()
    partial = store.root / "files" / f".{new_id('asset')}.png.dead.tmp"
    partial.write_bytes(b"partial")
    later = time.time() + assets.STALE_AFTER_S + 1
    assert store.sweep_stale_files() == 0  # all fresh: another writer may still be at work
    assert stored_files(store) == sorted([*files_of(store, kept, crashed), partial.name])
    assert store.sweep_stale_files(now=later) == 2  # the deleted asset's original and the partial write
    assert stored_files(store) == files_of(store, kept) and store.open_image(kept.id).size == (40, 24)


class FakeEngine:
    """Just what the queue and run_job use of an engine: the store, and a run whose generation makes
    `previews` previews and one result, then waits for `release` if given."""

    def __init__(self, store, previews=0, release=None):
        self.store, self.previews, self.release = store, previews, release

    def run(self, request, cancel=None, *, job_id=None):
        cancel = cancel or threading.Event()
        for step in range(self.previews):
            yield Preview((noise(seed=step),), step + 1, self.previews)
        result = self.store.put(noise(seed=99), kind="result", parent_id=request.image_asset_id, job_id=job_id, seed=1)
        yield Result(result)
        if self.release is not None:
            while not self.release.wait(0.01):
                if cancel.is_set():
                    yield Failed("canceled", "stopped")
                    return
        yield Done()


def fake_request(store):
    image = store.put(noise(seed=1))
    mask = store.put(noise(seed=2), kind="mask", hidden=True, parent_id=image.id)
    return SimpleNamespace(image_asset_id=image.id, mask_asset_id=mask.id, model_id="m", warnings=("from the request",),
                           to_json=lambda: {"prompt": "a cat", "image": image.id, "maskId": mask.id})


def test_previews_beyond_the_quota_are_not_stored_and_a_warning_says_so_once(store, monkeypatch):
    monkeypatch.setattr(jobs, "MAX_PREVIEWS_PER_JOB", 3)
    job = run_job(FakeEngine(store, previews=10), Job(fake_request(store)))
    body = record(job)
    assert body["status"] == "success" and len(body["metadata"]["intermediateImages"]) == 3
    assert [a.id for a in store.list(include_hidden=True, job_id=job.job_id) if a.kind == "preview"][::-1] == \
        body["metadata"]["intermediateImages"]
    assert body["metadata"]["warnings"] == ["from the request", jobs.PREVIEWS_CAPPED]


def test_previews_within_the_quota_give_no_warning(store, monkeypatch):
    monkeypatch.setattr(jobs, "MAX_PREVIEWS_PER_JOB", 3)
    job = run_job(FakeEngine(store, previews=3), Job(fake_request(store)))
    assert len(job.previews) == 3 and record(job)["metadata"]["warnings"] == ["from the request"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_queue_refuses_to_delete_an_active_job_then_deletes_it_finished(store):
    release = threading.Event()
    queue = JobQueue(FakeEngine(store, previews=2, release=release), max_queue=4, retention_days=None)
    queue.start()
    try:
        request = fake_request(store)
        job = queue.submit(request)
        wait_for(lambda: queue.get(job.job_id)["metadata"]["assetIds"])
        with pytest.raises(RequestError) as err:
            queue.delete_job(job.job_id)
        assert (err.value.field, err.value.status) == ("jobId", 409) and "cancel it first" in err.value.message
        with pytest.raises(RequestError) as err:
            store.delete_asset(job.previews[0])  # not on the saved row yet, but the job is
        assert err.value.status == 409
        release.set()
        wait_for(lambda: queue.get(job.job_id)["status"] == "success")
        made = [request.image_asset_id, request.mask_asset_id, *job.previews, *job.asset_ids]
        answer = queue.delete_job(job.job_id)
        assert sorted(answer["deletedAssetIds"]) == sorted(made) and answer["keptAssetIds"] == []
        assert stored_files(store) == [] and store.get_job(job.job_id) is None
        with pytest.raises(RequestError) as err:
            queue.delete_job(job.job_id)
        assert err.value.status == 404
        with pytest.raises(RequestError) as err:
            queue.delete_job("../jobs")
        assert (err.value.field, err.value.status) == ("jobId", 400)
    finally:
        release.set()
        queue.stop()


def test_a_canceled_running_job_is_deletable_once_it_has_ended(store):
    release = threading.Event()
    queue = JobQueue(FakeEngine(store, release=release), max_queue=4, retention_days=None)
    queue.start()
    try:
        job = queue.submit(fake_request(store))
        wait_for(lambda: job.asset_ids)
        queue.cancel(job.job_id)
        wait_for(lambda: queue.get(job.job_id)["status"] == "canceled")
        assert job.asset_ids[0] in queue.delete_job(job.job_id)["deletedAssetIds"]
    finally:
        queue.stop()


def test_maintenance_runs_at_start_and_every_interval_until_stopped(store, monkeypatch):
    calls = []
    monkeypatch.setattr(store, "sweep_stale_files", lambda now=None: calls.append("stale") or 0)
    monkeypatch.setattr(store, "sweep_retention", lambda days, now=None: calls.append(("retention", days)) or 0)
    queue = JobQueue(FakeEngine(store), max_queue=1, retention_days=7, maintenance_every_s=0.01)
    queue.start()
    wait_for(lambda: calls.count(("retention", 7)) >= 3)
    queue.stop()
    assert not any(t.name == "inpaint-maintenance" for t in threading.enumerate())
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count and calls.count("stale") >= 3


def test_maintenance_without_retention_only_sweeps_leftovers_and_survives_a_failure(store, monkeypatch):
    calls = []

    def failing_sweep(now=None):
        calls.append("stale")
        raise OSError("disk gone")
    monkeypatch.setattr(store, "sweep_stale_files", failing_sweep)
    monkeypatch.setattr(store, "sweep_retention", lambda days, now=None: calls.append("retention"))
    queue = JobQueue(FakeEngine(store), max_queue=1, retention_days=None, maintenance_every_s=0.01)
    queue.start()
    wait_for(lambda: calls.count("stale") >= 3)  # a failed pass is retried at the next interval
    queue.stop()
    assert "retention" not in calls


def test_one_maintenance_pass_with_now(store):
    with long_ago():
        unused = store.put(noise())
    partial = store.root / "files" / f".{new_id('asset')}.png.dead.tmp"
    partial.write_bytes(b"partial")
    os.utime(partial, (time.time() - assets.STALE_AFTER_S - 1,) * 2)
    queue = JobQueue(FakeEngine(store), max_queue=1, retention_days=30)
    assert queue.maintain() == {"staleFiles": 1, "expiredAssets": 1}
    assert stored_files(store) == [] and not store.exists(unused.id)
    assert JobQueue(FakeEngine(store), max_queue=1, retention_days=None).maintain() == {"staleFiles": 0,
                                                                                        "expiredAssets": 0}
