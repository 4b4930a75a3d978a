"""Trigger that waits on all running executions of a batch at once, over one HTTP session.

:class:`SmartFlowsBatchTrigger` long-polls every execution it is given concurrently, by the
waiting rules of :mod:`airflow_provider_smartflows.waiting` (one :class:`ExecutionWatch` each),
through one :class:`SmartFlowsAsyncHook` session. It fires one :class:`BatchEvent` as soon as some
executions are final (after a short gathering window, so that near-simultaneous finishes come
back together), or when ``wake_at`` passes (the batch operator's start back-off and rate limit).
It only reads; :meth:`SmartFlowsBatchTrigger.on_kill` (Airflow >= 3.3) cancels the executions.

The batch operator's synchronous mode runs the same wait on the worker (:meth:`collect`).

The class path ``airflow_provider_smartflows.triggers.batch.SmartFlowsBatchTrigger`` is stored in
the rows of deferred tasks: it must not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_smartflows.exceptions import SmartFlowsError
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.waiting import ExecutionWatch, run_steps_async, wait_steps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_smartflows.waiting import ExecutionEvent

__all__ = ["BatchEvent", "SmartFlowsBatchTrigger"]


class BatchEvent(TypedDict):
    """The payload of the batch trigger's event, JSON-safe and bounded by the executions waited on."""

    #: One event per execution that finished, needs a person, timed out or could not be waited on.
    events: list[ExecutionEvent]
    #: How many executions are still running (not in ``events``).
    running: int


class _WarningsOnly:
    """A logger front that drops per-execution progress lines: a batch logs one line per resume."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._log.debug(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


class SmartFlowsBatchTrigger(BaseTrigger):
    """
    Wait until some of a batch's executions are final (or need a person, or time out).

    :param execution_ids: the running executions (at most the batch's ``max_active``).
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param poll_interval: longest single long-poll in seconds per execution; the server answers
        early when an execution changes.
    :param end_time: absolute deadline of the batch in epoch seconds; reaching it fires a
        ``timeout`` event for every execution still running.
    :param wake_at: epoch seconds at which to fire even if nothing finished (None: never).
    :param gather_seconds: after the first execution finishes, keep collecting finishes for this
        long before firing, so that the operator resumes once for several.
    :param fail_on_warning: report a ``Warning`` outcome as ``failed``.
    :param max_consecutive_failures: transient API failures tolerated in a row per execution.
    :param cancel_on_kill: cancel every execution in :meth:`on_kill` (a user killed the task).
    """

    def __init__(
        self,
        execution_ids: list[str],
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        wake_at: float | None = None,
        gather_seconds: float = 1.0,
        fail_on_warning: bool = False,
        max_consecutive_failures: int = 10,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.execution_ids = list(execution_ids)
        self.smartflows_conn_id = smartflows_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.wake_at = wake_at
        self.gather_seconds = gather_seconds
        self.fail_on_warning = fail_on_warning
        self.max_consecutive_failures = max_consecutive_failures
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "execution_ids": list(self.execution_ids),
                "smartflows_conn_id": self.smartflows_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "wake_at": self.wake_at,
                "gather_seconds": self.gather_seconds,
                "fail_on_warning": self.fail_on_warning,
                "max_consecutive_failures": self.max_consecutive_failures,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _make_hook(self) -> SmartFlowsAsyncHook:
        # Every execution holds one long-poll open; the shared session's pool is sized for every parked
        # long-poll ([smartflows] max_connections_per_session). The watches count transient failures
        # themselves, so the hook makes one attempt per poll.
        return SmartFlowsAsyncHook(self.smartflows_conn_id, retry_limit=0)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        payload = await self.collect()
        # Yielded after the session is closed: a single-event trigger may never be resumed.
        yield TriggerEvent(payload)

    async def collect(self) -> BatchEvent:
        """Wait (one session) until some executions finished or ``wake_at``; the event's payload."""
        if not self.execution_ids:
            await self._sleep_until(self.wake_at)
            return {"events": [], "running": 0}
        async with self._make_hook() as hook:
            return await self._collect(hook)

    @staticmethod
    async def _sleep_until(when: float | None) -> None:
        if when is not None:
            await asyncio.sleep(max(0.0, when - time.time()))

    async def _watch(self, hook: SmartFlowsAsyncHook, execution_id: str) -> ExecutionEvent:
        watch = ExecutionWatch.of(self, execution_id, self.end_time, log=_WarningsOnly(self.log))
        try:
            return await run_steps_async(wait_steps(watch), hook)
        except SmartFlowsError as err:  # e.g. a refused key: the event says what ended the wait
            return watch.error_event(err)

    def _time_left(self, loop: asyncio.AbstractEventLoop, gather_until: float | None) -> float | None:
        """Seconds until the wait must end (gathering window or wake-up time), None without limit."""
        limits = []
        if gather_until is not None:
            limits.append(gather_until - loop.time())
        if self.wake_at is not None:
            limits.append(self.wake_at - time.time())
        return max(0.0, min(limits)) if limits else None

    async def _collect(self, hook: SmartFlowsAsyncHook) -> BatchEvent:
        loop = asyncio.get_running_loop()
        pending = {asyncio.ensure_future(self._watch(hook, eid)) for eid in dict.fromkeys(self.execution_ids)}
        total = len(pending)
        events: list[ExecutionEvent] = []
        gather_until: float | None = None
        try:
            while pending:
                left = self._time_left(loop, gather_until)
                if left == 0.0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                events.extend(task.result() for task in done)
                if events and gather_until is None:
                    gather_until = loop.time() + self.gather_seconds
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return {"events": events, "running": total - len(events)}

    async def on_kill(self) -> None:
        """Cancel every execution of the wait when a user killed the deferred task (``cancel_on_kill``)."""
        if not self.cancel_on_kill or not self.execution_ids:
            return
        self.log.info(
            "Cancelling %d Smart Flows executions of the batch (task killed)", len(self.execution_ids)
        )
        async with SmartFlowsAsyncHook(self.smartflows_conn_id) as hook:
            for execution_id in self.execution_ids:
                try:
                    await hook.cancel_execution(execution_id)
                except SmartFlowsError as err:
                    self.log.warning("Could not cancel Smart Flows execution %s: %s", execution_id, err)
