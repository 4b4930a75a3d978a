"""DAGs of tests/system/test_hitl_system.py: people answering Smart Flows forms, sensors started
in the triggerer. The flows are in ``hitl_scenario.json`` (``hitl-approval``: a form ``approved``
boolean and ``comment`` text after a 10 s step; ``hitl-sensor``: 12 s then Success). Steps last
seconds, not less: Airflow 3.3.2 fails a task whose trigger fires before the scheduler has seen
the deferring worker end (apache/airflow#72716)."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_smartflows.operators.hitl import AskInAirflow
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor

START = pendulum.datetime(2024, 1, 1, tz="UTC")
RECORD = {"id": ["acc-42"], "entity": "account"}

# A person answers (through the public API, as the UI does); one answer is refused first.
with DAG("smartflows_hitl_answer", schedule=None, start_date=START, catchup=False, tags=["system"]):
    SmartFlowsRunFlowOperator(
        task_id="approve",
        flow_id="hitl-approval",
        data=RECORD,
        user_input="ask",
        deferrable=True,
        poll_interval=5,
        timeout=600,
    )

# Nobody answers: the request closes after 20 s, the execution is cancelled, the task fails.
# deferrable=False: waiting for a person defers anyway.
with DAG("smartflows_hitl_timeout", schedule=None, start_date=START, catchup=False, tags=["system"]):
    SmartFlowsRunFlowOperator(
        task_id="approve",
        flow_id="hitl-approval",
        data=RECORD,
        user_input=AskInAirflow(response_timeout=20),
        deferrable=False,
        poll_interval=5,
        timeout=600,
    )

# The execution is cancelled in Smart Flows while it waits for a person.
with DAG("smartflows_hitl_cancel", schedule=None, start_date=START, catchup=False, tags=["system"]):
    SmartFlowsRunFlowOperator(
        task_id="approve",
        flow_id="hitl-approval",
        data=RECORD,
        user_input="ask",
        deferrable=True,
        poll_interval=5,
        timeout=600,
    )

# A sensor on an execution started upstream: from the triggerer (default on 3.3) or from a worker.
for dag_id, from_trigger in (
    ("smartflows_sensor_from_trigger", True),
    ("smartflows_sensor_from_worker", False),
):
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["system"]):
        start = SmartFlowsRunFlowOperator(task_id="start", flow_id="hitl-sensor", wait_for_completion=False)
        sensor = SmartFlowsExecutionSensor(
            task_id="wait",
            execution_id="{{ ti.xcom_pull(task_ids='start', key='execution_id', map_indexes=-1) }}",
            deferrable=True,
            start_from_trigger=from_trigger,
            poke_interval=5,
            timeout=300,
        )
        start >> sensor
