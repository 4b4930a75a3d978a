"""The event trigger on the production shape: the triggerer running the watcher is SIGKILLed, the
other one adopts it, and every execution started outside Airflow becomes one asset event.

An asset watched by ``SmartFlowsExecutionEventTrigger`` (1 s poll, ``dags/smartflows_deployment_events.py``)
on the deployment of ``conftest.py`` (PostgreSQL, two triggerers). Twenty executions of ``deploy-event``
are started as another user: 6 before the kill (their events registered and the cursor behind them
stored first, so that the kill does not fall in the second between the two: that window, which
fires an execution again, is documented in docs/events.md and tests/system/test_event_system.py
kills in it), 8 while no triggerer runs the watcher, 6 once the survivor polls. Its cursor in the
asset state store (PostgreSQL) is what the survivor goes on from: 0 duplicates, 0 missed. Times are printed and written to ``.last_run.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.triggers.event_polls import Cursor, position_of
from airflow_provider_smartflows.triggers.events import CURSOR_KEY
from tests.deployment.dags.smartflows_deployment_events import ASSET, DAG_ID, FLOW
from tests.deployment.test_production_shape import record

if TYPE_CHECKING:
    from .conftest import Deployment

# slow, serial: real services; the deployment's own scenarios run only when asked for by path
pytestmark = [
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.system,
    pytest.mark.timeout(420),
    pytest.mark.airflow_version(
        min="3.3", reason="the event trigger keeps its cursor in the asset state store"
    ),
]

CLASSPATH = "airflow_provider_smartflows.triggers.events.SmartFlowsExecutionEventTrigger"
LISTING = r"/flows/executions/filter$"
BEFORE, DURING, AFTER = 6, 8, 6


def instant(value: object) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def events(dep: Deployment) -> list[tuple[str, float]]:
    """(execution id, registered at) of every asset event of the watched asset, oldest first."""
    rows = dep.postgres.query(
        "SELECT e.extra, e.timestamp FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = %s ORDER BY e.id",
        (ASSET,),
    )
    extras = [(extra if isinstance(extra, dict) else json.loads(extra), at) for extra, at in rows]
    return [(str(extra["payload"]["execution_id"]), instant(at)) for extra, at in extras]


def cursor_passed(dep: Deployment, execution_ids: list[str]) -> bool:
    """Whether the watcher's stored cursor is past these executions (each as the emulator has it)."""
    rows = dep.postgres.query(
        "SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
        "WHERE a.name = %s AND s.key = %s",
        (ASSET, CURSOR_KEY),
    )
    cursor = Cursor.from_json(json.loads(rows[0][0])) if rows else None
    positions = [position_of(dep.emulator.api("GET", f"/flows/executions/{x}")) for x in execution_ids]
    return cursor is not None and all(p is not None and cursor.passed(p[1], p[2]) for p in positions)


def watcher_triggerer(dep: Deployment) -> int | None:
    """The TriggererJob the watcher's trigger is assigned to (None: not created or not assigned)."""
    rows = dep.postgres.query("SELECT triggerer_id FROM trigger WHERE classpath = %s", (CLASSPATH,))
    return rows[0][0] if len(rows) == 1 else None


def listings_since(dep: Deployment, since: float) -> list[float]:
    """When the listing requests the emulator answered after ``since`` came in."""
    times = (instant(req["ts"]) for req in dep.emulator.requests_to("POST", LISTING))
    return [at for at in times if at > since]


def start_outside(dep: Deployment, count: int, gap: float = 0.0) -> list[str]:
    """Executions started as ``crm.user``, as the CRM plug-in would (not Airflow's key)."""
    ids = []
    for _ in range(count):
        ids.append(dep.emulator.admin("POST", "/_emulator/executions/start-as", json={"flow": FLOW})["id"])
        time.sleep(gap)  # the pace of the outside starts, not a wait for async work
    return ids


