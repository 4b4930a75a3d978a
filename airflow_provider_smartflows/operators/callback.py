"""Operator that resumes a ``Waiting`` Smart Flows execution through its callback."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsCallbackError,
    SmartFlowsError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.inputs import validate_id
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.links import (
    XCOM_EXECUTION_ID,
    XCOM_EXECUTION_URL,
    SmartFlowsExecutionLink,
    remember_execution_url,
)
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.validation import check_number

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.models import Execution

#: Statuses an execution passes through before it can reach ``Waiting``.
_NOT_YET_WAITING = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})
#: Longest single long-poll while waiting for the execution to reach ``Waiting``.
_POLL_SECONDS = 30.0


class SmartFlowsCallbackOperator(BaseOperator):
    """
    Resume a Smart Flows execution that waits for an external event (status ``Waiting``).

    A flow can stop until another system says so (an e-signature, an approval elsewhere); the
    execution names what it waits for in ``state.waitingFor``. This operator sends the callback
    that resumes it, ``POST /flows/callback/{callback_id}?executionId=...`` with an optional body,
    when a DAG knows the event happened. The vendor needs no API key on that route; the
    connection's key is sent anyway.

    Nothing is sent before the execution was read and found ``Waiting``: an unknown execution, a
    finished one, or one waiting for user input fails the task with
    :class:`~airflow_provider_smartflows.exceptions.SmartFlowsCallbackError`, which names the
    status and what to do. An execution still ``Queued`` or ``Running`` is waited for (long-polled)
    up to ``waiting_timeout`` seconds, since a DAG often resumes a flow it has just started. A
    callback the server refuses (unknown callback id, the execution no longer waiting) fails with
    the callback id and the server's answer.

    Returns ``{"execution_id", "callback_id", "status", "answer", "execution_url"}``: ``status``
    is the execution's status right after the callback (``None`` if it could not be read), and
    ``answer`` the server's one-line answer. Wait for the end with
    :class:`~airflow_provider_smartflows.sensors.smartflows.SmartFlowsExecutionSensor`.

    :param execution_id: the ``Waiting`` execution (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='start', key='execution_id') }}"``.
    :param callback_id: the callback that resumes it (templated), as the flow's external system
        received it (the execution's ``state.waitingFor`` names it).
    :param body: optional payload (templated): a dict or list is sent as JSON, a str as it is (as
        JSON when it parses as JSON, else as text); None sends no body.
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param waiting_timeout: seconds to wait for a ``Queued`` / ``Running`` execution to reach
        ``Waiting`` before failing (0: it must be ``Waiting`` already).
    """

    template_fields: Sequence[str] = ("execution_id", "callback_id", "body")
    template_fields_renderers = {"body": "json"}
    operator_extra_links = (SmartFlowsExecutionLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        execution_id: str,
        callback_id: str,
        body: Any = None,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        waiting_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.execution_id = execution_id
        self.callback_id = callback_id
        self.body = body
        self.smartflows_conn_id = smartflows_conn_id
        self.waiting_timeout = check_number(
            "waiting_timeout", waiting_timeout, minimum=0, unit="a number of seconds"
        )

    @cached_property
    def hook(self) -> SmartFlowsHook:
        return SmartFlowsHook(self.smartflows_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        execution_id = validate_id(self.execution_id, "execution")
        callback_id = validate_id(self.callback_id, "callback")
        url = self.hook.execution_url(execution_id)
        context["ti"].xcom_push(key=XCOM_EXECUTION_ID, value=execution_id)
        context["ti"].xcom_push(key=XCOM_EXECUTION_URL, value=url)
        remember_execution_url(self, url)
        execution = self._waiting_execution(execution_id, callback_id)
        self.log.info(
            "Smart Flows execution %s waits for %s; sending callback %s",
            execution_id,
            execution.waiting_for or "an external event it does not name",
            callback_id,
        )
        answer = self._send(execution, callback_id)
        status = self._status_after(execution_id)
        self.log.info("Smart Flows execution %s is %s after callback %s", execution_id, status, callback_id)
        return {
            "execution_id": execution_id,
            "callback_id": callback_id,
            "status": status,
            "answer": answer,
            "execution_url": url,
        }

    def _waiting_execution(self, execution_id: str, callback_id: str) -> Execution:
        """The execution once ``Waiting``; raises when it is unknown or will not be ``Waiting`` in time."""
        deadline = time.monotonic() + self.waiting_timeout
        try:
            while True:
                execution = self.hook.get_execution(execution_id)
                remaining = deadline - time.monotonic()
                if execution.status is ExecutionStatus.WAITING:
                    return execution
                if execution.status not in _NOT_YET_WAITING or remaining <= 0:
                    raise self._not_waiting(execution, callback_id)
                # The long-poll answers early when the execution changes.
                self.hook.get_progress(execution_id, wait_seconds=min(remaining, _POLL_SECONDS))
        except SmartFlowsNotFoundError as err:
            raise SmartFlowsCallbackError(
                f"Smart Flows execution {execution_id} was not found ({err.message}); callback "
                f"{callback_id} was not sent. Check the execution id (and the task or XCom it comes "
                "from): an execution purged by the server's clean-up cannot be resumed.",
                execution_id=execution_id,
                callback_id=callback_id,
                http_status=err.status_code,
            ) from err

    def _not_waiting(self, execution: Execution, callback_id: str) -> SmartFlowsCallbackError:
        status = execution.status
        shown = execution.raw_status or status.value
        if status.is_terminal:
            advice = "it has finished, so there is nothing to resume: run the flow again for a new execution"
        elif status.needs_input:
            advice = (
                "it waits for a person (a form or a flow choice), not for an external event: answer it "
                "with user_input on the run operator or the sensor instead of a callback"
            )
        elif status in _NOT_YET_WAITING:
            advice = (
                f"it did not reach Waiting within waiting_timeout ({self.waiting_timeout:g} s): raise "
                "waiting_timeout, or check that the flow has a step that waits for an external event"
            )
        else:
            advice = "check it in Smart Flows"
        return SmartFlowsCallbackError(
            f"Smart Flows execution {execution.id} is {shown}, not Waiting; callback {callback_id} was "
            f"not sent: {advice}. See {self.hook.execution_url(execution.id)}",
            execution_id=execution.id,
            callback_id=callback_id,
            status=shown,
        )

    def _send(self, execution: Execution, callback_id: str) -> str:
        """Send the callback; a refusal becomes a :class:`SmartFlowsCallbackError` with the answer."""
        try:
            return self.hook.resume_callback(execution.id, callback_id, self.body)
        except SmartFlowsAuthError:
            raise  # its own message says which key to fix
        except SmartFlowsApiError as err:
            if err.status_code is None:
                raise  # no answer: the connection error says whether the request was sent
            waits_for = execution.waiting_for or "an external event it does not name"
            raise SmartFlowsCallbackError(
                f"Smart Flows refused callback {callback_id} for execution {execution.id} (HTTP "
                f"{err.status_code}): {err.body_excerpt or 'no message'}. The execution was Waiting "
                f"for {waits_for}: check the callback id against it.",
                execution_id=execution.id,
                callback_id=callback_id,
                status=execution.raw_status,
                http_status=err.status_code,
            ) from err

    def _status_after(self, execution_id: str) -> str | None:
        """The execution's status after the callback; None (and a warning) if it cannot be read:
        the callback was sent, so the task must not fail (a retry would send it again)."""
        try:
            return self.hook.get_execution(execution_id).raw_status
        except SmartFlowsError as err:
            self.log.warning("Could not read execution %s after the callback: %s", execution_id, err)
            return None
