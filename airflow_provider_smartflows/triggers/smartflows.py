"""Trigger that waits for a Smart Flows execution on the triggerer.

The trigger only reads: it long-polls ``GET /flows/executions/{id}/progress`` through
:class:`~airflow_provider_smartflows.hooks.smartflows_async.SmartFlowsAsyncHook` and fires one
small JSON event. Everything that changes the execution (answering a form, cancelling after a
timeout) happens on the worker, in the operator that resumes from the event; the one exception is
:meth:`SmartFlowsExecutionTrigger.on_kill`, which Airflow >= 3.3 calls when a user kills the task.

Events (``TriggerEvent.payload``)::

    {"status": "success" | "failed" | "timeout" | "error" | "input_required",
     "execution_id": "...", "execution_status": "Success" | ... | None,
     "message": "...", "document_ids": ["...", ...], "end_time": <epoch seconds> | None}

``input_required`` means the execution waits for a person (``UserInput`` or ``SelectFlow``): the
operator answers on the worker, or fails naming the form's keys.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsError
from airflow_provider_smartflows.hooks.common import MAX_WAIT_SECONDS
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.models import ExecutionStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_smartflows.models import ExecutionProgress

EVENT_SUCCESS = "success"
EVENT_FAILED = "failed"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_INPUT_REQUIRED = "input_required"

#: How many consecutive answers with a status this provider does not know are tolerated before
#: giving up: a newer server may have a transient status we do not know, but waiting forever on a
#: final one we do not know would hang the task until its timeout.
UNKNOWN_STATUS_POLLS = 3

_MAX_MESSAGE = 500


def short(text: object, limit: int = _MAX_MESSAGE) -> str:
    """One-line, bounded text for events and logs."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def long_poll_seconds(poll_interval: float, remaining: float | None) -> int:
    """Whole seconds for the next long-poll: up to ``poll_interval`` and the time left, at least 1.

    The API takes whole seconds and answers at once for 0, so a shorter wait would spin.
    """
    wait = poll_interval if remaining is None else min(poll_interval, remaining)
    return int(min(MAX_WAIT_SECONDS, max(1, math.ceil(wait))))


def progress_line(progress: ExecutionProgress) -> str:
    """``execution <id>: 42 % Generating document`` (the one progress log line)."""
    parts = [f"execution {progress.id}:"]
    if progress.percentage is not None:
        parts.append(f"{progress.percentage:g} %")
    parts.append(progress.message or progress.raw_status or "")
    return " ".join(part for part in parts if part)


def make_event(
    status: str,
    execution_id: str,
    *,
    execution_status: str | None = None,
    message: str = "",
    document_ids: list[str] | None = None,
    end_time: float | None = None,
) -> dict[str, Any]:
    """The JSON payload of every trigger event (and of the operators' synchronous wait)."""
    return {
        "status": status,
        "execution_id": execution_id,
        "execution_status": execution_status,
        "message": short(message),
        "document_ids": list(document_ids or []),
        "end_time": end_time,
    }


def classify(status: ExecutionStatus, *, fail_on_warning: bool) -> str | None:
    """Event status for a final or actionable execution status; None while it keeps running."""
    if status is ExecutionStatus.WARNING and fail_on_warning:
        return EVENT_FAILED
    if status.is_success:
        return EVENT_SUCCESS
    if status.is_failure:
        return EVENT_FAILED
    if status.needs_input:
        return EVENT_INPUT_REQUIRED
    return None


def outcome_message(progress: ExecutionProgress, event_status: str) -> str:
    """Human sentence for an event built from a progress."""
    status = progress.raw_status or progress.status.value
    if event_status == EVENT_INPUT_REQUIRED:
        if progress.status is ExecutionStatus.SELECT_FLOW:
            return f"Smart Flows execution {progress.id} waits for a flow to be selected (SelectFlow)"
        keys = ", ".join(progress.form_keys) or "unknown"
        return f"Smart Flows execution {progress.id} waits for user input (form keys: {keys})"
    text = f"Smart Flows execution {progress.id} finished with status {status}"
    if progress.message:
        text += f": {progress.message}"
    return text


