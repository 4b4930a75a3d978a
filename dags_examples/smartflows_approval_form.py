"""
A person approves a contract in Airflow's UI: the Smart Flows form becomes an Airflow request.

What it shows:

- ``SmartFlowsRunFlowOperator(user_input=AskInAirflow(...))`` running the emulator's ``approval``
  flow, which stops in ``UserInput`` with the form ``approved`` (boolean) and ``comment`` (text).
  The task writes a request to Airflow's **Required actions** page with that form (a switch and a
  text field, labelled as in Smart Flows), naming the flow, the execution (with its link) and the
  record, and waits deferred. The person's answer is checked against the Smart Flows schema and
  posted to the execution, which then finishes; the task returns its documents.
- ``response_timeout``: nobody answering within 4 hours closes the request, cancels the execution
  and fails the task. ``assigned_users`` would limit who may answer; ``notifiers`` tell people.
- Answering in Smart Flows itself also works: the request then closes by itself.

Needs Airflow >= 3.3 (on older versions the task fails at once saying so).

Connection needed: ``smartflows_default`` (type ``smartflows``). Against the local emulator::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow standalone   # trigger the DAG, then open Browse > Required actions

``airflow dags test`` cannot show it: nobody is there to answer.
"""

from __future__ import annotations

import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_smartflows.operators.hitl import AskInAirflow
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)

with DAG(
    dag_id="smartflows_approval_form",
    description="A person answers the Smart Flows 'approval' form in Airflow's Required actions",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    doc_md=__doc__,
):
    approve = SmartFlowsRunFlowOperator(
        task_id="approve_contract",
        flow_id="approval",
        data={"id": ["7f1c0f2e-0000-4000-8000-000000000042"], "entity": "account"},
        user_input=AskInAirflow(response_timeout=datetime.timedelta(hours=4)),
        deferrable=True,
        timeout=24 * 3600,
    )
    download = SmartFlowsDownloadDocumentsOperator(
        task_id="download",
        execution_id="{{ ti.xcom_pull(task_ids='approve_contract')['execution_id'] }}",
        destination="file:///tmp/smartflows-approvals/{{ ds }}/",
    )
    approve >> download
