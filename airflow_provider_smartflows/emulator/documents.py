"""The documents listings (``GET /documents``, ``POST /documents/filter``) and the admin routes that
set when documents expire.

Listings are paged like every list (:mod:`.listing`: ``page``, ``size`` default 20, ``sort``,
``filter=field:value``); a plain user sees the documents of its own executions. The filter body is
the vendor's filter group: ``{"group": {"type": "and"|"or", "nodes": [{"id": ..., "condition":
{"key", "operator", "values"}} | {"id": ..., "group": {...}}]}}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_smartflows.emulator.common import KEY, ApiError, document_of, json_body, state_of
from airflow_provider_smartflows.emulator.listing import PAGING_PARAMETERS, page_of
from airflow_provider_smartflows.emulator.state import iso
from airflow_provider_smartflows.emulator.surface import takes

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_smartflows.emulator.scenario import ApiKey
    from airflow_provider_smartflows.emulator.state import DocumentRecord, EmulatorState

document_routes = web.RouteTableDef()

#: Field name (as in Document JSON) → its value, for filter, sort and the filter body's conditions.
DOCUMENT_FIELDS: dict[str, Callable[[DocumentRecord], Any]] = {
    "id": lambda doc: doc.id,
    "displayName": lambda doc: doc.display_name,
    "contentType": lambda doc: doc.content_type,
    "createdAt": lambda doc: iso(doc.created_at),
    "createdBy": lambda doc: doc.created_by,
    "expiration": lambda doc: iso(doc.expires_at if doc.expires_at is not None else doc.created_at),
    "flowExecution": lambda doc: doc.execution_id,
    "templateId": lambda doc: f"template-{doc.flow_id}",
    "language": lambda doc: "en",
    "origin": lambda doc: "flow",
}


def _compare(actual: Any, operator: str, values: list[str]) -> bool:
    text = str(actual)
    first = values[0] if values else ""
    checks: dict[str, Callable[[], bool]] = {
        "equals": lambda: text == first,
        "notEquals": lambda: text != first,
        "contains": lambda: first in text,
        "startsWith": lambda: text.startswith(first),
        "in": lambda: text in values,
        "notIn": lambda: text not in values,
        "lessThan": lambda: text < first,
        "lessThanOrEqualTo": lambda: text <= first,
        "greaterThan": lambda: text > first,
        "greaterThanOrEqualTo": lambda: text >= first,
    }
    if operator not in checks:
        raise ApiError(400, f"Unknown filter operator {operator!r}: one of {', '.join(sorted(checks))}")
    return checks[operator]()


def _matches(doc: DocumentRecord, group: Any, where: str = "group") -> bool:
    """Whether ``doc`` satisfies a filter group (400 for a malformed one)."""
    if not isinstance(group, dict) or group.get("type", "and") not in ("and", "or"):
        raise ApiError(400, f'{where}: expected {{"type": "and"|"or", "nodes": [...]}}')
    nodes = group.get("nodes")
    if not isinstance(nodes, list):
        raise ApiError(400, f"{where}.nodes: expected a list")
    results = []
    for index, node in enumerate(nodes):
        at = f"{where}.nodes[{index}]"
        if isinstance(node, dict) and "group" in node:
            results.append(_matches(doc, node["group"], f"{at}.group"))
            continue
        condition = node.get("condition") if isinstance(node, dict) else None
        if not isinstance(condition, dict) or condition.get("key") not in DOCUMENT_FIELDS:
            raise ApiError(
                400,
                f"{at}.condition: expected {{key, operator, values}} with key one of {', '.join(DOCUMENT_FIELDS)}",
            )
        values = condition.get("values")
        if not isinstance(values, list):
            raise ApiError(400, f"{at}.condition.values: expected a list")
        actual = DOCUMENT_FIELDS[condition["key"]](doc)
        results.append(_compare(actual, str(condition.get("operator")), [str(v) for v in values]))
    return any(results) if group.get("type") == "or" else all(results)


def _visible(state: EmulatorState, key: ApiKey) -> list[DocumentRecord]:
    """Every document, oldest first; a plain user's own only."""
    docs = sorted(state.documents.values(), key=lambda doc: doc.created_at)
    return docs if key.role == "admin" else [doc for doc in docs if doc.created_by == key.user]


def _page(request: web.Request, docs: list[DocumentRecord]) -> web.Response:
    state = state_of(request)
    page = page_of(
        docs, request.query, DOCUMENT_FIELDS, default_sort="createdAt,desc", cap=state.api.page_cap
    )
    body = []
    for doc in page:
        ex = state.executions.get(doc.execution_id)
        body.append(doc.metadata(ex.flow.display_name if ex and ex.flow else ""))
    return web.json_response(body)


@document_routes.get("/api/v1/documents")
@takes(*PAGING_PARAMETERS)
async def list_documents(request: web.Request) -> web.Response:
    """Documents (a plain array), paged with page/size, sort=field,dir and filter=field:value."""
    return _page(request, _visible(state_of(request), request[KEY]))


@document_routes.post("/api/v1/documents/filter")
@takes(*PAGING_PARAMETERS)
async def filter_documents(request: web.Request) -> web.Response:
    """Documents matching a filter-group body, paged like GET /documents."""
    body = await json_body(request)
    if not isinstance(body, dict) or "group" not in body:
        raise ApiError(400, 'The filter body must be {"group": {"type": "and", "nodes": [...]}}')
    docs = _visible(state_of(request), request[KEY])
    return _page(request, [doc for doc in docs if _matches(doc, body["group"])])


# --- admin: when documents expire -------------------------------------------------------------


def _seconds(body: Any, name: str, *, minimum: float | None) -> float:
    value = body.get(name) if isinstance(body, dict) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (minimum is not None and value < minimum)
    ):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ApiError(400, f"Field {name!r} must be a number of seconds{bound}")
    return float(value)


@document_routes.put("/_emulator/documents/retention")
async def admin_document_retention(request: web.Request) -> web.Response:
    """Set {"seconds": s}: documents made from now on expire s seconds after creation (until reset)."""
    state = state_of(request)
    state.document_retention = _seconds(await json_body(request), "seconds", minimum=0)
    return web.json_response({"seconds": state.document_retention})


@document_routes.put("/_emulator/documents/{doc_id}/expiration")
async def admin_document_expiration(request: web.Request) -> web.Response:
    """Set {"in_seconds": s}: the document expires s seconds from now (negative: already expired)."""
    doc = document_of(request)
    doc.expires_at = time.time() + _seconds(await json_body(request), "in_seconds", minimum=None)
    return web.json_response({"id": doc.id, "expiration": iso(doc.expires_at)})
