"""The API's description: its OpenAPI schema (the JSON bodies the routes read themselves, no 422 answers) and
`/docs`, served with no network."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__

REF = "#/components/schemas/{model}"


def openapi(app: FastAPI):
    """FastAPI's schema, with each JSON body (described by `deps.json_body`) as a component, and without the 422
    answers: every validation error of this API is a 400 in the one error shape."""

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
                for content in operation.get("requestBody", {}).get("content", {}).values():
                    body = content["schema"]
                    components.update(body.pop("$defs", {}))
                    components[body["title"]] = body
                    content["schema"] = {"$ref": REF.format(model=body["title"])}
        app.openapi_schema = schema
        return schema

    return build


def add_offline_docs(app: FastAPI) -> None:
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
