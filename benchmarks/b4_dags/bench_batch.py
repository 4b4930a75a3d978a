"""B4's DAGs (benchmarks/b4_batch.py): one batch task against the same records mapped over the run operator.

The services get ``BENCH_B4_MAX_ACTIVE`` in their environment; each DAG run's conf names its files.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator

START = pendulum.datetime(2024, 1, 1, tz="UTC")
MAX_ACTIVE = int(os.environ.get("BENCH_B4_MAX_ACTIVE", "200"))
FLOW = "bench-b4"

# One task: every record of a JSON Lines file, at most MAX_ACTIVE executions at once, each record's
# document to the conf's destination (file://, or s3:// with its connection), a manifest.
with DAG("bench_b4_batch", schedule=None, start_date=START, catchup=False, tags=["bench"]):
    SmartFlowsRunFlowBatchOperator(
        task_id="batch",
        flow_id=FLOW,
        records_uri="{{ dag_run.conf['records_uri'] }}",
        record_key="id",
        data_template={"entity": "account", "id": ["{record[id]}"]},
        destination="{{ dag_run.conf['destination'] }}/{record[id]}.pdf",
        destination_conn_id="{{ dag_run.conf.get('destination_conn_id', '') }}",
        manifest_uri="{{ dag_run.conf['manifest_uri'] }}",
        max_active=MAX_ACTIVE,
        deferrable=True,
    )


@task
def b4_records(**context: Any) -> list[dict[str, Any]]:
    """The same records as the batch's file, as one XCom list (mapping needs it)."""
    count = int(context["dag_run"].conf["count"])
    return [{"entity": "account", "id": [f"r{i:05d}"]} for i in range(count)]


# The same records mapped over the run operator: one task instance (and trigger) per record.
with DAG(
    "bench_b4_mapped",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=MAX_ACTIVE,
    tags=["bench"],
):
    SmartFlowsRunFlowOperator.partial(task_id="run", flow_id=FLOW, deferrable=True).expand(data=b4_records())
