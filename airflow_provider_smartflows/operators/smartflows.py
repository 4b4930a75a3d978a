"""Operators that run Smart Flows executions and download the documents they generate."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    BaseOperator,
    ObjectStoragePath,
    ResumableJobMixin,
    conf,
)

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsError,
    SmartFlowsExecutionError,
    SmartFlowsInputError,
    SmartFlowsStartUnknownError,
    SmartFlowsTimeoutError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.links import XCOM_EXECUTION_URL, SmartFlowsExecutionLink
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.triggers.smartflows import (
    EVENT_ERROR,
    EVENT_FAILED,
    EVENT_INPUT_REQUIRED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    ExecutionWatch,
    SmartFlowsExecutionTrigger,
    short,
)
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.models import ExecutionProgress

XCOM_EXECUTION_ID = "execution_id"


def _stage_key(progress: ExecutionProgress) -> str:
    """Identify one UserInput prompt, so the same prompt is never answered twice."""
    current = progress.raw.get("currentData")
    current_id = current.get("id") if isinstance(current, Mapping) else None
    return f"{current_id}|{','.join(progress.form_keys)}|{progress.percentage}|{progress.message}"


def _answers(value: Any) -> dict[str, Any] | None:
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


class SmartFlowsExecutionWaitMixin:
    """
    The status semantics shared by :class:`SmartFlowsRunFlowOperator` and the sensor.

    Waiting produces the same event dict whether it happens in the trigger (deferrable) or on the
    worker (synchronous), and :meth:`handle_event` turns it into a result or an error:

    - ``Success`` succeeds; ``Warning`` succeeds with the warnings logged unless ``fail_on_warning``;
    - ``Error``, ``Canceled``, ``Interrupted`` raise :class:`SmartFlowsExecutionError` with the
      flow's own FlowException messages;
    - ``UserInput`` posts ``user_input`` (once per prompt) and waits again, or fails listing the
      form's keys; ``SelectFlow`` fails; ``Queued``/``Running``/``Waiting`` keep waiting;
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

    def _remember(self, context: Context, execution_id: str) -> str:
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

    def _with_documents(self, event: dict[str, Any]) -> dict[str, Any]:
        """A success event whose progress named no documents: list them from the execution."""
        if event["status"] == EVENT_SUCCESS and not event["document_ids"]:
            event["document_ids"] = [doc.id for doc in self.hook.list_documents(event["execution_id"])]
        return event

    def _wait_sync(self, execution_id: str, end_time: float | None) -> dict[str, Any]:
        """Long-poll on the worker until there is an event (the trigger's rules, same events)."""
        watch = self._watch(execution_id, end_time)
        while True:
            wait = watch.next_wait()
            if isinstance(wait, dict):
                return wait
            try:
                progress = self.hook.get_progress(execution_id, wait_seconds=wait)
            except SmartFlowsApiError as err:
                delay = watch.on_failure(err)
                if isinstance(delay, dict):
                    raise  # on the worker the error itself says most
                time.sleep(delay)
                continue
            event = watch.on_progress(progress)
            if event is not None:
                return self._with_documents(event)

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
        event: dict[str, Any],
        end_time: float | None = None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        """Resume from the trigger: finish, or answer a form and wait (defer) again."""
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
        self, context: Context, event: dict[str, Any], answered: list[str]
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
            messages = [f"(the execution's details could not be read: {short(err, 200)})"]
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
        answers = _answers(self.user_input)
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
    store: every try starts a new execution (a retry's log says "Reattach unavailable"). A start
    POST whose outcome is unknown (connection reset after sending, 500) leaves no id to reattach
    to: it raises
    :class:`SmartFlowsStartUnknownError`, which Airflow does not retry; check the flow's executions
    on the server before clearing the task.

    :param flow_id: flow id or name; without it Smart Flows asks for a flow (``SelectFlow``), which
        fails the task.
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
        a mapping of form keys to values; once per prompt.
    :param cancel_on_kill: cancel the execution when the task is killed or times out. A kill while
        deferred reaches the trigger from Airflow 3.3 on; older versions log a warning on deferring.
    """

    template_fields: Sequence[str] = ("flow_id", "data", "dataset_id", "priority", "user_input")
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
        data: dict[str, Any] | str | bytes | None = None,
        dataset_id: str | None = None,
        priority: int | str | None = None,
        smartflows_conn_id: str = "smartflows_default",
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        timeout: float | None = None,
        fail_on_warning: bool = False,
        user_input: dict[str, Any] | None = None,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow_id = flow_id
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
        if poll_interval <= 0:
            raise SmartFlowsInputError(f"poll_interval must be > 0, got {poll_interval!r}")
        if timeout is not None and timeout <= 0:
            raise SmartFlowsInputError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self._execution_id: str | None = None
        self._outcome: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        return self.execute_resumable(context)

    # --- ResumableJobMixin --------------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        if not AIRFLOW_V_3_3_PLUS and context["ti"].try_number > 1:
            self.log.warning(
                "Reattach unavailable: Airflow %s has no task state store (Airflow >= 3.3 has), so try "
                "%s starts a new Smart Flows execution; one started by an earlier try is not resumed.",
                AIRFLOW_VERSION,
                context["ti"].try_number,
            )
        priority = self.priority
        if isinstance(priority, str) and priority.strip().lstrip("-").isdigit():
            priority = int(priority)  # a rendered template is text
        try:
            progress = self.hook.start_execution(
                self.flow_id or None,
                self.data,
                dataset_id=self.dataset_id or None,
                priority=priority,  # type: ignore[arg-type]
            )
        except SmartFlowsApiError as err:
            if not getattr(err, "may_have_started", False):
                raise
            # No execution id to store: an Airflow retry would start the flow a second time.
            raise SmartFlowsStartUnknownError(err.message, **err.fields()) from err
        self._execution_id = progress.id
        url = self._remember(context, progress.id)
        self.log.info("Smart Flows execution %s (%s) in the UI: %s", progress.id, progress.raw_status, url)
        return progress.id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        progress = self.hook.get_progress(str(external_id))
        return progress.raw_status or ExecutionStatus.UNKNOWN.value

    def is_job_active(self, status: str) -> bool:
        # An unknown status counts as active: reattaching reports it, starting anew could duplicate.
        return not ExecutionStatus.parse(status).is_terminal

    def is_job_succeeded(self, status: str) -> bool:
        parsed = ExecutionStatus.parse(status)
        return parsed is ExecutionStatus.SUCCESS or (
            parsed is ExecutionStatus.WARNING and not self.fail_on_warning
        )

    # The SDK returns this method's value when it reattaches to a running execution, so it
    # returns the result (its declared None would lose it).
    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:  # type: ignore[override]
        execution_id = str(external_id)
        self._execution_id = execution_id
        self._remember(context, execution_id)
        if not self.wait_for_completion:
            self._outcome = self._current_result(execution_id)
        else:
            end_time = None if self.timeout is None else time.time() + float(self.timeout)
            self._outcome = self.wait_for(context, execution_id, end_time)
        return self._outcome

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        execution_id = str(external_id)
        if self._outcome is not None and self._outcome["execution_id"] == execution_id:
            return self._outcome
        # Reached when a retry finds the execution already finished successfully.
        self._execution_id = execution_id
        self._remember(context, execution_id)
        self.log.info("Smart Flows execution %s already finished; not starting a new one", execution_id)
        return self._current_result(execution_id)

    def _current_result(self, execution_id: str) -> dict[str, Any]:
        progress = self.hook.get_progress(execution_id)
        documents = [doc.id for doc in progress.documents]
        if not documents and progress.status.is_success:
            documents = [doc.id for doc in self.hook.list_documents(execution_id)]
        return self._result(execution_id, progress.raw_status, documents)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        end_time: float | None = None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        self._execution_id = str(event["execution_id"])
        return super().execute_complete(context, event, end_time, answered)

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._execution_id:
            self.log.info("Cancelling Smart Flows execution %s (task killed)", self._execution_id)
            self.hook.cancel_execution(self._execution_id)


class SmartFlowsDownloadDocumentsOperator(BaseOperator):
    """
    Download documents generated by Smart Flows to object storage.

    With ``execution_id`` every document of the execution is downloaded; with ``document_ids``
    those. ``destination`` is an object-storage URI or ``ObjectStoragePath`` (``file://``,
    ``s3://``, ``gs://``, ``abfs://``, ...): a folder when it ends with ``/`` (file names come from
    the documents' display names and content types, made unique within the call by suffixing
    `` (2)``, `` (3)``...), else the exact target of the single document. Each download streams
    into a temporary sibling that is moved into place; an existing file is an error unless
    ``overwrite``. Returns the list of written URIs; each is logged with size and sha256 and, where
    the running Airflow supports it, recorded as an output asset for lineage.

    :param destination: target folder (a URI ending with ``/``, or an ``ObjectStoragePath`` of an
        existing folder) or file.
    :param execution_id: download every document of this execution.
    :param document_ids: download these documents (alternative to ``execution_id``).
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param destination_conn_id: connection for the destination storage (e.g. an AWS connection).
    :param overwrite: replace existing files.
    """

    template_fields: Sequence[str] = ("destination", "execution_id", "document_ids", "destination_conn_id")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        destination: str | ObjectStoragePath,
        execution_id: str | None = None,
        document_ids: Sequence[str] | str | None = None,
        smartflows_conn_id: str = "smartflows_default",
        destination_conn_id: str | None = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.execution_id = execution_id
        self.document_ids = document_ids
        self.smartflows_conn_id = smartflows_conn_id
        self.destination_conn_id = destination_conn_id
        self.overwrite = overwrite

    @cached_property
    def hook(self) -> SmartFlowsHook:
        return SmartFlowsHook(self.smartflows_conn_id)

    def _document_ids(self) -> list[str]:
        ids = self.document_ids
        if isinstance(ids, str):
            # A template renders a list as its text (Python or JSON); else a comma-separated list.
            text = ids.strip()
            parsed: Any = None
            if text.startswith("["):
                try:
                    parsed = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    parsed = None
            ids = parsed if isinstance(parsed, list) else text.split(",")
        if ids:
            return list(dict.fromkeys(str(item).strip() for item in ids if str(item).strip()))
        if self.execution_id:
            refs = self.hook.list_documents(str(self.execution_id))
            return [ref.id for ref in refs]
        raise SmartFlowsInputError(
            f"Task {self.task_id}: give execution_id or document_ids to say what to download."
        )

    def _destination(self) -> tuple[Any, bool]:
        destination = self.destination
        if isinstance(destination, ObjectStoragePath):
            # A path object drops a trailing "/": it names a folder when one exists there.
            return destination, str(destination).endswith("/") or destination.is_dir()
        text = str(destination).strip()
        if not text:
            raise SmartFlowsInputError(f"Task {self.task_id}: destination is empty.")
        is_folder = text.endswith("/")
        # A template that rendered to "" means no connection. No conn_id keyword then: Airflow 2's
        # ObjectStoragePath would let conn_id=None hide the one a URI names (s3://conn@bucket/).
        options = {"conn_id": self.destination_conn_id} if self.destination_conn_id else {}
        return ObjectStoragePath(text, **options), is_folder

    def execute(self, context: Context) -> list[str]:
        document_ids = self._document_ids()
        destination, is_folder = self._destination()
        if not document_ids:
            self.log.warning("No documents to download (execution %s)", self.execution_id)
            return []
        if not is_folder and len(document_ids) > 1:
            raise SmartFlowsInputError(
                f"Task {self.task_id}: {len(document_ids)} documents but destination {destination} is "
                "one file; end it with '/' to download into a folder."
            )
        used: set[str] = set()
        written: list[str] = []
        for document_id in document_ids:
            if is_folder:
                name = self._unique_name(self.hook.get_document(document_id).file_name, used)
                target = destination / name
            else:
                target = destination
            downloaded = self.hook.download_document(
                document_id, target, conn_id=self.destination_conn_id, overwrite=self.overwrite
            )
            written.append(downloaded.uri)
        self._record_lineage(context, written)
        return written

    @staticmethod
    def _unique_name(name: str, used: set[str]) -> str:
        """``name``, or ``stem (2).ext``, ``stem (3).ext``... when already used in this call."""
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        candidate = name
        counter = 2
        while candidate.casefold() in used:
            candidate = f"{stem} ({counter}).{ext}" if ext else f"{stem} ({counter})"
            counter += 1
        used.add(candidate.casefold())
        return candidate

    def _record_lineage(self, context: Context, uris: list[str]) -> None:
        """Report the written files as lineage and on the task's outlets, where supported."""
        try:
            from airflow.providers.common.compat.sdk import get_hook_lineage_collector

            collector = get_hook_lineage_collector()
            for uri in uris:
                # Written URIs may name the storage connection (s3://conn@bucket/...): not an asset URI.
                path = ObjectStoragePath(uri)
                collector.add_output_asset(context=self.hook, uri=f"{path.protocol}://{path.path}")
        except Exception as err:  # lineage is best effort and must not fail a finished download
            self.log.debug("Lineage not recorded: %s", err)
        if not self.outlets:
            return
        try:
            outlet_events = context["outlet_events"]
            for outlet in self.outlets:
                outlet_events[outlet].extra["uris"] = list(uris)
        except Exception as err:  # outlet events arrived in Airflow 2.10; older ones lack them
            self.log.debug("Outlet event extras not recorded: %s", err)
