"""`POST /segment`: select an object and get its mask, stored as an asset for /generate/inpaint."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .. import imageops, zerogpu
from ..errors import RequestError
from ..responses import SegmentOut
from ..segment import SegmentRequest, segment
from .deps import Router, errors, json_body, read_json

router = Router(tags=["segment"])


def _refuse_weights_on_zerogpu(engine, body: object) -> None:
    """On ZeroGPU only the studio's function holds a GPU; this route runs in the main process, which has none."""
    model_id = body.get("modelId") if isinstance(body, dict) else None
    if isinstance(model_id, str) and model_id in engine.catalog and engine.catalog.get(model_id).family.has_weights \
            and zerogpu.is_zerogpu():
        offline = [e.id for e in engine.catalog.entries() if e.family.selects and not e.family.has_weights]
        raise RequestError("modelId", f"{model_id!r} needs the GPU, which this ZeroGPU Space lends to its studio only; "
                                      f"this route selects with the models without weights here: {', '.join(offline)}")


def _answer(request: Request, body: object) -> SegmentOut:
    engine = request.app.state.engine
    _refuse_weights_on_zerogpu(engine, body)
    selected = segment(engine, body)
    return SegmentOut(mask=imageops.to_data_url(selected.mask), mask_id=selected.mask_id, image_id=selected.image_id,
                      score=selected.score, model_id=selected.model_id, width=selected.mask.width,
                      height=selected.mask.height)


# 503: busy decoding other images; 507: the disk is full.
@router.post("/segment", response_model=SegmentOut, summary="Select an object as a mask", responses=errors(503, 507),
             **json_body(SegmentRequest))
async def segment_object(request: Request) -> SegmentOut:
    """Select an object in a picture by clicks (`points`, label 1 adds and 0 removes), a `box` or a `text`,
    as the model's capabilities allow; answers the mask (white = selected) and its asset id, whose parent is
    the picture: send it as `maskId` to `/generate/inpaint`. A model with weights encodes a picture once:
    further clicks on it (send `imageId` back as `image`) run only its mask decoder."""
    body = await read_json(request)
    # Decoding, the model and storing are CPU, device and disk work: off the event loop.
    return await run_in_threadpool(_answer, request, body)
