"""What answers before the routes, in the shape of the API a path belongs to: bodies over the size limit, paths
nobody serves. (inpaint.web_security's guards refuse keys, hosts and origins with `shaped_error` too.)"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .compat import a1111, openai
from .errors import error


def shaped_error(path: str, status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    """A refusal in the error shape of the API that `path` belongs to: the translators' routes answer in their host
    API's shape (naming no field: the guard's is none of the host's), so its clients raise the error they know."""
    for root, render in (("/v1", openai.error_response), ("/sdapi/v1", a1111.error_response)):
        if path == root or path.startswith(f"{root}/"):
            return render(status, None, message, headers)
    return error(status, field, message, headers)


class BodyTooLarge(HTTPException):
    # An HTTPException, so FastAPI's body parsing passes it on instead of calling it a parse error.
    def __init__(self, limit: int):
        shown = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit} bytes"
        super().__init__(413, f"the request body is over the limit of {shown} (INPAINT_MAX_BODY_MB)")


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
                return await error(404, "path", f"no route {scope['path']}")(scope, receive, send)
            await send(held)
            held = None
            await send({**message, "body": body})

        await self.app(scope, receive, reshaping_send)
