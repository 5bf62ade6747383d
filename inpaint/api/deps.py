"""What the API's routes share: the app's services as dependencies, the rules a JSON body is read by, ids from the
path, and the answers' asset URLs."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import zerogpu
from ..assets import Asset
from ..errors import NotFoundError, RequestError
from ..generate import Engine
from ..jobs import JobQueue
from ..responses import AssetOut, ErrorOut, JobOut
from . import docs


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


# The app's services, as the routes receive them.
EngineDep = Annotated[Engine, Depends(_engine)]
JobsDep = Annotated[JobQueue, Depends(_jobs)]


class Router(APIRouter):
    """A router of the API: a GET route also answers HEAD (its headers, size and type, without the body), and an
    operation is named by its handler in the OpenAPI schema."""

    def __init__(self, **kwargs):
        super().__init__(generate_unique_id_function=lambda route: route.name, **kwargs)

    def add_api_route(self, path: str, endpoint, **kwargs) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        if "GET" in (kwargs.get("methods") or ()):
            super().add_api_route(path, endpoint, **{**kwargs, "methods": ["HEAD"], "include_in_schema": False})


def errors(*statuses: int) -> dict:
    """The `responses` of a route's error statuses, in the one error shape."""
    return {status: {"model": ErrorOut} for status in statuses}


def json_body_declared(request: Request) -> None:
    """A body must be declared JSON: a web page can post a form or text/plain anywhere without a CORS
    preflight, while a JSON post from another site needs one (which this server does not grant)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, f"the body must be JSON, sent with Content-Type: application/json "
                                 f"(got {media_type or 'none'!r})")


def json_body(model: type, examples: dict | None = None) -> dict:
    """The arguments of a route that reads a JSON body of `model` itself (so that the key and the body's type are
    checked before it is received: FastAPI reads a declared body whole before the route's dependencies run): the
    rule that it is declared JSON, and its description in the OpenAPI schema (see inpaint.api.docs)."""
    content = {"schema": model.model_json_schema(by_alias=True, ref_template=docs.REF)}
    if examples:
        content["examples"] = examples
    return {"dependencies": [Depends(json_body_declared)],
            "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": content}}}}


async def read_json(request: Request) -> object:
    """The request's body, parsed (off the event loop: a 50 MB body takes a while)."""
    raw = await request.body()
    try:
        return await run_in_threadpool(json.loads, raw)
    except RecursionError:
        raise RequestError("body", "the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise RequestError("body", f"is not valid JSON ({exc})") from None


def path_id(value: str, pattern, field: str, what: str) -> str:
    """An id from the path; one that cannot exist is simply not found."""
    if not pattern.fullmatch(value):
        shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
        raise NotFoundError(field, f"no {what} {shown}; {what} ids look like {what}_ and 22 characters")
    return value


def refuse_gpu_models_on_zerogpu(engine: Engine, body: object) -> None:
    """On ZeroGPU only the studio's function holds a GPU (per call); a REST job runs in the main process, which
    has none, so a model with weights is refused here rather than failing as a job."""
    catalog = engine.catalog
    model_id = body.get("modelId") if isinstance(body, dict) else None
    if isinstance(model_id, str) and model_id in catalog and catalog.get(model_id).family.has_weights \
            and zerogpu.is_zerogpu():
        without_weights = [entry.id for entry in catalog.entries() if not entry.family.has_weights]
        raise RequestError("modelId", f"{model_id!r} needs the GPU, which this ZeroGPU Space lends to its studio "
                                      "and Gradio API (/inpaint) only; the REST API runs the models without weights "
                                      f"here: {', '.join(without_weights)}")


OriginalAssets = Annotated[bool, Query(alias="originalAssets", description=(
    "true: asset URLs in the answer point at the original files (lossless PNG results; inputs as uploaded), "
    "else at WebP renditions. A job "
    "created with originalAssets=true keeps answering with the originals."))]
AssetIdPath = Annotated[str, Path(alias="assetId", description="An asset id, `asset_` and 22 characters.")]
JobIdPath = Annotated[str, Path(alias="jobId", description="A job id, `job_` and 22 characters.")]


def asset_out(request: Request, asset: Asset, original: bool) -> AssetOut:
    root = request.scope.get("root_path", "").rstrip("/")
    return AssetOut.of(asset, f"{root}/assets/{asset.id}/file" + ("?original=true" if original else ""))


def job_out(request: Request, job: dict, original: bool) -> JobOut:
    """The stored job plus its visible results with URLs (hidden ones stay in `assetIds` only)."""
    original = original or bool(job.get("originalAssets"))
    store = _engine(request).store
    assets = [asset_out(request, asset, original)
              for asset in map(store.get, job["metadata"]["assetIds"]) if not asset.hidden]
    return JobOut.model_validate({**job, "originalAssets": original, "metadata": {**job["metadata"], "assets": assets}})

