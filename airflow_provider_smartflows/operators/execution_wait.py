"""The worker side of waiting, importable from its historical path.

It lives in :mod:`airflow_provider_smartflows.worker_wait` (beside the waiting rules, so that the
sensor need not import the operators); this module re-exports it.
"""

from __future__ import annotations

from airflow_provider_smartflows.links import XCOM_EXECUTION_ID
from airflow_provider_smartflows.worker_wait import ExecutionWaiter, SmartFlowsExecutionWaitMixin

__all__ = ["XCOM_EXECUTION_ID", "ExecutionWaiter", "SmartFlowsExecutionWaitMixin"]
