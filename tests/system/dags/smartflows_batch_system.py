"""Batch DAGs of the system test (tests/system/test_batch_system.py): one task runs a whole batch.

Each run reads its records from a JSON Lines file and writes its manifest, checkpoint and documents
under a folder of the test, both given in ``dag_run.conf`` (``records_uri``, ``out``: ``file://``
URIs). The flows (``system-batch-*``) are in ``tests/system/scenario.json``.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator

START = pendulum.datetime(2024, 1, 1, tz="UTC")
TASK = "batch"
#: Every record becomes a Dynamics input naming its account: the emulator's executions tell them apart.
DATA = {"entity": "account", "id": ["{record[account]}"]}
COMMON: dict[str, Any] = {
    "task_id": TASK,
    "records_uri": "{{ dag_run.conf['records_uri'] }}",
    "record_key": "customer_id",
    "data_template": DATA,
    "manifest_uri": "{{ dag_run.conf['out'] }}/manifest.jsonl",
    "destination": "{{ dag_run.conf['out'] }}/docs/{record[customer_id]}.pdf",
    "max_active": 8,
    "deferrable": True,
    "poll_interval": 5,
    "gather_seconds": 0.5,
    "timeout": 600,
}


def note_task_process(context: Any) -> None:
    """Append ``<try number> <pid>`` of the process that runs the operator to ``<out>/pids.txt``:
    the test SIGKILLs exactly that process (the task process, under the scheduler's LocalExecutor)."""
    folder = Path(urlparse(context["dag_run"].conf["out"]).path)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "pids.txt").open("a") as handle:
        handle.write(f"{context['ti'].try_number} {os.getpid()}\n")


# A batch whose deferred waits outlive a triggerer restart.
with DAG(
    "smartflows_system_batch_restart",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system", "batch"],
):
    SmartFlowsRunFlowBatchOperator(flow_id="system-batch-restart", **COMMON)


# A batch whose task process is SIGKILLed while it starts a wave (starts paced by the rate limit so
# that the kill finds records "starting" in the checkpoint); the task's retry resumes from it.
with DAG(
    "smartflows_system_batch_kill",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system", "batch"],
):
    SmartFlowsRunFlowBatchOperator(
        flow_id="system-batch-kill",
        max_starts_per_second=1.5,
        reconcile_settle_time=3,
        retries=1,
        retry_delay=datetime.timedelta(seconds=2),
        on_execute_callback=note_task_process,
        **COMMON,
    )


# A batch whose execution_timeout passes while it waits deferred: its running executions are cancelled.
with DAG(
    "smartflows_system_batch_timeout",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["system", "batch"],
):
    SmartFlowsRunFlowBatchOperator(
        flow_id="system-batch-timeout",
        execution_timeout=datetime.timedelta(seconds=15),
        **COMMON,
    )
