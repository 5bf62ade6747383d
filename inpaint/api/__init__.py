"""The server: the JSON REST API of the contract (jobs, assets, models, segment) and the translators of other APIs,
every route included through one router that checks the key; the guards in front; the studio mounted at `/`.

A module per resource (`generate`, `jobs`, `assets`, `models`, `segment`, `compat/`) declares its routes on its
own router the usual FastAPI way; `protected_router` includes them all."""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from .. import __version__, allocator, settings
from ..generate import Engine, default_engine
from ..jobs import JobQueue
from ..web_security import MAX_AUTH_FAILURES, AuthThrottle, BrowserGuard, KeyGuard
from ..workers import start_workers
from . import assets, docs, generate, jobs, models, segment
from .auth import UI_LOGIN_MESSAGE, is_public, key_dependencies, studio_session, ui_login
from .compat import a1111, openai
from .deps import errors
from .errors import add_handlers, refuse_unknown_route
from .guards import BodyLimit, NotFoundShape, shaped_error

# The REST API's resources; each router's first path segments are its roots (below).
RESOURCES = (generate.router, jobs.router, assets.router, models.router, segment.router)
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def protected_router(api_key: str | None) -> APIRouter:
    """Every API route, included through one router whose dependencies check the key (and describe it in the
    OpenAPI schema), so no route of a resource's router can skip it. Unknown paths and methods under the REST API's
    roots come last, answering 404 or 405 in its error shape."""
    api = APIRouter(dependencies=key_dependencies(api_key),
                    responses=errors(400, 404, 413, *((401,) if api_key else ())))
    for router in RESOURCES:
        api.include_router(router)
    api.include_router(openai.router)  # OpenAI's image edits, under /v1
    api.include_router(a1111.router)  # AUTOMATIC1111's API, under /sdapi/v1

    resource_routes = [route for router in RESOURCES for route in router.routes]

    def no_such_route(request: Request) -> None:
        refuse_unknown_route(request, resource_routes)

    for root in sorted({route.path.split("/")[1] for route in resource_routes}):
        # `/assets/...` paths that are no asset id are the studio's bundle (see assets.py).
        rest = "{rest:asset_id}{tail:path}" if root == "assets" else "{rest:path}"
        for path in (f"/{root}", f"/{root}/{rest}"):
            api.add_api_route(path, no_such_route, methods=ANY_METHOD, include_in_schema=False)
    return api


def create_app(engine: Engine | None = None, *, api_key: str | None = settings.API_KEY,
               max_queue: int = settings.MAX_QUEUE, max_body_bytes: int = settings.MAX_BODY_BYTES,
               allowed_hosts: tuple[str, ...] = settings.ALLOWED_HOSTS, max_auth_failures: int = MAX_AUTH_FAILURES,
               with_ui: bool = True) -> FastAPI:
    """The server: the REST routes, and the Gradio UI mounted at `/` (last, so it gets every other path).
    Jobs run on the workers of the settings (INPAINT_DEVICES, INPAINT_RAY_ADDRESS), or on a given engine alone."""
    allocator.keep_freed_memory()  # a server: the memory one request frees serves the next (see allocator.py)
    owns_engine = engine is None
    engine = engine or default_engine()
    queue = JobQueue(engine, max_queue=max_queue, workers=start_workers(engine) if owns_engine else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        try:
            yield
        finally:
            await run_in_threadpool(queue.stop)
            if owns_engine:
                engine.store.close()

    # The interactive docs are served from the package (FastAPI's default loads them from a CDN).
    app = FastAPI(title="inpaint", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.jobs, app.state.api_key = engine, queue, api_key
    # The last added runs first: a client that keeps guessing the key is turned away, then one without the key,
    # then a foreign host or origin, then a body over the limit by its declared length.
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts, error=shaped_error)
    app.add_middleware(NotFoundShape)
    session = functools.partial(studio_session, app)
    app.add_middleware(KeyGuard, api_key=api_key, is_public=is_public, studio_session=session, error=shaped_error)
    app.add_middleware(AuthThrottle, api_key=api_key, studio_session=session, max_failures=max_auth_failures,
                       error=shaped_error)
    add_handlers(app)

    app.include_router(protected_router(api_key))
    app.openapi = docs.openapi(app)
    docs.add_offline_docs(app)

    if with_ui:
        import gradio as gr

        from .. import ui

        demo = ui.build_demo(engine, jobs=queue)
        app.add_middleware(ui.FirstScript)  # the page leaves through it, whatever the guards answered
        gr.mount_gradio_app(app, demo, path="/", max_file_size=max_body_bytes,
                            theme=ui.THEME, css=ui.CSS, auth=ui_login(api_key) if api_key else None,
                            auth_message=UI_LOGIN_MESSAGE if api_key else None)
        # Gradio checks that a file input was uploaded through it (and not a path the client names, such
        # as /etc/passwd) only once the Blocks "has launched", which mounting never sets. Unset, any file
        # the server can read is copied into Gradio's cache and served back by /gradio_api/file=.
        demo.has_launched = True
        app.state.studio_app = app.routes[-1].app  # Gradio's, mounted last: its logins open the studio
    return app
