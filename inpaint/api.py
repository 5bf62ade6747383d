"""The JSON REST API of the contract (jobs, assets, models), thin over the engine, the job queue and the store."""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
from contextlib import asynccontextmanager
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBearer
from fastapi.security.base import SecurityBase
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.routing import Match

from . import __version__, allocator, imageops, limits, segment_api, settings, zerogpu
from .assets import ASSET_ID_PATTERN, JOB_ID_PATTERN, Asset
from .errors import NotFoundError, RequestError, validation_error
from .generate import Engine, default_engine
from .jobs import LONG_POLL_MAX_S, JobQueue, record
from .responses import (
    AssetDeleted,
    AssetEnvelope,
    AssetList,
    AssetOut,
    ErrorOut,
    JobDeleted,
    JobEnvelope,
    JobOut,
    ModelList,
    ModelOut,
    PlanEnvelope,
)
from .schema import InpaintRequest
from .web_security import MAX_AUTH_FAILURES, AuthThrottle, BrowserGuard, KeyGuard, key_matches
from .workers import start_workers

log = logging.getLogger(__name__)

UI_LOGIN_MESSAGE = "Log in with any user name and the API key (INPAINT_API_KEY) as the password."
# The field named by an error that no request field caused, by status.
FIELD_BY_STATUS = {401: "authorization", 404: "path", 405: "method", 413: "body", 415: "body", 416: "range",
                   429: "job"}
ASSET_CACHE = "private, max-age=31536000, immutable"  # an asset's files never change once written
RETRY_AFTER_S = "1"  # seconds a client waits after a 429
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class _AssetIdConvertor(Convertor[str]):
    """Path segments that look like asset ids belong to the API; other `/assets/...` paths are the UI's
    own static files (Gradio serves its frontend bundle under `/assets/`)."""

    regex = "asset_[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("asset_id", _AssetIdConvertor())


class AssetFileResponse(FileResponse):
    """A file with Range support whose refusals (a malformed or unsatisfiable Range) take the API's error
    shape; Starlette answers them in plain text."""

    # Each chunk is a hop to a worker thread and a pass through every middleware: with Starlette's 64 KiB, a
    # 2048 px result (7 MB) took 110 of each and twice as long to download as with 1 MiB.
    chunk_size = 2**20

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise RequestError("range", f"the Range header {http_range[:60]!r} is malformed ({exc.content})") from None
        except RangeNotSatisfiable:
            raise HTTPException(416, f"the Range {http_range[:60]!r} is outside the file's {file_size} bytes",
                                headers={"Content-Range": f"bytes */{file_size}"}) from None


class BodyTooLarge(HTTPException):
    # An HTTPException, so FastAPI's body parsing passes it on instead of calling it a parse error.
    def __init__(self, limit: int):
        shown = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit} bytes"
        super().__init__(413, f"the request body is over the limit of {shown} (INPAINT_MAX_BODY_MB)")


# ---- the upload's body (the answers are inpaint.responses') --------------------------------------

