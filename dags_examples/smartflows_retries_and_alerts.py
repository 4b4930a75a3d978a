"""
Retries with exponential back-off, alerting callbacks, and the Warning policy.

What it shows:

- ``flaky``: a flow whose first execution ends in ``Error`` and later ones succeed. The task
  retries with exponential back-off (``retries``, ``retry_delay``, ``retry_exponential_backoff``,
  ``max_retry_delay``). Retrying is safe: the operator keeps the execution id in the task state
  store (Airflow >= 3.3) and, on the next try, reattaches to an execution that is still running
  or returns one that already succeeded; only after a failed execution (as here) does it start
  a new one. So this DAG makes exactly two executions of ``flaky``.
- Alerting through callbacks: ``on_retry_callback`` and ``on_failure_callback`` are
  :class:`SmartFlowsAlert` notifiers. Each alert is logged (level ERROR) and handed to a sink
  function; the default sink appends one JSON line to the file named by the DAG param
  ``alert_file`` (empty: log only). Pass another ``sink(alert, context)`` to post to chat or page
  someone; the alert carries the task, the try, the error and the execution's link in Smart Flows.
- The ``Warning`` policy, side by side on the flow ``warning`` (which ends ``Warning`` with
  "E-mail could not be sent"): ``lenient_on_warning`` succeeds and logs the warnings (the
  default), ``strict_on_warning`` (``fail_on_warning=True``) fails with the warning text and
  alerts. It has ``retries=0``: a warning is the flow's verdict, not a transient failure, and a
  retry would only start another execution that warns again.
- ``report`` (``trigger_rule="all_done"``) runs whatever happened before and logs each
  execution's outcome; being the last task, it lets the run end green once everyone was alerted.

Connection needed: ``smartflows_default`` (type ``smartflows``: Host = the server's base URL,
Password = an API key). Against the local emulator::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow dags test smartflows_retries_and_alerts --conf '{"alert_file": "/tmp/smartflows-alerts.jsonl"}'

The flow ``flaky`` fails only the first execution since the emulator started (or was reset).
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import DAG, BaseNotifier, Param, task

from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

RETRIES = 3
#: First retry after 10-20 s, then twice as long each time, at most 5 minutes.
RETRY_DELAY = datetime.timedelta(seconds=10)
# True doubles the delay on every retry. Airflow 3.3 also takes a float multiplier (True means 2.0)
# but Airflow 2 refuses anything but a bool, so True is the portable spelling.
RETRY_EXPONENTIAL_BACKOFF = True
MAX_RETRY_DELAY = datetime.timedelta(minutes=5)

RUN_TASKS = ("flaky_flow", "lenient_on_warning", "strict_on_warning")


def append_to_alert_file(alert: Mapping[str, Any], context: Any) -> None:
    """The default alert sink: one JSON line per alert appended to the file of the param ``alert_file``."""
    target = (context.get("params") or {}).get("alert_file")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(alert, sort_keys=True) + "\n")


class SmartFlowsAlert(BaseNotifier):
    """
    Alert about a Smart Flows task that failed (``event="failed"``) or will be retried ("retry").

    :param event: what happened, copied into the alert.
    :param sink: ``sink(alert, context)`` delivers the alert dict; default :func:`append_to_alert_file`.
    """

    def __init__(
        self,
        *,
        event: str,
        sink: Callable[[Mapping[str, Any], Any], None] = append_to_alert_file,
    ) -> None:
        super().__init__()
        self.event = event
        self.sink = sink

    def notify(self, context: Any) -> None:
        ti = context["ti"]
        exception = context.get("exception")
        alert = {
            "event": self.event,
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "try_number": ti.try_number,
            "error": f"{type(exception).__name__}: {exception}" if exception is not None else None,
            # Pushed by SmartFlowsRunFlowOperator as soon as the execution started.
            "execution_url": ti.xcom_pull(task_ids=ti.task_id, key="execution_url"),
        }
        log.error(
            "ALERT %s: %s.%s try %s: %s (%s)",
            self.event,
            alert["dag_id"],
            alert["task_id"],
            alert["try_number"],
            alert["error"],
            alert["execution_url"] or "no execution started",
        )
        self.sink(alert, context)


with DAG(
    dag_id="smartflows_retries_and_alerts",
    description="Smart Flows retries with back-off, alert callbacks and fail_on_warning",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    params={
        "alert_file": Param(
            "",
            type="string",
            description="File the alerts are appended to as JSON lines; empty: alerts are only logged",
        ),
    },
    default_args={
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": RETRY_EXPONENTIAL_BACKOFF,
        "max_retry_delay": MAX_RETRY_DELAY,
        "on_retry_callback": SmartFlowsAlert(event="retry"),
        "on_failure_callback": SmartFlowsAlert(event="failed"),
    },
    doc_md=__doc__,
) as dag:
    flaky_flow = SmartFlowsRunFlowOperator(
        task_id="flaky_flow",
        flow_id="flaky",
        deferrable=True,
        poll_interval=10,
        timeout=600,
    )

    lenient_on_warning = SmartFlowsRunFlowOperator(
        task_id="lenient_on_warning",
        flow_id="warning",
        deferrable=True,
        poll_interval=10,
        timeout=600,
    )

    strict_on_warning = SmartFlowsRunFlowOperator(
        task_id="strict_on_warning",
        flow_id="warning",
        fail_on_warning=True,
        retries=0,
        deferrable=True,
        poll_interval=10,
        timeout=600,
    )

    @task(trigger_rule="all_done", retries=0, multiple_outputs=False)
    def report(ti: Any = None) -> dict[str, Any]:
        """Each execution's outcome (None: the task failed before returning one)."""
        outcomes: dict[str, Any] = {}
        for task_id in RUN_TASKS:
            result = ti.xcom_pull(task_ids=task_id)
            outcomes[task_id] = None if result is None else result["status"]
            log.info("%s: %s", task_id, outcomes[task_id] or "failed (see the alert)")
        return outcomes

    [flaky_flow, lenient_on_warning, strict_on_warning] >> report()
