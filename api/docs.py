"""``/docs`` (Swagger UI) and ``/redoc`` with their JavaScript and CSS served by the API itself.

FastAPI's own pages load these files from a CDN, so on a machine without internet they stay blank. The
files come from the ``fastapi-offline`` package (Swagger UI 5, which renders the OpenAPI 3.1 that FastAPI
writes, and ReDoc 2); we use only its files, and build the pages with FastAPI's own functions.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the docs pages and their files on ``app``, built with ``docs_url=None, redoc_url=None``.

    The pages are FastAPI's own (same OpenAPI URL, OAuth2 redirect, Swagger UI parameters), only with the
    script, stylesheet and icon URLs on this API.
    """
    if not (ASSETS_DIR / "swagger-ui-bundle.js").is_file():  # a fastapi-offline that moved its files: fail at start
        raise RuntimeError(f"no Swagger UI files in {ASSETS_DIR}: check the fastapi-offline version")
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        redirect = app.swagger_ui_oauth2_redirect_url
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect if redirect else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,  # fonts from Google: the same CDN problem
        )

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    if app.swagger_ui_oauth2_redirect_url:
        app.add_route(app.swagger_ui_oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)


def _root(request: Request) -> str:
    """The path the API is mounted under behind a proxy (``--root-path``), as FastAPI's own pages use it."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")
