"""The batch engine: one loop for both modes (record what finished, start the next wave, wait).

:class:`BatchRun` is built by the batch operator for each of its entry points (``execute``,
``execute_complete``) from the hook, the checkpoint store, the record source and the record
input; it holds the :class:`~.outcomes.RecordOutcomes` (finished executions) and the
:class:`~.reconcile.StartReconciler` (ambiguous starts). Waiting is the operator's: the loop
hands it a :class:`~airflow_provider_smartflows.triggers.batch.SmartFlowsBatchTrigger` and gets the
finished executions' events back (the worker collects them, or the task defers on the trigger).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.documents import DocumentSelection
from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsBatchError,
    SmartFlowsError,
    SmartFlowsInputError,
)
from airflow_provider_smartflows.operators.batch.outcomes import RecordOutcomes
from airflow_provider_smartflows.operators.batch.reconcile import Ambiguous, StartReconciler
from airflow_provider_smartflows.operators.batch.records import Cursor, KeySet, started_before
from airflow_provider_smartflows.operators.batch.state import (
    FAILED,
    PENDING,
    RUNNING,
    STARTING,
    SUCCEEDED,
    UNKNOWN,
    BatchState,
    Entry,
)
from airflow_provider_smartflows.text import one_line
from airflow_provider_smartflows.triggers.batch import SmartFlowsBatchTrigger

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from airflow_provider_smartflows.operators.batch.records import RecordInput, RecordSource
    from airflow_provider_smartflows.operators.batch.state import BatchStore
    from airflow_provider_smartflows.waiting import ExecutionEvent

    #: The operator's wait: the events of the executions that finished (or it defers, never returning).
    Wait = Callable[[SmartFlowsBatchTrigger], list[ExecutionEvent]]

MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class BatchOptions:
    """The batch operator's parameters the engine runs by (checked and rendered by the operator)."""

    smartflows_conn_id: str
    dataset_id: str | None = None
    priority: int | None = None
    destination: str | None = None
    destination_conn_id: str | None = None
    overwrite: bool = True
    download_concurrency: int = 4
    max_active: int = 10
    max_starts_per_second: float | None = None
    record_retries: int = 1
    max_failed_records: int | float = 0
    poll_interval: float = 30.0
    gather_seconds: float = 1.0
    timeout: float | None = None
    fail_on_warning: bool = False
    cancel_on_kill: bool = True
    reconcile_ambiguous_start: bool = True
    reconcile_clock_skew: float = 0.0
    reconcile_settle_time: float = 0.0
    #: Start through the prompt-free start (``POST /flows/executions/start``).
    skip_user_input: bool = False
    #: Which documents are written (``content_types``, ``name_pattern``).
    selection: DocumentSelection = field(default_factory=DocumentSelection)


