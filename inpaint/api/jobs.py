"""`/jobs/{jobId}`: follow, cancel and delete a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool

from ..assets import JOB_ID_PATTERN
from ..jobs import LONG_POLL_MAX_S
from ..responses import JobDeleted, JobEnvelope
from .deps import JobIdPath, JobsDep, OriginalAssets, Router, errors, job_out, path_id

router = Router(tags=["jobs"])


def _job_id(value: str) -> str:
    return path_id(value, JOB_ID_PATTERN, "jobId", "job")


@router.get("/jobs/{jobId}", response_model=JobEnvelope, summary="Follow a job")
async def get_job(request: Request, jobs: JobsDep, job_id: JobIdPath, original_assets: OriginalAssets = False,
                  wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX_S, description=(
                      "Long-poll: seconds to wait for the job's status to change or a result to be added before "
                      f"answering (0..{LONG_POLL_MAX_S}); a finished job answers at once."))] = 0) -> dict:
    """The job: status, progress, results so far, previews when asked for, warnings and error."""
    job = await run_in_threadpool(jobs.get, _job_id(job_id))
    if wait > 0:
        job = await jobs.next_change(job, wait)
    return {"job": await run_in_threadpool(job_out, request, job, original_assets)}


@router.post("/jobs/{jobId}/cancel", response_model=JobEnvelope, summary="Cancel a job")
def cancel_job(request: Request, jobs: JobsDep, job_id: JobIdPath, original_assets: OriginalAssets = False) -> dict:
    """Cancel a queued or running job; results already made are kept. A finished job is left as it is."""
    job = jobs.cancel(_job_id(job_id))
    return {"job": job_out(request, job, original_assets)}


# 409: still queued or running.
@router.delete("/jobs/{jobId}", response_model=JobDeleted, summary="Delete a job and the assets only it uses",
               responses=errors(409))
def delete_job(jobs: JobsDep, job_id: JobIdPath) -> dict:
    """Delete a finished job and the assets only it uses; refused (409) while it is queued or running."""
    return jobs.delete_job(_job_id(job_id))
