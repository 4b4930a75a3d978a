"""Public path kept for compatibility: the reconcile rules live in
:mod:`airflow_provider_smartflows.reconcile` (pure, no I/O), the reconciled start in
:mod:`airflow_provider_smartflows.reconciled_start`."""

from __future__ import annotations

from airflow_provider_smartflows.reconcile import (
    ADOPTED,
    DEFAULT_CLOCK_SKEW,
    DEFAULT_MAX_PAGES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_SETTLE_TIME,
    DIFFERENT,
    NOT_STARTED,
    SAME,
    UNKNOWN,
    UNRESOLVED,
    Candidate,
    ExpectedInput,
    ListingScan,
    UserIdentity,
    Verdict,
    Window,
    decide,
    iso,
    parse_timestamp,
    second_start_error,
    server_offset,
    unresolved_error,
)
from airflow_provider_smartflows.reconciled_start import (
    STARTED,
    STARTED_AGAIN,
    ReconcileOptions,
    StartedExecution,
    find_start,
    search,
)

__all__ = [
    "ADOPTED",
    "DEFAULT_CLOCK_SKEW",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_SETTLE_TIME",
    "DIFFERENT",
    "NOT_STARTED",
    "SAME",
    "STARTED",
    "STARTED_AGAIN",
    "UNKNOWN",
    "UNRESOLVED",
    "Candidate",
    "ExpectedInput",
    "ListingScan",
    "ReconcileOptions",
    "StartedExecution",
    "UserIdentity",
    "Verdict",
    "Window",
    "decide",
    "find_start",
    "iso",
    "parse_timestamp",
    "search",
    "second_start_error",
    "server_offset",
    "unresolved_error",
]
