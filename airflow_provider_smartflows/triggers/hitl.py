"""Trigger that watches a Smart Flows execution while a person's answer is awaited in Airflow.

The operator (on the worker) writes a human-in-the-loop request for the execution's ``UserInput``
prompt and defers on :class:`SmartFlowsHumanInputTrigger`. Two things can resume the task, and the
first one wins:

- the person answers in Airflow ("Required actions", or ``PATCH .../hitlDetails``): Airflow 3.3
  resumes the deferred task at once with ``{chosen_options, params_input, responded_at,
  responded_by_user, timedout}`` and drops this trigger;
- this trigger fires a :class:`HumanWaitEvent`: the execution left the prompt (answered in Smart
  Flows directly, cancelled, finished), the response timeout or the wait's deadline passed, or
  reading the execution failed.

Like the execution trigger it only reads; :meth:`on_kill` cancels the execution only when the task
was killed, not when the person's answer replaced the trigger (Airflow cancels a trigger the same
way in both cases, so the request's answer tells them apart).

The class path ``airflow_provider_smartflows.triggers.hitl.SmartFlowsHumanInputTrigger`` is stored
in the rows of deferred tasks: it must not change.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsError
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.human_input import prompt_key
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.waiting import (
    EVENT_TIMEOUT,
    ExecutionWatch,
    Pause,
    Poll,
    long_poll_seconds,
    run_steps_async,
    with_document_ids,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_smartflows.models import ExecutionProgress
    from airflow_provider_smartflows.waiting import ExecutionEvent, Steps

__all__ = ["HumanWaitEvent", "SmartFlowsHumanInputTrigger", "human_wait_steps"]


class HumanWaitEvent(TypedDict):
    """The payload of :class:`SmartFlowsHumanInputTrigger`'s event, JSON-safe."""

    execution_id: str
    #: What ended the wait; None when the execution left the prompt and runs on.
    execution: ExecutionEvent | None
    #: One line for the task log.
    message: str


def human_wait_steps(
    watch: ExecutionWatch, prompt: str, response_deadline: float | None
) -> Steps[HumanWaitEvent]:
    """Long-poll while the execution waits at ``prompt``; return once it leaves it or time is up."""
    execution_id = watch.execution_id
    while True:
        if watch.expired():
            event = watch.timeout_event()
            return {"execution_id": execution_id, "execution": event, "message": event["message"]}
        remaining = None if response_deadline is None else response_deadline - time.time()
        if remaining is not None and remaining <= 0:
            event = watch.event(
                EVENT_TIMEOUT,
                execution_status=watch.last_status,
                message=f"Nobody answered the Smart Flows form of execution {execution_id} within the "
                "response timeout",
            )
            return {"execution_id": execution_id, "execution": event, "message": event["message"]}
        seconds = min(watch.poll_seconds(), long_poll_seconds(watch.poll_interval, remaining))
        try:
            progress: ExecutionProgress = yield Poll(execution_id, seconds)
        except SmartFlowsApiError as err:
            delay = watch.on_failure(err)
            if delay is None:
                raise
            yield Pause(delay)
            continue
        at_prompt = progress.status is ExecutionStatus.USER_INPUT and prompt_key(progress.raw) == prompt
        outcome = watch.on_progress(progress)  # logs changes, counts unknown statuses
        if at_prompt:
            continue
        if outcome is None:
            if progress.status is ExecutionStatus.UNKNOWN:
                continue
            message = (
                f"Smart Flows execution {execution_id} left the form ({progress.raw_status}): answered there"
            )
            return {"execution_id": execution_id, "execution": None, "message": message}
        outcome = yield from with_document_ids(outcome, watch.log)
        return {"execution_id": execution_id, "execution": outcome, "message": outcome["message"]}


class SmartFlowsHumanInputTrigger(BaseTrigger):
    """
    Watch a Smart Flows execution that waits for a person's answer given in Airflow.

    :param execution_id: the execution.
    :param prompt: the prompt the request is for (:func:`~airflow_provider_smartflows.human_input.prompt_key`).
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param poll_interval: longest single long-poll in seconds.
    :param end_time: the wait's absolute deadline (epoch seconds), None without one.
    :param response_deadline: when the person's time to answer is up (epoch seconds), or None.
    :param fail_on_warning: report a ``Warning`` outcome as ``failed``.
    :param max_consecutive_failures: transient API failures tolerated in a row.
    :param cancel_on_kill: cancel the execution when the task is killed while waiting.
    """

    def __init__(
        self,
        execution_id: str,
        prompt: str,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        response_deadline: float | None = None,
        fail_on_warning: bool = False,
        max_consecutive_failures: int = 10,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()
        self.execution_id = execution_id
        self.prompt = prompt
        self.smartflows_conn_id = smartflows_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.response_deadline = response_deadline
        self.fail_on_warning = fail_on_warning
        self.max_consecutive_failures = max_consecutive_failures
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "execution_id": self.execution_id,
                "prompt": self.prompt,
                "smartflows_conn_id": self.smartflows_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "response_deadline": self.response_deadline,
                "fail_on_warning": self.fail_on_warning,
                "max_consecutive_failures": self.max_consecutive_failures,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = ExecutionWatch(
            self.execution_id,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            fail_on_warning=self.fail_on_warning,
            max_consecutive_failures=self.max_consecutive_failures,
            log=self.log,
        )
        payload: HumanWaitEvent
        # One attempt per poll: the watch counts transient failures itself.
        async with SmartFlowsAsyncHook(self.smartflows_conn_id, retry_limit=0) as hook:
            try:
                payload = await run_steps_async(
                    human_wait_steps(watch, self.prompt, self.response_deadline), hook
                )
            except SmartFlowsError as err:
                event = watch.error_event(err)
                payload = {"execution_id": self.execution_id, "execution": event, "message": event["message"]}
        yield TriggerEvent(payload)

    async def _request_answered(self) -> bool:
        """Whether the task's human-in-the-loop request has an answer (what replaced this trigger)."""
        ti_id = getattr(self.task_instance, "id", None)
        if ti_id is None:
            return False
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        try:
            detail = await sync_to_async(get_hitl_detail_content_detail)(ti_id=ti_id)
        except Exception as err:  # the supervisor's error types vary; not knowing must not cancel
            self.log.warning(
                "Could not read the request of execution %s (%s): leaving the execution as it is",
                self.execution_id,
                err,
            )
            return True
        return bool(detail.response_received)

    async def on_kill(self) -> None:
        """Cancel the execution when the task was killed, not when a person's answer resumed it."""
        if not self.cancel_on_kill:
            return
        if await self._request_answered():
            self.log.info("Execution %s: the request was answered; not cancelling", self.execution_id)
            return
        self.log.info("Cancelling Smart Flows execution %s (task killed)", self.execution_id)
        async with SmartFlowsAsyncHook(self.smartflows_conn_id) as hook:
            await hook.cancel_execution(self.execution_id)
