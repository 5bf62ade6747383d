"""Jobs of the contract: their states, one worker per device, progress, previews, cancel, persistence; and the
studio's runs, taking their turn on the same workers."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import datalock, settings
from .assets import check_job_id, new_id, utc_now
from .errors import NotFoundError, QueueFull, RequestError
from .events import (
    Done,
    Event,
    Failed,
    Preview,
    Progress,
    Regions,
    Result,
    Waiting,
    Warned,
)
from .previews import side_by_side
from .responses import JobRecord, JobRecordMetadata
from .schema import ResolvedRequest

if TYPE_CHECKING:
    from .generate import Engine
    from .workers import Worker

log = logging.getLogger(__name__)

INTERRUPTED = "the server stopped before this job finished; submit it again"
# How long a stopping server waits for its workers to let go of their jobs: a step of a diffusion model ends well
# within it; a library call that cannot be interrupted may not, and the server does not wait for it.
STOP_WAIT_S = 3.0
FINAL_STATES = ("success", "failure", "canceled")
# 128 samples x 150 steps would store ~3,600 previews per job (one per batch and step): enough to see the
# first batches converge, without filling the disk with pictures nobody opens.
MAX_PREVIEWS_PER_JOB = 300
PREVIEWS_CAPPED = (f"previews are capped at {MAX_PREVIEWS_PER_JOB} per job: "
                   "the later steps and batches have none")
MAINTENANCE_EVERY_S = 60 * 60
LONG_POLL_MAX_S = 30  # proxies commonly cut idle connections after 60 s
CANCEL_POLL_S = 0.1  # how soon a studio run waiting in the queue notices its Stop


@dataclass
class Job:
    request: ResolvedRequest
    job_id: str = field(default_factory=lambda: new_id("job"))
    status: str = "queued"
    progress: float = 0.0
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    asset_ids: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    error: str | None = None
    original_assets: bool = False  # the REST answers' asset URLs point at the original files
    cancel: threading.Event = field(default_factory=threading.Event)
    # The request's warnings, then those the generation reports (on_warning) as it runs.
    warnings: list[str] | None = None
    # The regions the generation reported (box and processing size), and a seam report per result (or None).
    regions: list[dict] = field(default_factory=list)
    seam_reports: list[dict | None] = field(default_factory=list)
    # A studio run's (JobQueue.run): its events go to its caller, then None once the queue let go of it.
    relay: queue.SimpleQueue[Event | None] | None = field(default=None, repr=False)
    # Results are added on the job's thread while readers serialise the job: an asset id, its seed and its
    # report are added together, and read together.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.warnings is None:
            self.warnings = list(self.request.warnings)

    def add_result(self, asset_id: str, seed: int, seam_report: dict | None = None) -> None:
        with self.lock:
            self.asset_ids.append(asset_id)
            self.seeds.append(seed)
            self.seam_reports.append(seam_report)


def record(job: Job) -> dict:
    """The job as the store keeps it and the API answers it (inpaint.responses.JobRecord)."""
    with job.lock:  # an asset id, its seed and its report are added together on the job's thread
        return JobRecord(job_id=job.job_id, job_type="inpaint", status=job.status, progress=round(job.progress, 4),
                         created_at=job.created_at, updated_at=job.updated_at, original_assets=job.original_assets,
                         metadata=JobRecordMetadata(
                             input=job.request.to_json(), asset_ids=list(job.asset_ids), seeds=list(job.seeds),
                             regions=list(job.regions), seam_reports=list(job.seam_reports),
                             intermediate_images=list(job.previews), warnings=list(job.warnings),
                             error=job.error)).model_dump()


def run_job(worker: Worker, job: Job, *, on_change=None) -> Job:
    """Run one job to a final state in this thread, following `worker.run`'s events (an Engine, or a remote
    worker of inpaint.workers); `on_change(job, durable)` follows every update."""

    def changed(durable: bool) -> None:
        job.updated_at = utc_now()
        if on_change:
            on_change(job, durable)

    def warn(message: str) -> None:
        job.warnings.append(message)
        changed(True)

    job.status = "in-progress"
    changed(True)
    # A studio run's results name no job, as the studio's always did: no stored job would answer for the id.
    job_id = job.job_id if job.relay is None else None
    # Closed on the way out: should storing a preview or saving the job fail, the generation stops at once.
    with closing(worker.run(job.request, job.cancel, job_id=job_id)) as events:
        for event in events:
            if job.relay is not None:
                job.relay.put(event)
            else:
                _follow(job, event, worker, changed, warn)
    changed(True)
    return job


def _follow(job: Job, event: Event, worker: Worker, changed, warn) -> None:
    """One event of a job's generation into the job."""
    match event:
        case Result(asset=asset, seam_report=report):
            job.add_result(asset.id, asset.seed, report)
            changed(True)  # persisted at once: a crash after this keeps the result on the job
        case Progress(fraction=fraction):
            job.progress = fraction
            changed(False)
        case Warned(message=message):
            warn(message)
        case Regions(regions=regions):
            job.regions = list(regions)
            changed(True)
        case Preview() if len(job.previews) >= MAX_PREVIEWS_PER_JOB:
            if PREVIEWS_CAPPED not in job.warnings:  # said once
                warn(PREVIEWS_CAPPED)
        case Preview(images=images):
            preview = worker.store.put(side_by_side(list(images)), kind="preview", hidden=True,
                                       parent_id=job.request.image_asset_id, job_id=job.job_id,
                                       model_id=job.request.model_id)
            job.previews.append(preview.id)
            changed(False)
        case Done():
            job.status, job.progress = "success", 1.0
        case Failed(kind="canceled"):
            job.status = "canceled"
        case Failed(message=message):  # a failed job keeps its assets and says why; the server goes on
            job.status, job.error = "failure", message


