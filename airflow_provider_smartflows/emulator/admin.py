"""The /_emulator admin routes: what a test in another process needs (admin key; never faulted)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from airflow_provider_smartflows.emulator.common import (
    ApiError,
    document_of,
    execution_of,
    flow_json,
    json_body,
    state_of,
)
from airflow_provider_smartflows.emulator.description import route_names
from airflow_provider_smartflows.emulator.scenario import ApiKey, ScenarioError
from airflow_provider_smartflows.emulator.surface import ApiSurface
from airflow_provider_smartflows.emulator.views import execution_summary, progress_json

admin_routes = web.RouteTableDef()


@admin_routes.get("/_emulator/requests")
async def admin_requests(request: web.Request) -> web.Response:
    """The request log (newest last)."""
    return web.json_response(state_of(request).request_log)


@admin_routes.delete("/_emulator/requests")
async def admin_clear_requests(request: web.Request) -> web.Response:
    """Empty the request log."""
    state_of(request).request_log.clear()
    return web.json_response({"cleared": True})


@admin_routes.get("/_emulator/errors")
async def admin_errors(request: web.Request) -> web.Response:
    """The emulator's own errors (unexpected handler exceptions with tracebacks), oldest first."""
    return web.json_response(state_of(request).errors)


@admin_routes.delete("/_emulator/errors")
async def admin_clear_errors(request: web.Request) -> web.Response:
    """Forget the recorded emulator errors."""
    state_of(request).errors.clear()
    return web.json_response({"cleared": True})


@admin_routes.post("/_emulator/crash")
async def admin_crash(request: web.Request) -> web.Response:
    """Raise inside a handler on purpose: shows that emulator bugs are recorded and reported."""
    body = await json_body(request)
    message = body.get("message") if isinstance(body, dict) else None
    raise RuntimeError(message if isinstance(message, str) else "crash requested through /_emulator/crash")


@admin_routes.get("/_emulator/faults")
async def admin_faults(request: web.Request) -> web.Response:
    """The active fault rules with their counters."""
    return web.json_response(state_of(request).faults.list())


@admin_routes.post("/_emulator/faults")
async def admin_add_fault(request: web.Request) -> web.Response:
    """Add a fault rule: JSON of add_fault's arguments plus "kind"."""
    body = await json_body(request)
    try:
        fault = state_of(request).faults.add(body)
    except ScenarioError as exc:
        raise ApiError(400, str(exc)) from exc
    return web.json_response({"id": fault.id}, status=201)


@admin_routes.delete("/_emulator/faults")
async def admin_clear_faults(request: web.Request) -> web.Response:
    """Remove every fault rule."""
    state_of(request).faults.clear()
    return web.json_response({"cleared": True})


@admin_routes.post("/_emulator/deferred/wait")
async def admin_wait_deferred(request: web.Request) -> web.Response:
    """Wait (up to {"timeout": s}, default 30) until every `delayed` fault's work has run."""
    body = await json_body(request)
    timeout = body.get("timeout", 30) if isinstance(body, dict) else 30
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ApiError(400, "Field 'timeout' must be a number of seconds >= 0")
    pending = await state_of(request).wait_deferred(float(timeout))
    return web.json_response({"pending": pending})


@admin_routes.get("/_emulator/flows")
async def admin_flows(request: web.Request) -> web.Response:
    """The flows (emulator view)."""
    return web.json_response([flow_json(f) for f in state_of(request).flows.values()])


@admin_routes.post("/_emulator/flows")
async def admin_add_flow(request: web.Request) -> web.Response:
    """Add (or replace) a flow given in the scenario-file format."""
    body = await json_body(request)
    try:
        flow_id = state_of(request).add_flow(body)
    except ScenarioError as exc:
        raise ApiError(400, str(exc)) from exc
    return web.json_response({"id": flow_id}, status=201)


@admin_routes.post("/_emulator/reset")
async def admin_reset(request: web.Request) -> web.Response:
    """Back to the start: executions, documents, log, faults, speed-up, flows."""
    state_of(request).reset()
    return web.json_response({"reset": True})


