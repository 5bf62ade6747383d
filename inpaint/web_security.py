"""What the server refuses before any route runs: foreign hosts and origins, bodies that are not JSON, slow
request headers, and clients that keep guessing the API key."""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import threading
import time
from collections import deque
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
DEFAULT_PORTS = {"http": 80, "https": 443}
# Request headers must be complete this long after a connection opens (or after its idle time following an
# answer): a client sending them a byte at a time otherwise holds a connection, and a server slot, forever.
HEADER_TIMEOUT_S = 10.0
# A request body must be complete this long after its headers: 50 MB (the default body limit) at 10 Mbit/s.
BODY_TIMEOUT_S = 60.0
# An idle connection stays open this long after an answer. It must outlast the pools of common clients
# (httpx and Node 5 s, aiohttp 15 s): one that closes at the very moment a client reuses its connection makes
# that client's request fail with a reset (uvicorn's default, 5 s, races httpx's default, 5 s).
KEEP_ALIVE_S = 30
# A client that gave a wrong key (or UI password) this many times in the window waits out the window.
MAX_AUTH_FAILURES = 10
AUTH_WINDOW_S = 60.0
# Bearer only: a browser answers a Basic challenge by caching the credentials and sending them to this
# server with every later request, from any site's page (HTTP Basic stays accepted from clients like curl).
REALM = 'Bearer realm="inpaint"'
LOGIN_FORM_MAX_BYTES = 64 * 1024  # what a throttled client's login form may hold to be read