def test_a_sigkilled_watchers_successor_fires_each_execution_once(deployment: Deployment) -> None:
    dep = deployment
    jobs = {job: name for name, job in dep.triggerer_jobs.items()}
    dep.stack.wait_for_dag(DAG_ID)
    unpaused_at = time.time()
    dep.stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    victim_name = ""
    try:
        # Running: assigned to a triggerer, which listed the newest execution and then polled.
        victim = dep.stack.wait_for(
            lambda: len(listings_since(dep, unpaused_at)) >= 2 and watcher_triggerer(dep),
            timeout=150,
            what="the watcher to run on a triggerer",
        )
        victim_name = jobs[victim]
        (survivor,) = set(jobs) - {victim}
        started = start_outside(dep, BEFORE, gap=0.2)
        dep.stack.wait_for(
            lambda: set(started) <= {x for x, _ in events(dep)},
            timeout=60,
            what="the events of the executions started before the kill",
        )
        dep.stack.wait_for(
            lambda: cursor_passed(dep, started), timeout=30, what="the cursor stored past those executions"
        )
        killed_at = time.time()
        dep.stack.kill(victim_name)
        started += start_outside(dep, DURING, gap=1.0)  # they finish while nobody watches
        reassigned = dep.stack.wait_for(
            lambda: watcher_triggerer(dep) == survivor and time.time(),
            timeout=120,
            interval=0.25,
            what=f"{jobs[survivor]} to be assigned the watcher of the killed {victim_name}",
        )
        # (A request the killed process had sent may still be logged just after the kill.)
        first_poll = dep.stack.wait_for(
            lambda: min(listings_since(dep, killed_at + 0.5), default=None),
            timeout=60,
            interval=0.25,
            what="the survivor's first poll",
        )
        started += start_outside(dep, AFTER, gap=0.2)
        dep.stack.wait_for(
            lambda: set(started) <= {x for x, _ in events(dep)},
            timeout=90,
            what="an asset event for every execution",
            describe=lambda: sorted(set(started) - {x for x, _ in events(dep)}),
        )
        all_registered = max(at for _, at in events(dep))
        # Five more polls: a duplicate would show now.
        polls = len(listings_since(dep, all_registered))
        dep.stack.wait_for(
            lambda: len(listings_since(dep, all_registered)) >= polls + 5, timeout=60, what="five more polls"
        )
    finally:
        dep.stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
        if victim_name and victim_name not in dep.stack.procs:
            dep.start_triggerer(victim_name)  # as a process supervisor would; the next scenarios use two
    per = Counter(x for x, _ in events(dep))
    (runs,) = dep.postgres.query("SELECT COUNT(*) FROM dag_run WHERE dag_id = %s", (DAG_ID,))[0]
    figures: dict[str, Any] = {
        "executions": len(started),
        "asset_events": sum(per.values()),
        "duplicates": sum(n - 1 for n in per.values()),
        "missed": len(set(started) - set(per)),
        "reassigned_after_s": round(reassigned - killed_at, 1),
        "first_poll_after_kill_s": round(first_poll - killed_at, 1),
        "all_registered_after_kill_s": round(all_registered - killed_at, 1),
        "dag_runs": runs,
        "poll_interval_s": 1.0,
        "triggerer_health_check_threshold_s": 10,
    }
    print(
        f"\n{DAG_ID}: {victim_name} (job {victim}) SIGKILLed; {jobs[survivor]} assigned the watcher after "
        f"{figures['reassigned_after_s']} s, first poll after {figures['first_poll_after_kill_s']} s, all "
        f"{len(started)} events registered after {figures['all_registered_after_kill_s']} s; "
        f"{figures['duplicates']} duplicates, {figures['missed']} missed, {runs} DAG runs"
    )
    record("event_failover", figures)
    assert sorted(per) == sorted(started), (
        f"missed {set(started) - set(per)}, extra {set(per) - set(started)}"
    )
    assert [x for x, n in per.items() if n > 1] == [], "an execution fired twice"
