"""DAGs of the system test (tests/system): run by a real scheduler, workers and triggerer.

The flows (``system-*``) are defined in ``tests/system/scenario.json``; the connection
``smartflows_default`` comes from ``AIRFLOW_CONN_SMARTFLOWS_DEFAULT`` in the services' environment.
"""

from __future__ import annotations

import datetime
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor

START = pendulum.datetime(2024, 1, 1, tz="UTC")
PARALLEL_RUNS = 10
RESTART_RUNS = 4


def _records(count: int) -> list[dict[str, Any]]:
    return [{"entity": "account", "id": [f"rec-{i}"]} for i in range(count)]


@task
def document_ids(results: list[dict[str, Any]]) -> list[str]:
    """Every document id of the mapped runs, in map order."""
    return [doc_id for result in results for doc_id in result["document_ids"]]


# Ten deferred waits of ~20 s each on a scheduler with two worker slots, then one download.
with DAG(
    "smartflows_system_parallel",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=PARALLEL_RUNS,
    tags=["system"],
):
    runs = SmartFlowsRunFlowOperator.partial(
        task_id="run_flow",
        flow_id="system-parallel",
        deferrable=True,
        poll_interval=5,
        timeout=600,
    ).expand(data=_records(PARALLEL_RUNS))
    SmartFlowsDownloadDocumentsOperator(
        task_id="download",
        document_ids=document_ids(runs.output),
        destination="{{ dag_run.conf['destination'] }}",
    )


# Waits that outlive a triggerer restart.
with DAG(
    "smartflows_system_restart",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=RESTART_RUNS,
    tags=["system"],
):
    SmartFlowsRunFlowOperator.partial(
        task_id="run_flow",
        flow_id="system-restart",
        deferrable=True,
        poll_interval=5,
        timeout=600,
    ).expand(data=_records(RESTART_RUNS))


# One wait that a user marks failed while it is deferred: the trigger's on_kill cancels it.
with DAG(
    "smartflows_system_cancel",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system"],
):
    SmartFlowsRunFlowOperator(
        task_id="run_flow",
        flow_id="system-cancel",
        deferrable=True,
        poll_interval=5,
        cancel_on_kill=True,
        timeout=900,
    )


# One wait on the worker (not deferred) that a user marks failed: the operator's on_kill cancels it.
with DAG(
    "smartflows_system_sync_cancel",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system"],
):
    SmartFlowsRunFlowOperator(
        task_id="run_flow",
        flow_id="system-sync-cancel",
        deferrable=False,
        poll_interval=5,
        cancel_on_kill=True,
        timeout=900,
    )


# Airflow's execution_timeout passes while the task waits deferred: the execution is cancelled.
AIRFLOW_TIMEOUT = datetime.timedelta(seconds=10)
with DAG(
    "smartflows_system_timeout",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system"],
):
    SmartFlowsRunFlowOperator(
        task_id="run_flow",
        flow_id="system-timeout",
        deferrable=True,
        poll_interval=5,
        cancel_on_kill=True,
        execution_timeout=AIRFLOW_TIMEOUT,
    )


# The same for a sensor (given the id of an execution started elsewhere): it fails, never cancels.
with DAG(
    "smartflows_system_timeout_sensor",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system"],
):
    SmartFlowsExecutionSensor(
        task_id="run_flow",
        execution_id="{{ dag_run.conf['execution_id'] }}",
        deferrable=True,
        poke_interval=5,
        execution_timeout=AIRFLOW_TIMEOUT,
    )