def error_response(path: str, status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    """A guard's refusal in the API's error shape. The guards take another such function (`error=`) where some
    paths answer in another API's shape."""
    return JSONResponse({"error": {"field": field, "message": message, "status": status}}, status_code=status,
                        headers=headers)


def _host_name(host: str) -> str:
    """`example.com:7860` -> `example.com`; `[::1]:7860` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _matches(name: str, pattern: str) -> bool:
    """A host name against `example.com`, `*.example.com` (its subdomains) or `*` (any)."""
    return pattern in ("*", name) or (pattern.startswith("*.") and name.endswith(pattern[1:]))


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    return any(_matches(name, pattern) for pattern in patterns)


class BrowserGuard:
    """ASGI middleware against what a web page on another site can make a visitor's browser send.

    - **DNS rebinding**: a page of attacker.example whose name resolves to 127.0.0.1 talks to this server as
      its own origin; only the Host header gives it away, so hosts outside `allowed_hosts` are refused.
    - **CSRF**: a page can POST to any address without a CORS preflight (a form, or `fetch` with
      `text/plain` in no-cors mode), with the visitor's cookies; state-changing requests whose Origin is
      another site are refused. (The REST routes also want their bodies declared JSON: `json_body`.)
    """

    def __init__(self, app, *, allowed_hosts: tuple[str, ...], error=None):
        self.app = app
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.error = error or error_response

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host", "")
        refusal = None
        if not allowed(_host_name(host), self.allowed_hosts):
            refusal = self.error(scope["path"], 400, "host", f"this server does not answer to the host "
                                                             f"{host[:80]!r}; allow it with INPAINT_ALLOWED_HOSTS")
        elif scope.get("method", "GET") in STATE_CHANGING or scope["type"] == "websocket":
            origin = headers.get("origin")
            if origin is not None and not self._same_or_allowed(origin, host, scope.get("scheme", "http")):
                refusal = self.error(scope["path"], 403, "origin", f"requests from the page at {origin[:80]!r} are "
                                                                   "not allowed to change anything here")
        if refusal is not None:
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)

    def _same_or_allowed(self, origin: str, host: str, scheme: str) -> bool:
        """Whether a page at `origin` may change things here: it is this server's own page (the same host and
        port as the request's Host; an https server, an https page), or a page on a host named explicitly in
        the allowed hosts, served on this server's port. A page on another port of the same host is another
        site (another program on the machine): refused."""
        page, server = urlsplit(origin), urlsplit(f"//{host.strip()}")
        try:
            page_port, server_port = page.port, server.port
        except ValueError:  # a port that is not a number
            return False
        if page.scheme not in DEFAULT_PORTS or not page.hostname:
            return False  # "null" (a sandboxed frame, a file:// page), or not a web page's origin
        if scheme in ("https", "wss") and page.scheme != "https":
            return False
        # A Host without a port is the default port of the scheme the page reached the server with.
        if (page_port or DEFAULT_PORTS[page.scheme]) != (server_port or DEFAULT_PORTS[page.scheme]):
            return False
        if page.hostname == server.hostname:
            return True
        # An origin on a host named explicitly (a wildcard for every host is no statement about origins).
        return any(pattern != "*" and _matches(_host_name(page.netloc), pattern) for pattern in self.allowed_hosts)


# ---- the API key ----------------------------------------------------------------------------------------

def presented_key(authorization: str | None) -> bytes | None:
    """The key a client presents, as the bytes it sent: a Bearer token, or the password of HTTP Basic.

    Header values arrive decoded as latin-1, so encoding them back gives the client's bytes: a key with
    non-ASCII characters (sent as UTF-8) then compares equal to the configured key's UTF-8 bytes.
    """
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode("latin-1")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return b""  # presented, and wrong
        return decoded.partition(b":")[2]
    return b""


def key_matches(given: bytes | str, api_key: str) -> bool:
    given_bytes = given.encode("utf-8") if isinstance(given, str) else given
    return secrets.compare_digest(given_bytes, api_key.encode("utf-8"))


class AuthThrottle:
    """ASGI middleware: a client (by address) that failed authentication MAX_AUTH_FAILURES times within
    AUTH_WINDOW_S gets 429 for every request that does not present the right key, until its oldest failure
    leaves the window. A failure is a wrong guess: a 401 to a request that presented credentials, or a refused
    studio login (a page that asks without credentials, before its user has logged in, guesses nothing).

    The right key always goes through, and so does a logged-in studio page: clients behind one proxy share an
    address, and one of them guessing must not lock the others out. So a throttled login form is read (it is
    small) to see its password."""

    def __init__(self, app, *, api_key: str | None, studio_session, max_failures: int = MAX_AUTH_FAILURES,
                 window_s: float = AUTH_WINDOW_S, error=None):
        self.app = app
        self.error = error or error_response
        self.api_key = api_key
        self.studio_session = studio_session  # as KeyGuard's
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.api_key is None:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        now = time.monotonic()
        with self._lock:
            failures = self._recent(client, now)
            wait_s = failures[0] + self.window_s - now if len(failures) >= self.max_failures else 0
            if not failures:
                self._failures.pop(client, None)
        is_login = scope["path"].rstrip("/").endswith("/login") and scope.get("method") == "POST"
        if wait_s > 0:
            right_key, receive = await self._presents_the_key(scope, receive, is_login)
            if not right_key:
                response = self.error(scope["path"], 429, "authorization", "too many failed attempts to "
                                      f"authenticate; retry in {wait_s:.0f} s", {"Retry-After": f"{wait_s:.0f}"})
                return await response(scope, receive, send)
        presented = any(key == b"authorization" for key, _ in scope["headers"])

        async def watching_send(message):
            if message["type"] == "http.response.start":
                status = message["status"]
                # Gradio answers a wrong login with 400.
                if (status == 401 and presented) or (is_login and status == 400):
                    with self._lock:
                        self._recent(client, time.monotonic()).append(time.monotonic())
            await send(message)

        await self.app(scope, receive, watching_send)

    async def _presents_the_key(self, scope, receive, is_login: bool):
        """Whether the request carries the right key (its Authorization header, a studio login's session, or a
        login form's password), and the `receive` that gives the app the body again when the form was read."""
        credentials = _credentials(scope, self.api_key, self.studio_session)
        if credentials is not None or not is_login:
            return bool(credentials), receive
        body, more = b"", True
        while more and len(body) <= LOGIN_FORM_MAX_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return False, receive
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if more:  # no login form is this long
            return False, receive
        password = parse_qs(body.decode("utf-8", "replace")).get("password", [""])[0]
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return key_matches(password, self.api_key), replay


class KeyGuard:
    """ASGI middleware: with a key, every request presents it (`Authorization: Bearer`, or HTTP Basic with the key
    as the password), or goes to the studio from a page logged in to it, unless `is_public(method, path)`. The one gate
    in front of every route, so a route cannot be added without it: the API's, the studio's (Gradio checks a
    login on some of its routes only: not on cancel or reset) and any added later."""

    def __init__(self, app, *, api_key: str | None, is_public, studio_session, error=None):
        self.app = app
        self.api_key = api_key
        self.is_public = is_public  # (method, path) -> bool
        self.studio_session = studio_session  # (scope, cookies) -> bool: a studio login's session, for the studio
        self.error = error or error_response

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.api_key is None:
            return await self.app(scope, receive, send)
        credentials = _credentials(scope, self.api_key, self.studio_session)
        refusal = None
        if credentials is False:
            refusal = "the API key is wrong"
        elif credentials is None and not self.is_public(scope.get("method", "GET"), scope["path"]):
            refusal = ("this server needs its API key: send `Authorization: Bearer <key>` or HTTP Basic with the key "
                       "as the password, or log in to the studio")
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        response = self.error(scope["path"], 401, "authorization", refusal, {"WWW-Authenticate": REALM})
        await response(scope, receive, send)


def _credentials(scope, api_key: str, studio_session) -> bool | None:
    """What a request presents, as KeyGuard and AuthThrottle read it: True for the right key (its Authorization
    header) or a studio login's session on a studio route, False for a wrong key, None for nothing."""
    headers = dict(scope["headers"])
    authorization = headers.get(b"authorization")
    if authorization is not None:
        given = presented_key(authorization.decode("latin-1"))
        return given is not None and key_matches(given, api_key)
    return True if studio_session(scope, _cookies(headers.get(b"cookie", b""))) else None


def _cookies(header: bytes) -> dict[str, str]:
    cookies = SimpleCookie()
    try:
        cookies.load(header.decode("latin-1"))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in cookies.items()}


# ---- requests that never end -------------------------------------------------------------------------

class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are not complete within
    HEADER_TIMEOUT_S of its opening, or of the end of its keep-alive time after an answer (uvicorn's own
    keep-alive timer is stopped by the first byte received, so a trickle of header bytes would keep it open),
    or whose request body is not complete within `body_timeout_s` of its headers (uvicorn sets no limit: a
    body sent a byte at a time would hold the connection, and the request's server slot, forever)."""

    body_timeout_s = BODY_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self._arm(self._header_timer, HEADER_TIMEOUT_S, self._headers_too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is not h11.IDLE:  # the headers of a request arrived
            self._header_timer = self._disarm(self._header_timer)
        if state is h11.SEND_BODY and self._body_timer is None:
            self._body_timer = self._arm(None, self.body_timeout_s, self._body_too_slow)
        elif state is not h11.SEND_BODY:
            self._body_timer = self._disarm(self._body_timer)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._header_timer = self._arm(self._header_timer, self.timeout_keep_alive + HEADER_TIMEOUT_S,
                                           self._headers_too_slow)

    def connection_lost(self, exc) -> None:
        self._header_timer = self._disarm(self._header_timer)
        self._body_timer = self._disarm(self._body_timer)
        super().connection_lost(exc)

    def _arm(self, timer: asyncio.TimerHandle | None, delay_s: float, callback) -> asyncio.TimerHandle:
        self._disarm(timer)
        return self.loop.call_later(delay_s, callback)

    @staticmethod
    def _disarm(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        return None

    def _headers_too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()  # the app's next receive() says the client left
