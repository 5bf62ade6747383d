"""`POST /generate/inpaint`: validate a request, store its inputs and queue its job (or only plan it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .. import imageops
from ..generate import Engine
from ..jobs import LONG_POLL_MAX_S, JobQueue, record
from ..responses import JobEnvelope, PlanEnvelope
from ..schema import InpaintRequest
from .deps import EngineDep, JobsDep, OriginalAssets, Router, errors, job_out, json_body, read_json, \
    refuse_gpu_models_on_zerogpu

router = Router(tags=["generate"])


def _example_request() -> dict:
    image = Image.new("RGB", (64, 64), (120, 140, 160))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return {"modelId": "opencv-telea", "prompt": "remove the square", "image": imageops.to_data_url(image),
            "mask": imageops.to_data_url(mask), "numSamples": 1}


EXAMPLES = {"classical": {"summary": "Fill a square of a flat image with OpenCV (no weights, instant)",
                          "value": _example_request()}}


# 429: the queue is full; 503: busy decoding other images; 507: the disk is full.
@router.post("/generate/inpaint", response_model=JobEnvelope | PlanEnvelope, summary="Start an inpaint job (or plan one)",
             responses=errors(429, 503, 507), **json_body(InpaintRequest, EXAMPLES))
async def generate_inpaint(request: Request, engine: EngineDep, jobs: JobsDep,
                           original_assets: OriginalAssets = False,
                           wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX_S, description=(
                               f"Seconds to wait for the job to end before answering (0..{LONG_POLL_MAX_S}): a quick "
                               "job, such as a classical model's, comes back finished with its results in one "
                               "exchange; one still running then is answered as it is, to follow with "
                               "`GET /jobs/{jobId}?wait=`."))] = 0,
                           dry_run: Annotated[bool, Query(alias="dryRun", description=(
                               "true: validate and plan only, and answer `{\"plan\": ...}`: the request with every "
                               "default resolved and the regions the job would generate. Nothing is stored and no "
                               "job starts."))] = False) -> dict:
    """Validate the request, store its inputs as assets and queue the job; answers the job at once, or once it
    ended with `wait`. With `dryRun=true`, answers the plan instead, storing nothing."""
    if dry_run:
        plan = await run_in_threadpool(engine.plan, await read_json(request))
        return {"plan": plan.to_json()}
    # The body is read here, not declared: a full queue answers 429 before a 50 MB body is received.
    jobs.check_room()
    body = await read_json(request)
    # Decoding and storing images is CPU and disk work: off the event loop.
    job = await run_in_threadpool(_start_job, engine, jobs, body, original_assets)
    if wait > 0:
        job = await jobs.ended(job, wait)
    return {"job": await run_in_threadpool(job_out, request, job, original_assets)}


def _start_job(engine: Engine, jobs: JobQueue, body: object, original_assets: bool) -> dict:
    refuse_gpu_models_on_zerogpu(engine, body)
    jobs.reserve()  # a place in the queue before the inputs are stored: a 429 after storing would orphan them
    try:
        resolved = engine.prepare(body)
    except BaseException:
        jobs.release()
        raise
    return record(jobs.submit(resolved, original_assets=original_assets, reserved=True))
