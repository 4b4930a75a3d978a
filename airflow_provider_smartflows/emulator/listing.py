"""Listings, paged like the vendor's Spring server: ``page`` (0-based), ``size`` (default 20),
``sort=field[,asc|desc]`` (repeatable) and ``filter=field:value`` (repeatable, all must hold; a
"contains" match). The body is a plain JSON array, so a short page is the last.

Every list route goes through :func:`page_of`: executions, flows and users. Filtering and
sorting work on the records themselves; only the page becomes JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_smartflows.emulator.common import ApiError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from multidict import MultiMapping

    from airflow_provider_smartflows.emulator.scenario import ApiKey, FlowSpec
    from airflow_provider_smartflows.emulator.state import EmulatorState, Execution

R = TypeVar("R")

DEFAULT_SIZE = 20
MAX_SIZE = 2000
DEFAULT_SORT = "createdAt,desc"
#: The query parameters of every list route (the API description names them).
PAGING_PARAMETERS = ("page", "size", "sort", "filter")


def _execution_fields(state: EmulatorState) -> dict[str, Callable[[Execution], Any]]:
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


_EXECUTION_FILTERS = ("createdBy", "flow", "id", "priority", "status")
FLOW_FIELDS: dict[str, Callable[[FlowSpec], Any]] = {
    "id": lambda flow: flow.id,
    "displayName": lambda flow: flow.display_name,
    "description": lambda flow: flow.description or "",
}
USER_FIELDS: dict[str, Callable[[tuple[str, str]], Any]] = {
    "id": lambda user: user[0],
    "displayName": lambda user: user[0],
    "role": lambda user: user[1],
}


def _page_and_size(query: MultiMapping[str], cap: int | None) -> tuple[int, int]:
    try:
        page = int(query.get("page", "0"))
        size = int(query.get("size", str(DEFAULT_SIZE)))
    except ValueError as exc:
        raise ApiError(400, "Query parameters 'page' and 'size' must be integers") from exc
    if page < 0 or not 1 <= size <= MAX_SIZE:
        raise ApiError(400, f"Query parameter 'page' must be >= 0 and 'size' between 1 and {MAX_SIZE}")
    # A server configured with a lower limit answers that many, silently (Spring's max-page-size).
    return page, size if cap is None else min(size, cap)


def _filtered(records: list[R], fields: Mapping[str, Callable[[R], Any]], filters: list[str]) -> list[R]:
    for flt in filters:
        name, sep, value = flt.partition(":")
        if not sep or name not in fields:
            raise ApiError(
                400, f"Bad filter {flt!r}: use field:value with field one of {', '.join(sorted(fields))}"
            )
        records = [r for r in records if value in str(fields[name](r))]
    return records


def _sorted(records: list[R], fields: Mapping[str, Callable[[R], Any]], sorts: list[str]) -> list[R]:
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
        records = sorted(records, key=key, reverse=reverse)
    return records


def page_of(
    records: list[R],
    query: MultiMapping[str],
    fields: Mapping[str, Callable[[R], Any]],
    *,
    filterable: tuple[str, ...] | None = None,
    default_sort: str | None = None,
    cap: int | None = None,
) -> list[R]:
    """One page of ``records`` (in their given order unless sorted); ``cap``: the server's page limit."""
    page, size = _page_and_size(query, cap)
    allowed = fields if filterable is None else {name: fields[name] for name in filterable}
    records = _filtered(records, allowed, query.getall("filter", []))
    sorts = query.getall("sort", []) or ([default_sort] if default_sort else [])
    records = _sorted(records, fields, sorts)
    return records[page * size : (page + 1) * size]


def list_page(
    state: EmulatorState, executions: list[Execution], query: MultiMapping[str], key: ApiKey
) -> list[Execution]:
    """The executions of one page; a plain user sees only the executions it started."""
    if key.role != "admin":
        executions = [ex for ex in executions if ex.created_by.user == key.user]
    # An execution that has just finished gets its modification time when first seen final:
    # see every status before sorting or filtering by modifiedAt.
    for ex in executions:
        state.status(ex)
    return page_of(
        executions,
        query,
        _execution_fields(state),
        filterable=_EXECUTION_FILTERS,
        default_sort=DEFAULT_SORT,
        cap=state.api.page_cap,
    )
