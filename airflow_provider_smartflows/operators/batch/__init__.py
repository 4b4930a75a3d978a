"""The batch: one Smart Flows execution per record of a collection, from one task.

- :mod:`.records`: where the records come from (list, JSON Lines, CSV), the reading cursor, how a
  record becomes its key, its flow input and its documents' names.
- :mod:`.state`: the checkpoint and the results manifest (the batch's durable progress).
- :mod:`.run`: the engine (:class:`BatchRun`): the loop, the starts, their pacing and back-off.
- :mod:`.outcomes`: finished executions: documents saved, manifest lines, retries, timeouts.
- :mod:`.reconcile`: ambiguous starts: adopt the execution a start created, start it again, or not.
- :mod:`.operator`: :class:`SmartFlowsRunFlowBatchOperator`, what DAG authors write.

``from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator`` is the
operator's public path.
"""

from __future__ import annotations

from airflow_provider_smartflows.operators.batch.operator import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.operators.batch.reconcile import Ambiguous
from airflow_provider_smartflows.operators.batch.records import (
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
from airflow_provider_smartflows.operators.batch.run import MAX_BACKOFF_SECONDS, BatchOptions, BatchRun
from airflow_provider_smartflows.operators.batch.state import (
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

# The operator, and what the single module ``operators/batch.py`` made importable from here.
__all__ = [
    "FAILED",
    "MAX_BACKOFF_SECONDS",
    "PENDING",
    "RUNNING",
    "STARTING",
    "SUCCEEDED",
    "UNKNOWN",
    "Ambiguous",
    "BatchOptions",
    "BatchRun",
    "BatchState",
    "BatchStore",
    "Cursor",
    "Entry",
    "KeySet",
    "Record",
    "RecordList",
    "RecordSource",
    "SmartFlowsRunFlowBatchOperator",
    "fill_data_template",
    "format_template",
    "record_key",
    "render_xml",
]
