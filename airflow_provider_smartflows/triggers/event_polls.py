"""The event trigger's reading of the server: the cursor of a watcher (pure) and the polls.

A poll lists the final executions modified at or after a cursor, oldest modification first:
``POST /flows/executions/filter`` where the server has it, else the plain listing
``GET /flows/executions`` sorted by ``modifiedAt`` descending, read back to the cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pendulum

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsListingError
from airflow_provider_smartflows.hooks.api import SERVER_DEFAULT_PAGE_SIZE, FilterCondition
from airflow_provider_smartflows.models import ExecutionStatus

if TYPE_CHECKING:
    from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook

log = logging.getLogger(__name__)

#: The final statuses, in wire spelling: the default ``statuses`` and what a poll lists.
FINISHED_STATUSES: tuple[str, ...] = ("Success", "Warning", "Error", "Canceled", "Interrupted")
#: Items per page of a poll, and pages read at most per filtered poll (the rest: next poll).
POLL_PAGE_SIZE = 100
POLL_MAX_PAGES = 10
#: Pages the plain listing may read back to the cursor (it cannot stop half-way: see below).
PLAIN_MAX_PAGES = 100


def _instant(text: object) -> datetime | None:
    """The moment a server timestamp names; None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = pendulum.parse(text)
    except (ValueError, TypeError, pendulum.parsing.exceptions.ParserError):
        return None
    return parsed if isinstance(parsed, datetime) else None


