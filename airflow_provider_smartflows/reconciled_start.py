"""The reconciled start: start a flow, and when the start's outcome is unknown, search the flow's
listing with the rules of :mod:`~airflow_provider_smartflows.reconcile` and act on the verdict
(adopt the execution, start again once, or raise the start's error with the candidates).

No I/O of its own: the caller passes it in (``start()``, ``current_user()``, ``list_page(page,
size, created_by)``, ``sleep``, ``clock``), so any hook can drive it; today the sync
:class:`~airflow_provider_smartflows.hooks.smartflows.SmartFlowsHook` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsInputError
from airflow_provider_smartflows.reconcile import (
    ADOPTED,
    DEFAULT_CLOCK_SKEW,
    DEFAULT_MAX_PAGES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_SETTLE_TIME,
    UNRESOLVED,
    ExpectedInput,
    ListingScan,
    UserIdentity,
    Verdict,
    Window,
    decide,
    second_start_error,
    server_offset,
    unresolved_error,
)
from airflow_provider_smartflows.validation import check_int, check_number

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_smartflows.models import Execution, ExecutionProgress

    #: One page of a flow's executions, newest first: ``list_page(page, size, created_by)``.
    ListPage = Callable[[int, int, str | None], list[Any]]

#: How a start ended (``StartedExecution.how``).
STARTED = "started"
STARTED_AGAIN = "started_again"


class WarningLog(Protocol):
    """What the reconciled start logs to (a task's or a hook's logger)."""

    def warning(self, msg: str, /, *args: Any) -> Any: ...


class ReconcileOptions(TypedDict, total=False):
    """The knobs of :func:`find_start` that callers pass through (hook methods, operators)."""

    clock_skew: float
    settle_time: float
    page_size: int
    max_pages: int
    clock: Callable[[], float]
    sleep: Callable[[float], None]


@dataclass(frozen=True)
class StartedExecution:
    """The execution a reconciled start runs: ``how`` is STARTED, ADOPTED or STARTED_AGAIN."""

    execution_id: str
    how: str
    raw_status: str | None = None
    #: ADOPTED / STARTED_AGAIN: what the listing showed.
    reason: str = ""
    #: ADOPTED / STARTED_AGAIN: why the first start's outcome was unknown ("connection reset", "HTTP 500").
    cause: str = ""


# --------------------------------------------------------------------------- the search


def _scan(scan: ListingScan, list_page: ListPage, created_by: str | None) -> ListingScan:
    page = 0
    while scan.add_page(list_page(page, scan.page_size, created_by)):
        page += 1
    return scan


def search(
    flow_id: str,
    expected: ExpectedInput,
    user: UserIdentity,
    window: Window,
    list_page: ListPage,
    settle: Callable[[], None],
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Verdict:
    """
    The verdict of one or two listings (the I/O is the caller's ``list_page(page, size, created_by)``).

    The first listing asks the server to filter by the user's id (``filter=createdBy:<id>``, when
    ``/users/me`` gave one): fewer pages. A filter can only hide executions, and how the real
    server reads it is UNCONFIRMED (by id or by name), so it never proves an absence: when the
    first listing finds nothing, ``settle()`` waits for a server that may still be writing the
    execution, and the second listing, without the filter, decides.
    """

    def new_scan() -> ListingScan:
        return ListingScan(expected, user, window, page_size, max_pages)

    verdict = decide(_scan(new_scan(), list_page, user.id), flow_id, final=False)
    if verdict is not None:
        return verdict
    settle()
    scan = _scan(new_scan(), list_page, None)
    return decide(scan, flow_id, final=True) or Verdict(UNRESOLVED, "the listing ended early")


def _check_options(clock_skew: object, settle_time: object, page_size: object, max_pages: object) -> None:
    try:
        check_number("clock_skew", clock_skew, minimum=0, unit="a number of seconds")
        check_number("settle_time", settle_time, minimum=0, unit="a number of seconds")
        check_int("page_size", page_size, minimum=1)
        check_int("max_pages", max_pages, minimum=1)
    except SmartFlowsInputError as err:
        raise SmartFlowsInputError(f"Reconciling a start needs valid options: {err.message}") from None


def find_start(
    flow_id: str | None,
    data: object,
    *,
    sent_at: float,
    current_user: Callable[[], tuple[Any, str | None]],
    list_page: ListPage,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
    settle_time: float = DEFAULT_SETTLE_TIME,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_pages: int = DEFAULT_MAX_PAGES,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """
    The verdict on a start of ``flow_id`` with ``data`` sent at ``sent_at`` (the I/O is the callers':
    ``current_user()`` answers ``(GET /users/me, its Date header)``, ``list_page`` as in
    :func:`search`). A failing call makes it UNRESOLVED, with the call's error as the reason.

    :param clock_skew: seconds by which ``createdAt`` may be earlier than the send time as the
        clocks tell it (the ``Date`` header's offset, or this clock without one). Larger: more
        "cannot tell" when the same input was started shortly before; smaller: a server clock
        lagging more could hide the start's own execution, and the flow would be started again.
    :param settle_time: seconds to wait before the second listing, when the first found nothing.
    :param page_size: executions per page; ``max_pages``: pages read at most per listing.
    :param clock: this machine's clock, the one ``sent_at`` was read from (epoch seconds).
    """
    expected = ExpectedInput.of(data)
    _check_options(clock_skew, settle_time, page_size, max_pages)
    if not flow_id:
        return Verdict(UNRESOLVED, "the start named no flow, so there is no flow's listing to search")
    try:
        me, date = current_user()
        window = Window.of(sent_at, clock_skew, server_offset(date, clock()))
        user = UserIdentity.of(me)
        return search(
            flow_id,
            expected,
            user,
            window,
            list_page,
            lambda: sleep(settle_time),
            page_size=page_size,
            max_pages=max_pages,
        )
    except (SmartFlowsApiError, ValueError) as err:
        reason = err.message if isinstance(err, SmartFlowsApiError) else str(err)
        return Verdict(UNRESOLVED, f"the flow's executions could not be listed: {reason.rstrip('.')}")


# --------------------------------------------------------------------------- acting on the verdict


def find_started(
    flow_id: str | None,
    data: object,
    *,
    sent_at: float,
    error: SmartFlowsApiError | None,
    current_user: Callable[[], tuple[Any, str | None]],
    list_page: ListPage,
    log: WarningLog,
    **options: Any,
) -> Verdict:
    """
    :func:`find_start`, raising ``error`` (the start's, with the reason and the candidates) when it
    cannot be told; a verdict (ADOPTED or NOT_STARTED) is logged as a warning.
    """
    verdict = find_start(
        flow_id, data, sent_at=sent_at, current_user=current_user, list_page=list_page, **options
    )
    if verdict.outcome == UNRESOLVED:
        raise unresolved_error(error, flow_id, verdict) from error
    found = verdict.execution
    log.warning(
        "Ambiguous start of flow %s resolved: %s",
        flow_id,
        f"adopted execution {found.describe()}: {verdict.reason}"
        if found
        else f"nothing was started: {verdict.reason}",
    )
    return verdict


def start_reconciled(
    flow_id: str | None,
    start: Callable[[], ExecutionProgress | Execution],
    find: Callable[[SmartFlowsApiError, float], Verdict],
    *,
    log: WarningLog,
    clock: Callable[[], float] = time.time,
) -> StartedExecution:
    """
    ``start()``; when its outcome is unknown (``may_have_started``), ``find(error, sent_at)``: adopt
    the execution the server created; if it is proven that none was, ``start()`` again, once (a
    second unknown outcome raises: never a third POST). ``find`` raises when it cannot be told.
    """
    sent_at = clock()
    try:
        progress = start()
        return StartedExecution(progress.id, STARTED, progress.raw_status)
    except SmartFlowsApiError as err:
        if not err.may_have_started:
            raise
        cause = err.reason or type(err).__name__
        log.warning(
            "The start of flow %s got no usable answer (%s): it may have created an execution; "
            "looking for it among the flow's executions",
            flow_id,
            cause,
        )
        verdict = find(err, sent_at)
    if verdict.outcome == ADOPTED and verdict.execution_id:
        return StartedExecution(verdict.execution_id, ADOPTED, None, verdict.reason, cause)
    try:
        progress = start()
    except SmartFlowsApiError as err:
        if err.may_have_started:
            raise second_start_error(err, verdict) from err
        raise
    return StartedExecution(progress.id, STARTED_AGAIN, progress.raw_status, verdict.reason, cause)
