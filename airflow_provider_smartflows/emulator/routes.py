"""The Smart Flows API under /api/v1, as the emulator serves it (its description: :mod:`.surface`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from airflow_provider_smartflows.emulator.common import (
    KEY,
    TRUNCATE_AT,
    VERSION,
    ApiError,
    document_of,
    execution_of,
    flow_json,
    json_body,
    state_of,
)
from airflow_provider_smartflows.emulator.content import extension_for
from airflow_provider_smartflows.emulator.filtering import matching
from airflow_provider_smartflows.emulator.inputs import EXPECTS, read_start_input
from airflow_provider_smartflows.emulator.listing import (
    FLOW_FIELDS,
    PAGING_PARAMETERS,
    USER_FIELDS,
    list_page,
    page_of,
)
from airflow_provider_smartflows.emulator.middleware import close_after_partial
from airflow_provider_smartflows.emulator.state import NOT_FINAL
from airflow_provider_smartflows.emulator.surface import takes
from airflow_provider_smartflows.emulator.views import execution_json, progress_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_smartflows.emulator.scenario import ApiKey
    from airflow_provider_smartflows.emulator.state import DocumentRecord, EmulatorState, Execution

LONG_POLL_CAP = 300.0

routes = web.RouteTableDef()


# --- users and system ------------------------------------------------------------------------


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
@takes(*PAGING_PARAMETERS)
async def users_list(request: web.Request) -> web.Response:
    """The users of the project (admin only), paged like every list."""
    state = state_of(request)
    users = list({k.user: k.role for k in state.keys.values()}.items())
    page = page_of(users, request.query, USER_FIELDS, cap=state.api.page_cap)
    return web.json_response([{"id": u, "displayName": u, "type": "user", "role": r} for u, r in page])


@routes.get("/api/v1/system/info")
async def system_info(request: web.Request) -> web.Response:
    """Server and project information."""
    key: ApiKey = request[KEY]
    return web.json_response(
        {"role": key.role, "version": VERSION, "displayName": "Smart Flows emulator", "projectId": "emulator"}
    )


# --- starting executions ---------------------------------------------------------------------


@routes.post("/api/v1/flows/executions")
@takes("flowId", "datasetId", "priority")
async def start_execution(request: web.Request) -> web.Response:
    """Start a flow execution (no body, Dynamics JSON or XML); returns FlowExecutionProgress."""
    return await _start(request, request.query.get("flowId"), skip_user_input=False)


@routes.post("/api/v1/flows/executions/start")
@takes("flow")
async def start_execution_defaults(request: web.Request) -> web.Response:
    """Start a flow (by id or name) with default values, skipping user input; returns FlowExecution."""
    ref = request.query.get("flow")
    if not ref:
        raise ApiError(400, "Query parameter 'flow' (flow id or name) is required")
    return await _start(request, ref, skip_user_input=True)


async def _start(request: web.Request, flow_ref: str | None, *, skip_user_input: bool) -> web.Response:
    state = state_of(request)
    flow = None
    if flow_ref:
        flow = state.find_flow(flow_ref)
        if flow is None:
            raise ApiError(404, f"Flow {flow_ref} not found")
    kind, data, summary = await read_start_input(request)
    if flow is not None and flow.input != "any" and flow.input != kind:
        raise ApiError(
            400, f"Flow {flow.id!r} expects {EXPECTS[flow.input]}, got {EXPECTS[kind].split(' (')[0]}"
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
        return web.json_response(execution_json(state, ex))
    return web.json_response(progress_json(state, ex))


# --- reading and listing executions ----------------------------------------------------------


def _listing(request: web.Request, executions: list[Execution]) -> web.Response:
    state = state_of(request)
    page = list_page(state, executions, request.query, request[KEY])
    return web.json_response([execution_json(state, ex) for ex in page])


@routes.get("/api/v1/flows/executions")
@takes(*PAGING_PARAMETERS)
async def list_executions(request: web.Request) -> web.Response:
    """Executions (a plain array), paged with page/size, sort=field,dir and filter=field:value."""
    return _listing(request, list(state_of(request).executions.values()))


@routes.post("/api/v1/flows/executions/filter")
@takes(*PAGING_PARAMETERS)
async def filter_executions(request: web.Request) -> web.Response:
    """Executions selected by a filter-group body (:mod:`.filtering`), paged like /flows/executions."""
    state = state_of(request)
    body = await json_body(request)
    return _listing(request, matching(state, list(state.executions.values()), body))


@routes.get("/api/v1/flows/{flow}/executions")
@takes(*PAGING_PARAMETERS)
async def list_flow_executions(request: web.Request) -> web.Response:
    """The executions of one flow (by id or name), paged like /flows/executions."""
    state = state_of(request)
    flow = state.find_flow(request.match_info["flow"])
    if flow is None:
        raise ApiError(404, f"Flow {request.match_info['flow']} not found")
    return _listing(request, [ex for ex in state.executions.values() if ex.flow and ex.flow.id == flow.id])


@routes.get("/api/v1/flows/executions/{exec_id}")
async def get_execution(request: web.Request) -> web.Response:
    """The full FlowExecution."""
    return web.json_response(execution_json(state_of(request), execution_of(request)))


@routes.get("/api/v1/flows/executions/{exec_id}/status")
@takes("output")
async def get_execution_status(request: web.Request) -> web.Response:
    """The FlowExecution with its status (``output`` names are accepted and ignored)."""
    return web.json_response(execution_json(state_of(request), execution_of(request)))


def _long_poll_timeout(request: web.Request) -> float:
    raw = request.query.get("timeout")
    if raw is None:
        return 0.0
    try:
        return min(float(raw), LONG_POLL_CAP)
    except ValueError as exc:
        raise ApiError(400, f"Query parameter 'timeout' must be a number of seconds, got {raw!r}") from exc


async def _wait_for_change(state: EmulatorState, ex: Execution, timeout: float) -> None:
    """Return when the execution's (status, percentage, message) changes, or after ``timeout``."""
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


