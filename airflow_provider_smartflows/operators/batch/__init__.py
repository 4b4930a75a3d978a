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
from airflow_provider_smartflows.operators.batch.run import MAX_BACKOFF_SECONDS, BatchOptions, BatchRun

__all__ = ["MAX_BACKOFF_SECONDS", "BatchOptions", "BatchRun", "SmartFlowsRunFlowBatchOperator"]
