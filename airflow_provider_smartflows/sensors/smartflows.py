"""Sensor that waits for a Smart Flows execution started elsewhere."""

from __future__ import annotations

import dataclasses
import datetime
import re
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)
from airflow.triggers.base import StartTriggerArgs

from airflow_provider_smartflows.deferral import airflow_timeout_text, is_deferral_timeout
from airflow_provider_smartflows.exceptions import SmartFlowsNotFoundError
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.human_bridge import check_ask_available
from airflow_provider_smartflows.links import SmartFlowsExecutionLink
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_smartflows.waiting import run_steps, waiting_for_steps
from airflow_provider_smartflows.worker_wait import SmartFlowsExecutionWaitMixin

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.human_bridge import AskInAirflow
    from airflow_provider_smartflows.waiting import ExecutionWatch


# ti.xcom_pull(...) without map_indexes asks for every map index, a request the triggerer of
# Airflow 3.3.2 cannot answer (the rendering hangs); map_indexes=-1 asks for one.
_XCOM_PULL_ALL_INDEXES = re.compile(r"xcom_pull\((?![^)]*map_indexes)")


def _triggerer_cannot_render(execution_id: object) -> bool:
    return isinstance(execution_id, str) and bool(_XCOM_PULL_ALL_INDEXES.search(execution_id))


class SmartFlowsExecutionSensor(SmartFlowsExecutionWaitMixin, BaseSensorOperator):
    """
    Wait for a Smart Flows execution to finish, poking or deferred.

    Same status semantics as :class:`~airflow_provider_smartflows.operators.run_flow.SmartFlowsRunFlowOperator`
    (``Warning`` policy, ``user_input`` answers, failures with the flow's messages) and the same
    result: ``{"execution_id", "status", "document_ids", "execution_url"}``. The sensor never
    cancels the execution (it did not start it); reaching ``timeout`` raises
    ``AirflowSensorTimeout``. An execution the server no longer knows (404: purged by its
    clean-up, or deleted) fails the sensor with :class:`SmartFlowsExecutionGoneError`; the sensor
    starts nothing, so only running the task that started the execution again helps.

    :param execution_id: the execution to wait for (templated), e.g.
        ``"{{ ti.xcom_pull('start', key='execution_id') }}"``.
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param fail_on_warning: treat the ``Warning`` outcome as a failure.
    :param user_input: answers to post when the execution asks for user input (templated).
    :param deferrable: wait on the triggerer (long-polling every ``poke_interval`` seconds at most).
    :param start_from_trigger: with ``deferrable`` on Airflow >= 3.3, start in the triggerer: no
        worker runs the sensor (``execution_id`` is rendered there) unless its outcome needs one
        (a form to answer, a failure, a ``Warning``, the timeout). Mapped sensors start on a
        worker (Airflow 3.3.2 does not start mapped tasks from the triggerer), and so does an
        ``execution_id`` whose ``xcom_pull`` has no ``map_indexes`` (the triggerer of Airflow
        3.3.2 cannot render it): write ``ti.xcom_pull(task_ids="start", key="execution_id",
        map_indexes=-1)``.
    """

    template_fields: Sequence[str] = ("execution_id", "user_input")
    template_fields_renderers = {"user_input": "json"}
    operator_extra_links = (SmartFlowsExecutionLink(),)
    ui_color = "#e8f0fe"
    # Class level for mapped sensors, which Airflow 3.3.2 never starts from the triggerer.
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow_provider_smartflows.triggers.smartflows.SmartFlowsExecutionTrigger",
        trigger_kwargs={},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = False
    gone_advice = (
        "This sensor did not start it and never starts one, so a retry fails the same way: run the "
        "task that started the execution again for a new one."
    )

    def __init__(
        self,
        *,
        execution_id: str,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        fail_on_warning: bool = False,
        user_input: dict[str, Any] | str | AskInAirflow | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        start_from_trigger: bool = True,
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
        if (
            deferrable
            and start_from_trigger
            and AIRFLOW_V_3_3_PLUS
            and _triggerer_cannot_render(execution_id)
        ):
            self.log.warning(
                "Task %s starts on a worker, not in the triggerer: its execution_id calls xcom_pull "
                "without map_indexes, which the triggerer of Airflow 3.3 cannot render; add "
                "map_indexes=-1 to start in the triggerer.",
                self.task_id,
            )
        elif deferrable and start_from_trigger and AIRFLOW_V_3_3_PLUS:
            self.start_from_trigger = True
            # A new object: the class attribute is shared by every sensor.
            self.start_trigger_args = dataclasses.replace(
                self.start_trigger_args,
                # execution_id is a template field: the triggerer renders it (Airflow >= 3.3).
                trigger_kwargs={
                    "execution_id": execution_id,
                    "smartflows_conn_id": smartflows_conn_id,
                    "poll_interval": self.poll_interval,
                    "fail_on_warning": fail_on_warning,
                    "max_consecutive_failures": self.max_consecutive_failures,
                    "end_from_trigger": True,
                },
                timeout=datetime.timedelta(seconds=float(self.timeout)) if self.timeout else None,
            )

    def execute(self, context: Context) -> Any:
        check_ask_available(self.user_input, self.task_id)
        self._push_execution_xcoms(context, str(self.execution_id))
        if not self.deferrable:
            return super().execute(context)
        end_time = time.time() + float(self.timeout) if self.timeout else None
        return self.waiter.wait_for(context, str(self.execution_id), end_time)

    def execute_complete(
        self,
        context: Context,
        event: Mapping[str, Any],
        end_time: float | None = None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        # Started in the triggerer, the sensor has not pushed its execution's link yet.
        if "execution_id" in event:
            self._push_execution_xcoms(context, str(event["execution_id"]))
        return super().execute_complete(context, event, end_time, answered)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        execution_id = str(self.execution_id)
        if self._poke_watch is None:  # one per try: it logs changes only and counts unknown statuses
            self._poke_watch = self.waiter.watch(execution_id, None)
        try:
            progress = self.hook.get_progress(execution_id)
        except SmartFlowsNotFoundError as err:  # purged by the server's clean-up, or deleted
            raise self.waiter.gone_error(execution_id, self._poke_watch.last_status) from err
        event = self._poke_watch.on_progress(progress)
        if event is None:
            run_steps(waiting_for_steps(self._poke_watch, progress), self.hook)
            return False
        result = self.waiter.handle_event(context, self.waiter.with_documents(event), self._answered)
        if result is None:  # a form was answered: keep poking
            return False
        return PokeReturnValue(is_done=True, xcom_value=result)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Sensor semantics at Airflow's timeout while deferred (``soft_fail`` skips, no cancel);
        the error names the execution, which is left running."""
        if not is_deferral_timeout(next_method, next_kwargs):
            return super().resume_execution(next_method, next_kwargs, context)
        try:  # past the mixin: the sensor never cancels
            return BaseSensorOperator.resume_execution(self, next_method, next_kwargs, context)
        except AirflowSkipException:
            raise
        except Exception as err:
            raise AirflowSensorTimeout(
                f"Airflow's timeout of this deferred sensor passed ({airflow_timeout_text(self)}) "
                f"while it waited for Smart Flows execution {self.execution_id}; the execution was "
                "left running (a sensor never cancels)."
            ) from err

    def on_timeout(self, execution_id: str) -> None:
        """The sensor's deadline passed (deferrable path): sensor semantics, no cancel."""
        raise AirflowSensorTimeout(
            f"Smart Flows execution {execution_id} did not finish within the sensor's timeout "
            f"({self.timeout} s); it was left running."
        )
