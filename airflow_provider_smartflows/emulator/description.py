"""The API description (``/v3/api-docs``, ``/v2/api-docs``, ``/swagger-ui/``), generated from the
app's route table, and the routes the server lacks, as :class:`.surface.ApiSurface` sets them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_smartflows.emulator.common import VERSION, ApiError, state_of

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.surface import ApiSurface

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/v1"

docs_routes = web.RouteTableDef()


def _api_routes(app: web.Application) -> list[tuple[str, str, web.AbstractRoute]]:
    """(METHOD, path, route) of every route a description names (no admin, no HEAD)."""
    found = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        if path.startswith("/_emulator"):
            continue
        found.append((route.method, path, route))
    return found


def route_names(app: web.Application) -> set[str]:
    return {f"{method} {path}" for method, path, _ in _api_routes(app)}


def _operation(route: web.AbstractRoute, path: str, *, v2: bool) -> dict[str, Any]:
    doc = (getattr(route.handler, "__doc__", None) or "").strip().splitlines()
    op: dict[str, Any] = {"summary": doc[0] if doc else "", "responses": {"200": {"description": "OK"}}}
    params = [(p, "path", True) for p in re.findall(r"{(\w+)}", path)]
    params += [(q, "query", False) for q in getattr(route.handler, "query_parameters", ())]
    if params:
        kind = "integer" if v2 else None
        op["parameters"] = [
            {"name": name, "in": where, "required": required}
            | (
                {"type": kind if name in ("page", "size") else "string"}
                if kind
                else {"schema": {"type": "string"}}
            )
            for name, where, required in params
        ]
    return op


def _paths(app: web.Application, surface: ApiSurface, *, v2: bool) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, route in _api_routes(app):
        if f"{method} {path}" in surface.dropped or not path.startswith(API_PREFIX):
            continue
        shown = path[len(API_PREFIX) :] if v2 else path
        paths.setdefault(shown, {})[method.lower()] = _operation(route, path, v2=v2)
    return paths


def _description(request: web.Request, wanted: str) -> web.Response:
    surface = state_of(request).api
    if surface.description != wanted:
        raise ApiError(404, f"Not Found: GET {request.path}")
    info = {"title": "Smart Flows API (emulator)", "version": VERSION}
    scheme = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    if wanted == "v2":
        spec: dict[str, Any] = {
            "swagger": "2.0",
            "info": info,
            "basePath": API_PREFIX,
            "paths": _paths(request.app, surface, v2=True),
            "securityDefinitions": {"apiKey": scheme},
        }
    else:
        spec = {
            "openapi": "3.0.3",
            "info": info,
            "paths": _paths(request.app, surface, v2=False),
            "components": {"securitySchemes": {"apiKey": scheme}},
        }
    spec["security"] = [{"apiKey": []}]
    return web.json_response(spec)


@docs_routes.get("/v3/api-docs")
async def api_docs_v3(request: web.Request) -> web.Response:
    """OpenAPI 3 description of the emulator's API routes (the default)."""
    return _description(request, "v3")


@docs_routes.get("/v2/api-docs")
async def api_docs_v2(request: web.Request) -> web.Response:
    """Swagger 2.0 description, as springfox serves it (with the description setting "v2")."""
    return _description(request, "v2")


@docs_routes.get("/swagger-ui/")
@docs_routes.get("/swagger-ui.html")
async def swagger_ui(request: web.Request) -> web.Response:
    """A small HTML page listing the routes (the real Swagger UI needs internet assets)."""
    surface = state_of(request).api
    if surface.description == "none":
        raise ApiError(404, f"Not Found: GET {request.path}")
    rows = "".join(
        f"<tr><td>{method}</td><td><code>{path}</code></td></tr>"
        for method, path, _ in _api_routes(request.app)
        if f"{method} {path}" not in surface.dropped
    )
    spec = f"/{surface.description}/api-docs"
    page = (
        "<!DOCTYPE html><html><head><title>Smart Flows emulator API</title></head><body>"
        f'<h1>Smart Flows emulator API</h1><p>OpenAPI document: <a href="{spec}">{spec}</a>. '
        "Authenticate with the <code>X-API-Key</code> header.</p>"
        f"<table>{rows}</table></body></html>"
    )
    return web.Response(text=page, content_type="text/html")


@web.middleware
async def surface_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A dropped route answers as a server without it: 405 if its path has other methods, else 404."""
    route = request.match_info.route
    dropped = state_of(request).api.dropped
    if dropped and route.resource is not None:
        path = route.resource.canonical
        method = "GET" if request.method == "HEAD" else request.method
        if f"{method} {path}" in dropped:
            others = sorted(
                m for m, p, _ in _api_routes(request.app) if p == path and f"{m} {p}" not in dropped
            )
            if others:
                raise ApiError(
                    405, f"Method Not Allowed: {request.method} {request.path}", {"Allow": ", ".join(others)}
                )
            raise ApiError(404, f"Not Found: {request.method} {request.path}")
    return await handler(request)
