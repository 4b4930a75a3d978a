"""The worker side of a wait, held by :class:`SmartFlowsRunFlowOperator` and the sensor.

The waiting rules themselves (and the events they produce) live in
:mod:`airflow_provider_smartflows.waiting`. :class:`ExecutionWaiter` runs them on the worker with
the synchronous hook, or defers to :class:`SmartFlowsExecutionTrigger`; whatever the task resumes
from (the execution's outcome, the human-input trigger's event, a person's answer) goes through its
one dispatcher, :meth:`ExecutionWaiter.resume`, and ends in a result, an error, or an answer to a
form (:class:`~airflow_provider_smartflows.human_bridge.HumanInputBridge`). The task holds the
waiter; :class:`SmartFlowsExecutionWaitMixin` gives a task the waiter and the methods Airflow
resumes by name.
"""

from __future__ import annotations

import datetime
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from airflow_provider_smartflows.deferral import (
    airflow_timeout_left,
    airflow_timeout_text,
    is_deferral_timeout,
    resume_timed_out_deferral,
)
from airflow_provider_smartflows.exceptions import (
    SmartFlowsError,
    SmartFlowsExecutionError,
    SmartFlowsExecutionGoneError,
    SmartFlowsNotFoundError,
    SmartFlowsTimeoutError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.human_bridge import HumanInputBridge
from airflow_provider_smartflows.links import (
    XCOM_EXECUTION_ID,
    XCOM_EXECUTION_URL,
    remember_execution_url,
)
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.text import one_line
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION
from airflow_provider_smartflows.waiting import (
    EVENT_ERROR,
    EVENT_FAILED,
    EVENT_GONE,
    EVENT_INPUT_REQUIRED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    KIND_ANSWER,
    KIND_EXECUTION,
    ExecutionWatch,
    document_ids_steps,
    execution_gone_message,
    execution_result,
    run_steps,
    typed_event,
    wait_steps,
    with_document_ids,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.waiting import ExecutionEvent

__all__ = ["ExecutionWaiter", "SmartFlowsExecutionWaitMixin", "WaitingTask"]


def timeout_detail(task: Any, end_time: float | None) -> str:
    """`` (timeout=600 s, waited 601 s: raise the task's timeout ...)`` for a timeout's message."""
    timeout = getattr(task, "timeout", None)
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    elif isinstance(timeout, datetime.timedelta):  # a sensor's
        seconds = timeout.total_seconds()
    else:
        return ""
    waited = f", waited {time.time() - (end_time - seconds):.0f} s" if end_time else ""
    return f" (timeout={seconds:g} s{waited}: raise the task's `timeout` parameter if the flow needs longer)"


class WaitingTask(Protocol):
    """What the worker-side wait reads of the task holding it (the run operator or the sensor)."""

    smartflows_conn_id: str
    poll_interval: float
    fail_on_warning: bool
    max_consecutive_failures: int
    cancel_on_kill: bool
    deferrable: bool
    user_input: Any
    #: What a retry does about an execution that disappeared (ends the error message).
    gone_advice: str

    @property
    def hook(self) -> SmartFlowsHook: ...

    @property
    def log(self) -> Any: ...

    def defer(
        self, *, trigger: Any, method_name: str, kwargs: Any = None, timeout: Any = None
    ) -> NoReturn: ...


class ExecutionWaiter:
    """
    Waits for one execution on the worker, with the status semantics of the run operator and the sensor.

    Waiting produces the same :class:`~airflow_provider_smartflows.waiting.ExecutionEvent` whether
    it happens in the trigger (deferrable) or on the worker (synchronous), and
    :meth:`handle_event` turns it into a result or an error:

    - ``Success`` succeeds; ``Warning`` succeeds with the warnings logged unless ``fail_on_warning``;
    - ``Error``, ``Canceled``, ``Interrupted`` raise :class:`SmartFlowsExecutionError` with the
      flow's own FlowException messages;
    - ``UserInput`` posts ``user_input`` (once per prompt) and waits again, asks a person in
      Airflow's UI (``user_input="ask"``), or fails listing the form's keys
      (:class:`~airflow_provider_smartflows.human_bridge.HumanInputBridge`); ``SelectFlow`` fails;
      ``Queued``/``Running``/``Waiting`` keep waiting;
    - a status this provider does not know fails after a few polls, leaving the execution alone;
    - the deadline calls ``on_timeout`` (the run operator cancels when ``cancel_on_kill``, the
      sensor raises its own timeout), then raises :class:`SmartFlowsTimeoutError`.

    :param task: the task holding the waiter (its settings, hook, log and ``defer``).
    :param on_timeout: called with the execution id when the deadline passed.
    """

    def __init__(self, task: WaitingTask, on_timeout: Callable[[str], None]) -> None:
        self.task = task
        self.on_timeout = on_timeout
        self.human = HumanInputBridge(task)

    @property
    def hook(self) -> SmartFlowsHook:
        return self.task.hook

    @property
    def log(self) -> Any:
        return self.task.log

    # --- results --------------------------------------------------------------------------------

    def push_xcoms(self, context: Context, execution_id: str) -> str:
        """Push the execution id and its UI link to XCom (idempotent); return the link."""
        url = self.hook.execution_url(execution_id)
        ti = context["ti"]
        ti.xcom_push(key=XCOM_EXECUTION_ID, value=execution_id)
        ti.xcom_push(key=XCOM_EXECUTION_URL, value=url)
        remember_execution_url(self.task, url)
        return url

    def result(self, execution_id: str, status: str | None, document_ids: Sequence[str]) -> dict[str, Any]:
        """The task's result for the execution."""
        return execution_result(execution_id, status, document_ids, self.hook.execution_url(execution_id))

    def current_result(self, execution_id: str) -> dict[str, Any]:
        """The result as the execution stands now (it may still run), without waiting."""
        progress = self.hook.get_progress(execution_id)
        documents = [doc.id for doc in progress.documents]
        if not documents and progress.status.is_success:
            documents = run_steps(document_ids_steps(execution_id, self.log), self.hook)
        return self.result(execution_id, progress.raw_status, documents)

    # --- waiting --------------------------------------------------------------------------------

    def watch(self, execution_id: str, end_time: float | None) -> ExecutionWatch:
        """A watch with the task's settings."""
        return ExecutionWatch.of(self.task, execution_id, end_time)

    def with_documents(self, event: ExecutionEvent) -> ExecutionEvent:
        """A success event whose progress named no documents: list them from the execution."""
        return run_steps(with_document_ids(event, self.log), self.hook)

    def _trigger(self, execution_id: str, end_time: float | None) -> SmartFlowsExecutionTrigger:
        task = self.task
        if task.cancel_on_kill and not AIRFLOW_V_3_3_PLUS:
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
            smartflows_conn_id=task.smartflows_conn_id,
            poll_interval=float(task.poll_interval),
            end_time=end_time,
            fail_on_warning=task.fail_on_warning,
            max_consecutive_failures=task.max_consecutive_failures,
            cancel_on_kill=task.cancel_on_kill,
        )

    def wait_for(
        self,
        context: Context,
        execution_id: str,
        end_time: float | None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        """Wait for the execution (deferring when ``deferrable``) and return the result.

        On the worker an error that ends the wait is raised as it is: the error itself says most.
        """
        answered = list(answered or [])
        while True:
            watch = self.watch(execution_id, end_time)
            try:
                event = self._wait_once(context, watch, answered)
            except SmartFlowsNotFoundError as err:  # purged by the server's clean-up, or deleted
                raise self.gone_error(execution_id, watch.last_status) from err
            result = self.handle_event(context, event, answered)
            if result is not None:
                return result

    def _wait_once(self, context: Context, watch: ExecutionWatch, answered: list[str]) -> ExecutionEvent:
        """One wait until the execution is final or needs a person (deferring when ``deferrable``)."""
        if not self.task.deferrable:
            return run_steps(wait_steps(watch), self.hook)
        # One cheap check first: a finished execution needs no trip to the triggerer.
        event = watch.on_progress(self.hook.get_progress(watch.execution_id))
        if event is None:
            self.task.defer(
                trigger=self._trigger(watch.execution_id, watch.end_time),
                method_name="execute_complete",
                kwargs={"end_time": watch.end_time, "answered": answered},
                timeout=airflow_timeout_left(self.task, context),
            )
        return self.with_documents(event)

    def gone_error(self, execution_id: str, last_status: str | None) -> SmartFlowsExecutionGoneError:
        """The error for an execution the server no longer knows (404 while waiting for it)."""
        return SmartFlowsExecutionGoneError(
            f"{execution_gone_message(execution_id, last_status)}. {self.task.gone_advice}",
            execution_id=execution_id,
            status_code=404,
        )

    def deferral_timed_out(self, context: Context) -> NoReturn:
        """Airflow failed the deferred task at its timeout: cancel the execution (``cancel_on_kill``)
        and raise an error naming the timeout and the execution."""
        execution_id = self.execution_of(context, {}, None)
        url = self.hook.execution_url(execution_id)
        status: str | None = None
        if not self.task.cancel_on_kill:
            outcome = f"It was left running (cancel_on_kill=False): {url}"
        else:
            self.log.info("Cancelling Smart Flows execution %s: Airflow's timeout passed", execution_id)
            try:
                status = self.hook.cancel_execution(execution_id).raw_status
                outcome = "It was cancelled."
            except SmartFlowsError as err:
                outcome = f"Cancelling it failed ({one_line(str(err))}); check it in Smart Flows: {url}"
        raise SmartFlowsTimeoutError(
            f"Airflow's timeout of this deferred task passed ({airflow_timeout_text(self.task)}) "
            f"while it waited for Smart Flows execution {execution_id}. {outcome} Raise "
            "execution_timeout, or use the operator's `timeout` parameter for the flow's own limit.",
            execution_id=execution_id,
            status=status,
        )

    # --- resuming: the one dispatcher -----------------------------------------------------------

    def execution_of(self, context: Context, event: Mapping[str, Any], execution_id: str | None) -> str:
        """The execution a resumed task waits for: its resume kwargs, its event, else its XCom.

        A person's answer carries no execution id (and may be delivered without the kwargs).
        """
        if execution_id is None:
            execution_id = event.get("execution_id")
        if execution_id is None:
            ti = context["ti"]
            execution_id = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_EXECUTION_ID, map_indexes=ti.map_index)
        return str(execution_id)

    def resume(
        self,
        context: Context,
        event: Mapping[str, Any],
        *,
        execution_id: str | None = None,
        end_time: float | None = None,
        answered: list[str] | None = None,
        prompt: str | None = None,
    ) -> dict[str, Any]:
        """Resume from any event, by its kind: finish, answer a form, or wait (defer) again.

        Both resume methods (``execute_complete``, ``resume_after_person``) come here: a trigger
        dropped by a person's answer can outlive it in the triggerer, so either may get any kind.
        """
        typed = typed_event(event)
        execution_id = self.execution_of(context, typed, execution_id)
        if typed["kind"] == KIND_EXECUTION:
            if end_time is None:
                # dag.test() passes only the event on resume; the event carries the deadline too.
                end_time = typed["end_time"]
            answered = list(answered or [])
            result = self.handle_event(context, typed, answered)
            return result if result is not None else self.wait_for(context, execution_id, end_time, answered)
        if typed["kind"] == KIND_ANSWER:
            self.human.take_answer(context, typed, execution_id, end_time, prompt)
            return self.wait_for(context, execution_id, end_time)
        # The human-input trigger: the execution left the form (wait on), or what ended the wait.
        self.log.info("%s", typed["message"])
        outcome = typed["execution"]
        if outcome is not None:
            result = self.handle_event(context, outcome, [])
            if result is not None:
                return result
        return self.wait_for(context, execution_id, end_time)

    # --- outcomes ------------------------------------------------------------------------------

    def handle_event(
        self, context: Context, event: ExecutionEvent, answered: list[str]
    ) -> dict[str, Any] | None:
        """Turn an event into the result, raise, or answer a form (returns None: wait again)."""
        status = event.get("status")
        execution_id = str(event["execution_id"])
        execution_status = event.get("execution_status")
        if status == EVENT_SUCCESS:
            if ExecutionStatus.parse(execution_status) is ExecutionStatus.WARNING:
                self._log_warnings(execution_id)
            self.log.info("%s", event.get("message"))
            return self.result(execution_id, execution_status, event.get("document_ids") or [])
        if status == EVENT_FAILED:
            raise self._execution_error(execution_id, execution_status)
        if status == EVENT_TIMEOUT:
            self.on_timeout(execution_id)
            raise SmartFlowsTimeoutError(
                f"{event.get('message')}{timeout_detail(self.task, event.get('end_time'))}. "
                + (
                    "It was cancelled."
                    if self.task.cancel_on_kill
                    else "It was left running (cancel_on_kill=False)."
                ),
                execution_id=execution_id,
                status=execution_status,
            )
        if status == EVENT_INPUT_REQUIRED:
            self.human.answer_form(context, execution_id, event.get("end_time"), answered)
            return None
        if status == EVENT_GONE:
            raise self.gone_error(execution_id, execution_status)
        if status == EVENT_ERROR:
            raise SmartFlowsError(
                f"Waiting for Smart Flows execution {execution_id} failed: {event.get('message')}",
            )
        raise SmartFlowsError(f"Unexpected trigger event for Smart Flows execution {execution_id}: {event!r}")

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


class SmartFlowsExecutionWaitMixin:
    """
    Gives a task (the run operator, the sensor) its :class:`ExecutionWaiter` and the two methods
    Airflow resumes a deferred task with; both go to the waiter's one dispatcher.
    """

    #: Transient API failures tolerated in a row while waiting (count resets on a good answer).
    max_consecutive_failures: int = 10
    #: The execution this task started or waits for (``on_kill`` and lineage read it).
    _execution_id: str | None = None
    #: Ends the error for an execution that disappeared while waited for (the run operator's case).
    gone_advice: str = (
        "This try failed; a retry of this task starts a new execution (the vanished one is not "
        "reattached to)."
    )

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

    @cached_property
    def waiter(self) -> ExecutionWaiter:
        """The worker side of the wait (built on first use, never in ``__init__``)."""
        return ExecutionWaiter(self, on_timeout=self.on_timeout)

    def on_timeout(self, execution_id: str) -> None:
        """Called when the deadline passed; cancels the execution when ``cancel_on_kill``."""
        if self.cancel_on_kill:
            self.log.info("Cancelling Smart Flows execution %s: timeout reached", execution_id)
            self.hook.cancel_execution(execution_id)

    def _push_execution_xcoms(self, context: Context, execution_id: str) -> str:
        """Push the execution id and its UI link to XCom (idempotent); return the link."""
        return self.waiter.push_xcoms(context, execution_id)

    def pre_execute(self, context: Any) -> None:
        """Airflow 2 fails a deferral resumed past ``execution_timeout`` before ``resume_execution``:
        that resume is handled here (see :func:`resume_timed_out_deferral`)."""
        resume_timed_out_deferral(self, context)
        super().pre_execute(context)  # type: ignore[misc]

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's entry point on resume: at Airflow's timeout (``execution_timeout`` while
        deferred) the execution is cancelled first (``cancel_on_kill``), then the task fails."""
        if is_deferral_timeout(next_method, next_kwargs):
            self.waiter.deferral_timed_out(context)
        return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]

    def execute_complete(
        self,
        context: Context,
        event: Mapping[str, Any],
        end_time: float | None = None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        """Resume from the execution trigger: finish, or answer a form and wait (defer) again."""
        self._execution_id = self.waiter.execution_of(context, event, None)
        return self.waiter.resume(
            context, event, execution_id=self._execution_id, end_time=end_time, answered=answered
        )

    def resume_after_person(
        self,
        context: Context,
        event: Mapping[str, Any],
        execution_id: str | None = None,
        end_time: float | None = None,
        prompt: str | None = None,
    ) -> dict[str, Any]:
        """Resume from a person's answer (Airflow) or from the human-input trigger."""
        self._execution_id = self.waiter.execution_of(context, event, execution_id)
        return self.waiter.resume(
            context, event, execution_id=self._execution_id, end_time=end_time, prompt=prompt
        )
