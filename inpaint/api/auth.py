"""Who may call what: the API key as the dependency of the router every API route is included through, the few
public pages, and the studio's login.

inpaint.web_security's KeyGuard checks the key in front of the whole app (the studio's routes too); the router's
dependency checks it again where the API's routes are declared, so a route added to a router the usual FastAPI way
is behind the key even if KeyGuard's public list were to let its path through."""

from __future__ import annotations

import re

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPBasic, HTTPBearer
from fastapi.security.base import SecurityBase
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ..web_security import REALM, key_matches, presented_key

UI_LOGIN_MESSAGE = "Log in with any user name and the API key (INPAINT_API_KEY) as the password."
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


def require_key(request: Request) -> None:
    """The key, when the server has one: a Bearer token or the password of HTTP Basic (never a studio session: a
    browser sends its cookie along with a request from any site's page)."""
    api_key = request.app.state.api_key
    if api_key is not None and not key_matches(presented_key(request.headers.get("authorization")) or b"", api_key):
        raise HTTPException(401, "this API needs its key: send `Authorization: Bearer <key>` or HTTP Basic with the "
                                 "key as the password", headers={"WWW-Authenticate": REALM})


class _Documented(SecurityBase):
    """An auth scheme that only describes itself in the OpenAPI schema: `require_key` reads the header (FastAPI's
    own Basic parser would also refuse passwords that are not ASCII)."""

    def __init__(self, scheme: SecurityBase):
        self.model, self.scheme_name = scheme.model, scheme.scheme_name

    async def __call__(self, request: Request) -> None:
        return None


KEY_DOCS = [Security(_Documented(HTTPBasic(description="Any user name, the API key as the password."))),
            Security(_Documented(HTTPBearer(description="The API key as a Bearer token.")))]


def key_dependencies(api_key: str | None) -> list:
    """The dependencies of the router every API route is included through: the key, and its description in the
    OpenAPI schema when the server has one."""
    return [Depends(require_key), *(KEY_DOCS if api_key else [])]


def studio_session(app: FastAPI, scope, cookies: dict[str, str]) -> bool:
    """Whether the request carries the session of a studio login (Gradio's, set by POST /login) and goes to the
    studio. A session opens the studio's routes only, never the API's: a browser sends its cookie along with a
    request from any site's page."""
    studio = getattr(app.state, "studio_app", None)
    names = (f"access-token-{studio.cookie_id}", f"access-token-unsecure-{studio.cookie_id}") if studio else ()
    if not any(cookies.get(name) in studio.tokens for name in names):
        return False
    # The studio is mounted last, at /: it answers what no route before it matches.
    return all(route.matches(scope)[0] is Match.NONE for route in app.router.routes[:-1])


def ui_login(api_key: str):
    """The studio's login check: any user name, the key as the password."""
    def login(username: str, password: str) -> bool:
        return key_matches(str(password), api_key)

    return login
