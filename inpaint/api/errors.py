"""The API's one error shape, `{"error": {"field", "message", "status"}}`, and the handlers that give every 4xx
(and the rare 5xx) that shape."""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from .. import limits
from ..errors import RequestError, validation_error

log = logging.getLogger(__name__)

# The field named by an error that no request field caused, by status.
FIELD_BY_STATUS = {401: "authorization", 404: "path", 405: "method", 413: "body", 415: "body", 416: "range",
                   429: "job"}
RETRY_AFTER_S = "1"  # seconds a client waits after a 429
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def error(status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message, "status": status}},
                        status_code=status, headers=headers)


def retry_after(status: int) -> dict | None:
    """The Retry-After of a refusal that passes: a full queue drains in about a job's time, a busy decoding budget
    in about a preparation's; clients that honour it come back then."""
    retry = {429: RETRY_AFTER_S, 503: str(limits.RETRY_AFTER_S)}.get(status)
    return {"Retry-After": retry} if retry else None


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


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return error(exc.status, exc.field, exc.message, retry_after(exc.status))


async def _os_error(request: Request, exc: OSError) -> JSONResponse:
    if exc.errno in DISK_FULL:  # the store removed what it had begun to write
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return error(507, "server", "the server's disk is full: nothing was stored; retry once space is freed")
    return await _unexpected_error(request, exc)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message, headers = exc.detail if isinstance(exc.detail, str) else str(exc.detail), exc.headers
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path}"
    return error(exc.status_code, FIELD_BY_STATUS.get(exc.status_code, "request"), message, headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _request_error(request, validation_error(exc.errors()))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Logged with its traceback for the operator; the client gets no internals.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error(500, "server", "internal server error; the server log has the details")


def add_handlers(app: FastAPI) -> None:
    """Every error a route raises answers in the one shape."""
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected_error)