class AssetUpload(BaseModel):
    """The body of `POST /assets`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(description="The image as a data URL (png/jpeg/webp). Its alpha channel is kept, "
                                   "so the asset can also serve as a mask (`maskId`).")
    hide: StrictBool = Field(False, description="Hide the asset from `GET /assets`.")
    parent_id: str | None = Field(None, alias="parentId", max_length=200, description="The parent asset's id.")


# ---- errors: one JSON shape for every 4xx ---------------------------------------------------------

def _error(status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message, "status": status}},
                        status_code=status, headers=headers)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    # A full queue drains in about a job's time, a busy decoding budget in about a preparation's; clients that
    # honour Retry-After come back then.
    retry = {429: RETRY_AFTER_S, 503: str(limits.RETRY_AFTER_S)}.get(exc.status)
    return _error(exc.status, exc.field, exc.message, {"Retry-After": retry} if retry else None)


async def _os_error(request: Request, exc: OSError) -> JSONResponse:
    if exc.errno in DISK_FULL:  # the store removed what it had begun to write
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return _error(507, "server", "the server's disk is full: nothing was stored; retry once space is freed")
    return await _unexpected_error(request, exc)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message, headers = exc.detail if isinstance(exc.detail, str) else str(exc.detail), exc.headers
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path}"
    return _error(exc.status_code, FIELD_BY_STATUS.get(exc.status_code, "request"), message, headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _request_error(request, validation_error(exc.errors()))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Logged with its traceback for the operator; the client gets no internals.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "server", "internal server error; the server log has the details")


class BodyLimit:
    """Refuses bodies over `limit` bytes: by the declared Content-Length at once, else while they stream."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = (shaped_error(scope["path"], 413, "body", BodyTooLarge(self.limit).detail) if declared.isdigit()
                        else shaped_error(scope["path"], 400, "body", "Content-Length must be a number of bytes"))
            return await response(scope, receive, send)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised where nothing turned it into a response (the UI's routes)
            if started:
                raise
            await shaped_error(scope["path"], 413, "body", exc.detail)(scope, receive, send)


class NotFoundShape:
    """Gives the UI's plain "Not Found" answers (paths nobody serves) the API's error shape."""

    PLAIN = b'{"detail":"Not Found"}'

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict | None = None
        body = b""

        async def reshaping_send(message):
            nonlocal held, body
            if message["type"] == "http.response.start" and message["status"] == 404:
                held = message  # decided once the body is known
                return
            if held is None or message["type"] != "http.response.body":
                return await send(message)
            body += message.get("body", b"")
            if message.get("more_body") and len(body) <= len(self.PLAIN):
                return
            if body == self.PLAIN and not message.get("more_body"):
                return await _error(404, "path", f"no route {scope['path']}")(scope, receive, send)
            await send(held)
            held = None
            await send({**message, "body": body})

        await self.app(scope, receive, reshaping_send)


# ---- auth -------------------------------------------------------------------------------------------

class _Documented(SecurityBase):
    """An auth scheme that only describes itself in the OpenAPI schema: the key is checked in front of every
    route, by KeyGuard (FastAPI's own Basic parser would also refuse passwords that are not ASCII)."""

    def __init__(self, scheme: SecurityBase):
        self.model, self.scheme_name = scheme.model, scheme.scheme_name

    async def __call__(self, request: Request) -> None:
        return None


KEY_DOCS = [Security(_Documented(HTTPBasic(description="Any user name, the API key as the password."))),
            Security(_Documented(HTTPBearer(description="The API key as a Bearer token.")))]
# With a key, what answers without it: the studio's login page and the static files it loads, and the API's docs.
# (`/assets/asset_...` are the API's assets; Gradio serves its page's bundle from the other `/assets/` paths.)
PUBLIC_PAGES = re.compile(r"/(theme\.css|gradio_api/theme\.css|favicon\.ico|robots\.txt|manifest\.json|pwa_icon(/\d+)?"
                          r"|openapi\.json|docs|(static|svelte|docs-static)/.+|assets/(?!asset_).+)?")
LOGIN_PATHS = ("/login", "/login/")


def is_public(method: str, path: str) -> bool:
    """Whether a request needs no key (nor a studio login): see PUBLIC_PAGES."""
    if ".." in path.split("/"):
        return False
    if method == "POST":
        return path in LOGIN_PATHS
    return method in ("GET", "HEAD") and PUBLIC_PAGES.fullmatch(path) is not None


def _studio_session(app: FastAPI, scope, cookies: dict[str, str]) -> bool:
    """Whether the request carries the session of a studio login (Gradio's, set by POST /login) and goes to the
    studio. A session opens the studio's routes only, never the API's: a browser sends its cookie along with a
    request from any site's page."""
    studio = getattr(app.state, "studio_app", None)
    names = (f"access-token-{studio.cookie_id}", f"access-token-unsecure-{studio.cookie_id}") if studio else ()
    if not any(cookies.get(name) in studio.tokens for name in names):
        return False
    # The studio is mounted last, at /: it answers what no route before it matches.
    return all(route.matches(scope)[0] is Match.NONE for route in app.router.routes[:-1])


def shaped_error(path: str, status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    """A refusal in the error shape of the API that `path` belongs to: the translators' routes answer in their host
    API's shape (naming no field: the guard's is none of the host's), so its clients raise the error they know."""
    from .compat import a1111, openai  # they read bodies with this module's rules: imported once it is complete

    for root, render in (("/v1", openai.error_response), ("/sdapi/v1", a1111.error_response)):
        if path == root or path.startswith(f"{root}/"):
            return render(status, None, message, headers)
    return _error(status, field, message, headers)


def _ui_login(api_key: str):
    def login(username: str, password: str) -> bool:
        return key_matches(str(password), api_key)

    return login


# ---- views ------------------------------------------------------------------------------------------

def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


# The app's services, as the routes receive them.
EngineDep = Annotated[Engine, Depends(_engine)]
JobsDep = Annotated[JobQueue, Depends(_jobs)]


def _asset_out(request: Request, asset: Asset, original: bool) -> AssetOut:
    root = request.scope.get("root_path", "").rstrip("/")
    return AssetOut.of(asset, f"{root}/assets/{asset.id}/file" + ("?original=true" if original else ""))


def _job_out(request: Request, job: dict, original: bool) -> JobOut:
    """The stored job plus its visible results with URLs (hidden ones stay in `assetIds` only)."""
    original = original or bool(job.get("originalAssets"))
    store = _engine(request).store
    assets = [_asset_out(request, asset, original)
              for asset in map(store.get, job["metadata"]["assetIds"]) if not asset.hidden]
    return JobOut.model_validate({**job, "originalAssets": original, "metadata": {**job["metadata"], "assets": assets}})


def _json_body_declared(request: Request) -> None:
    """A body must be declared JSON: a web page can post a form or text/plain anywhere without a CORS
    preflight, while a JSON post from another site needs one (which this server does not grant)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, f"the body must be JSON, sent with Content-Type: application/json "
                                 f"(got {media_type or 'none'!r})")


def _path_id(value: str, pattern, field: str, what: str) -> str:
    """An id from the path; one that cannot exist is simply not found."""
    if not pattern.fullmatch(value):
        shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
        raise NotFoundError(field, f"no {what} {shown}; {what} ids look like {what}_ and 22 characters")
    return value


async def _json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return await run_in_threadpool(json.loads, raw)
    except RecursionError:
        raise RequestError("body", "the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise RequestError("body", f"is not valid JSON ({exc})") from None


OriginalAssets = Annotated[bool, Query(alias="originalAssets", description=(
    "true: asset URLs in the answer point at the original files (lossless PNG results; inputs as uploaded), "
    "else at WebP renditions. A job "
    "created with originalAssets=true keeps answering with the originals."))]
AssetIdPath = Annotated[str, Path(alias="assetId", description="An asset id, `asset_` and 22 characters.")]
JobIdPath = Annotated[str, Path(alias="jobId", description="A job id, `job_` and 22 characters.")]


# ---- routes -----------------------------------------------------------------------------------------

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
        plan = await run_in_threadpool(engine.plan, await _json_body(request))
        return {"plan": plan.to_json()}
    # The body is read here, not declared: a full queue answers 429 before a 50 MB body is received.
    jobs.check_room()
    body = await _json_body(request)
    # Decoding and storing images is CPU and disk work: off the event loop.
    job = await run_in_threadpool(_start_job, engine, jobs, body, original_assets)
    if wait > 0:
        job = await jobs.ended(job, wait)
    return {"job": await run_in_threadpool(_job_out, request, job, original_assets)}


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


def _start_job(engine: Engine, jobs: JobQueue, body: object, original_assets: bool) -> dict:
    refuse_gpu_models_on_zerogpu(engine, body)
    jobs.reserve()  # a place in the queue before the inputs are stored: a 429 after storing would orphan them
    try:
        resolved = engine.prepare(body)
    except BaseException:
        jobs.release()
        raise
    return record(jobs.submit(resolved, original_assets=original_assets, reserved=True))


async def get_job(request: Request, jobs: JobsDep, job_id: JobIdPath, original_assets: OriginalAssets = False,
                  wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX_S, description=(
                      "Long-poll: seconds to wait for the job's status to change or a result to be added before "
                      f"answering (0..{LONG_POLL_MAX_S}); a finished job answers at once."))] = 0) -> dict:
    """The job: status, progress, results so far, previews when asked for, warnings and error."""
    job = await run_in_threadpool(jobs.get, _path_id(job_id, JOB_ID_PATTERN, "jobId", "job"))
    if wait > 0:
        job = await jobs.next_change(job, wait)
    return {"job": await run_in_threadpool(_job_out, request, job, original_assets)}


def cancel_job(request: Request, jobs: JobsDep, job_id: JobIdPath, original_assets: OriginalAssets = False) -> dict:
    """Cancel a queued or running job; results already made are kept. A finished job is left as it is."""
    job = jobs.cancel(_path_id(job_id, JOB_ID_PATTERN, "jobId", "job"))
    return {"job": _job_out(request, job, original_assets)}


def list_assets(request: Request, engine: EngineDep, original_assets: OriginalAssets = False,
                limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
                offset: Annotated[int, Query(ge=0, le=2**62, description="Assets to skip.")] = 0) -> dict:
    """The assets that are not hidden, newest first."""
    assets = engine.store.list(limit=limit, offset=offset)
    return {"assets": [_asset_out(request, asset, original_assets) for asset in assets]}


async def _upload_body(request: Request) -> AssetUpload:
    """The body of `POST /assets`, read once the key and the JSON type were checked: FastAPI reads a declared
    body whole before the route's dependencies run, so a client without the key could make it read 50 MB."""
    body = await _json_body(request)
    try:
        return AssetUpload.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def upload_asset(request: Request, engine: EngineDep, upload: Annotated[AssetUpload, Depends(_upload_body)]) -> dict:
    """Store an image; it can then be used as `image`/`imageId` or `maskId` of a request."""
    asset = engine.upload(imageops.decode_data_url(upload.image, field="image"), hide=upload.hide,
                          parent_id=upload.parent_id)
    return {"asset": _asset_out(request, asset, False)}


def get_asset(request: Request, engine: EngineDep, asset_id: AssetIdPath,
              original_assets: OriginalAssets = False) -> dict:
    """One asset by id, hidden ones included."""
    asset = engine.store.get(_path_id(asset_id, ASSET_ID_PATTERN, "assetId", "asset"))
    return {"asset": _asset_out(request, asset, original_assets)}


def asset_file(engine: EngineDep, asset_id: AssetIdPath,
               original: Annotated[bool, Query(description=(
                   "true: the original file (a PNG, or the JPEG or WebP as uploaded); false: the WebP rendition, "
                   "made on its first request."))] = False) -> FileResponse:
    """The asset's file."""
    store = engine.store
    asset = store.get(_path_id(asset_id, ASSET_ID_PATTERN, "assetId", "asset"))
    path = store.file_path(asset.id, original=original)
    return AssetFileResponse(path, media_type=asset.mime_type if original else "image/webp",
                             headers={"Cache-Control": ASSET_CACHE})


def delete_asset(engine: EngineDep, asset_id: AssetIdPath) -> dict:
    """Delete an asset and its files; refused (409) while another asset or a saved job names it."""
    asset = engine.store.delete_asset(_path_id(asset_id, ASSET_ID_PATTERN, "assetId", "asset"))
    return {"deletedAssetIds": [asset.id]}


def delete_job(jobs: JobsDep, job_id: JobIdPath) -> dict:
    """Delete a finished job and the assets only it uses; refused (409) while it is queued or running."""
    return jobs.delete_job(_path_id(job_id, JOB_ID_PATTERN, "jobId", "job"))


def list_models(engine: EngineDep) -> dict:
    """The model catalog: types, defaults, ranges, availability; epochs and compliant bases of LoRAs."""
    return {"models": [ModelOut.of(entry) for entry in engine.catalog.entries()]}


def _errors(*statuses: int) -> dict:
    return {status: {"model": ErrorOut} for status in statuses}


# The routes, by resource: method, path, handler, response model (None: a file), summary, error statuses besides
# 400/401/404/413 (409: still in use; 429: the queue is full; 503: busy decoding other images; 507: disk full).
ROUTES = {
    "generate": [
        ("POST", "/generate/inpaint", generate_inpaint, JobEnvelope | PlanEnvelope, "Start an inpaint job (or plan one)",
         (429, 503, 507)),
    ],
    "jobs": [
        ("GET", "/jobs/{jobId}", get_job, JobEnvelope, "Follow a job", ()),
        ("POST", "/jobs/{jobId}/cancel", cancel_job, JobEnvelope, "Cancel a job", ()),
        ("DELETE", "/jobs/{jobId}", delete_job, JobDeleted, "Delete a job and the assets only it uses", (409,)),
    ],
    "assets": [
        ("GET", "/assets", list_assets, AssetList, "List the visible assets", ()),
        ("POST", "/assets", upload_asset, AssetEnvelope, "Upload an image", (503, 507)),
        ("GET", "/assets/{assetId:asset_id}", get_asset, AssetEnvelope, "Get an asset", ()),
        ("GET", "/assets/{assetId:asset_id}/file", asset_file, None, "Download an asset's file", ()),
        ("DELETE", "/assets/{assetId:asset_id}", delete_asset, AssetDeleted, "Delete an asset", (409,)),
    ],
    "models": [
        ("GET", "/models", list_models, ModelList, "List the model catalog", ()),
    ],
    "segment": [
        ("POST", "/segment", segment_api.route(_json_body), segment_api.SegmentOut, "Select an object as a mask",
         (503, 507)),
    ],
}
JSON_BODIES = {("POST", "/generate/inpaint"): InpaintRequest, ("POST", "/assets"): AssetUpload,
               ("POST", "/segment"): segment_api.SegmentRequest}
# Everything under these belongs to the API: unknown paths and methods answer in its error shape.
API_ROOTS = ["/generate", "/jobs", "/models", "/assets", "/segment"]
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_FILE_RESPONSE = {"content": {"image/webp": {"schema": {"type": "string", "format": "binary"}},
                              "image/png": {"schema": {"type": "string", "format": "binary"}},
                              "image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                  "description": "The image file."}


def _resource_router(routes: list, common_errors: dict) -> APIRouter:
    router = APIRouter()
    for method, path, handler, model, summary, statuses in routes:
        body_rule = [Depends(_json_body_declared)] if (method, path) in JSON_BODIES else []
        answer = {"response_model": model, "response_model_exclude_unset": model is ModelList,
                  "response_class": FileResponse if model is None else JSONResponse}
        router.add_api_route(path, handler, methods=[method], dependencies=body_rule, **answer,
                             responses={**common_errors, **_errors(*statuses),
                                        **({200: _FILE_RESPONSE} if model is None else {})},
                             summary=summary, description=handler.__doc__, operation_id=handler.__name__)
        if method == "GET":  # HEAD: GET's headers (size, type) without the body
            router.add_api_route(path, handler, methods=["HEAD"], **answer, include_in_schema=False)
    return router


def _api_router(api_key: str | None) -> tuple[APIRouter, list]:
    """Every API route, the resources' routers under one router (whose dependencies document the key that
    KeyGuard checks). Unknown paths and methods under the API's roots come last.
    Also gives the resources' routes, for the 405 answers' Allow header."""
    api = APIRouter(dependencies=KEY_DOCS if api_key else [])
    common_errors = _errors(400, 404, 413, *((401,) if api_key else ()))
    routers = [_resource_router(routes, common_errors) for routes in ROUTES.values()]
    for router in routers:
        api.include_router(router)
    from .compat import a1111, openai  # they read bodies with this module's rules: imported once it is complete

    api.include_router(openai.router)  # OpenAI's image edits, under /v1
    api.include_router(a1111.router)  # AUTOMATIC1111's API, under /sdapi/v1
    for root in API_ROOTS:
        rest = "{rest:asset_id}{tail:path}" if root == "/assets" else "{rest:path}"
        for path in (root, f"{root}/{rest}"):
            api.add_api_route(path, _no_such_route, methods=ANY_METHOD, include_in_schema=False)
    return api, [route for router in routers for route in router.routes]


def _no_such_route(request: Request) -> None:
    refuse_unknown_route(request, request.app.state.api_routes)


def refuse_unknown_route(request: Request, routes) -> None:
    """A request that none of `routes` takes: 405 naming the methods allowed when one of them has its path, else
    404."""
    allowed = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL:
            allowed |= route.methods
    if allowed:
        methods = ", ".join(sorted(allowed))
        raise HTTPException(405, f"{request.method} is not allowed on {request.url.path}; allowed: {methods}",
                            headers={"Allow": methods})
    raise HTTPException(404, f"no route {request.url.path}")


def _example_request() -> dict:
    image = Image.new("RGB", (64, 64), (120, 140, 160))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return {"modelId": "opencv-telea", "prompt": "remove the square", "image": imageops.to_data_url(image),
            "mask": imageops.to_data_url(mask), "numSamples": 1}


def _openapi(app: FastAPI):
    """FastAPI's schema, plus the JSON bodies, and without the 422 answers: every validation error of
    this API is a 400 in the one error shape."""

    def build() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title="inpaint", version=__version__, routes=app.routes, description=(
            "Inpainting jobs, assets and models. Asset URLs are relative to the server. "
            + ("Every route needs the API key (Bearer, or HTTP Basic with the key as password)."
               if app.state.api_key else "")))
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
        # The bodies are read and validated by the handlers (the one validation), described here.
        for (method, path), model in JSON_BODIES.items():
            body_schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            components.update(body_schema.pop("$defs", {}))
            components[model.__name__] = body_schema
            content = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            if model is InpaintRequest:
                content["examples"] = {"classical": {"summary": "Fill a square of a flat image with OpenCV (no "
                                                                "weights, instant)", "value": _example_request()}}
            schema["paths"][path][method.lower()]["requestBody"] = {"required": True,
                                                                    "content": {"application/json": content}}
        app.openapi_schema = schema
        return schema

    return build


def _offline_docs(app: FastAPI) -> None:
    """`/docs` with Swagger UI's scripts served from a package, so the page works with no network."""
    import fastapi_offline

    static = PurePath(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-static", StaticFiles(directory=static), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="inpaint API",
                                   swagger_js_url=f"{root}/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs-static/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs-static/favicon.png")


def create_app(engine: Engine | None = None, *, api_key: str | None = settings.API_KEY,
               max_queue: int = settings.MAX_QUEUE, max_body_bytes: int = settings.MAX_BODY_BYTES,
               allowed_hosts: tuple[str, ...] = settings.ALLOWED_HOSTS, max_auth_failures: int = MAX_AUTH_FAILURES,
               with_ui: bool = True) -> FastAPI:
    """The server: the REST routes, and the Gradio UI mounted at `/` (last, so it gets every other path).
    Jobs run on the workers of the settings (INPAINT_DEVICES, INPAINT_RAY_ADDRESS), or on a given engine alone."""
    allocator.keep_freed_memory()  # a server: the memory one request frees serves the next (see allocator.py)
    owns_engine = engine is None
    engine = engine or default_engine()
    jobs = JobQueue(engine, max_queue=max_queue, workers=start_workers(engine) if owns_engine else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(jobs.stop)
            if owns_engine:
                engine.store.close()

    # The interactive docs are served from the package (FastAPI's default loads them from a CDN).
    app = FastAPI(title="inpaint", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.jobs, app.state.api_key = engine, jobs, api_key
    # The last added runs first: a client that keeps guessing the key is turned away, then one without the key,
    # then a foreign host or origin, then a body over the limit by its declared length.
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts, error=shaped_error)
    app.add_middleware(NotFoundShape)
    studio_session = functools.partial(_studio_session, app)
    app.add_middleware(KeyGuard, api_key=api_key, is_public=is_public, studio_session=studio_session,
                       error=shaped_error)
    app.add_middleware(AuthThrottle, api_key=api_key, studio_session=studio_session, max_failures=max_auth_failures,
                       error=shaped_error)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected_error)

    api, app.state.api_routes = _api_router(api_key)
    app.include_router(api)
    app.openapi = _openapi(app)
    _offline_docs(app)

    if with_ui:
        import gradio as gr

        from . import ui

        demo = ui.build_demo(engine, jobs=jobs)
        app.add_middleware(ui.FirstScript)  # the page leaves through it, whatever the guards answered
        gr.mount_gradio_app(app, demo, path="/", max_file_size=max_body_bytes,
                            theme=ui.THEME, css=ui.CSS, auth=_ui_login(api_key) if api_key else None,
                            auth_message=UI_LOGIN_MESSAGE if api_key else None)
        # Gradio checks that a file input was uploaded through it (and not a path the client names, such
        # as /etc/passwd) only once the Blocks "has launched", which mounting never sets. Unset, any file
        # the server can read is copied into Gradio's cache and served back by /gradio_api/file=.
        demo.has_launched = True
        app.state.studio_app = app.routes[-1].app  # Gradio's, mounted last: its logins open the studio
    return app
