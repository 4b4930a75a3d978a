"""Operator that runs one Smart Flows execution per record of a collection, from one task.

The operator holds the parameters and the entry points; the batch itself is a
:class:`~airflow_provider_smartflows.operators.batch.run.BatchRun` built for each entry point.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_smartflows.deferral import (
    airflow_timeout_left,
    airflow_timeout_text,
    is_deferral_timeout,
    resume_timed_out_deferral,
)
from airflow_provider_smartflows.documents import DocumentSelection
from airflow_provider_smartflows.exceptions import (
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsTimeoutError,
)
from airflow_provider_smartflows.flow_names import FLOW_XCOM_KEY, check_flow_choice
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.operators.batch.records import RecordInput, RecordList, RecordSource
from airflow_provider_smartflows.operators.batch.run import BatchOptions, BatchRun
from airflow_provider_smartflows.operators.batch.state import BatchState, BatchStore
from airflow_provider_smartflows.reconcile import DEFAULT_CLOCK_SKEW, DEFAULT_SETTLE_TIME
from airflow_provider_smartflows.storage import check_filesystem_available
from airflow_provider_smartflows.validation import (
    check_int,
    check_number,
    check_optional_number,
    check_reconcile_timing,
    parse_priority,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.triggers.batch import BatchEvent, SmartFlowsBatchTrigger
    from airflow_provider_smartflows.waiting import ExecutionEvent

SECONDS = "a number of seconds"


class SmartFlowsRunFlowBatchOperator(BaseOperator):
    """
    Run a Smart Flows flow once per record, at most ``max_active`` executions at a time.

    Records come from ``records`` (a list, templated or an XCom) or are streamed from
    ``records_uri`` (a JSON Lines or CSV object in storage), never all held in memory. Each record
    becomes the flow's input: the record itself (a Dynamics/Sugar JSON object), ``data_template``
    filled in from it, or XML rendered from ``xml_template``. Before anything starts, every record
    is read once and its input checked: a bad line fails the task naming it, with nothing started.

    The batch's progress lives in a checkpoint object next to ``manifest_uri``; a task retry, a
    worker killed mid-batch or a triggerer restart resumes from it: no finished record runs again,
    no running execution is started twice. A record whose start may or may not have created an
    execution is reconciled: the one execution the listing proves it created is adopted, a proven
    absence starts it again (once), anything else marks it ``unknown``. When all records are done, ``manifest_uri`` holds one JSON line per record
    (key, execution id, status, the flow's messages, documents with uri, size and sha256), and the
    task returns a summary (counts, manifest URI).

    :param flow_id: the flow to run for every record.
    :param flow_name: the flow's display name, instead of ``flow_id`` (exactly one of the two):
        resolved once per task (not per record) before anything starts, as on
        :class:`~airflow_provider_smartflows.operators.run_flow.SmartFlowsRunFlowOperator`; a
        deferred batch resumes with the id it resolved.
    :param skip_user_input: start every record through the prompt-free start, as on
        :class:`~airflow_provider_smartflows.operators.run_flow.SmartFlowsRunFlowOperator`.
    :param manifest_uri: object-storage URI of the results manifest (JSON Lines); the checkpoint is
        ``<manifest_uri>.checkpoint.json``. Make it unique per run with ``{{ run_id }}``
        (``{{ ds }}`` is not: two runs of the same day would share one checkpoint).
    :param manifest_conn_id: storage connection of ``manifest_uri``.
    :param records: the records (a list; dicts for field access; used as they are, not rendered),
        an XCom of one, or a template rendering to JSON text of one. An XCom is pulled again on
        every resume: for large batches use ``records_uri``.
    :param records_uri: a JSON Lines (one object per line) or CSV (header line) object instead.
    :param records_conn_id: storage connection of ``records_uri``.
    :param records_format: ``jsonl`` or ``csv`` when the URI's suffix does not say.
    :param record_key: the field naming each record in logs, manifest and file names; None: the
        line number. Keys must be unique (two records with one key would write the same files): a
        key seen twice fails the task before anything starts, naming both lines.
    :param data_template: a mapping (Dynamics/Sugar JSON) whose strings are filled in per record:
        ``{"entity": "account", "id": ["{record[account_id]}"]}``; a string that is exactly one
        ``{record[field]}`` takes the field's value as it is. Also ``{key}`` and ``{line}``.
    :param xml_template: XML input: a Jinja template (text, or a ``.xml``/``.xml.j2`` file on the
        DAG's template search path) rendered per record with ``record``, ``key`` and ``line`` plus
        the task's context; values are XML-escaped.
    :param dataset_id: data set of the flow fed by the input.
    :param priority: execution priority.
    :param destination: where each record's documents go, filled in per record like
        ``data_template`` (values made file-name safe): ``s3://bucket/invoices/{{ ds }}/{record[customer_id]}.pdf``.
        A further document of the same record gets `` (2)``, `` (3)``... before the extension; a
        destination ending with ``/`` is a folder (documents keep their display names). None: no
        download, the manifest lists document ids.
    :param destination_conn_id: storage connection of ``destination``.
    :param content_types: write only documents of these content types (``["application/pdf"]``,
        ``"image/*"``); needs ``destination``. None: every type.
    :param name_pattern: write only documents whose display name matches this shell pattern
        (``"Invoice*"``), case-insensitively; needs ``destination``. None: every name. Left-out
        documents are listed on the record's manifest line as ``skipped_documents``. Each
        document's metadata is read before the record's downloads: one expiring within
        ``[smartflows] expiry_warning_seconds`` is downloaded first with a warning, one already
        expired fails the record (nothing of it written).
    :param download_concurrency: documents downloaded at the same time when a wave's records finish.
    :param overwrite: replace existing files (default True: a resumed record writes its files again).
    :param max_active: executions running at once on the server.
    :param max_starts_per_second: start rate limit; None: as fast as slots free up.
    :param record_retries: new executions for a record whose execution ended Error, Canceled or
        Interrupted (each started only once the previous one is final).
    :param max_failed_records: failed (and unknown) records tolerated: a count (int), or a fraction
        of the records (float, 0.0 to 1.0). More fails the task at the end, naming the manifest.
    :param smartflows_conn_id: the ``smartflows`` connection.
    :param deferrable: wait on the triggerer between waves instead of on the worker.
    :param poll_interval: longest long-poll per execution in seconds.
    :param gather_seconds: after the first execution of a wait finishes, how long to collect
        further finishes before the worker resumes.
    :param timeout: seconds a try of the batch may take; then its running executions are
        cancelled (``cancel_on_kill``) and the task fails; a retry continues with the rest.
    :param fail_on_warning: count a ``Warning`` outcome as a failure.
    :param cancel_on_kill: cancel the running executions when the task is killed or times out.
    :param reconcile_ambiguous_start: resolve a start whose outcome is unknown by listing the flow's
        executions (the key needs the right to list them); False marks such a record ``unknown``.
    :param reconcile_clock_skew: seconds by which ``createdAt`` may be earlier than the send time as
        measured through the server's ``Date`` header (an execution with the same input created this
        little before the start leaves the outcome unknown).
    :param reconcile_settle_time: seconds to wait before the listing that proves nothing was
        created; counted once per wave, not per record.
    """

    template_fields: Sequence[str] = (
        "flow_id",
        "flow_name",
        "records",
        "records_uri",
        "records_conn_id",
        "record_key",
        "data_template",
        "dataset_id",
        "priority",
        "destination",
        "destination_conn_id",
        "manifest_uri",
        "manifest_conn_id",
    )
    template_fields_renderers = {"data_template": "json", "records": "py"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        flow_id: str | None = None,
        manifest_uri: str,
        flow_name: str | None = None,
        skip_user_input: bool = False,
        manifest_conn_id: str | None = None,
        records: Any = None,
        records_uri: str | None = None,
        records_conn_id: str | None = None,
        records_format: str | None = None,
        record_key: str | None = None,
        data_template: dict[str, Any] | None = None,
        xml_template: str | None = None,
        dataset_id: str | None = None,
        priority: int | str | None = None,
        destination: str | None = None,
        destination_conn_id: str | None = None,
        content_types: Sequence[str] | None = None,
        name_pattern: str | None = None,
        overwrite: bool = True,
        download_concurrency: int = 4,
        max_active: int = 10,
        max_starts_per_second: float | None = None,
        record_retries: int = 1,
        max_failed_records: int | float = 0,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        gather_seconds: float = 1.0,
        timeout: float | None = None,
        fail_on_warning: bool = False,
        cancel_on_kill: bool = True,
        reconcile_ambiguous_start: bool = True,
        reconcile_clock_skew: float = DEFAULT_CLOCK_SKEW,
        reconcile_settle_time: float = DEFAULT_SETTLE_TIME,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow_id, self.dataset_id, self.priority = flow_id, dataset_id, priority
        self.flow_name, self.skip_user_input = flow_name, skip_user_input
        self.manifest_uri, self.manifest_conn_id = manifest_uri, manifest_conn_id
        # A literal list is data: wrapped so that Airflow does not render each of its strings.
        self.records = RecordList(records) if isinstance(records, (list, tuple)) else records
        self.records_uri, self.records_conn_id = records_uri, records_conn_id
        self.records_format = records_format
        self.record_key, self.data_template, self.xml_template = record_key, data_template, xml_template
        self.destination, self.destination_conn_id = destination, destination_conn_id
        self.content_types, self.name_pattern = content_types, name_pattern
        self.overwrite, self.download_concurrency = overwrite, download_concurrency
        self.max_active, self.max_starts_per_second = max_active, max_starts_per_second
        self.record_retries, self.max_failed_records = record_retries, max_failed_records
        self.smartflows_conn_id, self.deferrable = smartflows_conn_id, deferrable
        self.poll_interval, self.gather_seconds, self.timeout = poll_interval, gather_seconds, timeout
        self.fail_on_warning, self.cancel_on_kill = fail_on_warning, cancel_on_kill
        self.reconcile_ambiguous_start = reconcile_ambiguous_start
        self.reconcile_clock_skew, self.reconcile_settle_time = reconcile_clock_skew, reconcile_settle_time
        self._check_arguments()
        self._state: BatchState | None = None

    def _check_arguments(self) -> None:
        check_flow_choice(self.flow_id, self.flow_name, self.task_id)
        if self.flow_id in (None, "") and self.flow_name in (None, ""):
            raise SmartFlowsInputError(f"{self.task_id}: give flow_id or flow_name (the flow to run).")
        check_int("max_active", self.max_active, minimum=1)
        check_int("record_retries", self.record_retries, minimum=0)
        check_int("download_concurrency", self.download_concurrency, minimum=1)
        if (self.records is None) == (self.records_uri is None):
            raise SmartFlowsInputError("Give exactly one of records (a list or an XCom) and records_uri.")
        if self.data_template is not None and self.xml_template is not None:
            raise SmartFlowsInputError(
                "Give data_template (JSON input) or xml_template (XML input), not both."
            )
        check_number("max_failed_records", self.max_failed_records, minimum=0, unit="a count or a fraction")
        check_optional_number("max_starts_per_second", self.max_starts_per_second, above=0)
        check_number("poll_interval", self.poll_interval, above=0, unit=SECONDS)
        check_number("gather_seconds", self.gather_seconds, minimum=0, unit=SECONDS)
        check_reconcile_timing(self.reconcile_clock_skew, self.reconcile_settle_time)
        check_optional_number("timeout", self.timeout, above=0, unit=SECONDS)
        self.selection = DocumentSelection.of(self.content_types, self.name_pattern)
        if not self.selection.selects_all and not self.destination:
            raise SmartFlowsInputError(
                f"{self.task_id}: content_types and name_pattern select the documents written to "
                "destination; give destination too (without it nothing is downloaded)."
            )

    @cached_property
    def hook(self) -> SmartFlowsHook:
        """The synchronous hook (starts, cancels, downloads)."""
        return SmartFlowsHook(self.smartflows_conn_id)

    @cached_property
    def store(self) -> BatchStore:
        return BatchStore(self.manifest_uri, self.manifest_conn_id or None)

    @cached_property
    def source(self) -> RecordSource:
        return RecordSource(
            self.records, self.records_uri or None, self.records_conn_id or None, self.records_format
        )

    # --- entry points ---------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        # Before anything starts: a store whose filesystem is not installed names the extra.
        for what in ("manifest_uri", "records_uri", "destination"):
            check_filesystem_available(getattr(self, what), what)
        run = self._batch_run(context, self._resolve_flow(context))
        state = run.open(self._owner(context), context["ti"].try_number)
        return self._drive(context, run, state, [])

    def execute_complete(self, context: Context, event: BatchEvent, **kwargs: Any) -> dict[str, Any]:
        """Resume from the batch trigger: record what finished, start the next ones, defer again."""
        flow = context["ti"].xcom_pull(task_ids=self.task_id, key=FLOW_XCOM_KEY) if self.flow_name else None
        run = self._batch_run(context, flow["flow_id"] if flow else self._resolve_flow(context))
        state = run.reopen(self._owner(context), context["ti"].try_number)
        return self._drive(context, run, state, list(event.get("events") or []))

    def on_kill(self) -> None:
        state = self._state
        if self.cancel_on_kill and state is not None:
            self._cancel_running(state, "task killed")

    def pre_execute(self, context: Any) -> None:
        """Airflow 2 fails a deferral resumed past ``execution_timeout`` before ``resume_execution``:
        that resume is handled here (see :func:`resume_timed_out_deferral`)."""
        resume_timed_out_deferral(self, context)
        super().pre_execute(context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's entry point on resume: at Airflow's timeout (``execution_timeout`` while
        deferred) the running executions are cancelled first (``cancel_on_kill``), then the task
        fails; a retry continues with the rest, as after ``timeout``."""
        if is_deferral_timeout(next_method, next_kwargs):
            self._deferral_timed_out()
        return super().resume_execution(next_method, next_kwargs, context)

    def _deferral_timed_out(self) -> NoReturn:
        state = self.store.load()
        running = [] if state is None else state.running()
        if not running:
            outcome = "No execution of the batch was running."
        elif self.cancel_on_kill and state is not None:
            failed = self._cancel_running(state, "Airflow's timeout passed")
            outcome = f"{len(running) - failed} of its {len(running)} running executions were cancelled."
        else:
            outcome = f"Its {len(running)} running executions were left running (cancel_on_kill=False)."
        raise SmartFlowsTimeoutError(
            f"Airflow's timeout of this deferred batch passed ({airflow_timeout_text(self)}). "
            f"{outcome} A retry continues with the records not done (checkpoint "
            f"{self.store.checkpoint}); raise execution_timeout, or use the batch's `timeout`."
        )

    def _cancel_running(self, state: BatchState, why: str) -> int:
        """Cancel every running execution of the batch; the number that could not be cancelled."""
        failed = 0
        for entry in state.running():
            self.log.info(
                "Cancelling Smart Flows execution %s of record %s (%s)", entry.execution_id, entry.key, why
            )
            try:
                self.hook.cancel_execution(str(entry.execution_id))
            except SmartFlowsError as err:
                failed += 1
                self.log.warning("Could not cancel Smart Flows execution %s: %s", entry.execution_id, err)
        return failed

    # --- the run ---------------------------------------------------------------------------------

    def _resolve_flow(self, context: Context) -> str:
        """The flow id: ``flow_id``, or ``flow_name`` resolved once (kept in XCom for a resume)."""
        if not self.flow_name:
            return str(self.flow_id)
        check_flow_choice(self.flow_id, self.flow_name, self.task_id)  # both rendered now
        flow_id, name = self.hook.resolve_flow(str(self.flow_name))
        self.log.info("Flow name %r resolved to flow %s (%r)", self.flow_name, flow_id, name)
        context["ti"].xcom_push(key=FLOW_XCOM_KEY, value={"flow_id": flow_id, "flow_name": name})
        return flow_id

    def _batch_run(self, context: Context, flow_id: str) -> BatchRun:
        """This entry point's engine, from the rendered parameters."""
        xml = self._xml_renderer(context) if self.xml_template is not None else None
        inputs = RecordInput(
            flow_id, self.record_key or None, self.data_template, xml, self.destination or None
        )
        options = BatchOptions(
            smartflows_conn_id=self.smartflows_conn_id,
            dataset_id=self.dataset_id or None,
            priority=parse_priority(self.priority),
            destination=self.destination or None,
            destination_conn_id=self.destination_conn_id or None,
            overwrite=self.overwrite,
            download_concurrency=self.download_concurrency,
            max_active=self.max_active,
            max_starts_per_second=self.max_starts_per_second,
            record_retries=self.record_retries,
            max_failed_records=self.max_failed_records,
            poll_interval=float(self.poll_interval),
            gather_seconds=float(self.gather_seconds),
            timeout=self.timeout,
            fail_on_warning=self.fail_on_warning,
            cancel_on_kill=self.cancel_on_kill,
            reconcile_ambiguous_start=self.reconcile_ambiguous_start,
            reconcile_clock_skew=float(self.reconcile_clock_skew),
            reconcile_settle_time=float(self.reconcile_settle_time),
            skip_user_input=self.skip_user_input,
            selection=self.selection,
        )
        return BatchRun(self.hook, self.store, self.source, inputs, options, self.log)

    def _owner(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        return {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}

    def _xml_renderer(self, context: Context) -> Callable[[dict[str, Any]], str]:
        env = self.get_template_env().overlay(autoescape=True)
        text = str(self.xml_template)
        if text.strip().endswith((".xml", ".xml.j2")) and "<" not in text:
            template = env.get_template(text.strip())
        else:
            template = env.from_string(text)
        base = dict(context)
        return lambda extra: template.render({**base, **extra})

    def _drive(
        self, context: Context, run: BatchRun, state: BatchState, events: list[ExecutionEvent]
    ) -> dict[str, Any]:
        self._state = state  # what on_kill cancels
        return run.drive(state, events, lambda trigger: self._wait(context, trigger))

    def _wait(self, context: Context, trigger: SmartFlowsBatchTrigger) -> list[ExecutionEvent]:
        """Defer on the trigger (the triggerer waits), or wait on the worker: the finished executions."""
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                kwargs={"checkpoint": str(self.store.checkpoint)},
                timeout=airflow_timeout_left(self, context),
            )
        return asyncio.run(trigger.collect())["events"]
