"""Operator that runs one Smart Flows execution per record of a collection, from one task."""

from __future__ import annotations

import asyncio
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsBatchError,
    SmartFlowsError,
    SmartFlowsInputError,
)
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.inputs import prepare_start_body
from airflow_provider_smartflows.hooks.reconcile import DEFAULT_CLOCK_SKEW, DEFAULT_SETTLE_TIME
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.operators.batch_outcomes import BatchOutcomesMixin
from airflow_provider_smartflows.operators.batch_reconcile import Ambiguous, BatchReconcileMixin
from airflow_provider_smartflows.operators.batch_records import (
    Cursor,
    KeySet,
    Record,
    RecordList,
    RecordSource,
    fill_data_template,
    format_template,
    record_key,
    render_xml,
)
from airflow_provider_smartflows.operators.batch_state import (
    FAILED,
    PENDING,
    RUNNING,
    STARTING,
    SUCCEEDED,
    UNKNOWN,
    BatchState,
    BatchStore,
    Entry,
)
from airflow_provider_smartflows.triggers.batch import SmartFlowsBatchTrigger
from airflow_provider_smartflows.waiting import (
    one_line,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_smartflows.triggers.batch import BatchEvent
    from airflow_provider_smartflows.waiting import ExecutionEvent

MAX_BACKOFF_SECONDS = 60.0


class SmartFlowsRunFlowBatchOperator(BatchReconcileMixin, BatchOutcomesMixin, BaseOperator):
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
    :param manifest_uri: object-storage URI of the results manifest (JSON Lines); the checkpoint is
        ``<manifest_uri>.checkpoint.json``. Make it unique per run (e.g. with ``{{ ds }}``).
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
        flow_id: str,
        manifest_uri: str,
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
        self.flow_id = flow_id
        self.manifest_uri = manifest_uri
        self.manifest_conn_id = manifest_conn_id
        # A literal list is data: wrapped so that Airflow does not render each of its strings.
        self.records = RecordList(records) if isinstance(records, (list, tuple)) else records
        self.records_uri = records_uri
        self.records_conn_id = records_conn_id
        self.records_format = records_format
        self.record_key = record_key
        self.data_template = data_template
        self.xml_template = xml_template
        self.dataset_id = dataset_id
        self.priority = priority
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.overwrite = overwrite
        self.download_concurrency = download_concurrency
        self.max_active = max_active
        self.max_starts_per_second = max_starts_per_second
        self.record_retries = record_retries
        self.max_failed_records = max_failed_records
        self.smartflows_conn_id = smartflows_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.gather_seconds = gather_seconds
        self.timeout = timeout
        self.fail_on_warning = fail_on_warning
        self.cancel_on_kill = cancel_on_kill
        self.reconcile_ambiguous_start = reconcile_ambiguous_start
        self.reconcile_clock_skew = reconcile_clock_skew
        self.reconcile_settle_time = reconcile_settle_time
        self._check_arguments()
        self._state: BatchState | None = None
        self._clock: tuple[float, float] = (0.0, time.perf_counter())
        self._last_start = 0.0
        self._xml: Callable[[dict[str, Any]], str] | None = None
        self._ambiguous_at = 0.0

    def _check_arguments(self) -> None:
        def positive_int(name: str, value: object, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SmartFlowsInputError(f"{name} must be an integer >= {low}, not {value!r}.")

        positive_int("max_active", self.max_active, 1)
        positive_int("record_retries", self.record_retries, 0)
        positive_int("download_concurrency", self.download_concurrency, 1)
        if (self.records is None) == (self.records_uri is None):
            raise SmartFlowsInputError("Give exactly one of records (a list or an XCom) and records_uri.")
        if self.data_template is not None and self.xml_template is not None:
            raise SmartFlowsInputError(
                "Give data_template (JSON input) or xml_template (XML input), not both."
            )
        limit = self.max_failed_records
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
            raise SmartFlowsInputError(
                f"max_failed_records must be a count or a fraction >= 0, not {limit!r}."
            )
        rate = self.max_starts_per_second
        if rate is not None and not rate > 0:
            raise SmartFlowsInputError(f"max_starts_per_second must be > 0 or None, not {rate!r}.")
        if not self.poll_interval > 0 or self.gather_seconds < 0:
            raise SmartFlowsInputError("poll_interval must be > 0 and gather_seconds >= 0.")
        for name in ("reconcile_clock_skew", "reconcile_settle_time"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SmartFlowsInputError(f"{name} must be a number of seconds >= 0, not {value!r}.")
        if self.timeout is not None and not self.timeout > 0:
            raise SmartFlowsInputError(f"timeout must be > 0 seconds or None, not {self.timeout!r}.")

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
        self._clock = (0.0, time.perf_counter())
        state = self.store.load()
        if state is None:
            state = self._new_batch(context)
        else:
            self._resume(context, state)
        return self._drive(context, state, [])

    def execute_complete(self, context: Context, event: BatchEvent, **kwargs: Any) -> dict[str, Any]:
        """Resume from the batch trigger: record what finished, start the next ones, defer again."""
        self._clock = (0.0, time.perf_counter())
        state = self.store.load()
        if state is None:
            raise SmartFlowsError(
                f"The batch checkpoint {self.store.checkpoint} disappeared while the task was deferred; "
                "check the batch's executions in Smart Flows before running the task again."
            )
        self._resume(context, state)
        return self._drive(context, state, list(event.get("events") or []))

    def on_kill(self) -> None:
        state = self._state
        if not (self.cancel_on_kill and state is not None):
            return
        for entry in state.running():
            self.log.info(
                "Cancelling Smart Flows execution %s of record %s (task killed)",
                entry.execution_id,
                entry.key,
            )
            try:
                self.hook.cancel_execution(str(entry.execution_id))
            except SmartFlowsError as err:
                self.log.warning("Could not cancel Smart Flows execution %s: %s", entry.execution_id, err)

    # --- batch set-up -----------------------------------------------------------------------------

    def _owner(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        return {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}

    def _new_batch(self, context: Context) -> BatchState:
        """Check every record's input (nothing is started on bad input), then the first checkpoint."""
        total = 0
        keys = KeySet()
        for record, _cursor in self.source.read(Cursor()):
            keyed = self._keyed(record)
            self._checked_input(context, keyed)
            if self.record_key:  # line numbers are unique
                keys.add(keyed, self.source, self.record_key)
            total += 1
        if total == 0:
            self.log.warning("The %s has no records: nothing to run.", self.source.describe())
        state = BatchState(
            owner=self._owner(context), flow_id=self.flow_id, total=total, started_at=time.time()
        )
        self._deadline(context, state)
        self.log.info(
            "Batch of %d records of flow %s, at most %d at once; manifest %s",
            total,
            self.flow_id,
            self.max_active,
            self.store.manifest_uri,
        )
        return state

    def _resume(self, context: Context, state: BatchState) -> None:
        """Check the checkpoint is this task's; records found mid-start are reconciled."""
        owner = self._owner(context)
        if state.owner != owner:
            raise SmartFlowsInputError(
                f"The batch checkpoint {self.store.checkpoint} belongs to {state.owner}, not to this task "
                f"({owner}): give manifest_uri a unique path per run (e.g. with {{{{ run_id }}}}), or "
                "remove the checkpoint to start that batch over."
            )
        self._clock = (state.worker_seconds, self._clock[1])
        state.resumes += 1
        self._deadline(context, state)
        found: list[Ambiguous] = [(e, None) for e in state.entries if e.state == STARTING]
        if found:  # when the start was sent is unknown: the full settle time from now
            self._reconcile(context, state, found, time.time())
            self._save(state)

    def _deadline(self, context: Context, state: BatchState) -> None:
        """The try's deadline (``timeout`` from this try's first execute), kept in the checkpoint."""
        try_number = context["ti"].try_number
        if self.timeout is None:
            state.deadline, state.deadline_try = None, None
        elif state.deadline_try != try_number:
            state.deadline, state.deadline_try = time.time() + float(self.timeout), try_number

    # --- records -----------------------------------------------------------------------------------

    def _keyed(self, record: Record) -> Record:
        return Record(record.line, record.value, record_key(record, self.record_key or None))

    def _xml_renderer(self, context: Context) -> Callable[[dict[str, Any]], str]:
        if self._xml is None:
            env = self.get_template_env().overlay(autoescape=True)
            text = str(self.xml_template)
            if text.strip().endswith((".xml", ".xml.j2")) and "<" not in text:
                template = env.get_template(text.strip())
            else:
                template = env.from_string(text)
            base = dict(context)
            self._xml = lambda extra: template.render({**base, **extra})
        return self._xml

    def _checked_input(self, context: Context, record: Record) -> Any:
        """The record's flow input, checked by the start call's own rules; errors name the line."""
        if self.xml_template is not None:
            data: Any = render_xml(self._xml_renderer(context), record)
        elif self.data_template is not None:
            data = fill_data_template(self.data_template, record)
        else:
            data = record.value
        try:
            prepare_start_body(data, self.flow_id)
        except SmartFlowsInputError as err:
            raise SmartFlowsInputError(f"Line {record.line} (record {record.key}): {err}") from None
        if self.destination:
            format_template(str(self.destination), record, "destination", safe=True)
        return data

    def _take_new(self, context: Context, state: BatchState, count: int) -> list[Entry]:
        """Up to ``count`` records from where reading stopped, added to the entries as the cursor moves."""
        taken: list[Entry] = []
        if count <= 0 or state.exhausted:
            return taken
        for record, cursor in self.source.read(state.cursor):
            keyed = self._keyed(record)
            self._checked_input(context, keyed)
            entry = Entry(line=keyed.line, key=keyed.key, record=keyed.value)
            state.entries.append(entry)
            state.cursor = cursor
            taken.append(entry)
            if len(taken) == count:
                return taken
        state.exhausted = True
        return taken

    # --- the loop --------------------------------------------------------------------------------

    def _save(self, state: BatchState) -> None:
        base, since = self._clock
        state.worker_seconds = base + (time.perf_counter() - since)
        self.store.save(state)

    def _drive(self, context: Context, state: BatchState, events: list[ExecutionEvent]) -> dict[str, Any]:
        """The one loop of both modes: record finished executions, start the next, wait."""
        self._state = state
        while not state.complete:
            self._record_events(state, events)
            self._start_wave(context, state)
            self.log.info("%s", state.progress_line())
            if state.exhausted and not state.entries:
                self._save(state)
                self.store.finish(state)
                break
            # What was recorded since the last save (a wave saves its own) is durable before the wait:
            # a resume must never reload records as running that already have a manifest line.
            self._save(state)
            trigger = self._trigger(state)
            if self.deferrable:
                self.defer(
                    trigger=trigger,
                    method_name="execute_complete",
                    kwargs={"checkpoint": str(self.store.checkpoint)},
                )
            events = asyncio.run(trigger.collect())["events"]
        return self._verdict(state)

    def _trigger(self, state: BatchState) -> SmartFlowsBatchTrigger:
        ids = [str(entry.execution_id) for entry in state.running()]
        wake_at = state.backoff_until if any(e.state == PENDING for e in state.entries) else None
        return SmartFlowsBatchTrigger(
            ids,
            self.smartflows_conn_id,
            poll_interval=float(self.poll_interval),
            end_time=state.deadline,
            wake_at=wake_at,
            gather_seconds=float(self.gather_seconds),
            fail_on_warning=self.fail_on_warning,
            cancel_on_kill=self.cancel_on_kill,
        )

    def _verdict(self, state: BatchState) -> dict[str, Any]:
        counts = state.counts
        summary = {
            "manifest": self.store.manifest_uri,
            "total": state.total,
            "succeeded": counts[SUCCEEDED],
            "failed": counts[FAILED],
            "unknown": counts[UNKNOWN],
            "executions": counts["executions"],
            "documents": counts["documents"],
            "worker_seconds": round(state.worker_seconds, 3),
            "resumes": state.resumes,
        }
        bad = counts[FAILED] + counts[UNKNOWN]
        limit = self.max_failed_records
        allowed = limit * state.total if isinstance(limit, float) else limit
        if bad > allowed:
            raise SmartFlowsBatchError(
                f"{bad} of {state.total} records failed ({counts[UNKNOWN]} of them unknown: their start "
                f"may or may not have created an execution), more than max_failed_records={limit}. "
                f"The manifest lists each with its messages: {self.store.manifest_uri}"
            )
        self.log.info("Batch done: %s", summary)
        return summary

    # --- starting --------------------------------------------------------------------------------

    def _start_wave(self, context: Context, state: BatchState) -> None:
        """Start records into the free slots; records a listing proved not started go again at once."""
        while self._start_one_wave(context, state):
            pass

    def _start_one_wave(self, context: Context, state: BatchState) -> bool:
        """One wave: intent written first, execution ids right after, then its ambiguous starts
        reconciled together. True when some record waits to be started again."""
        if state.backoff_until is not None and time.time() < state.backoff_until:
            return False
        free = self.max_active - len(state.running())
        wave = [entry for entry in state.entries if entry.state == PENDING][:free]
        wave += self._take_new(context, state, free - len(wave))
        if not wave:
            return False
        now = time.time()
        for entry in wave:
            entry.state, entry.intent_at = STARTING, now
        self._save(state)  # write-ahead: a crash from here on leaves these records to reconcile
        sent = -1
        ambiguous: list[Ambiguous] = []
        try:
            for index, entry in enumerate(wave):
                sent = index
                if not self._start(context, state, entry, ambiguous):
                    sent = index - 1  # refused as it stood: this record waits too
                    break
        finally:
            # Records after the one being sent never left: they wait, they are not `unknown`.
            for later in wave[sent + 1 :]:
                if later.state == STARTING:
                    later.state, later.intent_at = PENDING, None
            self._save(state)
        if not ambiguous:
            return False
        again = self._reconcile(context, state, ambiguous, self._ambiguous_at)
        self._save(state)
        return again

    def _start(self, context: Context, state: BatchState, entry: Entry, ambiguous: list[Ambiguous]) -> bool:
        """Start one record; False when the server asks to slow down (the record waits). A start
        whose outcome is unknown stays ``starting`` and joins ``ambiguous``."""
        try:
            data = self._checked_input(context, Record(entry.line, entry.record, entry.key))
        except SmartFlowsInputError:
            entry.state, entry.intent_at = PENDING, None  # nothing was sent
            raise
        self._pace()
        try:
            progress = self.hook.start_execution(
                self.flow_id, data, dataset_id=self.dataset_id or None, priority=self._priority()
            )
        except SmartFlowsApiError as err:
            if err.may_have_started:
                ambiguous.append((entry, err))
                self._ambiguous_at = time.time()
                return True
            if err.retryable:  # 429/503 beyond the hook's own retries: nothing started, slow down
                state.backoff = min(MAX_BACKOFF_SECONDS, max(1.0, state.backoff * 2))
                state.backoff_until = time.time() + state.backoff
                self.log.warning(
                    "Smart Flows asks to slow down (%s); next start in %.0f s",
                    err.reason or err.status_code,
                    state.backoff,
                )
                return False
            if isinstance(err, SmartFlowsAuthError):
                entry.state, entry.intent_at = PENDING, None
                raise
            self._drop(state, entry, FAILED, messages=[f"the start was refused: {one_line(err, 300)}"])
            return True
        entry.state, entry.execution_id = RUNNING, progress.id
        state.counts["executions"] += 1
        state.backoff, state.backoff_until = 0.0, None
        return True

    def _priority(self) -> int | None:
        priority = self.priority
        if isinstance(priority, str) and priority.strip().lstrip("-").isdigit():
            return int(priority)  # a rendered template is text
        return priority if isinstance(priority, int) else None

    def _pace(self) -> None:
        """Keep starts at most ``max_starts_per_second`` apart."""
        if self.max_starts_per_second:
            wait = self._last_start + 1.0 / self.max_starts_per_second - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_start = time.monotonic()
