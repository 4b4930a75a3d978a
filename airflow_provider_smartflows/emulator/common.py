"""Pieces shared by the emulator's middlewares, API routes and admin routes."""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_smartflows.emulator.scenario import ApiKey
from airflow_provider_smartflows.emulator.state import EmulatorState, iso

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.scenario import FlowSpec
    from airflow_provider_smartflows.emulator.state import DocumentRecord, Execution

STATE = web.AppKey("state", EmulatorState)
# Per-request storage shared by the middlewares and handlers.
KEY = web.RequestKey("key", ApiKey)
FAULT = web.RequestKey("fault", str)
ABORTED = web.RequestKey("aborted", bool)
TRUNCATED = web.RequestKey("truncated", bool)
TRUNCATE_AT = web.RequestKey("truncate_at", int)
BODY_BYTES = web.RequestKey("body_bytes", int)
CLIENT_MAX_SIZE = 10 * 1024 * 1024
VERSION = "4.0.0-emulator"


class ApiError(Exception):
    """An answer the emulator means to give (4xx): turned into the JSON error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "timestamp": iso(time.time()),
        "status": status,
        "error": reason_phrase(status),
        "message": message,
        "path": request.path,
    }
    return web.json_response(body, status=status, headers=headers)


def state_of(request: web.Request) -> EmulatorState:
    return request.app[STATE]


def execution_of(request: web.Request) -> Execution:
    ex = state_of(request).executions.get(request.match_info["exec_id"])
    if ex is None:
        raise ApiError(404, f"Flow execution {request.match_info['exec_id']} not found")
    return ex


def document_of(request: web.Request) -> DocumentRecord:
    doc = state_of(request).documents.get(request.match_info["doc_id"])
    if doc is None:
        raise ApiError(404, f"Document {request.match_info['doc_id']} not found")
    return doc


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    request[BODY_BYTES] = len(raw)
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc


def flow_json(flow: FlowSpec) -> dict[str, Any]:
    return {
        "id": flow.id,
        "displayName": flow.display_name,
        "type": "flow",
        "description": flow.description,
        "input": flow.input,
    }
