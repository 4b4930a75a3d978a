"""Argument checks shared by the hooks, operators, triggers and storage: one home for "an integer,
not a bool" and "a number of seconds >= 0", so every parameter is refused with the same words.

Pure: no I/O. Each check returns the value it accepted, so callers can write
``self.max_active = check_int("max_active", max_active, minimum=1)``.
"""

from __future__ import annotations

import re

from airflow_provider_smartflows.exceptions import SmartFlowsInputError


def _is_number(value: object, *, integer: bool) -> bool:
    # bool is an int subclass: True would pass as 1 and hide a misplaced flag.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _requirement(kind: str, minimum: float | None, above: float | None) -> str:
    if above is not None:
        return f"{kind} > {above:g}"
    if minimum is not None:
        return f"{kind} >= {minimum:g}"
    return kind


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` when it is an int (not a bool) of at least ``minimum``, else raise
    :class:`SmartFlowsInputError` naming the parameter and what it must be."""
    if not _is_number(value, integer=True) or (minimum is not None and value < minimum):  # type: ignore[operator]
        raise SmartFlowsInputError(
            f"{name} must be {_requirement('an integer', minimum, None)}, not {value!r}."
        )
    return value  # type: ignore[return-value]


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    unit: str = "a number",
) -> float:
    """Return ``value`` when it is an int or float (not a bool) of at least ``minimum`` (or greater
    than ``above``), else raise :class:`SmartFlowsInputError`. ``unit`` words the requirement,
    e.g. ``"a number of seconds"``."""
    ok = _is_number(value, integer=False)
    if ok and minimum is not None and value < minimum:  # type: ignore[operator]
        ok = False
    if ok and above is not None and not value > above:  # type: ignore[operator]
        ok = False
    if not ok:
        raise SmartFlowsInputError(f"{name} must be {_requirement(unit, minimum, above)}, not {value!r}.")
    return value  # type: ignore[return-value]


def check_optional_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    unit: str = "a number",
) -> float | None:
    """:func:`check_number`, with ``None`` accepted (and returned) as "not set"."""
    if value is None:
        return None
    try:
        return check_number(name, value, minimum=minimum, above=above, unit=unit)
    except SmartFlowsInputError:
        raise SmartFlowsInputError(
            f"{name} must be {_requirement(unit, minimum, above)} or None, not {value!r}."
        ) from None


def check_reconcile_timing(clock_skew: object, settle_time: object) -> tuple[float, float]:
    """Return ``(reconcile_clock_skew, reconcile_settle_time)`` of an operator that reconciles
    ambiguous starts when both are numbers of seconds >= 0, else raise :class:`SmartFlowsInputError`."""
    unit = "a number of seconds"
    return (
        check_number("reconcile_clock_skew", clock_skew, minimum=0, unit=unit),
        check_number("reconcile_settle_time", settle_time, minimum=0, unit=unit),
    )


def parse_priority(value: object) -> int | None:
    """An execution priority as a templated ``priority`` field holds it: None stays None, an int
    stays itself, the text of an integer (what a rendered template gives) becomes that int; anything
    else raises :class:`SmartFlowsInputError`, before anything is started."""
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    if isinstance(value, str) or not _is_number(value, integer=True):
        raise SmartFlowsInputError(f"priority must be an integer (or the text of one), not {value!r}.")
    return value  # type: ignore[return-value]
