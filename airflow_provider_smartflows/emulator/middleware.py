"""The emulator's middlewares, outermost first: request log, faults, error bodies, routes the
server lacks (:mod:`.description`), API keys.

The request log also catches what no handler should raise: such an exception is an emulator
bug, recorded with its traceback (``EmulatorState.errors``) so that the test that caused it
fails, instead of passing as a 500 that a client retries like a transient server fault.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_smartflows.emulator.common import (
    ABORTED,
    BODY_BYTES,
    FAULT,
    KEY,
    TRUNCATE_AT,
    TRUNCATED,
    ApiError,
    error_response,
    reason_phrase,
    state_of,
)
from airflow_provider_smartflows.emulator.description import surface_middleware
from airflow_provider_smartflows.emulator.state import iso

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.faults import Fault
    from airflow_provider_smartflows.emulator.scenario import ApiKey
    from airflow_provider_smartflows.emulator.state import EmulatorState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes that need no key: the real server leaves its API docs and the callback open
# (the callback is called by third parties such as e-signature services).
_PUBLIC = re.compile(r"^(/v[23]/api-docs|/swagger-ui(/.*|\.html)?|/api/v1/flows/callback/[^/]+)$")
# Admin-only real route, so that 403 is testable: listing the project's users.
_ADMIN_ONLY = re.compile(r"^(/_emulator(/.*)?|/api/v1/users)$")
_REDACTED_HEADERS = {"x-api-key", "authorization", "cookie"}


# --- request log and the emulator's own errors -----------------------------------------------


@web.middleware
async def log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: records every request (key values redacted) and every emulator bug."""
    state = state_of(request)
    generation = state.generation
    try:
        resp = await handler(request)
    except Exception as exc:
        # A client that hangs up (an abandoned download) is no emulator bug; anything else is.
        if not isinstance(exc, ConnectionError):
            state.record_error(request.method, request.path_qs, exc)
        resp = error_response(request, 500, f"Internal emulator error: {type(exc).__name__}")
    if generation == state.generation:
        # A request begun before a reset belongs to the previous test's log, which is gone.
        state.request_log.append(_log_entry(request, resp))
    return resp


def _log_entry(request: web.Request, resp: web.StreamResponse) -> dict[str, Any]:
    key: ApiKey | None = request.get(KEY)
    query = request.query
    return {
        "ts": iso(time.time()),
        "method": request.method,
        "path": request.path,
        "query": {k: (v[0] if len(v) == 1 else v) for k in query for v in [query.getall(k)]},
        "status": None if request.get(ABORTED) else resp.status,
        "headers": {k: ("***" if k.lower() in _REDACTED_HEADERS else v) for k, v in request.headers.items()},
        "fault": request.get(FAULT),
        "body_bytes": request.get(BODY_BYTES, request.content_length or 0),
        "user": key.user if key else None,
    }


# --- faults ----------------------------------------------------------------------------------


def _flow_of_request(state: EmulatorState, request: web.Request) -> str | None:
    info = request.match_info
    if "exec_id" in info:
        ex = state.executions.get(info["exec_id"])
        return ex.flow.id if ex and ex.flow else None
    if "doc_id" in info:
        doc = state.documents.get(info["doc_id"])
        return doc.flow_id if doc else None
    if "flow" in info:
        return info["flow"]
    if request.path.startswith("/api/v1/flows/executions"):
        ref = request.query.get("flowId") or request.query.get("flow")
        flow = state.find_flow(ref) if ref else None
        return flow.id if flow else ref
    if "callback_id" in info:
        ex = state.executions.get(state.callbacks.get(info["callback_id"], ""))
        return ex.flow.id if ex and ex.flow else None
    return None


async def _abort(request: web.Request) -> web.Response:
    """Drop the connection with a TCP reset and no answer."""
    await request.read()
    request[ABORTED] = True
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 makes close() send RST: the client sees "connection reset by peer".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp's attempt to write this to the dead transport is swallowed as a ConnectionError.
    return web.Response(status=500)


async def _send_truncated(request: web.Request, resp: web.Response, limit: int | None) -> web.StreamResponse:
    body = resp.body if isinstance(resp.body, bytes) else b""
    cut = len(body) // 2 if limit is None else min(limit, len(body))
    out = web.StreamResponse(status=resp.status, headers=resp.headers)
    out.content_length = len(body)
    await out.prepare(request)
    await out.write(body[:cut])
    close_after_partial(request)
    return out


def close_after_partial(request: web.Request) -> None:
    request[TRUNCATED] = True
    if request.transport is not None:
        request.transport.close()


