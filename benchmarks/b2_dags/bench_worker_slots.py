"""DAGs of benchmark B2: N executions of one flow, deferred on the triggerer or poking on workers.

N comes from ``BENCH_B2_COUNT`` (default 20) in the services' environment; the flow ``bench-b2``
(one step of ``BENCH_B2_SECONDS``) is in the scenario that ``benchmarks/b2_worker_slots.py`` writes.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator

COUNT = int(os.environ.get("BENCH_B2_COUNT", "20"))
RECORDS = [{"entity": "account", "id": [f"rec-{i}"]} for i in range(COUNT)]

for deferrable in (True, False):
    with DAG(
        f"bench_slots_{'deferrable' if deferrable else 'poking'}",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=COUNT,
        tags=["benchmark"],
    ):
        SmartFlowsRunFlowOperator.partial(
            task_id="run_flow",
            flow_id="bench-b2",
            deferrable=deferrable,
            poll_interval=10,
            timeout=3600,
        ).expand(data=RECORDS)
