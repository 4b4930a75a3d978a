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

Like the execution trigger it never changes the execution but in :meth:`on_kill`, which cancels it
only when the task was killed, not when a person's answer replaced the trigger (Airflow stops a
trigger the same way in both cases; the request's answer and the task's state tell them apart).
Before its event it closes the request (an answer recorded as
:data:`~airflow_provider_smartflows.human_input.CLOSED_OPTION`), so that it leaves Required actions:
Airflow 3.3 lets a trigger write a request's answer, not a running task.

The class path ``airflow_provider_smartflows.triggers.hitl.SmartFlowsHumanInputTrigger`` is stored
in the rows of deferred tasks: it must not change.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_smartflows.exceptions import SmartFlowsError
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.human_input import CLOSED_OPTION
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.waiting import (
    EVENT_TIMEOUT,
    KIND_ANSWER,
    KIND_HUMAN_WAIT,
    ExecutionWatch,
    HumanWaitEvent,
    long_poll_seconds,
    poll_steps,
    run_steps_async,
    with_document_ids,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_smartflows.waiting import ExecutionEvent, HumanAnswerEvent, Steps

__all__ = ["HumanWaitEvent", "SmartFlowsHumanInputTrigger", "human_wait_steps"]

# States a user gives a task by hand (mark failed / success / skipped); a resumed task is not in them.
_KILLED_STATES = frozenset({"failed", "success", "skipped", "up_for_retry", "upstream_failed", "removed"})


def _ended(watch: ExecutionWatch, outcome: ExecutionEvent | None, message: str) -> HumanWaitEvent:
    return {
        "kind": KIND_HUMAN_WAIT,
        "execution_id": watch.execution_id,
        "execution": outcome,
        "message": message,
    }


def human_wait_steps(
    watch: ExecutionWatch, prompt: str, response_deadline: float | None
) -> Steps[HumanWaitEvent]:
    """Long-poll while the execution waits at ``prompt``; return once it leaves it or time is up.

    Failed polls are tolerated as in every wait (:func:`~airflow_provider_smartflows.waiting.poll_steps`).
    """
    execution_id = watch.execution_id
    while True:
        if watch.expired():
            event = watch.timeout_event()
            return _ended(watch, event, event["message"])
        remaining = None if response_deadline is None else response_deadline - time.time()
        if remaining is not None and remaining <= 0:
            event = watch.event(
                EVENT_TIMEOUT,
                execution_status=watch.last_status,
                message=f"Nobody answered the Smart Flows form of execution {execution_id} within the "
                "response timeout",
            )
            return _ended(watch, event, event["message"])
        seconds = min(watch.poll_seconds(), long_poll_seconds(watch.poll_interval, remaining))
        progress = yield from poll_steps(watch, seconds)
        if progress is None:
            continue
        at_prompt = progress.status is ExecutionStatus.USER_INPUT and progress.prompt == prompt
        outcome = watch.on_progress(progress)  # logs changes, counts unknown statuses
        if at_prompt:
            continue
        if outcome is None:
            if progress.status is ExecutionStatus.UNKNOWN:
                continue
            message = (
                f"Smart Flows execution {execution_id} left the form ({progress.raw_status}): answered there"
            )
            return _ended(watch, None, message)
        outcome = yield from with_document_ids(outcome, watch.log)
        return _ended(watch, outcome, outcome["message"])


class SmartFlowsHumanInputTrigger(BaseTrigger):
    """
    Watch a Smart Flows execution that waits for a person's answer given in Airflow.

    :param execution_id: the execution.
    :param prompt: the prompt the request is for (:func:`~airflow_provider_smartflows.models.prompt_key`).
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
        watch = ExecutionWatch.of(self, self.execution_id, self.end_time)
        answer = await self._answer_given_before_start()
        if answer is not None:
            yield TriggerEvent(answer)
            return
        payload: HumanWaitEvent
        # One attempt per poll: the watch counts transient failures itself.
        async with SmartFlowsAsyncHook(self.smartflows_conn_id, retry_limit=0) as hook:
            try:
                payload = await run_steps_async(
                    human_wait_steps(watch, self.prompt, self.response_deadline), hook
                )
            except SmartFlowsError as err:
                event = watch.error_event(err)
                payload = _ended(watch, event, event["message"])
        await self._close_request(payload["message"])
        yield TriggerEvent(payload)

    async def _answer_given_before_start(self) -> HumanAnswerEvent | None:
        """A person's answer that came while the task was still deferring, as Airflow's resume event.

        Airflow resumes a task on an answer only when it is already deferred; one given in the
        moment between writing the request and deferring is recorded but resumes nothing.
        """
        ti_id = getattr(self.task_instance, "id", None)
        if ti_id is None:
            return None
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        try:
            detail = await sync_to_async(get_hitl_detail_content_detail)(ti_id=ti_id)
        except Exception as err:  # a missed early answer is still seen as the request's answer
            self.log.warning("Could not read the request of execution %s: %s", self.execution_id, err)
            return None
        user = detail.responded_by_user
        if not detail.response_received or user is None:
            return None
        self.log.info("Execution %s: answered by %s before the task deferred", self.execution_id, user.name)
        return {
            "kind": KIND_ANSWER,
            "chosen_options": list(detail.chosen_options or []),
            "params_input": dict(detail.params_input or {}),
            "responded_at": detail.responded_at.isoformat() if detail.responded_at else None,
            "responded_by_user": {"id": user.id, "name": user.name},
            "timedout": False,
        }

    async def _close_request(self, why: str) -> None:
        """Record an answer nobody gave, so the request leaves Required actions (the wait is over).

        Done here because Airflow 3.3 lets a trigger, not a running task, write a request's answer.
        """
        ti_id = getattr(self.task_instance, "id", None)
        if ti_id is None:
            return
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response
        from asgiref.sync import sync_to_async

        try:
            await sync_to_async(update_hitl_detail_response)(
                ti_id=ti_id, chosen_options=[CLOSED_OPTION], params_input={}
            )
        except Exception as err:  # answered meanwhile (409): that answer resumes the task instead
            self.log.info("The request of execution %s was not closed (%s)", self.execution_id, err)
        else:
            self.log.info("Closed the request of execution %s: %s", self.execution_id, why)

    async def _killed(self) -> bool:
        """Whether the task was killed (marked failed, success...) rather than resumed by an answer.

        Airflow stops this trigger the same way in both cases. An answer leaves the request answered,
        or (answer refused, asked again) the task scheduled, running or deferred again.
        """
        ti = self.task_instance
        if getattr(ti, "id", None) is None:
            return True  # outside a triggerer (no task instance to ask about)
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        try:
            detail = await sync_to_async(get_hitl_detail_content_detail)(ti_id=ti.id)  # type: ignore[union-attr]
            if detail.response_received:
                return False
            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id,  # type: ignore[union-attr]
                map_index=ti.map_index,  # type: ignore[union-attr]
                task_ids=[ti.task_id],  # type: ignore[union-attr]
                run_ids=[ti.run_id],  # type: ignore[union-attr]
            )
        except Exception as err:  # the supervisor's error types vary; not knowing must not cancel
            self.log.warning(
                "Execution %s: could not tell a kill from an answer (%s)", self.execution_id, err
            )
            return False
        state = (states.get(ti.run_id) or {}).get(ti.task_id)  # type: ignore[union-attr]
        return state in _KILLED_STATES

    async def on_kill(self) -> None:
        """Cancel the execution when the task was killed, not when a person's answer resumed it."""
        if not self.cancel_on_kill:
            return
        if not await self._killed():
            self.log.info("Execution %s: the task was resumed, not killed; not cancelling", self.execution_id)
            return
        self.log.info("Cancelling Smart Flows execution %s (task killed)", self.execution_id)
        async with SmartFlowsAsyncHook(self.smartflows_conn_id) as hook:
            await hook.cancel_execution(self.execution_id)
