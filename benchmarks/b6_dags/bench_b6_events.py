"""B6's DAGs (benchmarks/b6_events.py): assets watched by ``SmartFlowsExecutionEventTrigger``.

- ``bench_b6_events``: one asset, one watcher; each run is one empty task (the run is what B6 times).
- ``bench_b6_more_watchers``: four more assets on the same connection and ``poll_interval`` (so the
  same shared poll), each watcher with its own filters; unpaused only for the 5-watcher request count.

The services get ``BENCH_B6_POLL`` (seconds) in their environment. Needs Airflow >= 3.3.
"""

from __future__ import annotations

import datetime
import os
from functools import reduce
from operator import or_

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

from airflow_provider_smartflows.triggers.events import SmartFlowsExecutionEventTrigger

POLL = float(os.environ.get("BENCH_B6_POLL", "5"))
START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
#: The four other watchers: distinct trigger arguments (one trigger may watch one asset only).
MORE_WATCHERS: dict[str, dict[str, object]] = {
    "success": {"statuses": ["Success"]},
    "success_warning": {"statuses": ["Success", "Warning"]},
    "failed": {"statuses": ["Error", "Canceled", "Interrupted"]},
    "crm_user": {"created_by": "crm.user"},
}


def watched(name: str, **kwargs: object) -> Asset:
    trigger = SmartFlowsExecutionEventTrigger(poll_interval=POLL, **kwargs)  # type: ignore[arg-type]
    return Asset(name, watchers=[AssetWatcher(name=f"{name}_watcher", trigger=trigger)])


with DAG(
    "bench_b6_events",
    schedule=[watched("bench_b6_executions")],
    start_date=START,
    catchup=False,
    max_active_runs=200,
    tags=["bench"],
):
    EmptyOperator(task_id="registered")

with DAG(
    "bench_b6_more_watchers",
    schedule=reduce(or_, (watched(f"bench_b6_{name}", **kw) for name, kw in MORE_WATCHERS.items())),
    start_date=START,
    catchup=False,
    tags=["bench"],
):
    EmptyOperator(task_id="registered")
