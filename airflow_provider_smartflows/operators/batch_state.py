"""Moved to :mod:`airflow_provider_smartflows.operators.batch.state`; this path keeps working."""

from __future__ import annotations

from airflow_provider_smartflows.operators.batch.state import (
    FAILED,
    FORMAT,
    PART_LINES,
    PENDING,
    RUNNING,
    STARTING,
    SUCCEEDED,
    UNKNOWN,
    BatchState,
    BatchStore,
    Entry,
    manifest_line,
)

__all__ = [
    "FAILED",
    "FORMAT",
    "PART_LINES",
    "PENDING",
    "RUNNING",
    "STARTING",
    "SUCCEEDED",
    "UNKNOWN",
    "BatchState",
    "BatchStore",
    "Entry",
    "manifest_line",
]
