"""aiohttp routes of the emulator: the Smart Flows API under /api/v1 plus /_emulator admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from airflow_provider_smartflows.emulator.content import extension_for
from airflow_provider_smartflows.emulator.scenario import ApiKey, ScenarioError
from airflow_provider_smartflows.emulator.state import (
    NOT_FINAL,
    DocumentRecord,
    EmulatorState,
    Execution,
    iso,
)

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.faults import Fault

STATE = web.AppKey("state", EmulatorState)
# Per-request storage shared by the middlewares and handlers.
KEY = web.RequestKey("key", ApiKey)
FAULT = web.RequestKey("fault", str)
ABORTED = web.RequestKey("aborted", bool)
TRUNCATED = web.RequestKey("truncated", bool)
TRUNCATE_AT = web.RequestKey("truncate_at", int)
BODY_BYTES = web.RequestKey("body_bytes", int)
CLIENT_MAX_SIZE = 10 * 1024 * 1024
LONG_POLL_CAP = 300.0
VERSION = "4.0.0-emulator"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes that need no key: the real server leaves its API docs and the callback open
# (the callback is called by third parties such as e-signature services).
_PUBLIC = re.compile(r"^(/v3/api-docs|/swagger-ui(/.*|\.html)?|/api/v1/flows/callback/[^/]+)$")
# Admin-only real route, so that 403 is testable: listing the project's users.
_ADMIN_ONLY = re.compile(r"^(/_emulator(/.*)?|/api/v1/users)$")
_REDACTED_HEADERS = {"x-api-key", "authorization", "cookie"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = {
        "timestamp": iso(time.time()),
        "status": status,
        "error": reason,
        "message": message,
        "path": request.path,
    }
    return web.json_response(body, status=status, headers=headers)


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE]


# --- middlewares ---------------------------------------------------------------------------


@web.middleware
async def log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: records every request (key values redacted) and turns crashes into JSON 500."""
    state = _state(request)
    generation = state.generation
    try:
        resp = await handler(request)
    except Exception as exc:
        resp = error_response(request, 500, f"Internal emulator error: {type(exc).__name__}")
    if generation != state.generation:
        # Began before a reset: it belongs to the previous test's log, which is gone.
        return resp
    key: ApiKey | None = request.get(KEY)
    state.request_log.append(
        {
            "ts": iso(time.time()),
            "method": request.method,
            "path": request.path,
            "query": {
                k: (v[0] if len(v) == 1 else v) for k in request.query for v in [request.query.getall(k)]
            },
            "status": None if request.get(ABORTED) else resp.status,
            "headers": {
                k: ("***" if k.lower() in _REDACTED_HEADERS else v) for k, v in request.headers.items()
            },
            "fault": request.get(FAULT),
            "body_bytes": request.get(BODY_BYTES, request.content_length or 0),
            "user": key.user if key else None,
        }
    )
    return resp


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
        ex_id = state.callbacks.get(info["callback_id"], "")
        ex = state.executions.get(ex_id)
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
    _close_after_partial(request)
    return out


def _close_after_partial(request: web.Request) -> None:
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


