"""The worker side of waiting, shared by :class:`SmartFlowsRunFlowOperator` and the sensor.

The waiting rules themselves (and the trigger event they produce) live in
:mod:`airflow_provider_smartflows.waiting`; this mixin runs them on the worker with the
synchronous hook, or defers to :class:`SmartFlowsExecutionTrigger`, and turns the event into a
result, an error, or an answer to a form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_smartflows.exceptions import (
    SmartFlowsError,
    SmartFlowsExecutionError,
    SmartFlowsInputError,
    SmartFlowsTimeoutError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.links import XCOM_EXECUTION_URL
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.operators.hitl import SmartFlowsHumanInputMixin, ask_settings
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION
from airflow_provider_smartflows.waiting import (
    EVENT_ERROR,
    EVENT_FAILED,
    EVENT_INPUT_REQUIRED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    ExecutionWatch,
    document_ids_steps,
    one_line,
    run_steps,
    wait_steps,
    with_document_ids,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.models import ExecutionProgress
    from airflow_provider_smartflows.waiting import ExecutionEvent

XCOM_EXECUTION_ID = "execution_id"


def _stage_key(progress: ExecutionProgress) -> str:
    """Identify one UserInput prompt, so the same prompt is never answered twice."""
    current = progress.raw.get("currentData")
    current_id = current.get("id") if isinstance(current, Mapping) else None
    return f"{current_id}|{','.join(progress.form_keys)}|{progress.percentage}|{progress.message}"


def _parse_user_input(value: Any) -> dict[str, Any] | None:
    """``user_input`` as a dict (a rendered template may hand over JSON text)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise SmartFlowsInputError(f"user_input is not a JSON object: {err}") from err
    if not isinstance(value, Mapping):
        raise SmartFlowsInputError(
            f"user_input must be a mapping of form keys to answers, got {type(value).__name__}"
        )
    return dict(value)


