"""The worker side of a Smart Flows form: answered from the DAG file, or by a person in Airflow.

An execution that stops in ``UserInput`` is answered by :class:`HumanInputBridge`, an object the
worker-side wait (:class:`~airflow_provider_smartflows.worker_wait.ExecutionWaiter`) holds:

- ``user_input`` a mapping of form keys to answers: posted once per prompt;
- ``user_input="ask"`` (or :class:`AskInAirflow` for assignees, notifiers and a response timeout,
  Airflow >= 3.3): the task writes a request to Airflow's "Required actions" page whose form is the
  Smart Flows form (:mod:`airflow_provider_smartflows.human_input`), and defers on
  :class:`~airflow_provider_smartflows.triggers.hitl.SmartFlowsHumanInputTrigger`, which keeps
  watching the execution. The person's answer (the UI, or ``PATCH .../hitlDetails`` of the public
  API) resumes the task: the answer is checked against the Smart Flows schema and posted to the
  execution, and the task waits on. An answer that is wrong or that Smart Flows refuses opens the
  request again (the reason goes to the task log). The execution leaving the form by itself
  (answered in Smart Flows, cancelled, finished) or the response timeout closes the request (the
  trigger does that: a running task cannot write a request's answer in Airflow 3.3).

A ``SelectFlow`` execution (started without a flow) cannot be answered either way: it fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.deferral import airflow_timeout_left
from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsExecutionError,
    SmartFlowsInputError,
)
from airflow_provider_smartflows.human_input import (
    ANSWER_OPTION,
    answers_from_params,
    form_params,
    refusal_reason,
    request_text,
)
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.triggers.hitl import SmartFlowsHumanInputTrigger
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from airflow_provider_smartflows.models import ExecutionProgress
    from airflow_provider_smartflows.waiting import HumanAnswerEvent
    from airflow_provider_smartflows.worker_wait import WaitingTask

__all__ = [
    "ASK",
    "XCOM_REQUEST_FORM",
    "AskInAirflow",
    "HumanInputBridge",
    "ask_settings",
    "check_ask_available",
    "open_form",
    "parse_user_input",
]

#: ``user_input=ASK``: a person answers each form in Airflow's UI.
ASK = "ask"
#: XCom holding the form keys of the request this try wrote (Airflow keeps one per task instance).
XCOM_REQUEST_FORM = "smartflows_request_form"


@dataclass(frozen=True)
class AskInAirflow:
    """
    ``user_input=AskInAirflow(...)``: a person answers each Smart Flows form in Airflow's UI.

    :param assigned_users: who may answer, ``[{"id": ..., "name": ...}]`` as the auth manager
        knows them; empty lets every user with access to the DAG answer.
    :param notifiers: Airflow notifiers called (with the task context) each time a request is
        written, e.g. a Slack or e-mail notifier telling people to answer.
    :param response_timeout: how long the person has (seconds or a timedelta), per request; when
        it passes the request closes, the execution is cancelled (``cancel_on_kill``) and the
        task fails. None waits until the task's own ``timeout``.
    """

    assigned_users: Sequence[Mapping[str, str]] = ()
    notifiers: Sequence[Any] = ()
    response_timeout: timedelta | float | None = None

    def response_seconds(self) -> float | None:
        """The response timeout in seconds, None without one."""
        value = self.response_timeout
        if value is None:
            return None
        return value.total_seconds() if isinstance(value, timedelta) else float(value)


def ask_settings(user_input: Any) -> AskInAirflow | None:
    """The settings when ``user_input`` asks a person in Airflow, else None."""
    if isinstance(user_input, AskInAirflow):
        return user_input
    if isinstance(user_input, str) and user_input.strip() == ASK:
        return AskInAirflow()
    return None


def check_ask_available(user_input: Any, task_id: str) -> None:
    """Refuse ``user_input="ask"`` where Airflow cannot do it, before anything starts."""
    settings = ask_settings(user_input)
    if settings is None:
        return
    if not AIRFLOW_V_3_3_PLUS:
        raise SmartFlowsInputError(
            f"Task {task_id}: user_input={ASK!r} (a person answers Smart Flows forms in Airflow) needs "
            f"Airflow >= 3.3, this is Airflow {AIRFLOW_VERSION}. Upgrade Airflow, or pass user_input as "
            "a mapping of form keys to answers, or let people answer the form in Smart Flows and wait "
            "with SmartFlowsExecutionSensor."
        )
    seconds = settings.response_seconds()
    if seconds is not None and seconds <= 0:
        raise SmartFlowsInputError(f"Task {task_id}: response_timeout must be > 0, got {seconds!r}")
    for user in settings.assigned_users:
        if not isinstance(user, Mapping) or not {"id", "name"} <= set(user):
            raise SmartFlowsInputError(
                f"Task {task_id}: assigned_users entries are {{'id': ..., 'name': ...}}, got {user!r}"
            )


def parse_user_input(value: Any) -> dict[str, Any] | None:
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


def open_form(hook: SmartFlowsHook, execution_id: str) -> ExecutionProgress | None:
    """The execution's progress when it waits at a form; None when it moved on meanwhile.

    Fails on ``SelectFlow``: nothing on the worker can pick a flow.
    """
    progress = hook.get_progress(execution_id)
    if progress.status is ExecutionStatus.SELECT_FLOW:
        raise SmartFlowsExecutionError(
            f"Smart Flows execution {execution_id} waits for a flow to be selected (SelectFlow): "
            "start it with a flow_id.",
            execution_id=execution_id,
            status=progress.raw_status,
        )
    return progress if progress.status is ExecutionStatus.USER_INPUT else None


class HumanInputBridge:
    """Answers the form an execution waits at: ``user_input``'s answers, or a person's in Airflow.

    :param task: the run operator or the sensor (its ``user_input``, hook, settings and ``defer``).
    """

    def __init__(self, task: WaitingTask) -> None:
        self.task = task

    @property
    def hook(self) -> SmartFlowsHook:
        return self.task.hook

    @property
    def log(self) -> Any:
        return self.task.log

    def answer_form(
        self, context: Context, execution_id: str, end_time: float | None, answered: list[str]
    ) -> None:
        """Answer the form (``answered``: the prompts answered so far); returns to wait on.

        With ``user_input="ask"`` it defers while the request is open.
        """
        if ask_settings(self.task.user_input) is not None:
            self.ask(context, execution_id, end_time)
        else:
            self.post_user_input(execution_id, answered)

    # --- answers from the DAG file ----------------------------------------------------------------

    def post_user_input(self, execution_id: str, answered: list[str]) -> None:
        """Post ``user_input`` to the prompt, once per prompt (its key is added to ``answered``)."""
        progress = open_form(self.hook, execution_id)
        if progress is None:
            return  # answered elsewhere meanwhile: keep waiting
        keys = ", ".join(progress.form_keys) or "(the server listed none)"
        answers = self._answers_for(progress, answered, keys)
        extra = sorted(set(answers) - set(progress.form_keys)) if progress.form_keys else []
        if extra:
            self.log.warning("execution %s: user_input keys not in this form: %s", execution_id, extra)
        # Only the keys are logged: answers may be personal data.
        self.log.info("execution %s: answering user input (keys: %s)", execution_id, ", ".join(answers))
        answered.append(progress.prompt)
        after = self.hook.answer_user_input(execution_id, answers)
        if after.status is ExecutionStatus.USER_INPUT and after.prompt == progress.prompt:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} did not accept the user_input answers "
                f"(it still waits for the same form, keys: {keys}).",
                execution_id=execution_id,
                status=after.raw_status,
            )

    def _answers_for(self, progress: ExecutionProgress, answered: list[str], keys: str) -> dict[str, Any]:
        """``user_input`` for this prompt, or the error saying why it cannot answer it."""
        execution_id = progress.id
        answers = parse_user_input(self.task.user_input)
        if not answers:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} waits for user input and no user_input was given. "
                f"Pass user_input with answers for the form's keys: {keys}.",
                execution_id=execution_id,
                status=progress.raw_status,
            )
        if progress.prompt in answered:
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
        return answers

    # --- a person's answer, in Airflow --------------------------------------------------------------

    def ask(
        self, context: Context, execution_id: str, end_time: float | None, reason: str | None = None
    ) -> None:
        """Write the request for the execution's form and defer until it is answered or moot.

        Returns (without deferring) when the execution no longer waits for input: wait on.
        """
        progress = open_form(self.hook, execution_id)
        if progress is None:
            return
        if reason:
            self.log.warning("execution %s: asking again: %s", execution_id, reason)
        settings = ask_settings(self.task.user_input) or AskInAirflow()
        self._write_request(context, execution_id, progress, settings)
        seconds = settings.response_seconds()
        task = self.task
        task.defer(
            trigger=SmartFlowsHumanInputTrigger(
                execution_id=execution_id,
                prompt=progress.prompt,
                smartflows_conn_id=task.smartflows_conn_id,
                poll_interval=float(task.poll_interval),
                end_time=end_time,
                response_deadline=None if seconds is None else time.time() + seconds,
                fail_on_warning=task.fail_on_warning,
                max_consecutive_failures=task.max_consecutive_failures,
                cancel_on_kill=task.cancel_on_kill,
            ),
            method_name="resume_after_person",
            kwargs={"execution_id": execution_id, "end_time": end_time, "prompt": progress.prompt},
            timeout=airflow_timeout_left(task, context),
        )

    def _write_request(
        self, context: Context, execution_id: str, progress: ExecutionProgress, settings: AskInAirflow
    ) -> None:
        """Write (or open again) this task instance's request for the form; call the notifiers."""
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        ti = context["ti"]
        params = form_params(progress.raw).params
        self._check_same_form(ti, execution_id, sorted(params))
        subject, body = self._request_text(execution_id, progress, getattr(ti, "log_url", None))
        upsert_hitl_detail(
            ti_id=ti.id,
            options=[ANSWER_OPTION],
            subject=subject,
            body=body,
            params=params,
            assigned_users=[{"id": u["id"], "name": u["name"]} for u in settings.assigned_users] or None,
        )
        self.log.info("execution %s waits for a person: request written (%s)", execution_id, subject)
        for notifier in settings.notifiers:
            notifier(context)

    def _check_same_form(self, ti: Any, execution_id: str, keys: list[str]) -> None:
        """Fail when a second form differs from the one this task instance's request shows.

        Airflow 3.3 keeps one request per task instance: writing it again clears its answer but
        keeps its subject, body and fields. A form with other fields cannot be shown in this try.
        """
        shown = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_REQUEST_FORM, map_indexes=ti.map_index)
        if shown is None:
            ti.xcom_push(key=XCOM_REQUEST_FORM, value=keys)
            return
        if list(shown) != keys:
            raise SmartFlowsExecutionError(
                f"Smart Flows execution {execution_id} asks for another form (fields: {', '.join(keys)}) "
                f"than the one this task's request shows (fields: {', '.join(shown)}); Airflow keeps one "
                "request per task instance. Answer it in Smart Flows "
                f"({self.hook.execution_url(execution_id)}), or let a retry of this task (retries) "
                "write a new request for it.",
                execution_id=execution_id,
                status=ExecutionStatus.USER_INPUT.value,
            )

    def _request_text(
        self, execution_id: str, progress: ExecutionProgress, log_url: str | None
    ) -> tuple[str, str]:
        flow = getattr(self.task, "flow_id", None)
        if not flow:
            try:
                execution = self.hook.get_execution(execution_id)
                flow = execution.flow_name or execution.flow_id
            except SmartFlowsApiError as err:  # the request is still useful without the flow's name
                self.log.warning("execution %s: flow name unavailable: %s", execution_id, err)
        return request_text(
            flow=flow,
            execution_id=execution_id,
            execution_url=self.hook.execution_url(execution_id),
            data=getattr(self.task, "data", None),
            message=progress.message,
            log_url=log_url,
        )

    def take_answer(
        self,
        context: Context,
        event: HumanAnswerEvent,
        execution_id: str,
        end_time: float | None,
        prompt: str | None,
    ) -> None:
        """Post a person's answer, or ask again (defers) when it is wrong or refused; returns to wait on.

        An answer that comes after the execution left its form is not posted.
        """
        user = event.get("responded_by_user") or {}
        who = user.get("name") or ("nobody (timed out)" if event.get("timedout") else "an unknown user")
        progress = self.hook.get_progress(execution_id)
        if prompt is None:  # delivered without its prompt: it answers the form shown now
            prompt = progress.prompt
        if progress.status is not ExecutionStatus.USER_INPUT or progress.prompt != prompt:
            self.log.info(
                "execution %s: the answer of %s came after the execution left the form (%s); not posted",
                execution_id,
                who,
                progress.raw_status,
            )
            return self.ask(context, execution_id, end_time)
        answers, problems = answers_from_params(event.get("params_input") or {}, form_params(progress.raw))
        if problems:
            reason = f"the answer of {who} does not fit the form: {'; '.join(problems)}"
            return self.ask(context, execution_id, end_time, reason)
        # Only the keys are logged: answers may be personal data.
        self.log.info(
            "execution %s: posting the answer of %s (keys: %s)", execution_id, who, ", ".join(answers)
        )
        try:
            self.hook.answer_user_input(execution_id, answers)
        except SmartFlowsApiError as err:
            if err.status_code != 400:
                raise
            reason = (
                f"Smart Flows refused the answer of {who}: {refusal_reason(err.body_excerpt, err.message)}"
            )
            return self.ask(context, execution_id, end_time, reason)
        return None
