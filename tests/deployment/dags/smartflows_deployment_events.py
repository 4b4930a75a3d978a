"""DAG of the deployment's event failover test (tests/deployment/test_event_failover.py): an asset
watched by ``SmartFlowsExecutionEventTrigger`` at a 1 s poll, for the executions of ``deploy-event``
(started outside Airflow by the test). Paused at creation: its watcher runs only while the test
has it unpaused. Needs Airflow >= 3.3 (on older lines this file fails to import, alone).
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

from airflow_provider_smartflows.triggers.events import SmartFlowsExecutionEventTrigger

DAG_ID = "smartflows_deploy_events"
ASSET = "smartflows_deploy_executions"
FLOW = "deploy-event"

executions = Asset(
    ASSET,
    watchers=[
        AssetWatcher(
            name="smartflows_deploy_watcher",
            trigger=SmartFlowsExecutionEventTrigger(flow_id=FLOW, poll_interval=1.0),
        )
    ],
)

with DAG(
    DAG_ID,
    schedule=[executions],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=20,
    tags=["deployment"],
):
    EmptyOperator(task_id="registered")
