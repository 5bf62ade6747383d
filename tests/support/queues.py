"""A job queue over given workers for a test, and jobs submitted to it and waited for."""

import time
from contextlib import contextmanager

from inpaint.jobs import FINAL_STATES, JobQueue


@contextmanager
def started_queue(engine, workers=None, *, max_queue=4):
    queue = JobQueue(engine, max_queue=max_queue, retention_days=None, workers=workers)
    queue.start()
    try:
        yield queue
    finally:
        queue.stop()


def run_jobs(queue, requests, *, timeout=120) -> list[dict]:
    """Each request submitted as a job, all at once; their answers once every one has ended."""
    jobs = [queue.submit(request) for request in requests]
    deadline = time.monotonic() + timeout
    while any(queue.get(job.job_id)["status"] not in FINAL_STATES for job in jobs):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return [queue.get(job.job_id) for job in jobs]