class SmartFlowsExecutionWaitMixin(SmartFlowsHumanInputMixin):
    """
    The status semantics shared by :class:`SmartFlowsRunFlowOperator` and the sensor.

    Waiting produces the same :class:`~airflow_provider_smartflows.waiting.ExecutionEvent` whether
    it happens in the trigger (deferrable) or on the worker (synchronous), and
    :meth:`handle_event` turns it into a result or an error:

    - ``Success`` succeeds; ``Warning`` succeeds with the warnings logged unless ``fail_on_warning``;
    - ``Error``, ``Canceled``, ``Interrupted`` raise :class:`SmartFlowsExecutionError` with the
      flow's own FlowException messages;
    - ``UserInput`` posts ``user_input`` (once per prompt) and waits again, asks a person in
      Airflow's UI (``user_input="ask"``, :mod:`~airflow_provider_smartflows.operators.hitl`), or
      fails listing the form's keys; ``SelectFlow`` fails; ``Queued``/``Running``/``Waiting`` keep waiting;
    - a status this provider does not know fails after a few polls, leaving the execution alone.
    """

    #: Transient API failures tolerated in a row while waiting (count resets on a good answer).
    max_consecutive_failures: int = 10

    smartflows_conn_id: str
    poll_interval: float
    fail_on_warning: bool
    user_input: Any
    cancel_on_kill: bool
    deferrable: bool
    if TYPE_CHECKING:
        # Provided by BaseOperator in the concrete classes.
        log: Any

        def defer(
            self, *, trigger: Any, method_name: str, kwargs: Any = None, timeout: Any = None
        ) -> NoReturn: ...

    @cached_property
    def hook(self) -> SmartFlowsHook:
        """The synchronous hook (worker side)."""
        return SmartFlowsHook(self.smartflows_conn_id)

    # --- results --------------------------------------------------------------------------------

    def _push_execution_xcoms(self, context: Context, execution_id: str) -> str:
        """Push the execution id and its UI link to XCom (idempotent); return the link."""
        url = self.hook.execution_url(execution_id)
        ti = context["ti"]
        ti.xcom_push(key=XCOM_EXECUTION_ID, value=execution_id)
        ti.xcom_push(key=XCOM_EXECUTION_URL, value=url)
        return url

    def _result(self, execution_id: str, status: str | None, document_ids: Sequence[str]) -> dict[str, Any]:
        return {
            "execution_id": execution_id,
            "status": status,
            "document_ids": list(document_ids),
            "execution_url": self.hook.execution_url(execution_id),
        }

    # --- waiting --------------------------------------------------------------------------------

    def _watch(self, execution_id: str, end_time: float | None) -> ExecutionWatch:
        return ExecutionWatch(
            execution_id,
            poll_interval=float(self.poll_interval),
            end_time=end_time,
            fail_on_warning=self.fail_on_warning,
            max_consecutive_failures=self.max_consecutive_failures,
            log=self.log,
        )

    def _with_documents(self, event: ExecutionEvent) -> ExecutionEvent:
        """A success event whose progress named no documents: list them from the execution."""
        return run_steps(with_document_ids(event, self.log), self.hook)

    def _document_ids(self, execution_id: str) -> list[str]:
        """The documents of a finished execution whose progress named none."""
        return run_steps(document_ids_steps(execution_id, self.log), self.hook)

    def _wait_sync(self, execution_id: str, end_time: float | None) -> ExecutionEvent:
        """Long-poll on the worker until there is an event (the trigger's rules, same events).

        An error that ends the wait is raised as it is: on the worker the error itself says most.
        """
        return run_steps(wait_steps(self._watch(execution_id, end_time)), self.hook)

    def _trigger(self, execution_id: str, end_time: float | None) -> SmartFlowsExecutionTrigger:
        if self.cancel_on_kill and not AIRFLOW_V_3_3_PLUS:
            self.log.warning(
                "cancel_on_kill while deferred is unavailable: Airflow %s does not call a trigger's "
                "on_kill (Airflow >= 3.3 does), so killing this task while it waits on the triggerer "
                "leaves Smart Flows execution %s running; cancel it in Smart Flows if needed: %s",
                AIRFLOW_VERSION,
                execution_id,
                self.hook.execution_url(execution_id),
            )
        return SmartFlowsExecutionTrigger(
            execution_id=execution_id,
            smartflows_conn_id=self.smartflows_conn_id,
            poll_interval=float(self.poll_interval),
            end_time=end_time,
            fail_on_warning=self.fail_on_warning,
            max_consecutive_failures=self.max_consecutive_failures,
            cancel_on_kill=self.cancel_on_kill,
        )

    def wait_for(
        self,
        context: Context,
        execution_id: str,
        end_time: float | None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        """Wait for the execution (deferring when ``deferrable``) and return the result dict."""
        answered = list(answered or [])
        while True:
            if self.deferrable:
                # One cheap check first: a finished execution needs no trip to the triggerer.
                event = self._watch(execution_id, end_time).on_progress(self.hook.get_progress(execution_id))
                if event is None:
                    self.defer(
                        trigger=self._trigger(execution_id, end_time),
                        method_name="execute_complete",
                        kwargs={"end_time": end_time, "answered": answered},
                    )
                event = self._with_documents(event)
            else:
                event = self._wait_sync(execution_id, end_time)
            result = self.handle_event(context, event, answered)
            if result is not None:
                return result

    def execute_complete(
        self,
        context: Context,
        event: ExecutionEvent,
        end_time: float | None = None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        """Resume from the trigger: finish, or answer a form and wait (defer) again."""
        if "status" not in event:
            # A person's answer, or the human-input trigger's event, delivered here: a trigger
            # dropped by an answer can outlive it in the triggerer (operators/hitl.py).
            return self.resume_after_person(context, event, None, end_time)
        if end_time is None:
            # dag.test() passes only the event on resume; the event carries the deadline too.
            end_time = event.get("end_time")
        answered = list(answered or [])
        result = self.handle_event(context, event, answered)
        if result is not None:
            return result
        return self.wait_for(context, event["execution_id"], end_time, answered)

    # --- outcomes ------------------------------------------------------------------------------

    def handle_event(
        self, context: Context, event: ExecutionEvent, answered: list[str]
    ) -> dict[str, Any] | None:
        """Turn an event into the result dict, raise, or answer a form (returns None: wait again)."""
        status = event.get("status")
        execution_id = str(event["execution_id"])
        execution_status = event.get("execution_status")
        if status == EVENT_SUCCESS:
            if ExecutionStatus.parse(execution_status) is ExecutionStatus.WARNING:
                self._log_warnings(execution_id)
            self.log.info("%s", event.get("message"))
            return self._result(execution_id, execution_status, event.get("document_ids") or [])
        if status == EVENT_FAILED:
            raise self._execution_error(execution_id, execution_status)
        if status == EVENT_TIMEOUT:
            self.on_timeout(execution_id)
            raise SmartFlowsTimeoutError(
                f"{event.get('message')}. "
                + (
                    "It was cancelled."
                    if self.cancel_on_kill
                    else "It was left running (cancel_on_kill=False)."
                ),
                execution_id=execution_id,
                status=execution_status,
            )
        if status == EVENT_INPUT_REQUIRED:
            if ask_settings(self.user_input) is not None:
                self.ask_person(context, execution_id, event.get("end_time"))  # defers while a form is open
                return None
            self._answer_user_input(execution_id, answered)
            return None
        if status == EVENT_ERROR:
            raise SmartFlowsError(
                f"Waiting for Smart Flows execution {execution_id} failed: {event.get('message')}",
            )
        raise SmartFlowsError(f"Unexpected trigger event for Smart Flows execution {execution_id}: {event!r}")

    def on_timeout(self, execution_id: str) -> None:
        """Called when the deadline passed; cancels the execution when ``cancel_on_kill``."""
        if self.cancel_on_kill:
            self.log.info("Cancelling Smart Flows execution %s: timeout reached", execution_id)
            self.hook.cancel_execution(execution_id)

    def _log_warnings(self, execution_id: str) -> None:
        try:
            execution = self.hook.get_execution(execution_id)
        except SmartFlowsError as err:
            self.log.warning(
                "execution %s finished with warnings (details unavailable: %s)", execution_id, err
            )
            return
        warnings = [str(warning) for warning in execution.warnings] or ["no details given by the server"]
        for warning in warnings:
            self.log.warning("execution %s finished with a warning: %s", execution_id, warning)

    def _execution_error(self, execution_id: str, execution_status: str | None) -> SmartFlowsExecutionError:
        messages: list[str] = []
        try:
            execution = self.hook.get_execution(execution_id)
        except SmartFlowsError as err:
            messages = [f"(the execution's details could not be read: {one_line(err, 200)})"]
        else:
            flow_exceptions = execution.errors
            if ExecutionStatus.parse(execution_status) is ExecutionStatus.WARNING:
                # fail_on_warning: the warnings are the reason.
                flow_exceptions = execution.warnings + execution.errors
            messages = [str(item) for item in flow_exceptions]
        for message in messages:
            self.log.error("execution %s: %s", execution_id, message)
        return SmartFlowsExecutionError(
            execution_id=execution_id,
            status=execution_status,
            messages=messages,
            url=self.hook.execution_url(execution_id),
        )

    def _answer_user_input(self, execution_id: str, answered: list[str]) -> None:
        progress = self.hook.get_progress(execution_id)
        if progress.status is ExecutionStatus.SELECT_FLOW:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} waits for a flow to be selected (SelectFlow): "
                "start it with a flow_id.",
                execution_id=execution_id,
                status=progress.raw_status,
            )
        if progress.status is not ExecutionStatus.USER_INPUT:
            return  # answered elsewhere meanwhile: keep waiting
        keys = ", ".join(progress.form_keys) or "(the server listed none)"
        answers = _parse_user_input(self.user_input)
        if not answers:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} waits for user input and no user_input was given. "
                f"Pass user_input with answers for the form's keys: {keys}.",
                execution_id=execution_id,
                status=progress.raw_status,
            )
        stage = _stage_key(progress)
        if stage in answered:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} asks again for the form it was answered with "
                f"(keys: {', '.join(sorted(answers))}); the answers were not accepted. Form keys: {keys}.",
                execution_id=execution_id,
                status=progress.raw_status,
            )
        if progress.form_keys and not set(answers) & set(progress.form_keys):
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} waits for user input, but user_input has none of "
                f"the form's keys ({keys}); it has: {', '.join(sorted(answers))}.",
                execution_id=execution_id,
                status=progress.raw_status,
            )
        extra = sorted(set(answers) - set(progress.form_keys)) if progress.form_keys else []
        if extra:
            self.log.warning("execution %s: user_input keys not in this form: %s", execution_id, extra)
        # Only the keys are logged: answers may be personal data.
        self.log.info("execution %s: answering user input (keys: %s)", execution_id, ", ".join(answers))
        answered.append(stage)
        after = self.hook.answer_user_input(execution_id, answers)
        if after.status is ExecutionStatus.USER_INPUT and _stage_key(after) == stage:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} did not accept the user_input answers "
                f"(it still waits for the same form, keys: {keys}).",
                execution_id=execution_id,
                status=after.raw_status,
            )
