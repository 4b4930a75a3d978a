"""The emulator's aiohttp application: the API routes, the admin routes and the middlewares.

- ``routes``: the Smart Flows API under /api/v1
- ``documents``: the document listings, and the admin routes that set when documents expire
- ``description``: the open API description of those routes, and the routes a server lacks
- ``admin``: the /_emulator routes for tests in another process
- ``middleware``: request log and emulator-error recording, faults, error bodies, API keys
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from airflow_provider_smartflows.emulator.admin import admin_routes
from airflow_provider_smartflows.emulator.common import CLIENT_MAX_SIZE, STATE
from airflow_provider_smartflows.emulator.description import docs_routes
from airflow_provider_smartflows.emulator.documents import document_routes
from airflow_provider_smartflows.emulator.middleware import MIDDLEWARES
from airflow_provider_smartflows.emulator.routes import routes

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.state import EmulatorState


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.closing = True
    state.cancel_deferred()
    for ex in state.executions.values():
        ex.notify()


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=MIDDLEWARES)
    app[STATE] = state
    app.add_routes(routes)
    app.add_routes(document_routes)
    app.add_routes(docs_routes)
    app.add_routes(admin_routes)
    app.on_shutdown.append(_on_shutdown)
    return app