class ExecutionWatch:
    """
    The waiting rules for one execution, shared by the trigger and the operators' worker-side wait.

    Bookkeeping only, no I/O: the caller long-polls for :meth:`next_wait` seconds and reports what it
    got, an answer (:meth:`on_progress`) or a failure (:meth:`on_failure`); an event comes back when
    the wait is over. One progress line is logged whenever percentage or message changes.
    """

    def __init__(
        self,
        execution_id: str,
        *,
        poll_interval: float,
        end_time: float | None,
        fail_on_warning: bool,
        max_consecutive_failures: int,
        log: Any,
    ) -> None:
        self.execution_id = execution_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.fail_on_warning = fail_on_warning
        self.max_consecutive_failures = max_consecutive_failures
        self.log = log
        self.failures = 0
        self.unknown_polls = 0
        self.last_line: str | None = None
        self.last_status: str | None = None

    def event(self, status: str, **kwargs: Any) -> dict[str, Any]:
        return make_event(status, self.execution_id, end_time=self.end_time, **kwargs)

    def _remaining(self) -> float | None:
        return None if self.end_time is None else self.end_time - time.time()

    def next_wait(self) -> int | dict[str, Any]:
        """Seconds for the next long-poll, or the ``timeout`` event once the deadline has passed."""
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            return self.event(
                EVENT_TIMEOUT,
                execution_status=self.last_status,
                message=(
                    f"Smart Flows execution {self.execution_id} did not finish before its deadline "
                    f"(last status {self.last_status or 'unknown'})"
                ),
            )
        return long_poll_seconds(self.poll_interval, remaining)

    def on_failure(self, err: SmartFlowsApiError) -> float | dict[str, Any]:
        """Seconds to pause before polling again, or the ``error`` event that ends the wait."""
        self.failures += 1
        if not err.retryable or self.failures > self.max_consecutive_failures:
            what = f" ({self.failures} transient failures in a row)" if err.retryable else ""
            return self.event(EVENT_ERROR, execution_status=self.last_status, message=f"{err}{what}")
        delay = min(self.poll_interval, err.retry_after or 2.0 ** (self.failures - 1))
        remaining = self._remaining()
        if remaining is not None:
            delay = min(delay, max(remaining, 0.0))
        self.log.warning(
            "execution %s: transient failure %d of %d tolerated, next poll in %.1f s: %s",
            self.execution_id,
            self.failures,
            self.max_consecutive_failures,
            delay,
            short(err, 200),
        )
        return delay

    def on_progress(self, progress: ExecutionProgress) -> dict[str, Any] | None:
        """The event when the execution is final or needs a person; None while it runs.

        A ``success`` event carries the document ids found in the progress; when it has none the
        caller may look them up in the full execution.
        """
        self.failures = 0
        self.last_status = progress.raw_status
        line = progress_line(progress)
        if line != self.last_line:
            self.log.info("%s", line)
            self.last_line = line
        if progress.status is ExecutionStatus.UNKNOWN:
            self.unknown_polls += 1
            if self.unknown_polls < UNKNOWN_STATUS_POLLS:
                return None
            return self.event(
                EVENT_ERROR,
                execution_status=progress.raw_status,
                message=(
                    f"Smart Flows execution {self.execution_id} reports the status "
                    f"{progress.raw_status!r}, which this provider does not know; the execution "
                    "was left as it is. Check it in Smart Flows."
                ),
            )
        self.unknown_polls = 0
        event_status = classify(progress.status, fail_on_warning=self.fail_on_warning)
        if event_status is None:
            return None
        return self.event(
            event_status,
            execution_status=progress.raw_status,
            message=outcome_message(progress, event_status),
            document_ids=[doc.id for doc in progress.documents] if event_status == EVENT_SUCCESS else [],
        )


class SmartFlowsExecutionTrigger(BaseTrigger):
    """
    Wait on the triggerer until a Smart Flows execution is final or needs a person.

    :param execution_id: the execution to wait for.
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param poll_interval: longest single long-poll in seconds; the server answers early when the
        execution changes, so a completed execution is reported within about a second.
    :param end_time: absolute deadline in epoch seconds (never a monotonic clock: the trigger may
        resume on another triggerer); reaching it fires a ``timeout`` event.
    :param fail_on_warning: report a ``Warning`` outcome as ``failed``.
    :param max_consecutive_failures: transient API failures (the hook's retryable errors) tolerated
        in a row; the count resets on every good answer. Auth and other errors end at once.
    :param cancel_on_kill: cancel the execution in :meth:`on_kill` (a user killed the task).
    """

    def __init__(
        self,
        execution_id: str,
        smartflows_conn_id: str = "smartflows_default",
        *,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        fail_on_warning: bool = False,
        max_consecutive_failures: int = 10,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()
        self.execution_id = execution_id
        self.smartflows_conn_id = smartflows_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.fail_on_warning = fail_on_warning
        self.max_consecutive_failures = max_consecutive_failures
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "execution_id": self.execution_id,
                "smartflows_conn_id": self.smartflows_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "fail_on_warning": self.fail_on_warning,
                "max_consecutive_failures": self.max_consecutive_failures,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _make_hook(self) -> SmartFlowsAsyncHook:
        # The trigger counts transient failures itself (max_consecutive_failures), so the hook
        # makes one attempt per poll instead of stacking its own retries on top.
        return SmartFlowsAsyncHook(self.smartflows_conn_id, retry_limit=0)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self._make_hook() as hook:
            payload = await self._wait(hook)
        # Yielded after the session is closed: a single-event trigger may never be resumed.
        yield TriggerEvent(payload)

    async def _wait(self, hook: SmartFlowsAsyncHook) -> dict[str, Any]:
        watch = ExecutionWatch(
            self.execution_id,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            fail_on_warning=self.fail_on_warning,
            max_consecutive_failures=self.max_consecutive_failures,
            log=self.log,
        )
        while True:
            wait = watch.next_wait()
            if isinstance(wait, dict):
                return wait
            try:
                progress = await hook.get_progress(self.execution_id, wait_seconds=wait)
            except SmartFlowsApiError as err:  # a refused key is not retryable: it ends the wait
                delay = watch.on_failure(err)
                if isinstance(delay, dict):
                    return delay
                await asyncio.sleep(delay)
                continue
            except SmartFlowsError as err:
                return watch.event(EVENT_ERROR, execution_status=watch.last_status, message=str(err))
            event = watch.on_progress(progress)
            if event is not None:
                if event["status"] == EVENT_SUCCESS and not event["document_ids"]:
                    event["document_ids"] = await self._documents_from_execution(hook)
                return event

    async def _documents_from_execution(self, hook: SmartFlowsAsyncHook) -> list[str]:
        try:
            execution = await hook.get_execution(self.execution_id)
        except SmartFlowsError as err:
            # The outcome is known; the download step can still list the documents itself.
            self.log.warning("execution %s: could not list its documents: %s", self.execution_id, err)
            return []
        return [doc.id for doc in execution.documents]

    async def on_kill(self) -> None:
        """Cancel the execution when a user killed the deferred task (``cancel_on_kill``)."""
        if not self.cancel_on_kill:
            return
        self.log.info("Cancelling Smart Flows execution %s (task killed)", self.execution_id)
        async with SmartFlowsAsyncHook(self.smartflows_conn_id) as hook:
            await hook.cancel_execution(self.execution_id)