def _replace_status(data: Any, value: str) -> Any:
    if isinstance(data, dict) and "status" in data:
        data["status"] = value
    elif isinstance(data, list):
        for item in data:
            _replace_status(item, value)
    return data


def _status_answer(request: web.Request, fault: Fault) -> web.Response:
    status = fault.status or 500
    headers = {}
    if fault.retry_after is not None:
        ra = fault.retry_after
        headers["Retry-After"] = str(int(ra)) if isinstance(ra, float) and ra.is_integer() else str(ra)
    message = fault.body if isinstance(fault.body, str) else f"Injected fault: HTTP {status}"
    return error_response(request, status, message, headers)


def _html_answer(fault: Fault) -> web.Response:
    status = fault.status or 502
    reason = reason_phrase(status)
    page = (
        fault.body
        if isinstance(fault.body, str)
        else (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
    )
    return web.Response(status=status, text=page, content_type="text/html")


async def _answer_instead(request: web.Request, fault: Fault) -> web.StreamResponse:
    """The faults that replace the answer (they need no real one)."""
    if fault.kind == "status":
        return _status_answer(request, fault)
    if fault.kind == "html":
        return _html_answer(fault)
    if fault.kind == "invalid_json":
        text = (
            fault.body
            if isinstance(fault.body, str)
            else '{"id": "emulator", "status": "Running", "percentage": '
        )
        return web.Response(status=200, text=text, content_type="application/json")
    if fault.kind == "reset":
        return await _abort(request)
    raise AssertionError(f"fault kind {fault.kind!r} needs the real answer")


async def _alter(request: web.Request, fault: Fault, resp: web.StreamResponse) -> web.StreamResponse:
    """The faults that change the real answer."""
    if (
        fault.kind == "unknown_status"
        and isinstance(resp, web.Response)
        and resp.content_type == "application/json"
    ):
        value = fault.body if isinstance(fault.body, str) else "Archived"
        assert isinstance(resp.body, bytes)
        data = _replace_status(json.loads(resp.body), value)
        return web.json_response(data, status=resp.status, headers={"X-Emulator-Fault": "unknown_status"})
    if fault.kind == "truncate" and isinstance(resp, web.Response) and not resp.prepared:
        return await _send_truncated(request, resp, fault.body if isinstance(fault.body, int) else None)
    if fault.kind in ("unknown_status", "truncate"):
        return resp
    return await _answer_instead(request, fault)


async def _carry_out_later(
    state: EmulatorState, request: web.Request, handler: Handler, delay: float, generation: int
) -> None:
    """Run the request's handler ``delay`` seconds after its client got the fault's answer."""
    await asyncio.sleep(delay)
    if generation != state.generation or state.closing:
        return  # a reset in between: the previous test's server state is gone
    try:
        await handler(request)  # its answer has nobody to go to
    except Exception as exc:
        state.record_error(request.method, request.path_qs, exc)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_emulator"):
        return await handler(request)
    state = state_of(request)
    delay, fault = state.faults.pick(request.method, request.path, _flow_of_request(state, request))
    if delay:
        request[FAULT] = "latency"
        await asyncio.sleep(delay)
    if fault is None:
        return await handler(request)
    request[FAULT] = fault.kind
    if fault.when == "delayed":
        await request.read()  # the handler runs after the answer: the body must be read now
        state.defer(_carry_out_later(state, request, handler, fault.delay or 0.0, state.generation))
        return await _answer_instead(request, fault)
    if fault.kind not in ("unknown_status", "truncate") and fault.when == "before":
        return await _answer_instead(request, fault)
    if fault.kind == "truncate":
        request[TRUNCATE_AT] = fault.body if isinstance(fault.body, int) else -1
    resp = await handler(request)
    if request.get(TRUNCATED):  # the content route already cut its stream
        return resp
    return await _alter(request, fault, resp)


# --- error bodies and API keys ---------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        message = f"{exc.reason}: {request.method} {request.path}" if exc.status in (404, 405) else exc.reason
        return error_response(request, exc.status, message, keep)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _PUBLIC.match(request.path):
        return await handler(request)
    state = state_of(request)
    value = request.headers.get("X-API-Key")  # CIMultiDict: any header-name case works
    key = state.keys.get(value) if value else None
    if value is None:
        raise ApiError(401, "Missing X-API-Key header")
    if key is None or key.revoked:
        # Never echo the key: the message must not leak what was sent.
        raise ApiError(401, "Invalid or removed API key")
    request[KEY] = key
    if _ADMIN_ONLY.match(request.path) and key.role != "admin":
        raise ApiError(403, f"User {key.user!r} lacks the administrator rights for {request.path}")
    return await handler(request)


MIDDLEWARES = [log_middleware, fault_middleware, error_middleware, surface_middleware, auth_middleware]
