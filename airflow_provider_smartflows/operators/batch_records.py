"""Moved to :mod:`airflow_provider_smartflows.operators.batch.records`; this path keeps working."""

from __future__ import annotations

from airflow_provider_smartflows.operators.batch.records import (
    CSV_SUFFIXES,
    JSONL_SUFFIXES,
    Cursor,
    KeySet,
    Record,
    RecordInput,
    RecordList,
    RecordSource,
    fill_data_template,
    format_template,
    record_key,
    render_xml,
)

__all__ = [
    "CSV_SUFFIXES",
    "JSONL_SUFFIXES",
    "Cursor",
    "KeySet",
    "Record",
    "RecordInput",
    "RecordList",
    "RecordSource",
    "fill_data_template",
    "format_template",
    "record_key",
    "render_xml",
]