def mapping_of(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def user_id(value: object) -> str | None:
    """``createdBy`` is an object ``{id, displayName, type}`` (a bare string is read too)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Cursor:
    """Where a watcher is: every execution modified before ``at`` is passed, and those modified at
    ``at`` whose id is in ``ids``. ``at`` None: nothing passed yet (the listing's beginning).

    ``at`` is kept as the server wrote it (sent back as is in the filter), compared as an instant.
    """

    at: str | None = None
    ids: tuple[str, ...] = ()

    @property
    def instant(self) -> datetime | None:
        return _instant(self.at)

    def passed(self, at: datetime, execution_id: str) -> bool:
        mine = self.instant
        return mine is not None and (at < mine or (at == mine and execution_id in self.ids))

    def advance(self, at_text: str, at: datetime, execution_id: str) -> Cursor:
        """The cursor once the execution at ``at`` is passed too (the caller checked :meth:`passed`)."""
        if self.instant == at:
            return Cursor(self.at, (*self.ids, execution_id))
        return Cursor(at_text, (execution_id,))

    def covered_by(self, since: str | None) -> bool:
        """Whether a poll listed from ``since`` (None: from the beginning) holds all this cursor lacks."""
        if since is None:
            return True
        start, mine = _instant(since), self.instant
        return start is not None and mine is not None and start <= mine

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "ids": list(self.ids)}

    @classmethod
    def from_json(cls, value: object) -> Cursor | None:
        """The cursor a state store holds; None when it holds none (or something else)."""
        if not isinstance(value, Mapping):
            return None
        at, ids = value.get("at"), value.get("ids")
        if (at is not None and _instant(at) is None) or not isinstance(ids, list):
            return None
        return cls(at, tuple(str(i) for i in ids))


def position_of(item: object) -> tuple[str, datetime, str] | None:
    """``(modifiedAt as written, as an instant, id)`` of a listed execution; None if it has none."""
    if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
        return None
    text = item.get("modifiedAt")
    at = _instant(text)
    return None if at is None else (str(text), at, item["id"])


# --------------------------------------------------------------------------- one poll


def _conditions(since: str | None) -> list[FilterCondition]:
    conditions: list[FilterCondition] = [("status", "in", list(FINISHED_STATUSES))]
    if since is not None:
        conditions.append(("modifiedAt", "greaterThanOrEqualTo", [since]))
    return conditions


async def _filtered_since(
    hook: SmartFlowsAsyncHook, since: str | None, page_size: int, max_pages: int
) -> list[dict[str, Any]]:
    """``POST /flows/executions/filter`` from ``since``, key-set paged: a full page is followed by
    the page starting at its last ``modifiedAt`` (a page all at one instant: the next page
    number), so executions modified while the poll reads never shift one out of sight. More than
    ``max_pages`` pages: the rest is the next poll's (the cursor stops at the last one read)."""
    items: list[dict[str, Any]] = []
    seen: set[Any] = set()
    bound, page = since, 0
    for _ in range(max_pages):
        got = await hook.filter_executions(_conditions(bound), page=page, page_size=page_size)
        for item in got:
            if isinstance(item, dict) and item.get("id") not in seen:
                items.append(item)
                seen.add(item.get("id"))
        if len(got) not in (page_size, SERVER_DEFAULT_PAGE_SIZE):
            break
        last = got[-1].get("modifiedAt") if isinstance(got[-1], dict) else None
        if not isinstance(last, str) or last == bound:
            page += 1
        else:
            bound, page = last, 0
    return items


async def _plain_since(
    hook: SmartFlowsAsyncHook, since: str | None, page_size: int, max_pages: int
) -> list[dict[str, Any]]:
    """``GET /flows/executions?sort=modifiedAt,desc`` read back to ``since``, oldest first.

    Newest first, an execution modified during the read moves to the front: it is listed again
    (kept once) or at the next poll, never lost. The read cannot stop half-way (the oldest would
    be skipped): more than ``max_pages`` pages is an error, with what to do.
    """
    start = _instant(since)
    found: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for page in range(max_pages):
        got = await hook.list_executions_page(page=page, page_size=page_size, sort="modifiedAt,desc")
        positions = [(position_of(item), item) for item in got]
        for position, item in positions:
            final = str(ExecutionStatus.parse(mapping_of(item).get("status"))) in FINISHED_STATUSES
            if position is not None and final and (start is None or position[1] >= start):
                found.setdefault(position[2], (position[1], item))
        older = any(p is not None and start is not None and p[1] < start for p, _ in positions)
        if older or len(got) not in (page_size, SERVER_DEFAULT_PAGE_SIZE):
            return [item for _, item in sorted(found.values(), key=lambda pair: pair[0])]
    raise SmartFlowsListingError(
        f"GET /flows/executions: {max_pages} pages of {page_size} did not reach the executions "
        f"modified at {since}. Poll more often (poll_interval), or use a server with "
        "POST /flows/executions/filter.",
        call="list_executions (GET /api/v1/flows/executions)",
        pages=max_pages,
    )


class ExecutionLister:
    """How one poll (or one watcher's start) lists: the filter route, until the server shows it
    has none (404/405): from then on the plain listing, said once in the log."""

    def __init__(self, *, page_size: int = POLL_PAGE_SIZE, max_pages: int = POLL_MAX_PAGES) -> None:
        self.page_size = page_size
        self.max_pages = max_pages
        self.filter_route = True

    def _no_filter_route(self, err: SmartFlowsApiError) -> bool:
        if err.status_code not in (404, 405) or not (err.path or "").endswith("/flows/executions/filter"):
            return False
        log.warning(
            "This Smart Flows server has no POST /flows/executions/filter (HTTP %s): polling the plain "
            "listing sorted by modifiedAt instead.",
            err.status_code,
        )
        self.filter_route = False
        return True

    async def since(self, hook: SmartFlowsAsyncHook, since: str | None) -> list[dict[str, Any]]:
        """Final executions modified at or after ``since`` (None: all), oldest modification first."""
        if self.filter_route:
            try:
                return await _filtered_since(hook, since, self.page_size, self.max_pages)
            except SmartFlowsApiError as err:
                if not self._no_filter_route(err):
                    raise
        return await _plain_since(hook, since, self.page_size, PLAIN_MAX_PAGES)

    async def newest(self, hook: SmartFlowsAsyncHook) -> Cursor:
        """Where a new watcher starts: after the newest final execution (the beginning if none)."""
        newest: list[Any] = []
        if self.filter_route:
            try:
                newest = await hook.filter_executions(_conditions(None), sort="modifiedAt,desc", page_size=1)
            except SmartFlowsApiError as err:
                if not self._no_filter_route(err):
                    raise
        if not self.filter_route:
            listed = await _plain_since(hook, None, self.page_size, PLAIN_MAX_PAGES)
            newest = listed[-1:]
        position = position_of(newest[0]) if newest else None
        return Cursor() if position is None else Cursor(position[0], (position[2],))
