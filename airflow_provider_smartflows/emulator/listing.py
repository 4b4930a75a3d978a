"""Execution listings: ``page`` (0-based), ``size``, ``sort=field[,asc|desc]`` (repeatable)
and ``filter=field:value`` (repeatable, all must hold), as the vendor's Spring server pages.

Filtering and sorting work on the executions themselves; only the page becomes JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.emulator.common import ApiError

if TYPE_CHECKING:
    from collections.abc import Callable

    from multidict import MultiMapping

    from airflow_provider_smartflows.emulator.scenario import ApiKey
    from airflow_provider_smartflows.emulator.state import EmulatorState, Execution

DEFAULT_SIZE = 20
MAX_SIZE = 2000
DEFAULT_SORT = "createdAt,desc"


def _fields(state: EmulatorState) -> dict[str, Callable[[Execution], Any]]:
    """Field name (as in FlowExecution JSON) → its value for filtering and sorting."""
    return {
        "id": lambda ex: ex.id,
        # Several executions can share a millisecond: the creation order breaks the tie.
        "createdAt": lambda ex: (ex.created_at, ex.seq),
        "modifiedAt": lambda ex: (ex.modified_at, ex.seq),
        "createdBy": lambda ex: ex.created_by.user,
        "status": lambda ex: state.status(ex).status,
        "priority": lambda ex: ex.priority or "",
        "flow": lambda ex: ex.flow.id if ex.flow else "",
    }


_FILTERABLE = ("createdBy", "flow", "id", "priority", "status")


def _page_and_size(query: MultiMapping[str]) -> tuple[int, int]:
    try:
        page = int(query.get("page", "0"))
        size = int(query.get("size", str(DEFAULT_SIZE)))
    except ValueError as exc:
        raise ApiError(400, "Query parameters 'page' and 'size' must be integers") from exc
    if page < 0 or not 1 <= size <= MAX_SIZE:
        raise ApiError(400, f"Query parameter 'page' must be >= 0 and 'size' between 1 and {MAX_SIZE}")
    return page, size


def _filtered(state: EmulatorState, executions: list[Execution], filters: list[str]) -> list[Execution]:
    fields = _fields(state)
    for flt in filters:
        name, sep, value = flt.partition(":")
        if not sep or name not in _FILTERABLE:
            raise ApiError(
                400, f"Bad filter {flt!r}: use field:value with field one of {', '.join(_FILTERABLE)}"
            )
        executions = [ex for ex in executions if fields[name](ex) == value]
    return executions


def _sorted(state: EmulatorState, executions: list[Execution], sorts: list[str]) -> list[Execution]:
    fields = _fields(state)
    keys = []
    for sort in sorts:
        name, _, direction = sort.partition(",")
        if name not in fields or direction.lower() not in ("", "asc", "desc"):
            raise ApiError(
                400, f"Bad sort {sort!r}: use field[,asc|desc] with field one of {', '.join(sorted(fields))}"
            )
        keys.append((fields[name], direction.lower() == "desc"))
    # Stable sorts from the last key to the first: the first sort parameter is the primary order.
    for key, reverse in reversed(keys):
        executions = sorted(executions, key=key, reverse=reverse)
    return executions


def list_page(
    state: EmulatorState, executions: list[Execution], query: MultiMapping[str], key: ApiKey
) -> list[Execution]:
    """The executions of one page; a plain user sees only the executions it started."""
    page, size = _page_and_size(query)
    if key.role != "admin":
        executions = [ex for ex in executions if ex.created_by.user == key.user]
    executions = _filtered(state, executions, query.getall("filter", []))
    executions = _sorted(state, executions, query.getall("sort", []) or [DEFAULT_SORT])
    return executions[page * size : (page + 1) * size]
