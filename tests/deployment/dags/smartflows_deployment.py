"""DAGs of the deployment tests (tests/deployment): run by CeleryExecutor workers and two triggerers.

The flows (``deploy-*``) are defined in ``tests/deployment/scenario.json``; the connection
``smartflows_default`` comes from ``AIRFLOW_CONN_SMARTFLOWS_DEFAULT`` in the services' environment.
No DAG retries a deferred task: a wait that Airflow loses must show as a failed task, not be hidden.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator

START = pendulum.datetime(2024, 1, 1, tz="UTC")
SPREAD_RUNS = 60
OUTAGE_RUNS = 8
SPREAD_FLOWS = ("deploy-40", "deploy-30", "deploy-20")


def _record(i: int) -> dict[str, object]:
    return {"entity": "account", "id": [f"rec-{i}"]}


# Scenarios 1 and 2: sixty executions of 20-40 s, waited for on two triggerers, one of which dies.
# Each execution first waits for a go-ahead (the emulator's Waiting stage, like an e-signature):
# the test gives it once all sixty are deferred, however slowly a loaded machine starts them.
with DAG(
    "smartflows_deploy_spread",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=SPREAD_RUNS,
    tags=["deployment"],
):
    SmartFlowsRunFlowOperator.partial(
        task_id="run_flow", deferrable=True, poll_interval=10, timeout=900
    ).expand_kwargs(
        [
            {"flow_id": SPREAD_FLOWS[i * len(SPREAD_FLOWS) // SPREAD_RUNS], "data": _record(i)}
            for i in range(SPREAD_RUNS)
        ]
    )


# Scenario 3: a wait on the worker whose Celery worker is SIGKILLed; the retry reattaches.
# The execution waits for a go-ahead, given once the retry has reattached.
with DAG(
    "smartflows_deploy_worker_kill",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["deployment"],
):
    SmartFlowsRunFlowOperator(
        task_id="run_flow",
        flow_id="deploy-worker",
        data=_record(0),
        deferrable=False,
        poll_interval=5,
        timeout=900,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


# Scenario 4: deferred waits while PostgreSQL is stopped and started again; the go-ahead is given
# just before the stop, so the executions end (and the triggers fire) while the database is down.
with DAG(
    "smartflows_deploy_outage",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=OUTAGE_RUNS,
    tags=["deployment"],
):
    SmartFlowsRunFlowOperator.partial(
        task_id="run_flow", flow_id="deploy-outage", deferrable=True, poll_interval=10, timeout=900
    ).expand(data=[_record(i) for i in range(OUTAGE_RUNS)])


# Scenario 5: a deferred wait that a user marks failed: the trigger's on_kill cancels it.
with DAG(
    "smartflows_deploy_cancel",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["deployment"],
):
    SmartFlowsRunFlowOperator(
        task_id="run_flow",
        flow_id="deploy-cancel",
        data=_record(0),
        deferrable=True,
        poll_interval=10,
        cancel_on_kill=True,
        timeout=900,
    )