async def _apply_fault(
    request: web.Request, fault: Fault, resp: web.StreamResponse | None
) -> web.StreamResponse:
    if fault.kind == "status":
        status = fault.status or 500
        headers = {}
        if fault.retry_after is not None:
            ra = fault.retry_after
            headers["Retry-After"] = str(int(ra)) if isinstance(ra, float) and ra.is_integer() else str(ra)
        message = fault.body if isinstance(fault.body, str) else f"Injected fault: HTTP {status}"
        return error_response(request, status, message, headers)
    if fault.kind == "html":
        status = fault.status or 502
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        page = (
            fault.body
            if isinstance(fault.body, str)
            else (
                f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
        )
        return web.Response(status=status, text=page, content_type="text/html")
    if fault.kind == "invalid_json":
        text = (
            fault.body
            if isinstance(fault.body, str)
            else '{"id": "emulator", "status": "Running", "percentage": '
        )
        return web.Response(status=200, text=text, content_type="application/json")
    if fault.kind == "reset":
        return await _abort(request)
    if resp is None:  # the remaining kinds need the real answer first
        raise AssertionError(fault.kind)
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
    return resp


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_emulator"):
        return await handler(request)
    state = _state(request)
    delay, fault = state.faults.pick(request.method, request.path, _flow_of_request(state, request))
    if delay:
        request[FAULT] = "latency"
        await asyncio.sleep(delay)
    if fault is None:
        return await handler(request)
    request[FAULT] = fault.kind
    post_kinds = ("unknown_status", "truncate")
    if fault.kind not in post_kinds and fault.when == "before":
        return await _apply_fault(request, fault, None)
    if fault.kind == "truncate":
        request[TRUNCATE_AT] = fault.body if isinstance(fault.body, int) else -1
    resp = await handler(request)
    if request.get(TRUNCATED):  # the content route already cut its stream
        return resp
    return await _apply_fault(request, fault, resp)


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
    state = _state(request)
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


# --- helpers -------------------------------------------------------------------------------


def _execution(request: web.Request) -> Execution:
    ex = _state(request).executions.get(request.match_info["exec_id"])
    if ex is None:
        raise ApiError(404, f"Flow execution {request.match_info['exec_id']} not found")
    return ex


def _document(request: web.Request) -> DocumentRecord:
    doc = _state(request).documents.get(request.match_info["doc_id"])
    if doc is None:
        raise ApiError(404, f"Document {request.match_info['doc_id']} not found")
    return doc


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    request[BODY_BYTES] = len(raw)
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc


def _validate_dynamics(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Dynamics input is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(
            400, "Dynamics input must be a JSON object with id, entity, userId, organizationUniqueName"
        )
    ids = data.get("id")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ApiError(400, "Dynamics input field 'id' must be a non-empty list of record id strings")
    if not isinstance(data.get("entity"), str) or not data["entity"]:
        raise ApiError(400, "Dynamics input field 'entity' must be a non-empty string")
    for name in ("userId", "organizationUniqueName"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ApiError(400, f"Dynamics input field '{name}' must be a string")
    summary = [f"  entity: {data['entity']}", f"  records: {', '.join(ids)}"]
    summary += [f"  {n}: {data[n]}" for n in ("userId", "organizationUniqueName") if data.get(n)]
    return data, summary


_XML_DECL_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _validate_xml(raw: bytes) -> tuple[str, list[str]]:
    # Like defusedxml: no DTDs at all, so no entity expansion bombs or external entities.
    if _XML_DECL_RE.search(raw):
        raise ApiError(400, "XML input must not contain DOCTYPE or ENTITY declarations")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ApiError(400, f"XML input is not well-formed: {exc}") from exc
    summary = [f"  <{root.tag}>"]
    for elem in root.iter():
        text = (elem.text or "").strip()
        if text and elem is not root:
            summary.append(f"  {elem.tag}: {text}")
        if len(summary) > 30:
            break
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text, summary


_EXPECTS = {
    "none": "no input data (an empty body)",
    "dynamics": "Dynamics/Sugar JSON input (Content-Type: application/json)",
    "xml": "XML input (Content-Type: application/xml)",
}


async def _read_start_input(request: web.Request) -> tuple[str, Any, list[str]]:
    raw = await request.read()
    request[BODY_BYTES] = len(raw)
    if not raw.strip():
        return "none", None, ["  (none)"]
    ctype = request.content_type.lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        data, summary = _validate_dynamics(raw)
        return "dynamics", data, summary
    if ctype in ("application/xml", "text/xml") or ctype.endswith("+xml"):
        text, summary = _validate_xml(raw)
        return "xml", text, summary
    raise ApiError(
        415, f"Unsupported Content-Type {ctype!r}: send application/json, application/xml or no body"
    )


# --- API routes ----------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/api/v1/users/me")
async def users_me(request: web.Request) -> web.Response:
    """The user owning the API key."""
    key: ApiKey = request[KEY]
    return web.json_response(
        {
            "id": key.user,
            "displayName": key.user,
            "type": "user",
            "role": key.role,
            "email": f"{key.user}@emulator.invalid",
            "languageCode": "en",
        }
    )


@routes.get("/api/v1/users")
async def users_list(request: web.Request) -> web.Response:
    """All users of the project (admin only)."""
    users = {k.user: k.role for k in _state(request).keys.values()}
    return web.json_response(
        [{"id": u, "displayName": u, "type": "user", "role": r} for u, r in users.items()]
    )


@routes.get("/api/v1/system/info")
async def system_info(request: web.Request) -> web.Response:
    """Server and project information."""
    key: ApiKey = request[KEY]
    return web.json_response(
        {"role": key.role, "version": VERSION, "displayName": "Smart Flows emulator", "projectId": "emulator"}
    )


def _flow_json(flow: Any) -> dict[str, Any]:
    return {
        "id": flow.id,
        "displayName": flow.display_name,
        "type": "flow",
        "description": flow.description,
        "input": flow.input,
    }


@routes.post("/api/v1/flows/executions")
async def start_execution(request: web.Request) -> web.Response:
    """Start a flow execution (no body, Dynamics JSON or XML); returns FlowExecutionProgress."""
    return await _start(request, request.query.get("flowId"), skip_user_input=False)


@routes.post("/api/v1/flows/executions/start")
async def start_execution_defaults(request: web.Request) -> web.Response:
    """Start a flow (by id or name) with default values, skipping user input; returns FlowExecution."""
    ref = request.query.get("flow")
    if not ref:
        raise ApiError(400, "Query parameter 'flow' (flow id or name) is required")
    return await _start(request, ref, skip_user_input=True)


async def _start(request: web.Request, flow_ref: str | None, *, skip_user_input: bool) -> web.Response:
    state = _state(request)
    flow = None
    if flow_ref:
        flow = state.find_flow(flow_ref)
        if flow is None:
            raise ApiError(404, f"Flow {flow_ref} not found")
    kind, data, summary = await _read_start_input(request)
    if flow is not None and flow.input != "any" and flow.input != kind:
        raise ApiError(
            400, f"Flow {flow.id!r} expects {_EXPECTS[flow.input]}, got {_EXPECTS[kind].split(' (')[0]}"
        )
    ex = state.start_execution(
        flow=flow,
        key=request[KEY],
        input_kind=kind,
        input_data=data,
        input_summary=summary,
        dataset_id=request.query.get("datasetId"),
        priority=request.query.get("priority"),
        skip_user_input=skip_user_input,
    )
    if skip_user_input:
        return web.json_response(state.execution_json(ex))
    return web.json_response(state.progress_json(ex))


_SORTABLE = {"id", "createdAt", "modifiedAt", "status", "priority", "flow"}
_FILTERABLE = {"id", "status", "flow", "createdBy", "priority"}


def _list_executions(request: web.Request, executions: list[Execution]) -> web.Response:
    state = _state(request)
    q = request.query
    try:
        page = int(q.get("page", "0"))
        size = int(q.get("size", "20"))
    except ValueError as exc:
        raise ApiError(400, "Query parameters 'page' and 'size' must be integers") from exc
    if page < 0 or not 1 <= size <= 2000:
        raise ApiError(400, "Query parameter 'page' must be >= 0 and 'size' between 1 and 2000")
    key: ApiKey = request[KEY]
    if key.role != "admin":  # a plain user sees only the executions it started
        executions = [ex for ex in executions if ex.created_by.user == key.user]
    items = [state.execution_json(ex) for ex in executions]

    def field_value(item: dict[str, Any], name: str) -> str:
        value = item.get(name)
        if isinstance(value, dict):
            value = value.get("id")
        return "" if value is None else str(value)

    for flt in q.getall("filter", []):
        name, sep, value = flt.partition(":")
        if not sep or name not in _FILTERABLE:
            raise ApiError(
                400, f"Bad filter {flt!r}: use field:value with field one of {', '.join(sorted(_FILTERABLE))}"
            )
        items = [i for i in items if field_value(i, name) == value]
    sort = q.get("sort", "createdAt,desc")
    name, _, direction = sort.partition(",")
    if name not in _SORTABLE or direction.lower() not in ("", "asc", "desc"):
        raise ApiError(
            400, f"Bad sort {sort!r}: use field[,asc|desc] with field one of {', '.join(sorted(_SORTABLE))}"
        )
    items.sort(key=lambda i: field_value(i, name), reverse=direction.lower() == "desc")
    return web.json_response(items[page * size : (page + 1) * size])


@routes.get("/api/v1/flows/executions")
async def list_executions(request: web.Request) -> web.Response:
    """Executions (a plain array), paged with page/size, sort=field,dir and filter=field:value."""
    return _list_executions(request, list(_state(request).executions.values()))


@routes.get("/api/v1/flows/executions/{exec_id}")
async def get_execution(request: web.Request) -> web.Response:
    """The full FlowExecution."""
    return web.json_response(_state(request).execution_json(_execution(request)))


@routes.get("/api/v1/flows/executions/{exec_id}/status")
async def get_execution_status(request: web.Request) -> web.Response:
    """The FlowExecution with its status (``output`` names are accepted and ignored)."""
    return web.json_response(_state(request).execution_json(_execution(request)))


@routes.get("/api/v1/flows/executions/{exec_id}/progress")
async def get_progress(request: web.Request) -> web.Response:
    """FlowExecutionProgress; with ``timeout`` (seconds) a long-poll that answers on any change."""
    state = _state(request)
    ex = _execution(request)
    raw_timeout = request.query.get("timeout")
    timeout = 0.0
    if raw_timeout is not None:
        try:
            timeout = min(float(raw_timeout), LONG_POLL_CAP)
        except ValueError as exc:
            raise ApiError(
                400, f"Query parameter 'timeout' must be a number of seconds, got {raw_timeout!r}"
            ) from exc
    # A final execution never changes again: waiting out the timeout would only stall clients.
    if timeout > 0 and state.status(ex).status in NOT_FINAL:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first, _ = state.snapshot(ex)
        ex.long_polls += 1
        try:
            while not ex.removed and not state.closing:
                event = ex.changed
                snap, next_change = state.snapshot(ex)
                remaining = deadline - loop.time()
                if snap != first or remaining <= 0:
                    break
                wait = remaining
                if next_change is not None:
                    # A hair past the boundary, so the recomputed snapshot is the new one.
                    wait = min(remaining, next_change / state.clock.speedup + 0.002)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
        finally:
            ex.long_polls -= 1
    return web.json_response(state.progress_json(ex))


@routes.post("/api/v1/flows/executions/{exec_id}/progress")
async def answer_progress(request: web.Request) -> web.Response:
    """Answer a UserInput form (JSON object of form keys) or pick the flow of a SelectFlow run."""
    state = _state(request)
    ex = _execution(request)
    answers = await _json_body(request)
    if not isinstance(answers, dict):
        raise ApiError(400, "The answer must be a JSON object of form keys")
    snap = state.status(ex)
    if snap.status == "SelectFlow":
        ref = answers.get("flowId")
        flow = state.find_flow(ref) if isinstance(ref, str) else None
        if flow is None:
            raise ApiError(400, f"Field 'flowId' must name a known flow, got {ref!r}")
        state.select_flow(ex, flow)
        return web.json_response(state.progress_json(ex))
    if snap.status != "UserInput" or ex.flow is None:
        raise ApiError(409, f"Flow execution {ex.id} is {snap.status}, not waiting for user input")
    form = ex.flow.user_input_form
    missing = sorted(set(form) - set(answers))
    unknown = sorted(set(answers) - set(form))
    problems = []
    if missing:
        problems.append(f"missing field(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    checks: dict[str, Callable[[Any], bool]] = {
        "boolean": lambda v: isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    }
    for key, kind in form.items():
        if key in answers and not checks[kind](answers[key]):
            problems.append(f"field {key!r} must be a {kind}")
    if problems:
        raise ApiError(400, "Bad form answer: " + "; ".join(problems))
    state.answer(ex, answers)
    return web.json_response(state.progress_json(ex))


@routes.delete("/api/v1/flows/executions/{exec_id}")
@routes.delete("/api/v1/flows/executions/{exec_id}/progress")
async def cancel_execution(request: web.Request) -> web.Response:
    """Cancel; an execution already final is left as it is (200 with its progress)."""
    state = _state(request)
    ex = _execution(request)
    state.cancel(ex)
    return web.json_response(state.progress_json(ex))


@routes.get("/api/v1/flows/callback/{callback_id}")
@routes.post("/api/v1/flows/callback/{callback_id}")
async def callback(request: web.Request) -> web.Response:
    """Resume a Waiting execution (no API key needed)."""
    state = _state(request)
    await request.read()
    ex = state.executions.get(state.callbacks.get(request.match_info["callback_id"], ""))
    wanted = request.query.get("executionId")
    if ex is None or (wanted and wanted != ex.id):
        raise ApiError(404, f"Callback {request.match_info['callback_id']} not found")
    snap = state.status(ex)
    if snap.status != "Waiting":
        raise ApiError(409, f"Flow execution {ex.id} is {snap.status}, not Waiting")
    state.release(ex)
    return web.Response(text="OK")


@routes.get("/api/v1/flows")
async def list_flows(request: web.Request) -> web.Response:
    """All flows (a plain array)."""
    return web.json_response([_flow_json(f) for f in _state(request).flows.values()])


@routes.get("/api/v1/flows/{flow}")
async def get_flow(request: web.Request) -> web.Response:
    """One flow, by id or display name."""
    flow = _state(request).find_flow(request.match_info["flow"])
    if flow is None:
        raise ApiError(404, f"Flow {request.match_info['flow']} not found")
    return web.json_response(_flow_json(flow))


@routes.get("/api/v1/flows/{flow}/executions")
async def list_flow_executions(request: web.Request) -> web.Response:
    """The executions of one flow (paged like /flows/executions)."""
    state = _state(request)
    flow = state.find_flow(request.match_info["flow"])
    if flow is None:
        raise ApiError(404, f"Flow {request.match_info['flow']} not found")
    return _list_executions(
        request, [ex for ex in state.executions.values() if ex.flow and ex.flow.id == flow.id]
    )


@routes.get("/api/v1/documents/{doc_id}")
async def get_document(request: web.Request) -> web.Response:
    """Document metadata."""
    state = _state(request)
    doc = _document(request)
    ex = state.executions.get(doc.execution_id)
    name = ex.flow.display_name if ex and ex.flow else ""
    return web.json_response(doc.metadata(name))


def _content_disposition(doc: DocumentRecord) -> str:
    filename = f"{doc.display_name}.{extension_for(doc.content_type)}"
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


@routes.get("/api/v1/documents/{doc_id}/content", allow_head=False)
async def get_document_content(request: web.Request) -> web.StreamResponse:
    """The document's bytes, streamed in chunks with Content-Length and Content-Disposition."""
    doc = _document(request)
    resp = web.StreamResponse(headers={"Content-Disposition": _content_disposition(doc)})
    resp.content_type = doc.content_type
    resp.content_length = doc.content.size
    await resp.prepare(request)
    limit: int | None = request.get(TRUNCATE_AT)
    if limit is not None and limit < 0:
        limit = doc.content.size // 2
    sent = 0
    for chunk in doc.content.chunks():
        if limit is not None and sent + len(chunk) >= limit:
            await resp.write(chunk[: limit - sent])
            _close_after_partial(request)
            return resp
        await resp.write(chunk)
        sent += len(chunk)
    await resp.write_eof()
    return resp


@routes.get("/v3/api-docs")
async def api_docs(request: web.Request) -> web.Response:
    """OpenAPI 3 description of the emulator's routes."""
    paths: dict[str, dict[str, Any]] = {}
    for route in request.app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        doc = (getattr(route.handler, "__doc__", None) or "").strip().splitlines()
        op: dict[str, Any] = {
            "summary": doc[0] if doc else "",
            "responses": {"200": {"description": "OK"}},
        }
        params = re.findall(r"{(\w+)}", path)
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
        if path.startswith("/_emulator"):
            op["tags"] = ["emulator admin"]
        paths.setdefault(path, {})[route.method.lower()] = op
    return web.json_response(
        {
            "openapi": "3.0.3",
            "info": {"title": "Smart Flows API (emulator)", "version": VERSION},
            "paths": paths,
            "components": {
                "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            },
            "security": [{"apiKey": []}],
        }
    )


@routes.get("/swagger-ui/")
@routes.get("/swagger-ui.html")
async def swagger_ui(request: web.Request) -> web.Response:
    """A small HTML page listing the routes (the real Swagger UI needs internet assets)."""
    rows = "".join(
        f"<tr><td>{r.method}</td><td><code>{r.resource.canonical}</code></td></tr>"
        for r in request.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    )
    page = (
        "<!DOCTYPE html><html><head><title>Smart Flows emulator API</title></head><body>"
        '<h1>Smart Flows emulator API</h1><p>OpenAPI document: <a href="/v3/api-docs">/v3/api-docs</a>. '
        "Authenticate with the <code>X-API-Key</code> header.</p>"
        f"<table>{rows}</table></body></html>"
    )
    return web.Response(text=page, content_type="text/html")


# --- admin routes ------------------------------------------------------------------------


@routes.get("/_emulator/requests")
async def admin_requests(request: web.Request) -> web.Response:
    """The request log (newest last)."""
    return web.json_response(_state(request).request_log)


@routes.delete("/_emulator/requests")
async def admin_clear_requests(request: web.Request) -> web.Response:
    """Empty the request log."""
    _state(request).request_log.clear()
    return web.json_response({"cleared": True})


@routes.get("/_emulator/faults")
async def admin_faults(request: web.Request) -> web.Response:
    """The active fault rules with their counters."""
    return web.json_response(_state(request).faults.list())


@routes.post("/_emulator/faults")
async def admin_add_fault(request: web.Request) -> web.Response:
    """Add a fault rule: JSON of add_fault's arguments plus "kind"."""
    body = await _json_body(request)
    try:
        fault = _state(request).faults.add(body)
    except ScenarioError as exc:
        raise ApiError(400, str(exc)) from exc
    return web.json_response({"id": fault.id}, status=201)


@routes.delete("/_emulator/faults")
async def admin_clear_faults(request: web.Request) -> web.Response:
    """Remove every fault rule."""
    _state(request).faults.clear()
    return web.json_response({"cleared": True})


@routes.get("/_emulator/flows")
async def admin_flows(request: web.Request) -> web.Response:
    """The flows (emulator view)."""
    return web.json_response([_flow_json(f) for f in _state(request).flows.values()])


@routes.post("/_emulator/flows")
async def admin_add_flow(request: web.Request) -> web.Response:
    """Add (or replace) a flow given in the scenario-file format."""
    body = await _json_body(request)
    try:
        flow_id = _state(request).add_flow(body)
    except ScenarioError as exc:
        raise ApiError(400, str(exc)) from exc
    return web.json_response({"id": flow_id}, status=201)


@routes.post("/_emulator/reset")
async def admin_reset(request: web.Request) -> web.Response:
    """Back to the start: executions, documents, log, faults, speed-up, flows."""
    _state(request).reset()
    return web.json_response({"reset": True})


@routes.put("/_emulator/speedup")
async def admin_speedup(request: web.Request) -> web.Response:
    """Set the speed-up factor: {"speedup": x}."""
    body = await _json_body(request)
    value = body.get("speedup") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ApiError(400, "Field 'speedup' must be a number > 0")
    _state(request).set_speedup(float(value))
    return web.json_response({"speedup": float(value)})


@routes.get("/_emulator/executions")
async def admin_executions(request: web.Request) -> web.Response:
    """Every execution (emulator view)."""
    state = _state(request)
    return web.json_response([state.execution_summary(ex) for ex in state.executions.values()])


@routes.post("/_emulator/executions/{exec_id}/release")
async def admin_release(request: web.Request) -> web.Response:
    """Release a Waiting execution, like the callback route."""
    state = _state(request)
    ex = _execution(request)
    if state.status(ex).status != "Waiting":
        raise ApiError(409, f"Flow execution {ex.id} is not Waiting")
    state.release(ex)
    return web.json_response(state.progress_json(ex))


@routes.get("/_emulator/documents/{doc_id}/sha256")
async def admin_document_sha256(request: web.Request) -> web.Response:
    """sha256 and size of the bytes the content route sends."""
    state = _state(request)
    doc = _document(request)
    # Hashing a 1 GiB document takes seconds: keep the loop serving meanwhile.
    digest = await asyncio.to_thread(state.document_sha256, doc)
    return web.json_response({"id": doc.id, "sha256": digest, "size": doc.content.size})


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].closing = True
    for ex in app[STATE].executions.values():
        ex.notify()


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[log_middleware, fault_middleware, error_middleware, auth_middleware],
    )
    app[STATE] = state
    app.add_routes(routes)
    app.on_shutdown.append(_on_shutdown)
    return app
