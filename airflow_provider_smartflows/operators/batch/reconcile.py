"""Reconciling a batch record's ambiguous start: adopt the execution it created, start it again, or not.

A start whose outcome is unknown (a reset or a 500 after sending, a read timeout, or a worker lost
between the checkpoint's intent and the execution id) is looked up with the hook's
``find_started_execution`` (the rule: :mod:`airflow_provider_smartflows.reconcile`): the one
execution of the flow created since the intent by this user with the record's input is adopted;
a listing that proves none was created puts the record back in the queue, once; anything else
marks it ``unknown`` in the manifest, with the candidates.

The records of one wave are reconciled together: the settle time (the wait before the listing that
proves an absence) is counted once from the wave's last ambiguous answer, not once per record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsApiError
from airflow_provider_smartflows.operators.batch.state import PENDING, RUNNING, UNKNOWN
from airflow_provider_smartflows.reconcile import ADOPTED, Verdict
from airflow_provider_smartflows.text import one_line

if TYPE_CHECKING:
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from airflow_provider_smartflows.operators.batch.records import RecordInput
    from airflow_provider_smartflows.operators.batch.state import BatchState, Entry

#: An ambiguous start: the record and the start's error (None: found mid-start on resume).
Ambiguous = tuple["Entry", "SmartFlowsApiError | None"]


class StartReconciler:
    """
    Resolves a batch's ambiguous starts through the hook's listing of the flow's executions.

    :param hook: the synchronous hook.
    :param inputs: how a record becomes its flow input (the listing matches exactly what was sent).
    :param enabled: ``reconcile_ambiguous_start``; False marks every ambiguous start ``unknown``.
    :param clock_skew: ``reconcile_clock_skew`` in seconds.
    :param settle_time: ``reconcile_settle_time`` in seconds, counted once per wave.
    :param log: the task's logger.
    """

    def __init__(
        self,
        hook: SmartFlowsHook,
        inputs: RecordInput,
        *,
        enabled: bool,
        clock_skew: float,
        settle_time: float,
        log: Any,
    ) -> None:
        self.hook = hook
        self.inputs = inputs
        self.enabled = enabled
        self.clock_skew = clock_skew
        self.settle_time = settle_time
        self.log = log

    def resolve(self, state: BatchState, found: list[Ambiguous], since: float) -> bool:
        """Resolve ``found`` (settle time counted from ``since``); True if a record waits to start again."""
        again = False
        for entry, error in found:
            if entry.restarted:
                why = "its second start; a listing had proven that the first created nothing"
                self._unknown(state, entry, f"{_cause(error)}, {why}")
                continue
            settle = max(0.0, float(self.settle_time) - (time.time() - since))
            data = self.inputs.flow_input(entry.as_record())
            try:
                verdict = self._verdict(data, entry.intent_at, error, settle)
            except SmartFlowsApiError as err:  # cannot tell: the message names the candidates
                candidates = list(err.candidates or [])
                self._unknown(state, entry, _cause(error), one_line(err.message, 800), candidates=candidates)
                continue
            if verdict is None:
                self._unknown(state, entry, _cause(error))
            elif verdict.outcome == ADOPTED:
                self.log.warning(
                    "record %s (line %d): adopted execution %s: its start got no usable answer (%s), and %s",
                    entry.key,
                    entry.line,
                    verdict.execution_id,
                    _cause(error),
                    verdict.reason,
                )
                entry.state, entry.execution_id = RUNNING, verdict.execution_id
                state.counts["executions"] += 1
            else:
                self.log.warning(
                    "record %s (line %d): its start got no usable answer (%s), and %s: starting it again",
                    entry.key,
                    entry.line,
                    _cause(error),
                    verdict.reason,
                )
                entry.state, entry.intent_at, entry.restarted = PENDING, None, True
                again = True
        return again

    def _verdict(
        self, data: Any, sent_at: float | None, error: SmartFlowsApiError | None, settle_time: float
    ) -> Verdict | None:
        """
        The hook's verdict on an ambiguous start of a record whose flow input is ``data`` (exactly
        what was sent), sent no earlier than ``sent_at``: ADOPTED (``execution_id``) or NOT_STARTED.
        None when reconciliation is off or the send time is unknown; raises the start's error
        (``SmartFlowsApiError``, with ``candidates``) when the listing cannot tell.
        """
        if not self.enabled or sent_at is None:
            return None
        return self.hook.find_started_execution(
            self.inputs.flow_id,
            data,
            sent_at=sent_at,
            error=error,
            clock_skew=float(self.clock_skew),
            settle_time=float(settle_time),
        )

    def _unknown(self, state: BatchState, entry: Entry, reason: str, detail: str = "", **fields: Any) -> None:
        """The record is ``unknown``: never started again blindly; the message says what to check."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.intent_at or time.time()))
        message = (
            f"the start may have created an execution ({reason}): look for an execution of flow "
            f"{self.inputs.flow_id} created around {when} before running this record again"
        ) + (f". {detail}" if detail else "")
        self.log.error("record %s (line %d): %s", entry.key, entry.line, message)
        state.close(entry, UNKNOWN, messages=[message], **fields)


def _cause(error: SmartFlowsApiError | None) -> str:
    if error is None:
        return "the task stopped between the start request and its answer"
    return one_line(error, 200)
