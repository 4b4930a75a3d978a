"""What happens to a batch record when its execution ends: documents, manifest line, or a retry.

:class:`BatchOutcomesMixin` is part of :class:`~.batch.SmartFlowsRunFlowBatchOperator`; it turns the
batch trigger's events into manifest lines (after downloading the documents through the hook's
``download_document``, atomic and verified), queues a failed record's next attempt, and ends a try
whose deadline passed.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsError, SmartFlowsTimeoutError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.models import ExecutionStatus
from airflow_provider_smartflows.operators.batch_records import Record, format_template
from airflow_provider_smartflows.operators.batch_state import FAILED, PENDING, SUCCEEDED, manifest_line
from airflow_provider_smartflows.waiting import (
    EVENT_FAILED,
    EVENT_INPUT_REQUIRED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    one_line,
)

if TYPE_CHECKING:
    from airflow_provider_smartflows.operators.batch_state import BatchState, BatchStore, Entry
    from airflow_provider_smartflows.waiting import ExecutionEvent


class BatchOutcomesMixin:
    """Recording finished executions (part of the batch operator)."""

    record_retries: int
    destination: str | None
    destination_conn_id: str | None
    overwrite: bool
    cancel_on_kill: bool
    timeout: float | None
    smartflows_conn_id: str
    download_concurrency: int
    if TYPE_CHECKING:
        log: Any

        @property
        def hook(self) -> SmartFlowsHook: ...

        @property
        def store(self) -> BatchStore: ...

        def _save(self, state: BatchState) -> None: ...

    # --- finished executions --------------------------------------------------------------------

    def _record_events(self, state: BatchState, events: list[ExecutionEvent]) -> None:
        """Put finished records in the manifest (after their downloads), or queue their retry."""
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
            elif status == EVENT_INPUT_REQUIRED:
                self._cancel(entry, "it waits for a person, which a batch cannot answer")
                self._drop(
                    state,
                    entry,
                    FAILED,
                    execution_status=event["execution_status"],
                    messages=[event["message"]],
                )
            elif status == EVENT_TIMEOUT:
                timed_out.append(entry)
            else:
                errors.append(f"record {entry.key} (execution {entry.execution_id}): {event['message']}")
        self._finish_successes(state, succeeded)
        if timed_out:
            self._time_out(state, timed_out + list(by_id.values()))
        if errors:
            self._save(state)
            raise SmartFlowsError(
                f"Waiting for the batch's executions failed: {'; '.join(errors[:5])}. The records stay "
                f"in the checkpoint {self.store.checkpoint}; a task retry waits for them again."
            )

    def _drop(self, state: BatchState, entry: Entry, status: str, **fields: Any) -> None:
        """The record is done: its manifest line goes into the checkpoint's buffer."""
        state.entries.remove(entry)
        state.add_result(manifest_line(entry, status, **fields))

    def _finish_successes(self, state: BatchState, done: list[tuple[Entry, ExecutionEvent]]) -> None:
        """Download the documents of the succeeded records, ``download_concurrency`` at a time (a
        hook and HTTP session per thread), then write their manifest lines in the events' order."""
        workers = min(self.download_concurrency, len(done)) if self.destination else 1
        if workers <= 1:
            results = [self._saved_documents(self.hook, entry, event) for entry, event in done]
        else:
            hooks: queue.SimpleQueue[SmartFlowsHook] = queue.SimpleQueue()
            for hook in [self.hook, *self._extra_hooks(workers - 1)]:
                hooks.put(hook)

            def run(item: tuple[Entry, ExecutionEvent]) -> tuple[list[dict[str, Any]], str | None]:
                hook = hooks.get()
                try:
                    return self._saved_documents(hook, *item)
                finally:
                    hooks.put(hook)

            with ThreadPoolExecutor(workers, thread_name_prefix="smartflows-batch-download") as pool:
                results = list(pool.map(run, done))
        for (entry, event), (documents, error) in zip(done, results, strict=True):
            status = event["execution_status"]
            if error is None:
                self._drop(state, entry, SUCCEEDED, execution_status=status, documents=documents)
                continue
            self.log.error("record %s (line %d): %s", entry.key, entry.line, error)
            self._drop(state, entry, FAILED, execution_status=status, messages=[error])

    def _extra_hooks(self, count: int) -> list[SmartFlowsHook]:
        hooks: list[SmartFlowsHook] = self.__dict__.setdefault("_download_hooks", [])
        while len(hooks) < count:
            hook = SmartFlowsHook(self.smartflows_conn_id)
            hook.settings  # noqa: B018 - the connection is read here, in the task's own thread
            hooks.append(hook)
        return hooks[:count]

    def _saved_documents(
        self, hook: SmartFlowsHook, entry: Entry, event: ExecutionEvent
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The record's saved documents, or the reason they could not be saved."""
        try:
            return self._download(hook, entry, event["document_ids"]), None
        except SmartFlowsError as err:
            return [], f"the execution succeeded but its documents could not be saved: {one_line(err, 300)}"

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
        if entry.attempt <= self.record_retries:
            entry.previous.append(
                {"execution_id": entry.execution_id, "execution_status": status, "messages": messages}
            )
            entry.attempt += 1
            entry.state, entry.execution_id, entry.intent_at = PENDING, None, None
            return
        self._drop(state, entry, FAILED, execution_status=status, messages=messages)

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

    def _download(self, hook: SmartFlowsHook, entry: Entry, document_ids: list[str]) -> list[dict[str, Any]]:
        """Save the record's documents where ``destination`` says; their manifest entries."""
        if not self.destination:
            return [{"document_id": document_id} for document_id in document_ids]
        record = Record(entry.line, entry.record, entry.key)
        target = format_template(str(self.destination), record, "destination", safe=True)
        saved = []
        for number, document_id in enumerate(document_ids, start=1):
            path = target if target.endswith("/") or number == 1 else _numbered(target, number)
            done = hook.download_document(
                document_id, path, conn_id=self.destination_conn_id or None, overwrite=self.overwrite
            )
            saved.append(
                {"document_id": document_id, "uri": done.uri, "size": done.size, "sha256": done.sha256}
            )
        return saved

    def _cancel(self, entry: Entry, why: str) -> None:
        if not self.cancel_on_kill:
            return
        self.log.info(
            "Cancelling Smart Flows execution %s of record %s: %s", entry.execution_id, entry.key, why
        )
        try:
            self.hook.cancel_execution(str(entry.execution_id))
        except SmartFlowsError as err:
            self.log.warning("Could not cancel Smart Flows execution %s: %s", entry.execution_id, err)

    def _time_out(self, state: BatchState, entries: list[Entry]) -> None:
        """The try's deadline passed: cancel the running executions, record them, fail the task."""
        why = "the batch's timeout passed"
        for entry in entries:
            self._cancel(entry, why)
            left = "cancelled" if self.cancel_on_kill else "left running (cancel_on_kill=False)"
            self._drop(state, entry, FAILED, messages=[f"{why}; the execution was {left}"])
        self._save(state)
        raise SmartFlowsTimeoutError(
            f"The batch did not finish within timeout={self.timeout} s ({state.progress_line()}); "
            f"{len(entries)} running executions were recorded as failed. A task retry continues with "
            f"the records not yet started; checkpoint {self.store.checkpoint}."
        )


def _numbered(target: str, number: int) -> str:
    """``a/b.pdf`` -> ``a/b (2).pdf`` for a record's further documents."""
    head, slash, name = target.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    name = f"{stem} ({number}).{ext}" if dot and stem else f"{name} ({number})"
    return f"{head}{slash}{name}"
