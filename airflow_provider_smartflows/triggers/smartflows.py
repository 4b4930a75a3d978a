"""Trigger that waits for a Smart Flows execution on the triggerer.

The trigger only reads: it long-polls ``GET /flows/executions/{id}/progress`` through
:class:`~airflow_provider_smartflows.hooks.smartflows_async.SmartFlowsAsyncHook` by the waiting
rules of :mod:`airflow_provider_smartflows.waiting` and fires one small JSON event, an
:class:`~airflow_provider_smartflows.waiting.ExecutionEvent`. Everything that changes the
execution (answering a form, cancelling after a timeout) happens on the worker, in the operator
that resumes from the event; the one exception is :meth:`SmartFlowsExecutionTrigger.on_kill`,
which Airflow >= 3.3 calls when a user kills the task.

``input_required`` means the execution waits for a person (``UserInput`` or ``SelectFlow``): the
operator answers on the worker, or fails naming the form's keys.

The class path ``airflow_provider_smartflows.triggers.smartflows.SmartFlowsExecutionTrigger`` is
stored in the rows of deferred tasks: it must not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from airflow_provider_smartflows.exceptions import SmartFlowsError
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.links import XCOM_EXECUTION_ID, XCOM_EXECUTION_URL
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.waiting import (
    EVENT_SUCCESS,
    ExecutionWatch,
    execution_result,
    run_steps_async,
    wait_steps,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_smartflows.waiting import ExecutionEvent


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
    :param end_from_trigger: end the task here on ``Success`` (a sensor started in the triggerer),
        with the result and link as XComs; every other outcome resumes the task on a worker.
    """

    def __init__(
        self,
        execution_id: str,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        fail_on_warning: bool = False,
        max_consecutive_failures: int = 10,
        cancel_on_kill: bool = False,
        end_from_trigger: bool = False,
    ) -> None:
        super().__init__()
        self.execution_id = execution_id
        self.smartflows_conn_id = smartflows_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.fail_on_warning = fail_on_warning
        self.max_consecutive_failures = max_consecutive_failures
        self.cancel_on_kill = cancel_on_kill
        self.end_from_trigger = end_from_trigger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "execution_id": self.execution_id,
            "smartflows_conn_id": self.smartflows_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
            "fail_on_warning": self.fail_on_warning,
            "max_consecutive_failures": self.max_consecutive_failures,
            "cancel_on_kill": self.cancel_on_kill,
        }
        # Only when set: a triggerer still on an older provider version (a rolling upgrade) can
        # then rebuild every trigger a newer worker wrote without this option.
        if self.end_from_trigger:
            kwargs["end_from_trigger"] = True
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _make_hook(self) -> SmartFlowsAsyncHook:
        # The trigger counts transient failures itself (max_consecutive_failures), so the hook
        # makes one attempt per poll instead of stacking its own retries on top.
        return SmartFlowsAsyncHook(self.smartflows_conn_id, retry_limit=0)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self._make_hook() as hook:
            payload = await self._wait(hook)
            url = await hook.execution_url(self.execution_id) if self.end_from_trigger else None
        # Yielded after the session is closed: a single-event trigger may never be resumed.
        if url is not None and self._ends_here(payload):
            result = execution_result(
                payload["execution_id"], payload["execution_status"], payload["document_ids"], url
            )
            self.log.info("%s", payload["message"])
            yield TaskSuccessEvent(
                xcoms={
                    "return_value": result,
                    XCOM_EXECUTION_ID: payload["execution_id"],
                    XCOM_EXECUTION_URL: url,
                }
            )
            return
        yield TriggerEvent(payload)

    @staticmethod
    def _ends_here(payload: ExecutionEvent) -> bool:
        """A plain ``Success`` needs no worker (a ``Warning`` is logged there, failures explained)."""
        return payload["status"] == EVENT_SUCCESS and (
            ExecutionStatus.parse(payload["execution_status"]) is ExecutionStatus.SUCCESS
        )

    async def _wait(self, hook: SmartFlowsAsyncHook) -> ExecutionEvent:
        watch = ExecutionWatch.of(self, self.execution_id, self.end_time)
        try:
            return await run_steps_async(wait_steps(watch), hook)
        except SmartFlowsError as err:  # e.g. a refused key: the event says what ended the wait
            return watch.error_event(err)

    async def on_kill(self) -> None:
        """Cancel the execution when a user killed the deferred task (``cancel_on_kill``)."""
        if not self.cancel_on_kill:
            return
        self.log.info("Cancelling Smart Flows execution %s (task killed)", self.execution_id)
        async with SmartFlowsAsyncHook(self.smartflows_conn_id) as hook:
            await hook.cancel_execution(self.execution_id)
