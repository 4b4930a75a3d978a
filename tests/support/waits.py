"""One bounded poll for the tests: wait for a condition, fail (never hang) when it does not come;
and the long-poll of an execution until it ends (``progress_until``), which many tests need."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, TypeVar

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


def _ended(progress: Any) -> bool:
    return bool(progress.status.is_terminal)


def progress_until(
    hook: Any,
    execution_id: str,
    done: Callable[[Any], bool] = _ended,
    *,
    timeout: float = 30.0,
    wait_seconds: int = 2,
) -> Any:
    """Long-poll the execution through ``hook`` (a ``SmartFlowsHook``) until ``done(progress)``
    (default: the execution ended) and return that progress; fails after ``timeout`` seconds. The
    server answers a long-poll as soon as something changes, so there is no sleep between polls."""
    last = [hook.get_progress(execution_id)]

    def step() -> Any:
        if not done(last[0]):
            last[0] = hook.get_progress(execution_id, wait_seconds=wait_seconds)
        return last[0] if done(last[0]) else None

    return wait_until(step, timeout, interval=0, message=lambda: f"execution {execution_id} (at {last[0]})")


async def progress_until_async(
    hook: Any,
    execution_id: str,
    done: Callable[[Any], bool] = _ended,
    *,
    timeout: float = 30.0,
    wait_seconds: int = 2,
) -> Any:
    """``progress_until`` with a ``SmartFlowsAsyncHook``."""
    last = [await hook.get_progress(execution_id)]

    async def step() -> Any:
        if not done(last[0]):
            last[0] = await hook.get_progress(execution_id, wait_seconds=wait_seconds)
        return last[0] if done(last[0]) else None

    return await wait_until_async(
        step, timeout, interval=0, message=lambda: f"execution {execution_id} (at {last[0]})"
    )
