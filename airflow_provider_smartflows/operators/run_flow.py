"""Operator that starts a Smart Flows flow execution and (optionally) waits for it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ResumableJobMixin, conf

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
    SmartFlowsStartUnknownError,
)
from airflow_provider_smartflows.flow_names import FLOW_XCOM_KEY, check_flow_choice
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.human_bridge import check_ask_available
from airflow_provider_smartflows.links import SmartFlowsExecutionLink
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.outputs import max_output_bytes, named_outputs
from airflow_provider_smartflows.reconcile import ADOPTED, DEFAULT_CLOCK_SKEW, DEFAULT_SETTLE_TIME
from airflow_provider_smartflows.reconciled_start import STARTED_AGAIN
from airflow_provider_smartflows.text import one_line
from airflow_provider_smartflows.validation import check_reconcile_timing, parse_priority
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION
from airflow_provider_smartflows.worker_wait import SmartFlowsExecutionWaitMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.human_bridge import AskInAirflow

#: The status a reattaching retry gives a stored execution the server answers 404 for (purged):
#: neither active nor succeeded, so ``ResumableJobMixin`` starts a new execution.
EXECUTION_GONE = "<gone from the server: 404>"


class SmartFlowsRunFlowOperator(SmartFlowsExecutionWaitMixin, ResumableJobMixin, BaseOperator):
    """
    Start a Smart Flows flow execution and (optionally) wait for it.

    The execution is always started on the worker. Its id and UI link are pushed to XCom
    (``execution_id``, ``execution_url``) right away; the task returns
    ``{"execution_id", "status", "document_ids", "execution_url"}``.

    Retries never start a second execution for a try that already started one, on Airflow >= 3.3:
    the execution id is written to the task state store (``ResumableJobMixin``) right after the
    POST, and a later try of the same task instance reattaches to that execution when it is still
    running (or waits for input), or returns its result when it already succeeded; only a failed
    execution is started anew. This applies to the synchronous and the deferrable path alike, and
    also to a task that is cleared and run again (the store outlives the try; pass
    ``durable=False`` to always start a new execution). Below Airflow 3.3 there is no task state
    store: every try starts a new execution (a retry's log says "Reattach unavailable").
    A stored execution the server no longer knows (404: purged by its clean-up, or deleted) is
    logged with its id and the retry starts a new one; a 404 while waiting fails the try with
    :class:`SmartFlowsExecutionGoneError`, and a retry starts anew.

    A start POST whose outcome is unknown (connection reset after sending, read timeout, 500) is
    reconciled (``reconcile_ambiguous_start``): the flow's executions are listed, and the one the
    server created for this start (same user, same input, created after it was sent) is adopted,
    logged, and stored for reattach like a normal start; when the listing proves that none was
    created, the flow is started again, once. When it cannot be told (several candidates, the
    listing refused), the task raises :class:`SmartFlowsStartUnknownError` naming the candidates,
    which Airflow does not retry: check them on the server before clearing the task. The rule and
    its limits: RELIABILITY.md.

    :param flow_id: flow id or name; without it (and without ``flow_name``) Smart Flows asks for a
        flow (``SelectFlow``), which fails the task.
    :param flow_name: the flow's display name, instead of ``flow_id`` (not both): resolved to its id
        once, before the start (``GET /flows/{name}``, else the flow list matched on ``displayName``,
        exact first, then case-insensitive); no match or several fail the task before anything
        starts. The result carries ``flow_id`` and ``flow_name``.
    :param skip_user_input: start through the vendor's prompt-free start
        (``POST /flows/executions/start?flow=``): data sets, Smart Forms and user-editable fields take
        their default values, so the execution never stops at a ``UserInput`` prompt. Needs
        ``flow_id`` or ``flow_name``. Whether the server reads ``data`` there is unconfirmed: it is
        sent when given.
    :param data: input: None, a dict (Dynamics/Sugar plugin JSON), or XML text/bytes; a string
        ending with ``.xml`` or ``.xml.j2`` is a template file rendered from the DAG's search path.
    :param dataset_id: data set of the flow to feed with ``data``.
    :param priority: execution priority.
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param wait_for_completion: wait for a final status; if False return right after starting.
    :param deferrable: wait on the triggerer instead of the worker.
    :param poll_interval: longest long-poll in seconds (the server answers early on a change).
    :param timeout: seconds to wait at most; then the execution is cancelled (``cancel_on_kill``)
        and :class:`SmartFlowsTimeoutError` raised. None waits without limit.
    :param fail_on_warning: treat the ``Warning`` outcome as a failure. Like a failed execution, a
        Warning one is not reattached to: with ``retries`` each try runs the flow (and generates its
        documents) again.
    :param user_input: answers posted when the execution asks for user input (``UserInput``),
        a mapping of form keys to values; once per prompt. ``"ask"`` (or
        :class:`~airflow_provider_smartflows.human_bridge.AskInAirflow` with assignees,
        notifiers and a response timeout) has a person answer each form in Airflow's Required
        actions page instead (Airflow >= 3.3).
    :param cancel_on_kill: cancel the execution when the task is killed or times out. A kill while
        deferred reaches the trigger from Airflow 3.3 on; older versions log a warning on deferring.
    :param reconcile_ambiguous_start: resolve a start whose outcome is unknown by listing the flow's
        executions (the key needs the right to list them); False fails at once, as before.
    :param reconcile_clock_skew: seconds by which ``createdAt`` may be earlier than the send time as
        measured through the server's ``Date`` header: an execution with the same input created this
        little before the start could be its own, and leaves the outcome unknown.
    :param reconcile_settle_time: seconds to wait before the listing that proves nothing was
        created (the server may still be writing the execution).
    """

    template_fields: Sequence[str] = ("flow_id", "flow_name", "data", "dataset_id", "priority", "user_input")
    # data="letter.xml" (or .xml.j2) is read from the DAG's template search path and rendered.
    template_ext: Sequence[str] = (".xml", ".xml.j2")
    template_fields_renderers = {"data": "py", "user_input": "json"}
    operator_extra_links = (SmartFlowsExecutionLink(),)
    ui_color = "#e8f0fe"

    external_id_key = "smartflows_execution_id"

    def __init__(
        self,
        *,
        flow_id: str | None = None,
        flow_name: str | None = None,
        skip_user_input: bool = False,
        data: dict[str, Any] | str | bytes | None = None,
        dataset_id: str | None = None,
        priority: int | str | None = None,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        timeout: float | None = None,
        fail_on_warning: bool = False,
        user_input: dict[str, Any] | str | AskInAirflow | None = None,
        cancel_on_kill: bool = True,
        reconcile_ambiguous_start: bool = True,
        reconcile_clock_skew: float = DEFAULT_CLOCK_SKEW,
        reconcile_settle_time: float = DEFAULT_SETTLE_TIME,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_flow_choice(flow_id, flow_name, kwargs.get("task_id", "SmartFlowsRunFlowOperator"))
        self.flow_id = flow_id
        self.flow_name = flow_name
        self.skip_user_input = skip_user_input
        self.data = data
        self.dataset_id = dataset_id
        self.priority = priority
        self.smartflows_conn_id = smartflows_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.fail_on_warning = fail_on_warning
        self.user_input = user_input
        self.cancel_on_kill = cancel_on_kill
        self.reconcile_ambiguous_start = reconcile_ambiguous_start
        self.reconcile_clock_skew = reconcile_clock_skew
        self.reconcile_settle_time = reconcile_settle_time
        check_reconcile_timing(reconcile_clock_skew, reconcile_settle_time)
        if poll_interval <= 0:
            raise SmartFlowsInputError(f"poll_interval must be > 0, got {poll_interval!r}")
        if timeout is not None and timeout <= 0:
            raise SmartFlowsInputError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self._execution_id: str | None = None
        self._outcome: dict[str, Any] | None = None
        #: ``{"flow_id", "flow_name"}`` once ``flow_name`` is resolved (also in XCom, for a resume).
        self._flow: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        check_ask_available(self.user_input, self.task_id)  # before anything starts
        return self._complete(context, self.execute_resumable(context))

    def execute_complete(self, context: Context, event: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._complete(context, super().execute_complete(context, event, *args, **kwargs))

    def resume_after_person(self, context: Context, event: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._complete(context, super().resume_after_person(context, event, *args, **kwargs))

    # --- the result: the flow, the named outputs -------------------------------------------------

    def _complete(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        return self._with_outputs(self._with_flow(context, result))

    def _with_outputs(self, result: dict[str, Any]) -> dict[str, Any]:
        """A finished execution's result with its named ``outputs`` (``GET /flows/executions/{id}``),
        each at most ``[smartflows] max_output_bytes`` of JSON; a larger one is left out, logged."""
        if not ExecutionStatus.parse(result.get("status")).is_terminal:
            return result
        try:
            execution = self.hook.get_execution(str(result["execution_id"]))
        except SmartFlowsError as err:  # the flow's outcome stands: its outputs are an extra
            self.log.warning(
                "Outputs of Smart Flows execution %s could not be read, the result has none: %s",
                result["execution_id"],
                one_line(err.message, 300),
            )
            return {**result, "outputs": {}}
        outputs, left_out = named_outputs(execution.raw, max_output_bytes())
        if left_out:
            self.log.warning(
                "Outputs of Smart Flows execution %s left out of the result (over [smartflows] "
                "max_output_bytes = %d): %s",
                result["execution_id"],
                max_output_bytes(),
                ", ".join(left_out),
            )
        return {**result, "outputs": outputs}

    # --- flow_name ------------------------------------------------------------------------------

    def _resolve_flow(self, context: Context) -> str | None:
        """The flow id to start: ``flow_id``, or ``flow_name`` resolved (once, stored in XCom)."""
        if not self.flow_name:
            self._flow = {"flow_id": self.flow_id or None, "flow_name": None}
            return self.flow_id or None
        check_flow_choice(self.flow_id, self.flow_name, self.task_id)  # both rendered now
        flow_id, name = self.hook.resolve_flow(str(self.flow_name))
        self.log.info("Flow name %r resolved to flow %s (%r)", self.flow_name, flow_id, name)
        self._flow = {"flow_id": flow_id, "flow_name": name}
        context["ti"].xcom_push(key=FLOW_XCOM_KEY, value=self._flow)
        return flow_id

    def _with_flow(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        """The result with the flow's ``flow_id`` and ``flow_name`` (those resolved, when known)."""
        flow = self._flow
        if flow is None and self.flow_name:
            flow = context["ti"].xcom_pull(task_ids=self.task_id, key=FLOW_XCOM_KEY)
        flow = flow or {"flow_id": self.flow_id or None, "flow_name": None}
        return {**result, "flow_id": flow.get("flow_id"), "flow_name": flow.get("flow_name")}

    # --- ResumableJobMixin --------------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        if not AIRFLOW_V_3_3_PLUS and context["ti"].try_number > 1:
            self.log.warning(
                "Reattach unavailable: Airflow %s has no task state store (Airflow >= 3.3 has), so try "
                "%s starts a new Smart Flows execution; one started by an earlier try is not resumed.",
                AIRFLOW_VERSION,
                context["ti"].try_number,
            )
        priority = parse_priority(self.priority)  # a rendered template is text
        flow_id = self._resolve_flow(context)  # before anything starts
        execution_id, status = self._start_execution(flow_id, priority)
        self._execution_id = execution_id
        url = self._push_execution_xcoms(context, execution_id)
        self.log.info("Smart Flows execution %s (%s) in the UI: %s", execution_id, status, url)
        return execution_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        try:
            progress = self.hook.get_progress(str(external_id))
        except SmartFlowsNotFoundError as err:
            # Purged by the server's clean-up (or deleted): nothing to reattach to, start anew.
            self.log.warning(
                "Smart Flows execution %s stored by an earlier try is gone from the server (404: purged "
                "by its clean-up or deleted), so this try starts a new execution: %s",
                external_id,
                one_line(err, 300),
            )
            return EXECUTION_GONE
        return progress.raw_status or ExecutionStatus.UNKNOWN.value

    def is_job_active(self, status: str) -> bool:
        # An unknown status counts as active: reattaching reports it, starting anew could duplicate.
        return status != EXECUTION_GONE and not ExecutionStatus.parse(status).is_terminal

    def is_job_succeeded(self, status: str) -> bool:
        if status == EXECUTION_GONE:
            return False
        parsed = ExecutionStatus.parse(status)
        return parsed is ExecutionStatus.SUCCESS or (
            parsed is ExecutionStatus.WARNING and not self.fail_on_warning
        )

    # The SDK returns this method's value when it reattaches to a running execution, so it
    # returns the result (its declared None would lose it).
    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:  # type: ignore[override]
        execution_id = str(external_id)
        self._execution_id = execution_id
        self._push_execution_xcoms(context, execution_id)
        if not self.wait_for_completion:
            self._outcome = self.waiter.current_result(execution_id)
        else:
            end_time = None if self.timeout is None else time.time() + float(self.timeout)
            self._outcome = self.waiter.wait_for(context, execution_id, end_time)
        return self._outcome

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        execution_id = str(external_id)
        if self._outcome is not None and self._outcome["execution_id"] == execution_id:
            return self._outcome
        # Reached when a retry finds the execution already finished successfully.
        self._execution_id = execution_id
        self._push_execution_xcoms(context, execution_id)
        self.log.info("Smart Flows execution %s already finished; not starting a new one", execution_id)
        return self.waiter.current_result(execution_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the Smart Flows execution as the ``externalQuery`` run facet."""
        from airflow_provider_smartflows.lineage import operator_lineage

        return operator_lineage(execution_id=self._execution_id, base_url=self.hook.settings.base_url)

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._execution_id:
            self.log.info("Cancelling Smart Flows execution %s (task killed)", self._execution_id)
            self.hook.cancel_execution(self._execution_id)

    # --- a start whose outcome is unknown ------------------------------------------------------

    def _start_execution(self, flow_id: str | None, priority: Any) -> tuple[str, str]:
        """
        POST the start; with ``reconcile_ambiguous_start`` an unknown outcome is reconciled by the
        hook (adopted, or started again once). Returns (execution id, status to log); an outcome
        that stays unknown raises :class:`SmartFlowsStartUnknownError`.
        """
        dataset_id = self.dataset_id or None
        try:
            if not self.reconcile_ambiguous_start:
                progress = self.hook.start_execution(
                    flow_id,
                    self.data,
                    dataset_id=dataset_id,
                    priority=priority,
                    skip_user_input=self.skip_user_input,
                )
                return progress.id, str(progress.raw_status)
            started = self.hook.start_execution_reconciled(
                flow_id,
                self.data,
                dataset_id=dataset_id,
                priority=priority,
                skip_user_input=self.skip_user_input,
                clock_skew=self.reconcile_clock_skew,
                settle_time=self.reconcile_settle_time,
            )
        except SmartFlowsApiError as err:
            if not err.may_have_started:
                raise
            # No execution id to store: an Airflow retry would start the flow a second time.
            raise SmartFlowsStartUnknownError(err.message, **err.fields()) from err
        if started.how == ADOPTED:
            self.log.warning(
                "Adopted Smart Flows execution %s of flow %s: the start got no usable answer (%s), and %s.",
                started.execution_id,
                flow_id,
                started.cause,
                started.reason,
            )
        elif started.how == STARTED_AGAIN:
            self.log.warning(
                "Started flow %s again as execution %s: the first start got no usable answer (%s), and "
                "%s, so it had created nothing.",
                flow_id,
                started.execution_id,
                started.cause,
                started.reason,
            )
        return started.execution_id, started.raw_status or started.how
