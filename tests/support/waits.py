"""One bounded poll for the tests: wait for a condition, fail (never hang) when it does not come."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


def _describe(message: str | Callable[[], object]) -> str:
    return message if isinstance(message, str) else str(message())


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str | Callable[[], object] = "the condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value; AssertionError
    naming ``message`` (a string, or a callable giving the state to show) after ``timeout`` seconds.

    A functional bound, not a timing assertion. ``interval`` may be 0 when the predicate blocks by
    itself (a long-poll)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(message)}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,
    *,
    interval: float = 0.02,
    message: str | Callable[[], object] = "the condition",
) -> T:
    """``wait_until`` inside an event loop: sleeps with ``asyncio.sleep``; ``predicate`` may be a
    plain callable or return an awaitable (e.g. an async hook call)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(message)}")
        await asyncio.sleep(interval)
