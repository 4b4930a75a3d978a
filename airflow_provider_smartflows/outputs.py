"""A finished execution's named outputs, bounded for XCom. Pure: the caller hands in the
FlowExecution (``outputs: [{output: {id, displayName, type}, content}]``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: ``[smartflows] max_output_bytes`` when it is not set: 64 KiB of JSON per output.
DEFAULT_MAX_OUTPUT_BYTES = 65536


def max_output_bytes() -> int:
    """The ``[smartflows] max_output_bytes`` setting (the default without an Airflow configuration)."""
    try:
        from airflow.providers.common.compat.sdk import conf

        value = conf.getint("smartflows", "max_output_bytes", fallback=DEFAULT_MAX_OUTPUT_BYTES)
    except Exception:  # no Airflow configuration (a script): the default
        return DEFAULT_MAX_OUTPUT_BYTES
    return max(0, int(value))


def _size(content: Any) -> int:
    try:
        return len(json.dumps(content, ensure_ascii=False, default=str).encode())
    except (TypeError, ValueError, RecursionError):
        return -1  # not JSON: left out


def named_outputs(execution: Mapping[str, Any], limit: int) -> tuple[dict[str, Any], list[str]]:
    """``({displayName: content}, left out)``: each output whose content's JSON is at most ``limit``
    bytes, by its display name (else its id); ``left out`` names the others with their size."""
    outputs: dict[str, Any] = {}
    left_out: list[str] = []
    items = execution.get("outputs")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        output = item.get("output")
        if not isinstance(output, Mapping):
            output = {}
        name = output.get("displayName") or output.get("id")
        if not isinstance(name, str) or not name:
            continue
        size = _size(item.get("content"))
        if size < 0 or size > limit:
            left_out.append(f"{name!r} ({'not JSON' if size < 0 else f'{size} bytes'})")
            continue
        outputs[name] = item.get("content")
    return outputs, left_out