class BatchRun:
    """
    One entry point's run of a batch: opens (or resumes) the checkpoint, then loops.

    :param hook: the synchronous hook (starts, cancels, downloads).
    :param store: the batch's checkpoint and manifest.
    :param source: the batch's records.
    :param inputs: how a record becomes its key and its flow input.
    :param options: the batch's parameters.
    :param log: the task's logger.
    """

    def __init__(
        self,
        hook: SmartFlowsHook,
        store: BatchStore,
        source: RecordSource,
        inputs: RecordInput,
        options: BatchOptions,
        log: Any,
    ) -> None:
        self.hook = hook
        self.store = store
        self.source = source
        self.inputs = inputs
        self.options = options
        self.log = log
        self.outcomes = RecordOutcomes(hook, store, options, log)
        self.reconciler = StartReconciler(
            hook,
            inputs,
            enabled=options.reconcile_ambiguous_start,
            clock_skew=float(options.reconcile_clock_skew),
            settle_time=float(options.reconcile_settle_time),
            log=log,
        )
        #: Worker seconds of earlier entry points, and when this one began.
        self._clock: tuple[float, float] = (0.0, time.perf_counter())
        self._last_start = 0.0
        self._ambiguous_at = 0.0

    # --- opening the checkpoint -------------------------------------------------------------------

    def open(self, owner: dict[str, Any], try_number: int) -> BatchState:
        """The batch's state: resumed from its checkpoint, or a new batch (every input checked)."""
        state = self.store.load()
        if state is None:
            return self._new_batch(owner, try_number)
        self._resume(state, owner, try_number)
        return state

    def reopen(self, owner: dict[str, Any], try_number: int) -> BatchState:
        """The state of a batch resuming from its trigger: its checkpoint must still be there."""
        state = self.store.load()
        if state is None:
            raise SmartFlowsError(
                f"The batch checkpoint {self.store.checkpoint} disappeared while the task was deferred; "
                "check the batch's executions in Smart Flows before running the task again."
            )
        self._resume(state, owner, try_number)
        return state

    def _new_batch(self, owner: dict[str, Any], try_number: int) -> BatchState:
        """Check every record's input (nothing is started on bad input), then the first checkpoint."""
        total = 0
        keys = KeySet()
        try:
            for record, _cursor in self.source.read(Cursor()):
                keyed = self.inputs.keyed(record)
                self.inputs.flow_input(keyed)
                if self.inputs.key_field:  # line numbers are unique
                    keys.add(keyed, self.source, self.inputs.key_field)
                total += 1
        except SmartFlowsInputError as err:
            raise started_before(err, 0) from None
        if total == 0:
            self.log.warning("The %s has no records: nothing to run.", self.source.describe())
        state = BatchState(owner=owner, flow_id=self.inputs.flow_id, total=total, started_at=time.time())
        self._deadline(state, try_number)
        self.log.info(
            "Batch of %d records of flow %s, at most %d at once; manifest %s",
            total,
            self.inputs.flow_id,
            self.options.max_active,
            self.store.manifest_uri,
        )
        return state

    def _resume(self, state: BatchState, owner: dict[str, Any], try_number: int) -> None:
        """Check the checkpoint is this task's; records found mid-start are reconciled."""
        if state.owner != owner:
            raise SmartFlowsInputError(
                f"The batch checkpoint {self.store.checkpoint} belongs to {state.owner}, not to this task "
                f"({owner}): give manifest_uri a unique path per run (e.g. with {{{{ run_id }}}}), or "
                "remove the checkpoint to start that batch over."
            )
        self._clock = (state.worker_seconds, self._clock[1])
        state.resumes += 1
        self._deadline(state, try_number)
        found: list[Ambiguous] = [(e, None) for e in state.entries if e.state == STARTING]
        if found:  # when the start was sent is unknown: the full settle time from now
            self.reconciler.resolve(state, found, time.time())
            self.save(state)

    def _deadline(self, state: BatchState, try_number: int) -> None:
        """The try's deadline (``timeout`` from this try's first execute), kept in the checkpoint."""
        if self.options.timeout is None:
            state.deadline, state.deadline_try = None, None
        elif state.deadline_try != try_number:
            state.deadline, state.deadline_try = time.time() + float(self.options.timeout), try_number

    # --- the loop --------------------------------------------------------------------------------

    def save(self, state: BatchState) -> None:
        """The checkpoint, with the worker time spent on the batch so far."""
        base, since = self._clock
        state.worker_seconds = base + (time.perf_counter() - since)
        self.store.save(state)

    def drive(self, state: BatchState, events: list[ExecutionEvent], wait: Wait) -> dict[str, Any]:
        """The one loop of both modes: record finished executions, start the next, ``wait``; the
        summary when every record is done."""
        while not state.complete:
            error = self.outcomes.record(state, events)
            if error is not None:
                self.save(state)
                raise error
            self._start_waves(state)
            self.log.info("%s", state.progress_line())
            if state.exhausted and not state.entries:
                self.save(state)
                self.store.finish(state)
                break
            # What was recorded since the last save (a wave saves its own) is durable before the wait:
            # a resume must never reload records as running that already have a manifest line.
            self.save(state)
            events = wait(self._trigger(state))
        return self._verdict(state)

    def _trigger(self, state: BatchState) -> SmartFlowsBatchTrigger:
        ids = [str(entry.execution_id) for entry in state.running()]
        wake_at = state.backoff_until if any(e.state == PENDING for e in state.entries) else None
        return SmartFlowsBatchTrigger(
            ids,
            self.options.smartflows_conn_id,
            poll_interval=float(self.options.poll_interval),
            end_time=state.deadline,
            wake_at=wake_at,
            gather_seconds=float(self.options.gather_seconds),
            fail_on_warning=self.options.fail_on_warning,
            cancel_on_kill=self.options.cancel_on_kill,
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
            "skipped_documents": counts.get("skipped_documents", 0),
            "worker_seconds": round(state.worker_seconds, 3),
            "resumes": state.resumes,
        }
        bad = counts[FAILED] + counts[UNKNOWN]
        limit = self.options.max_failed_records
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

    def _take_new(self, state: BatchState, count: int) -> list[Entry]:
        """Up to ``count`` records from where reading stopped, added to the entries as the cursor moves."""
        taken: list[Entry] = []
        if count <= 0 or state.exhausted:
            return taken
        for record, cursor in self.source.read(state.cursor):
            keyed = self.inputs.keyed(record)
            self.inputs.flow_input(keyed)
            entry = Entry.taken(keyed)
            state.entries.append(entry)
            state.cursor = cursor
            taken.append(entry)
            if len(taken) == count:
                return taken
        state.exhausted = True
        return taken

    def _start_waves(self, state: BatchState) -> None:
        """Start records into the free slots; records a listing proved not started go again at once."""
        while self._start_wave(state):
            pass

    def _start_wave(self, state: BatchState) -> bool:
        """One wave: intent written first, execution ids right after, then its ambiguous starts
        reconciled together. True when some record waits to be started again."""
        if state.backoff_until is not None and time.time() < state.backoff_until:
            return False
        free = self.options.max_active - len(state.running())
        wave = [entry for entry in state.entries if entry.state == PENDING][:free]
        try:
            wave += self._take_new(state, free - len(wave))
        except SmartFlowsInputError as err:  # the records changed since they were checked
            raise started_before(err, sum(1 for entry in state.entries if entry.execution_id)) from None
        if not wave:
            return False
        now = time.time()
        for entry in wave:
            entry.state, entry.intent_at = STARTING, now
        self.save(state)  # write-ahead: a crash from here on leaves these records to reconcile
        sent = -1
        ambiguous: list[Ambiguous] = []
        try:
            for index, entry in enumerate(wave):
                sent = index
                if not self._start(state, entry, ambiguous):
                    sent = index - 1  # refused as it stood: this record waits too
                    break
        finally:
            # Records after the one being sent never left: they wait, they are not `unknown`.
            for later in wave[sent + 1 :]:
                if later.state == STARTING:
                    later.state, later.intent_at = PENDING, None
            self.save(state)
        if not ambiguous:
            return False
        again = self.reconciler.resolve(state, ambiguous, self._ambiguous_at)
        self.save(state)
        return again

    def _start(self, state: BatchState, entry: Entry, ambiguous: list[Ambiguous]) -> bool:
        """Start one record; False when the server asks to slow down (the record waits). A start
        whose outcome is unknown stays ``starting`` and joins ``ambiguous``."""
        try:
            data = self.inputs.flow_input(entry.as_record())
        except SmartFlowsInputError:
            entry.state, entry.intent_at = PENDING, None  # nothing was sent
            raise
        self._pace()
        try:
            progress = self.hook.start_execution(
                self.inputs.flow_id,
                data,
                dataset_id=self.options.dataset_id or None,
                priority=self.options.priority,
                skip_user_input=self.options.skip_user_input,
            )
        except SmartFlowsApiError as err:
            return self._start_refused(state, entry, err, ambiguous)
        entry.state, entry.execution_id = RUNNING, progress.id
        state.counts["executions"] += 1
        state.backoff, state.backoff_until = 0.0, None
        return True

    def _start_refused(
        self, state: BatchState, entry: Entry, err: SmartFlowsApiError, ambiguous: list[Ambiguous]
    ) -> bool:
        """A start that got an error: ambiguous, slowed down (False), refused for good or for all."""
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
            raise err
        state.close(entry, FAILED, messages=[f"the start was refused: {one_line(err, 300)}"])
        return True

    def _pace(self) -> None:
        """Keep starts at most ``max_starts_per_second`` apart."""
        rate = self.options.max_starts_per_second
        if rate:
            wait = self._last_start + 1.0 / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_start = time.monotonic()
