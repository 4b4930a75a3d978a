"""``POST /flows/executions/filter``: the vendor's filter-group body, the subset the emulator reads.

Body: ``{"group": {"type": "and"|"or", "nodes": [node, ...]}}``, a node being
``{"id": ..., "condition": {"key", "operator", "values": [...]}}`` or ``{"id": ..., "group": {...}}``.

- keys: ``id``, ``status``, ``flow`` (the flow's id or display name), ``createdBy`` (user id),
  ``createdAt``, ``modifiedAt`` (ISO-8601 timestamps, compared as instants);
- operators: ``in``, ``notIn``, ``equalTo``, ``notEqualTo``, ``greaterThan``,
  ``greaterThanOrEqualTo``, ``lessThan``, ``lessThanOrEqualTo`` (on timestamps only).

Anything else is a 400 naming what is wrong. The vendor's full vocabulary is unconfirmed: this
is the part a client of the emulator can rely on.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from airflow_provider_smartflows.emulator.common import ApiError
from airflow_provider_smartflows.emulator.state import iso

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_smartflows.emulator.state import EmulatorState, Execution

_SET_OPERATORS = ("in", "notIn", "equalTo", "notEqualTo")
_ORDER_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "greaterThan": lambda a, b: a > b,
    "greaterThanOrEqualTo": lambda a, b: a >= b,
    "lessThan": lambda a, b: a < b,
    "lessThanOrEqualTo": lambda a, b: a <= b,
}
_TIME_KEYS = ("createdAt", "modifiedAt")
_TEXT_KEYS = ("id", "status", "flow", "createdBy")


def _instant(value: object) -> int:
    """Epoch milliseconds of an ISO-8601 timestamp (the precision the wire shows)."""
    if not isinstance(value, str):
        raise ApiError(400, f"Bad filter value {value!r}: dates are ISO-8601 strings")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, f"Bad filter value {value!r}: not an ISO-8601 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return round(parsed.timestamp() * 1000)


def _millis(ts: float) -> int:
    """A stored time as the client sees it: through the very string the JSON shows."""
    return _instant(iso(ts))


def _text_values(state: EmulatorState, ex: Execution, key: str) -> set[str]:
    if key == "id":
        return {ex.id}
    if key == "status":
        return {state.status(ex).status}
    if key == "createdBy":
        return {ex.created_by.user}
    return {ex.flow.id, ex.flow.display_name} if ex.flow else set()


def _condition(raw: object) -> Callable[[EmulatorState, Execution], bool]:
    if not isinstance(raw, dict) or not isinstance(raw.get("values"), list):
        raise ApiError(400, f'Bad filter condition {raw!r}: expected {{"key", "operator", "values": [...]}}')
    key, operator, values = raw.get("key"), raw.get("operator"), raw["values"]
    if key in _TIME_KEYS:
        if operator not in _ORDER_OPERATORS or len(values) != 1:
            raise ApiError(
                400, f"Bad filter on {key}: use one of {', '.join(_ORDER_OPERATORS)} with one value"
            )
        compare, bound = _ORDER_OPERATORS[operator], _instant(values[0])
        field = "created_at" if key == "createdAt" else "modified_at"
        return lambda state, ex: compare(_millis(getattr(ex, field)), bound)
    if key in _TEXT_KEYS:
        if operator not in _SET_OPERATORS or not all(isinstance(v, str) for v in values):
            raise ApiError(
                400, f"Bad filter on {key}: use one of {', '.join(_SET_OPERATORS)} with string values"
            )
        wanted, negate = set(values), operator in ("notIn", "notEqualTo")
        if operator in ("equalTo", "notEqualTo") and len(values) != 1:
            raise ApiError(400, f"Bad filter on {key}: {operator} takes one value")
        return lambda state, ex: bool(_text_values(state, ex, key) & wanted) != negate
    raise ApiError(400, f"Bad filter key {key!r}: use one of {', '.join(_TEXT_KEYS + _TIME_KEYS)}")


def _group(raw: object) -> Callable[[EmulatorState, Execution], bool]:
    if not isinstance(raw, dict) or raw.get("type", "and") not in ("and", "or"):
        raise ApiError(400, 'Bad filter group: expected {"type": "and"|"or", "nodes": [...]}')
    nodes = raw.get("nodes", [])
    if not isinstance(nodes, list):
        raise ApiError(400, "Bad filter group: 'nodes' must be a list")
    tests = []
    for node in nodes:
        if isinstance(node, dict) and "group" in node:
            tests.append(_group(node["group"]))
        elif isinstance(node, dict) and "condition" in node:
            tests.append(_condition(node["condition"]))
        else:
            raise ApiError(400, f"Bad filter node {node!r}: expected a 'condition' or a 'group'")
    combine = all if raw.get("type", "and") == "and" else any
    return lambda state, ex: combine(test(state, ex) for test in tests)


def matching(state: EmulatorState, executions: list[Execution], body: object) -> list[Execution]:
    """The executions the filter-group ``body`` selects."""
    if not isinstance(body, dict) or not isinstance(body.get("group"), dict):
        raise ApiError(400, 'The filter body must be {"group": {"type": ..., "nodes": [...]}}')
    test = _group(body["group"])
    # Status first: an execution that has just finished gets its modification time when seen final.
    for ex in executions:
        state.status(ex)
    return [ex for ex in executions if test(state, ex)]