@admin_routes.put("/_emulator/speedup")
async def admin_speedup(request: web.Request) -> web.Response:
    """Set the speed-up factor: {"speedup": x}."""
    body = await json_body(request)
    value = body.get("speedup") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ApiError(400, "Field 'speedup' must be a number > 0")
    state_of(request).set_speedup(float(value))
    return web.json_response({"speedup": float(value)})


@admin_routes.get("/_emulator/executions")
async def admin_executions(request: web.Request) -> web.Response:
    """Every execution (emulator view)."""
    state = state_of(request)
    return web.json_response([execution_summary(state, ex) for ex in state.executions.values()])


@admin_routes.post("/_emulator/executions/start-as")
async def admin_start_as(request: web.Request) -> web.Response:
    """Start an execution as another user, as the CRM plug-in or the flow execution panel would:
    {"flow": id or name, "user": "crm.user"} (user default "crm.user"); no input, user input skipped."""
    state = state_of(request)
    body = await json_body(request)
    body = body if isinstance(body, dict) else {}
    flow, user = body.get("flow"), body.get("user", "crm.user")
    if not isinstance(user, str) or not user:
        raise ApiError(400, "Field 'user' must be a non-empty user id")
    found = state.find_flow(flow) if isinstance(flow, str) else None
    if found is None:
        raise ApiError(404, f"Flow {flow!r} not found")
    ex = state.start_execution(
        flow=found,
        key=ApiKey(key="", user=user, role="user"),
        input_kind="none",
        input_data=None,
        input_summary=["  (none)"],
        dataset_id=None,
        priority=None,
        skip_user_input=True,
    )
    return web.json_response(execution_summary(state, ex), status=201)


@admin_routes.post("/_emulator/executions/{exec_id}/release")
async def admin_release(request: web.Request) -> web.Response:
    """Release a Waiting execution, like the callback route."""
    state = state_of(request)
    ex = execution_of(request)
    if state.status(ex).status != "Waiting":
        raise ApiError(409, f"Flow execution {ex.id} is not Waiting")
    state.release(ex)
    return web.json_response(progress_json(state, ex))


@admin_routes.delete("/_emulator/executions/{exec_id}")
async def admin_purge_execution(request: web.Request) -> web.Response:
    """Purge an execution and its documents, as the server's clean-up does (then they answer 404)."""
    ex = execution_of(request)
    state_of(request).purge_execution(ex)
    return web.json_response({"purged": ex.id})


@admin_routes.delete("/_emulator/documents/{doc_id}")
async def admin_purge_document(request: web.Request) -> web.Response:
    """Purge one document, as the server's clean-up does (then it answers 404)."""
    doc = document_of(request)
    state_of(request).purge_document(doc)
    return web.json_response({"purged": doc.id})


@admin_routes.get("/_emulator/documents/{doc_id}/sha256")
async def admin_document_sha256(request: web.Request) -> web.Response:
    """sha256 and size of the bytes the content route sends."""
    state = state_of(request)
    doc = document_of(request)
    # Hashing a 1 GiB document takes seconds: keep the loop serving meanwhile.
    digest = await asyncio.to_thread(state.document_sha256, doc)
    return web.json_response({"id": doc.id, "sha256": digest, "size": doc.content.size})


@admin_routes.get("/_emulator/api")
async def admin_api(request: web.Request) -> web.Response:
    """What the server offers: its API description, the routes it lacks, its page limit."""
    return web.json_response(state_of(request).api.as_json())


@admin_routes.put("/_emulator/api")
async def admin_set_api(request: web.Request) -> web.Response:
    """Set {"description": "v3"|"v2"|"none", "drop_routes": ["METHOD /path"], "page_cap": n} (until reset)."""
    body = await json_body(request)
    try:
        surface = ApiSurface.parse(body, route_names(request.app))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    state_of(request).api = surface
    return web.json_response(surface.as_json())