class JobQueue:
    """A bounded queue drained by its workers, a thread each: one job at a time per worker (per device, or
    per remote worker), as many at once as there are workers. Without `workers`, the engine is the one worker."""

    def __init__(self, engine: Engine, *, max_queue: int, retention_days: int | None = settings.RETENTION_DAYS,
                 maintenance_every_s: float = MAINTENANCE_EVERY_S, workers: list[Worker] | None = None):
        self.engine = engine
        self.workers = list(workers) if workers else [engine]
        self.store = engine.store
        self.max_queue = max_queue
        self.retention_days = retention_days  # None keeps everything
        self.maintenance_every_s = maintenance_every_s
        self._maintenance: threading.Thread | None = None
        self._maintenance_stop = threading.Event()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._watchers: dict[str, set] = {}  # job id -> (event loop, event) of the long-polls waiting on it
        self._watchers_lock = threading.Lock()  # its own: jobs are finished while `_lock` is held
        self._active: dict[str, Job] = {}  # queued or running; finished jobs are read from the store
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._canceled_by_user: set[str] = set()
        self._reserved = 0  # places held by requests whose inputs are being checked and stored

    def start(self) -> None:
        """Take the data folder (DataFolderBusy if another server runs on it), close the jobs a stopped server
        left open, then run jobs and maintenance."""
        if not self._threads:
            # Before touching the jobs: those of a server still running on the folder are not interrupted.
            datalock.acquire(self.store.root)
            self.store.fail_interrupted_jobs(INTERRUPTED)
            self._stopping = False
            self._threads = [threading.Thread(target=self._work, args=(worker,), name=f"inpaint-jobs-{index}",
                                              daemon=True) for index, worker in enumerate(self.workers)]
            for thread in self._threads:
                thread.start()
        if self._maintenance is None:
            self._maintenance_stop.clear()
            self._maintenance = threading.Thread(target=self._maintain, name="inpaint-maintenance", daemon=True)
            self._maintenance.start()

    def begin_stop(self) -> None:
        """No job starts any more, and the running ones stop at their next step: the server is shutting down
        (SIGTERM), and its open connections drain meanwhile. Safe to call from a signal handler."""
        with self._lock:
            self._stopping = True
            for job in self._active.values():
                job.cancel.set()

    def stop(self) -> None:
        """Interrupt the running jobs and drop the queued ones: all end as failures saying why. A job whose
        worker is inside a call that cannot be interrupted (PatchMatch, an eraser) gets STOP_WAIT_S to end, then
        is recorded as interrupted with the results it finished, and left to the process's exit."""
        if self._maintenance is not None:
            self._maintenance_stop.set()
            self._maintenance.join(timeout=30)  # a pass in progress ends first: the store closes after stop()
            self._maintenance = None
        if not self._threads:
            return
        self.begin_stop()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []
        with self._lock:
            for job in list(self._active.values()):  # never started, or still unwinding after the timeout
                self._interrupted(job)
        datalock.release(self.store.root)

    def _waiting(self) -> int:
        return sum(job.status == "queued" for job in self._active.values()) + self._reserved

    def check_room(self) -> None:
        """Raise QueueFull now, so a request that cannot be queued stores nothing."""
        with self._lock:
            if (waiting := self._waiting()) >= self.max_queue:
                raise QueueFull(waiting)

    def reserve(self) -> None:
        """Hold a place for a request about to store its inputs; `submit(reserved=True)` takes it, `release`
        gives it back. Concurrent requests that all found room before storing would otherwise be refused
        after it, leaving inputs stored for a job that a 429 said was never made."""
        with self._lock:
            if (waiting := self._waiting()) >= self.max_queue:
                raise QueueFull(waiting)
            self._reserved += 1

    def release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def submit(self, request: ResolvedRequest, *, original_assets: bool = False, reserved: bool = False) -> Job:
        return self._enqueue(Job(request, original_assets=original_assets), reserved=reserved)

    def _enqueue(self, job: Job, *, reserved: bool = False) -> Job:
        with self._lock:
            if reserved:
                self._reserved -= 1  # the held place becomes the job's
            elif (waiting := self._waiting()) >= self.max_queue:
                raise QueueFull(waiting)
            self._active[job.job_id] = job
            if job.relay is None:
                self.store.save_job(record(job))
        self._queue.put(job)
        return job

    def run(self, request: ResolvedRequest, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Engine.run through the queue, for the studio: the run takes its turn on the workers with the REST jobs
        (QueueFull at once when the queue is full) and yields its worker's events as they come, after `Waiting()`
        while no worker is free. Setting `cancel` or closing the iterator cancels it; close returns once its
        worker let go of it.

        Not stored as a job: the studio shows the run itself and its results are assets like any, while a job's
        row would name the inputs (pinning them against DELETE /assets) and store its previews a second time."""
        job = self._enqueue(Job(request, cancel=cancel if cancel is not None else threading.Event(),
                                relay=queue.SimpleQueue()))
        return self._relayed(job)

    def _relayed(self, job: Job) -> Iterator[Event]:
        last, released, said_waiting = None, False, False
        try:
            while True:
                try:
                    event = job.relay.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    if job.cancel.is_set():
                        self._stop_relayed(job)  # queued: it ends now; running: its worker stops within a step
                    elif job.status == "queued" and not said_waiting:
                        said_waiting = True
                        yield Waiting()
                    continue
                if event is None:
                    released = True
                    break
                last = event
                yield event
        finally:
            if not released:  # left early (stopped, disconnected): returns once the worker let go of it
                self._stop_relayed(job)
                while job.relay.get() is not None:
                    pass
        if isinstance(last, (Done, Failed)):
            return
        # Ended by the queue: canceled while it waited, or the server stopped.
        yield Failed("canceled", "stopped") if job.status == "canceled" else Failed("error", job.error or INTERRUPTED)

    def _stop_relayed(self, job: Job) -> None:
        with self._lock:
            if job.job_id in self._active:
                self._cancel(job)

    def get(self, job_id: str) -> dict:
        job = self._active.get(job_id)
        if job is not None:
            return record(job)
        stored = self.store.get_job(job_id)
        if stored is None:
            raise NotFoundError("jobId", f"no job {job_id!r}")
        return stored

    async def ended(self, job: dict, timeout: float) -> dict:
        """`job` once it has ended, or as it is after `timeout` seconds (see next_change)."""
        deadline = time.monotonic() + timeout
        while job["status"] not in FINAL_STATES and (remaining := deadline - time.monotonic()) > 0:
            job = await self.next_change(job, remaining)
        return job

    async def next_change(self, job: dict, timeout: float) -> dict:
        """`job` (as `get` answered it) once its status changes or a result is added, or as it is after
        `timeout` seconds: a client follows a job with one request per change instead of polling. The wait
        holds no thread: the job's thread wakes this event loop when the job changes."""
        def milestone(state: dict) -> tuple:
            return state["status"], len(state["metadata"]["assetIds"])

        job_id, seen = job["jobId"], milestone(job)
        deadline = time.monotonic() + timeout
        woken = asyncio.Event()
        watcher = (asyncio.get_running_loop(), woken)
        with self._watchers_lock:
            self._watchers.setdefault(job_id, set()).add(watcher)
        try:
            while True:
                woken.clear()
                current = self.get(job_id)  # after registering: a change in between is not missed
                remaining = deadline - time.monotonic()
                if milestone(current) != seen or current["status"] in FINAL_STATES or remaining <= 0:
                    return current
                try:
                    await asyncio.wait_for(woken.wait(), remaining)
                except TimeoutError:
                    return self.get(job_id)
        finally:
            with self._watchers_lock:
                watchers = self._watchers.get(job_id, set())
                watchers.discard(watcher)
                if not watchers:
                    self._watchers.pop(job_id, None)

    def _wake_watchers(self, job_id: str) -> None:
        with self._watchers_lock:
            watchers = list(self._watchers.get(job_id, ()))
        for loop, woken in watchers:
            loop.call_soon_threadsafe(woken.set)

    def cancel(self, job_id: str) -> dict:
        with self._lock:
            job = self._active.get(job_id)
            if job is None:
                return self.get(job_id)  # already final: cancel changes nothing
            self._cancel(job)
            return record(job)

    def _cancel(self, job: Job) -> None:
        self._canceled_by_user.add(job.job_id)
        job.cancel.set()
        if job.status == "queued":
            job.status, job.updated_at = "canceled", utc_now()
            self._finish(job)

    def delete_job(self, job_id: str) -> dict:
        """The job's row and the assets only it names (see AssetStore.delete_job). Refused (409) while the job
        is queued or running, canceled included until its worker lets go of it."""
        check_job_id(job_id)
        with self._lock:
            job = self._active.get(job_id)
            if job is not None:
                rule = "it is stopping; retry once it has ended" if job.cancel.is_set() else "cancel it first"
                raise RequestError("jobId", f"{job_id} is {job.status}: {rule}", status=409)
        # A job id not active now never becomes active again: submit makes new ids.
        return self.store.delete_job(job_id)

    def maintain(self, now: float | None = None) -> dict:
        """One maintenance pass: the leftovers of failed writes, then, with a retention set, what it expires."""
        stale = self.store.sweep_stale_files(now)
        expired = self.store.sweep_retention(self.retention_days, now) if self.retention_days else 0
        return {"staleFiles": stale, "expiredAssets": expired}

    def _maintain(self) -> None:
        # At start too: a server restarted more often than hourly would otherwise never expire anything.
        while True:
            try:
                self.maintain()
            except Exception:  # a full disk or a locked database now may be gone next time
                log.exception("maintenance failed; trying again in %ss", self.maintenance_every_s)
            if self._maintenance_stop.wait(self.maintenance_every_s):
                return

    def _finish(self, job: Job) -> None:
        if job.job_id in self._active:  # once: a worker that outlived stop() must not undo it
            if job.relay is None:
                self.store.save_job(record(job))
            else:
                job.relay.put(None)  # after the run's last event: its caller stops waiting
            del self._active[job.job_id]
            self._canceled_by_user.discard(job.job_id)
            self._wake_watchers(job.job_id)

    def _interrupted(self, job: Job) -> None:
        job.status, job.error, job.updated_at = "failure", INTERRUPTED, utc_now()
        self._finish(job)

    def _work(self, worker: Worker) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job.status != "queued" or self._stopping:
                    continue  # canceled while waiting, or left for stop() to close
                job.status = "in-progress"
            try:
                run_job(worker, job, on_change=self._changed if job.relay is None else None)
            except Exception as exc:  # the store failed while saving: the worker must live on
                log.exception("job %s could not be saved", job.job_id)
                job.status, job.error = "failure", f"the job could not be saved: {type(exc).__name__}: {exc}"
            with self._lock:
                try:
                    if job.status == "canceled" and self._stopping and job.job_id not in self._canceled_by_user:
                        self._interrupted(job)  # the server stopped it, not the user
                    else:
                        self._finish(job)
                except Exception:
                    log.exception("job %s could not be saved", job.job_id)

    def _changed(self, job: Job, durable: bool) -> None:
        if durable:  # a new status or a new result: what a long-poll waits for
            self.store.save_job(record(job))
            self._wake_watchers(job.job_id)
