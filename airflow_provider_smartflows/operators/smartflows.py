"""The Smart Flows operators, importable from their historical path.

Users' DAGs and the README import from ``airflow_provider_smartflows.operators.smartflows``; the
operators live one per module (:mod:`.run_flow`, :mod:`.download`, :mod:`.callback`) and this
module re-exports them, so that path keeps working.
"""

from __future__ import annotations

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.operators.callback import SmartFlowsCallbackOperator
from airflow_provider_smartflows.operators.download import SmartFlowsDownloadDocumentsOperator
from airflow_provider_smartflows.operators.execution_wait import (
    XCOM_EXECUTION_ID,
    SmartFlowsExecutionWaitMixin,
)
from airflow_provider_smartflows.operators.run_flow import SmartFlowsRunFlowOperator

__all__ = [
    "XCOM_EXECUTION_ID",
    "SmartFlowsCallbackOperator",
    "SmartFlowsDownloadDocumentsOperator",
    "SmartFlowsExecutionWaitMixin",
    "SmartFlowsRunFlowBatchOperator",
    "SmartFlowsRunFlowOperator",
]
