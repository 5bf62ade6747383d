"""The studio page's first scripts (frames.js, page.js), put in its HTML ahead of gradio's own scripts: gradio adds
a page's `head` only once its scripts ran, too late for a script that changes what they find."""

from __future__ import annotations

from pathlib import Path

# page.js (the page's own shortcuts) listens on the document: it comes along, needing no component of its own.
FIRST_SCRIPT = b"".join(b"<script>" + (Path(__file__).parent / name).read_bytes() + b"</script>"
                        for name in ("frames.js", "page.js"))


class FirstScript:
    """ASGI middleware: the page at `/` gets FIRST_SCRIPT as the first child of its <head>."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/":
            return await self.app(scope, receive, send)
        start: dict | None = None
        body = b""

        async def inserting_send(message):
            nonlocal start, body
            if message["type"] == "http.response.start":
                headers = dict(message["headers"])
                if (headers.get(b"content-type", b"").startswith(b"text/html")
                        and b"content-encoding" not in headers):
                    start = message  # sent once the page is whole
                    return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            page = body.replace(b"<head>", b"<head>" + FIRST_SCRIPT, 1)
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, inserting_send)