@routes.get("/api/v1/flows/executions/{exec_id}/progress")
@takes("timeout")
async def get_progress(request: web.Request) -> web.Response:
    """FlowExecutionProgress; with ``timeout`` (seconds) a long-poll that answers on any change."""
    state = state_of(request)
    ex = execution_of(request)
    timeout = _long_poll_timeout(request)
    # A final execution never changes again: waiting out the timeout would only stall clients.
    if timeout > 0 and state.status(ex).status in NOT_FINAL:
        await _wait_for_change(state, ex, timeout)
        if ex.removed:  # purged (or reset) while the poll was parked: it is gone, like on the server
            raise ApiError(404, f"Flow execution {ex.id} not found")
    return web.json_response(progress_json(state, ex))


# --- changing executions ---------------------------------------------------------------------

_FORM_CHECKS: dict[str, Callable[[Any], bool]] = {
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def _form_problems(form: dict[str, str], answers: dict[str, Any]) -> list[str]:
    problems = []
    missing = sorted(set(form) - set(answers))
    unknown = sorted(set(answers) - set(form))
    if missing:
        problems.append(f"missing field(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    for key, kind in form.items():
        if key in answers and not _FORM_CHECKS[kind](answers[key]):
            problems.append(f"field {key!r} must be a {kind}")
    return problems


@routes.post("/api/v1/flows/executions/{exec_id}/progress")
async def answer_progress(request: web.Request) -> web.Response:
    """Answer a UserInput form (JSON object of form keys) or pick the flow of a SelectFlow run."""
    state = state_of(request)
    ex = execution_of(request)
    answers = await json_body(request)
    if not isinstance(answers, dict):
        raise ApiError(400, "The answer must be a JSON object of form keys")
    snap = state.status(ex)
    if snap.status == "SelectFlow":
        ref = answers.get("flowId")
        flow = state.find_flow(ref) if isinstance(ref, str) else None
        if flow is None:
            raise ApiError(400, f"Field 'flowId' must name a known flow, got {ref!r}")
        state.select_flow(ex, flow)
        return web.json_response(progress_json(state, ex))
    if snap.status != "UserInput" or ex.flow is None:
        raise ApiError(409, f"Flow execution {ex.id} is {snap.status}, not waiting for user input")
    problems = _form_problems(ex.flow.user_input_form, answers)
    if problems:
        raise ApiError(400, "Bad form answer: " + "; ".join(problems))
    state.answer(ex, answers)
    return web.json_response(progress_json(state, ex))


@routes.delete("/api/v1/flows/executions/{exec_id}")
@routes.delete("/api/v1/flows/executions/{exec_id}/progress")
async def cancel_execution(request: web.Request) -> web.Response:
    """Cancel; an execution already final is left as it is (200 with its progress)."""
    state = state_of(request)
    ex = execution_of(request)
    state.cancel(ex)
    return web.json_response(progress_json(state, ex))


@routes.get("/api/v1/flows/callback/{callback_id}")
@routes.post("/api/v1/flows/callback/{callback_id}")
@takes("executionId")
async def callback(request: web.Request) -> web.Response:
    """Resume a Waiting execution (no API key needed); a body is kept as the stage's input."""
    state = state_of(request)
    payload = await _callback_payload(request)
    callback_id = request.match_info["callback_id"]
    # executionId picks the run (a flow may name one callback id for all its executions).
    ex = state.executions.get(request.query.get("executionId") or state.callbacks.get(callback_id, ""))
    if ex is None or ex.callback_id != callback_id:
        wanted = request.query.get("executionId")
        raise ApiError(
            404, f"Callback {callback_id} not found" + (f" for execution {wanted}" if wanted else "")
        )
    snap = state.status(ex)
    if snap.status != "Waiting":
        raise ApiError(409, f"Flow execution {ex.id} is {snap.status}, not Waiting")
    state.release(ex, payload)
    return web.Response(text="OK")


async def _callback_payload(request: web.Request) -> Any:
    """A callback's body: JSON by value when it parses, else its text; None when empty."""
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


# --- flows and documents ---------------------------------------------------------------------


@routes.get("/api/v1/flows")
@takes(*PAGING_PARAMETERS)
async def list_flows(request: web.Request) -> web.Response:
    """The flows (a plain array), paged like every list."""
    state = state_of(request)
    page = page_of(list(state.flows.values()), request.query, FLOW_FIELDS, cap=state.api.page_cap)
    return web.json_response([flow_json(f) for f in page])


@routes.get("/api/v1/flows/{flow}")
async def get_flow(request: web.Request) -> web.Response:
    """One flow, by id or display name."""
    flow = state_of(request).find_flow(request.match_info["flow"])
    if flow is None:
        raise ApiError(404, f"Flow {request.match_info['flow']} not found")
    return web.json_response(flow_json(flow))


@routes.get("/api/v1/documents/{doc_id}")
async def get_document(request: web.Request) -> web.Response:
    """Document metadata."""
    state = state_of(request)
    doc = document_of(request)
    ex = state.executions.get(doc.execution_id)
    name = ex.flow.display_name if ex and ex.flow else ""
    return web.json_response(doc.metadata(name))


def _content_disposition(doc: DocumentRecord) -> str:
    # A type without a known extension keeps the ".bin" the emulator has always sent.
    filename = f"{doc.display_name}{extension_for(doc.content_type) or '.bin'}"
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


@routes.get("/api/v1/documents/{doc_id}/content", allow_head=False)
async def get_document_content(request: web.Request) -> web.StreamResponse:
    """The document's bytes, streamed in chunks with Content-Length and Content-Disposition."""
    doc = document_of(request)
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
            close_after_partial(request)
            return resp
        await resp.write(chunk)
        sent += len(chunk)
    await resp.write_eof()
    return resp
