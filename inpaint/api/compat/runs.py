"""What the translators share: a request body through the one flow (prepare, then the job queue) followed to its
results, and their routes' errors in the host API's shape."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ... import imageops
from ...assets import Asset
from ...errors import RequestError
from ...events import Event, Failed, Preview, Progress, Result, Warned
from ...generate import Engine
from ...jobs import JobQueue
from ...schema import ResolvedRequest
from ..deps import refuse_gpu_models_on_zerogpu
from ..errors import FIELD_BY_STATUS, refuse_unknown_route, retry_after

# Render one error in a host API's shape: status, the host's name of the field at fault (None: no field),
# message, headers.
Render = Callable[[int, str | None, str, dict | None], Response]


def start(engine: Engine, jobs: JobQueue, body: dict, image: bytes, mask: bytes,
          cancel: threading.Event) -> tuple[ResolvedRequest, Iterator[Event]]:
    """Validate the body and store its inputs, the picture's and the mask's files as the host API sent them
    (RequestError naming our field at fault), then queue the run as the studio does: its events come as they
    happen (inpaint.events)."""
    refuse_gpu_models_on_zerogpu(engine, body)
    jobs.check_room()  # a full queue answers before any image is decoded
    resolved = engine.prepare(body, image=image, mask=mask)
    return resolved, jobs.run(resolved, cancel)


@dataclass
class Outcome:
    """What a run made: its results in seed order, every warning, and how it ended if not done."""

    request: ResolvedRequest
    assets: list[Asset] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped: bool = False


@dataclass
class Running:
    """A run as a progress report sees it; updated on the thread that follows its events."""

    request: ResolvedRequest
    cancel: threading.Event
    started: float = field(default_factory=time.monotonic)
    progress: float = 0.0
    step: int = 0
    steps: int = 0
    preview: object = None  # the latest preview image of the batch's first sample


def at_generation_size(preview, request: ResolvedRequest):
    """A preview image as large as the region is generated: a latent preview has one pixel per 8x8 of it."""
    return imageops.resize(preview, (request.width, request.height))


def follow(outcome: Outcome, events: Iterator[Event], *, running: Running | None = None) -> Iterator[Event]:
    """Yields each event of a run once it is recorded in `outcome` (and `running`, for a progress report); blocking,
    so iterate it off the event loop. A run refused or failed while generating raises RequestError; a stopped one
    ends with `outcome.stopped` set and the results it made."""
    outcome.warnings[:0] = outcome.request.warnings
    for event in events:
        match event:
            case Result(asset=asset):
                outcome.assets.append(asset)
            case Warned(message=message):
                outcome.warnings.append(message)
            case Progress(fraction=fraction) if running is not None:
                running.progress = fraction
            case Preview(images=images, step=step, steps=steps) if running is not None:
                running.step, running.steps, running.preview = step, steps, images[0]
            case Failed(kind="canceled"):
                outcome.stopped = True
            case Failed(message=message, field=where, status=status):
                raise RequestError(where or "server", message.removeprefix(f"{where}: "),
                                   status=status if where else 500)
        yield event


def finish(outcome: Outcome, events: Iterator[Event], *, running: Running | None = None) -> Outcome:
    """`follow` to the end of the run."""
    for _ in follow(outcome, events, running=running):
        pass
    return outcome


def shaped_errors(render: Render, fields: Callable[[str], str | None],
                  validation: Callable[[RequestValidationError], Response] | None = None) -> type[APIRoute]:
    """A route class whose errors take a host API's shape: the key check's too, since a router's dependencies run
    inside its routes. `fields` maps our request field to the host's name; `validation` renders a body that
    failed the host's own schema (else it is the first error's field)."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self):
            handle = super().get_route_handler()

            async def shaped(request: Request) -> Response:
                try:
                    return await handle(request)
                except RequestError as exc:
                    return render(exc.status, fields(exc.field), exc.message, retry_after(exc.status))
                except HTTPException as exc:
                    return render(exc.status_code, FIELD_BY_STATUS.get(exc.status_code), str(exc.detail),
                                  exc.headers)
                except RequestValidationError as exc:
                    if validation is not None:
                        return validation(exc)
                    first = exc.errors()[0]
                    where = ".".join(str(part) for part in first.get("loc", ())[1:])
                    return render(400, where or None, str(first.get("msg", "is invalid")), None)

            return shaped

    return ShapedRoute


def add_fallback(router: APIRouter, root: str) -> None:
    """Unknown paths under `root` answer in the host's shape, guarded like the rest: another method of one of
    `router`'s routes is a 405, any other path a 404. Call it once every route is added."""
    routes = [route for route in router.routes if isinstance(route, APIRoute)]

    def no_such_route(request: Request) -> None:
        refuse_unknown_route(request, routes)

    router.add_api_route(f"{root}/{{rest:path}}", no_such_route,
                         methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
