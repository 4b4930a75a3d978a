"""Sensor that waits for a Smart Flows execution started elsewhere."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.links import SmartFlowsExecutionLink
from airflow_provider_smartflows.operators.execution_wait import SmartFlowsExecutionWaitMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.waiting import ExecutionWatch


class SmartFlowsExecutionSensor(SmartFlowsExecutionWaitMixin, BaseSensorOperator):
    """
    Wait for a Smart Flows execution to finish, poking or deferred.

    Same status semantics as :class:`~airflow_provider_smartflows.operators.run_flow.SmartFlowsRunFlowOperator`
    (``Warning`` policy, ``user_input`` answers, failures with the flow's messages) and the same
    result: ``{"execution_id", "status", "document_ids", "execution_url"}``. The sensor never
    cancels the execution (it did not start it); reaching ``timeout`` raises
    ``AirflowSensorTimeout``.

    :param execution_id: the execution to wait for (templated), e.g.
        ``"{{ ti.xcom_pull('start', key='execution_id') }}"``.
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param fail_on_warning: treat the ``Warning`` outcome as a failure.
    :param user_input: answers to post when the execution asks for user input (templated).
    :param deferrable: wait on the triggerer (long-polling every ``poke_interval`` seconds at most).
    """

    template_fields: Sequence[str] = ("execution_id", "user_input")
    template_fields_renderers = {"user_input": "json"}
    operator_extra_links = (SmartFlowsExecutionLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        execution_id: str,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        fail_on_warning: bool = False,
        user_input: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.execution_id = execution_id
        self.smartflows_conn_id = smartflows_conn_id
        self.fail_on_warning = fail_on_warning
        self.user_input = user_input
        self.deferrable = deferrable
        self.cancel_on_kill = False
        # The deferred wait long-polls at most poke_interval seconds at a time.
        self.poll_interval = float(self.poke_interval)
        self._poke_watch: ExecutionWatch | None = None
        self._answered: list[str] = []

    def execute(self, context: Context) -> Any:
        self._push_execution_xcoms(context, str(self.execution_id))
        if not self.deferrable:
            return super().execute(context)
        end_time = time.time() + float(self.timeout) if self.timeout else None
        return self.wait_for(context, str(self.execution_id), end_time)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        execution_id = str(self.execution_id)
        if self._poke_watch is None:  # one per try: it logs changes only and counts unknown statuses
            self._poke_watch = self._watch(execution_id, None)
        event = self._poke_watch.on_progress(self.hook.get_progress(execution_id))
        if event is None:
            return False
        result = self.handle_event(context, self._with_documents(event), self._answered)
        if result is None:  # a form was answered: keep poking
            return False
        return PokeReturnValue(is_done=True, xcom_value=result)

    def on_timeout(self, execution_id: str) -> None:
        """The sensor's deadline passed (deferrable path): sensor semantics, no cancel."""
        raise AirflowSensorTimeout(
            f"Smart Flows execution {execution_id} did not finish within the sensor's timeout "
            f"({self.timeout} s); it was left running."
        )
