"""What happens to a batch record when its execution ends: documents, manifest line, or a retry.

:class:`RecordOutcomes` (held by the :class:`~.run.BatchRun`) turns the batch trigger's events
into manifest lines (after downloading the documents through the hook's ``download_document``,
atomic and verified), queues a failed record's next attempt, and ends a try whose deadline passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.documents import (
    expiry_warning_seconds,
    near_message,
    now_utc,
    plan_downloads,
)
from airflow_provider_smartflows.exceptions import SmartFlowsError, SmartFlowsTimeoutError
from airflow_provider_smartflows.hooks.download import document_gone
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.operators.batch.records import format_template
from airflow_provider_smartflows.operators.batch.state import FAILED, PENDING, SUCCEEDED
from airflow_provider_smartflows.outputs import max_output_bytes, named_outputs
from airflow_provider_smartflows.storage import numbered_name
from airflow_provider_smartflows.transfer import HookPool, in_parallel
from airflow_provider_smartflows.waiting import (
    EVENT_FAILED,
    EVENT_GONE,
    EVENT_INPUT_REQUIRED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    one_line,
)

if TYPE_CHECKING:
    from airflow_provider_smartflows.documents import DownloadPlan
    from airflow_provider_smartflows.models import DocumentInfo
    from airflow_provider_smartflows.operators.batch.run import BatchOptions
    from airflow_provider_smartflows.operators.batch.state import BatchState, BatchStore, Entry
    from airflow_provider_smartflows.waiting import ExecutionEvent

#: What :meth:`RecordOutcomes._download_all` runs per succeeded record: its saved documents, or
#: why they could not be saved, and the documents its selection left out.
Saved = tuple[list[dict[str, Any]], "str | None", list[dict[str, Any]]]


class RecordOutcomes:
    """
    Records a batch's finished executions: documents saved, manifest lines, retries, timeouts.

    :param hook: the synchronous hook (details, cancels, downloads).
    :param store: the batch's checkpoint and manifest (named in the errors).
    :param options: the batch's parameters.
    :param log: the task's logger.
    """

    def __init__(self, hook: SmartFlowsHook, store: BatchStore, options: BatchOptions, log: Any) -> None:
        self.hook = hook
        self.store = store
        self.options = options
        self.log = log
        self._download_hooks = HookPool(hook, lambda: SmartFlowsHook(options.smartflows_conn_id))

    def record(self, state: BatchState, events: list[ExecutionEvent]) -> SmartFlowsError | None:
        """Put finished records in the manifest (after their downloads), or queue their retry.
        Returns the error that ends the try (a timeout, a wait that failed), raised by the caller
        once the checkpoint is saved."""
        by_id = {entry.execution_id: entry for entry in state.running()}
        timed_out: list[Entry] = []
        errors: list[str] = []
        succeeded: list[tuple[Entry, ExecutionEvent]] = []
        for event in events:
            entry = by_id.pop(event["execution_id"], None)
            if entry is None:
                continue  # already recorded (a wait resumed twice)
            status = event["status"]
            if status == EVENT_SUCCESS:
                succeeded.append((entry, event))
            elif status == EVENT_FAILED:
                self._finish_failure(state, entry, event)
            elif status == EVENT_GONE:
                self._finish_gone(state, entry, event)
            elif status == EVENT_INPUT_REQUIRED:
                self._cancel(entry, "it waits for a person, which a batch cannot answer")
                state.close(
                    entry, FAILED, execution_status=event["execution_status"], messages=[event["message"]]
                )
            elif status == EVENT_TIMEOUT:
                timed_out.append(entry)
            else:
                errors.append(f"record {entry.key} (execution {entry.execution_id}): {event['message']}")
        self._finish_successes(state, succeeded)
        if timed_out:
            return self._time_out(state, timed_out + list(by_id.values()))
        if errors:
            return SmartFlowsError(
                f"Waiting for the batch's executions failed: {'; '.join(errors[:5])}. The records stay "
                f"in the checkpoint {self.store.checkpoint}; a task retry waits for them again."
            )
        return None

    def _finish_successes(self, state: BatchState, done: list[tuple[Entry, ExecutionEvent]]) -> None:
        """Download the documents of the succeeded records, then write their manifest lines in the
        events' order."""
        results = self._download_all(done)
        for (entry, event), (documents, error, skipped) in zip(done, results, strict=True):
            status = event["execution_status"]
            if error is None:
                outputs = self._named_outputs(str(entry.execution_id))
                extra = {"skipped_documents": skipped} if skipped else {}
                state.close(
                    entry, SUCCEEDED, execution_status=status, documents=documents, outputs=outputs, **extra
                )
                continue
            self.log.error("record %s (line %d): %s", entry.key, entry.line, error)
            state.close(entry, FAILED, execution_status=status, messages=[error])

    def _named_outputs(self, execution_id: str) -> dict[str, Any]:
        """The execution's named outputs for its manifest line (bounded as the run operator's);
        unreadable ones are logged and left out, the record still succeeds."""
        try:
            raw = self.hook.get_execution(execution_id).raw
        except SmartFlowsError as err:
            self.log.warning("Outputs of execution %s not read: %s", execution_id, one_line(err, 300))
            return {}
        outputs, left_out = named_outputs(raw, max_output_bytes())
        if left_out:
            self.log.warning(
                "Outputs of execution %s left out of its manifest line (over [smartflows] "
                "max_output_bytes): %s",
                execution_id,
                ", ".join(left_out),
            )
        return outputs

    def _download_all(self, done: list[tuple[Entry, ExecutionEvent]]) -> list[Saved]:
        """
        Each succeeded record's :meth:`_saved_documents`, in ``done``'s order, ``download_concurrency``
        records at a time through :func:`~airflow_provider_smartflows.transfer.in_parallel` (a hook
        and HTTP session per thread; the pool's hooks are kept for the next wave).
        """
        workers = min(self.options.download_concurrency, len(done)) if self.options.destination else 1
        if workers <= 1:
            return [self._saved_documents(self.hook, entry, event) for entry, event in done]
        return in_parallel(
            done,
            lambda hook, item: self._saved_documents(hook, *item),
            self._download_hooks,
            concurrency=workers,
            thread_name_prefix="smartflows-batch-download",
        )

    def _saved_documents(self, hook: SmartFlowsHook, entry: Entry, event: ExecutionEvent) -> Saved:
        """The record's saved documents, or the reason they could not be saved."""
        try:
            saved, skipped = self._download(hook, entry, event["document_ids"])
            return saved, None, skipped
        except SmartFlowsError as err:
            return (
                [],
                f"the execution succeeded but its documents could not be saved: {one_line(err, 300)}",
                [],
            )

    def _finish_failure(self, state: BatchState, entry: Entry, event: ExecutionEvent) -> None:
        messages = self._flow_messages(str(entry.execution_id), event)
        status = event["execution_status"]
        self.log.warning(
            "record %s (line %d): execution %s ended %s: %s",
            entry.key,
            entry.line,
            entry.execution_id,
            status,
            "; ".join(messages) or "no details",
        )
        self._retry_or_fail(state, entry, status, messages)

    def _finish_gone(self, state: BatchState, entry: Entry, event: ExecutionEvent) -> None:
        """The record's execution disappeared (404: purged or deleted): its outcome and documents are
        lost, so it counts as a failed execution: started anew while ``record_retries`` allow."""
        retried = entry.attempt <= self.options.record_retries
        then = "a new execution is started (record_retries)" if retried else "the record failed"
        message = f"{event['message']}; {then}"
        self.log.warning("record %s (line %d): %s", entry.key, entry.line, message)
        self._retry_or_fail(state, entry, event["execution_status"], [message])

    def _retry_or_fail(
        self, state: BatchState, entry: Entry, status: str | None, messages: list[str]
    ) -> None:
        """Start the record again while ``record_retries`` allow, else record it as failed."""
        if entry.attempt <= self.options.record_retries:
            entry.previous.append(
                {"execution_id": entry.execution_id, "execution_status": status, "messages": messages}
            )
            entry.attempt += 1
            entry.state, entry.execution_id, entry.intent_at = PENDING, None, None
            return
        state.close(entry, FAILED, execution_status=status, messages=messages)

    def _flow_messages(self, execution_id: str, event: ExecutionEvent) -> list[str]:
        """The flow's own FlowException messages of a failed execution (the event's text without them)."""
        try:
            execution = self.hook.get_execution(execution_id)
        except SmartFlowsError as err:
            return [event["message"], f"(details unavailable: {one_line(err, 200)})"]
        items = list(execution.errors)
        if ExecutionStatus.parse(event["execution_status"]) is ExecutionStatus.WARNING:
            items = list(execution.warnings) + items
        return [str(item) for item in items] or [event["message"]]

    def _download(
        self, hook: SmartFlowsHook, entry: Entry, document_ids: list[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Save the record's documents where ``destination`` says: their manifest entries, and the
        ones the selection left out. Each document's metadata is read first (and handed to the
        download: a folder target asks no more); expiring ones go first, an expired one fails the
        record before any of its documents is written."""
        destination = self.options.destination
        if not destination:
            return [{"document_id": document_id} for document_id in document_ids], []
        target = format_template(str(destination), entry.as_record(), "destination", safe=True)
        infos = [self._document_info(hook, document_id, target) for document_id in document_ids]
        now = now_utc()
        plan = plan_downloads(
            infos, self.options.selection, now=now, warning_seconds=expiry_warning_seconds(), target=target
        )
        for info in plan.near:
            self.log.warning("record %s: %s", entry.key, near_message(info, now))
        number = {info.id: position for position, info in enumerate(plan_in_order(infos, plan), start=1)}
        saved = []
        for info in plan.documents:
            path = (
                target
                if target.endswith("/") or number[info.id] == 1
                else numbered_name(target, number[info.id])
            )
            done = hook.download_document(
                info.id,
                path,
                conn_id=self.options.destination_conn_id or None,
                overwrite=self.options.overwrite,
                info=info,
            )
            saved.append({"document_id": info.id, "uri": done.uri, "size": done.size, "sha256": done.sha256})
        return saved, plan.skipped

    @staticmethod
    def _document_info(hook: SmartFlowsHook, document_id: str, target: str) -> DocumentInfo:
        with document_gone(document_id, target):
            return hook.get_document(document_id)

    def _cancel(self, entry: Entry, why: str) -> None:
        if not self.options.cancel_on_kill:
            return
        self.log.info(
            "Cancelling Smart Flows execution %s of record %s: %s", entry.execution_id, entry.key, why
        )
        try:
            self.hook.cancel_execution(str(entry.execution_id))
        except SmartFlowsError as err:
            self.log.warning("Could not cancel Smart Flows execution %s: %s", entry.execution_id, err)

    def _time_out(self, state: BatchState, entries: list[Entry]) -> SmartFlowsTimeoutError:
        """The try's deadline passed: cancel the running executions and record them; the error that
        fails the task."""
        why = "the batch's timeout passed"
        for entry in entries:
            self._cancel(entry, why)
            left = "cancelled" if self.options.cancel_on_kill else "left running (cancel_on_kill=False)"
            state.close(entry, FAILED, messages=[f"{why}; the execution was {left}"])
        return SmartFlowsTimeoutError(
            f"The batch did not finish within timeout={self.options.timeout} s ({state.progress_line()}); "
            f"{len(entries)} running executions were recorded as failed. A task retry continues with "
            f"the records not yet started; checkpoint {self.store.checkpoint}."
        )


def plan_in_order(infos: list[DocumentInfo], plan: DownloadPlan) -> list[DocumentInfo]:
    """The plan's documents in the execution's own order (file numbers do not depend on expiry)."""
    chosen = {id(info) for info in plan.documents}
    return [info for info in infos if id(info) in chosen]
