"""Soak: 500 executions through the real trigger, 5 % of all requests faulted at random (seeded).

Each execution has a flow of its own (``soak-000`` ... ``soak-499``), so "each flow started exactly
once" is what the emulator counts. The path of one execution is the provider's:

1. start with ``SmartFlowsHook.start_execution`` (worker threads, as workers would);
2. a ``SmartFlowsExecutionTrigger`` rebuilt from its ``serialize()`` (as the triggerer does) runs
   in one event loop together with all the others, until its event;
3. ``SmartFlowsHook.download_document`` saves the execution's document.

Faults: on every GET 503 / 502 / 504 / 429 / connection reset / latency past the read timeout; on
the start POST only 503 / 429 (provably not acted on: the hook resends), a reset before the server
acted and a 500 after it acted. Starts go through the provider's ``start_execution_reconciled``: a
start whose outcome is unknown is never re-POSTed blindly, the hook lists the flow's executions
(``GET /api/v1/flows/{flow}/executions``) and adopts the one the server created, or starts again
once when the listing proves there is none. The test counts what the hook reports
(``StartedExecution.how``); it has no reconciliation of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.emulator.server import EmulatorServer
from airflow_provider_smartflows.exceptions import SmartFlowsApiError
from airflow_provider_smartflows.hooks.reconcile import ADOPTED, STARTED
from airflow_provider_smartflows.hooks.retry import is_retryable
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger
from tests.support.waits import wait_until

from .helpers import files_under, record_figures

if TYPE_CHECKING:
    from pathlib import Path

# slow, serial: a soak of 500 executions with real deadlines (make test runs it alone)
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(300)]

EXECUTIONS = 500
FAULT_RATE = 0.05
SEED = 20240606
CONN_ID = "sf_soak"
READ_TIMEOUT = 1.0  # the connection's "timeout" extra; a long-poll waits POLL_INTERVAL more
POLL_INTERVAL = 1.0
#: Seconds a start whose outcome is unknown waits before the listing that proves nothing was created.
SETTLE_TIME = 0.5
LATENCY = READ_TIMEOUT + POLL_INTERVAL + 1.5  # past the read timeout of any call
GET_FAULTS = [
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 502},
    {"kind": "status", "status": 504},
    {"kind": "status", "status": 429},
    {"kind": "reset"},
    {"kind": "latency", "latency": LATENCY},
]
START_FAULTS = [
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 429},
    {"kind": "reset", "when": "before"},
    {"kind": "status", "status": 500, "when": "after"},
]
START_PATH = r"^/api/v1/flows/executions$"


def per_rule_probability(rules: int) -> float:
    """Each of ``rules`` independent rules fires with this, so that one of them fires with FAULT_RATE."""
    return float(1 - (1 - FAULT_RATE) ** (1 / rules))


def fault_name(rule: dict[str, Any]) -> str:
    name = rule["kind"] if rule["status"] is None else f"{rule['status']}"
    if rule["method"] == "POST":
        return f"start-{name}" + ("-after" if rule["when"] == "after" else "")
    return f"get-{name}"


@pytest.fixture(scope="module")
def soak_emulator() -> Any:
    server = EmulatorServer(speedup=1.0, seed=SEED)
    server.start()
    try:
        yield server
        # Let answers still sleeping in latency faults finish, so the shutdown cancels nothing.
        latency_hits = sum(rule["hits"] for rule in server.faults if rule["kind"] == "latency")
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: sum(r["fault"] == "latency" for r in server.requests) >= latency_hits,
                LATENCY + 2,
                interval=0.02,
            )
    finally:
        server.stop()


class Starter:
    """Starts executions from worker threads (one hook each) without ever starting one twice."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.local = threading.local()
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.hooks: list[SmartFlowsHook] = []

    def hook(self) -> SmartFlowsHook:
        if not hasattr(self.local, "hook"):
            self.local.hook = SmartFlowsHook(
                self.conn_id, retry_limit=5, retry_delay=0.01, max_retry_delay=0.2
            )
            with self.lock:
                self.hooks.append(self.local.hook)
        hook: SmartFlowsHook = self.local.hook
        return hook

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def start(self, flow_id: str) -> str:
        hook = self.hook()
        for _ in range(20):
            sent_at = time.time()
            try:
                started = hook.start_execution_reconciled(flow_id, settle_time=SETTLE_TIME)
            except SmartFlowsApiError as err:
                if err.may_have_started:
                    # The flow was started again and that outcome is unknown too: the provider fails
                    # the start (never a third POST). What the person it pages does, with its method.
                    self.count("start_second_unknown")
                    verdict = hook.find_started_execution(
                        flow_id, None, sent_at=sent_at, settle_time=SETTLE_TIME
                    )
                    if verdict.execution_id is not None:
                        return verdict.execution_id
                    continue
                sent = getattr(err, "request_sent", True)
                if is_retryable("POST", err.status_code, request_sent=sent):
                    # The hook gave up on 429/503 only: the server provably created nothing.
                    self.count("start_not_acted_resent")
                    continue
                raise
            if started.how != STARTED:
                self.count("start_ambiguous")
                self.count(f"start_ambiguous_{'adopted' if started.how == ADOPTED else 'restarted'}")
            return started.execution_id
        raise AssertionError(f"could not start {flow_id} in 20 attempts")

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()


def rebuilt(trigger: SmartFlowsExecutionTrigger) -> SmartFlowsExecutionTrigger:
    """The trigger as a triggerer makes it: from the class path and JSON kwargs of serialize()."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    instance: SmartFlowsExecutionTrigger = cls(**json.loads(json.dumps(kwargs)))
    return instance


async def run_all(starter: Starter, flows: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    deadline = time.time() + 240

    async def one(flow_id: str, pool: ThreadPoolExecutor) -> tuple[str, str, dict[str, Any]]:
        execution_id = await loop.run_in_executor(pool, starter.start, flow_id)
        trigger = rebuilt(
            SmartFlowsExecutionTrigger(execution_id, CONN_ID, poll_interval=POLL_INTERVAL, end_time=deadline)
        )
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1, events
        return flow_id, execution_id, events[0]

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="soak-start") as pool:
        return list(await asyncio.gather(*(one(flow, pool) for flow in flows)))


def test_soak_500_executions_with_5_percent_faults(
    soak_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = soak_emulator
    emulator.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", emulator.connection_json(timeout=READ_TIMEOUT))
    flows = [f"soak-{i:03d}" for i in range(EXECUTIONS)]
    for flow_id in flows:
        emulator.add_flow(
            {
                "id": flow_id,
                "steps": [
                    {"message": "Collecting data", "percentage": 30, "seconds": 0.3},
                    {"message": "Generating document", "percentage": 80, "seconds": 0.3},
                ],
                "documents": [{"displayName": f"Soak {flow_id}"}],
            }
        )
    get_p, post_p = per_rule_probability(len(GET_FAULTS)), per_rule_probability(len(START_FAULTS))
    for spec in GET_FAULTS:
        emulator.add_fault(method="GET", times=None, probability=get_p, **spec)
    for spec in START_FAULTS:
        emulator.add_fault(method="POST", path=START_PATH, times=None, probability=post_p, **spec)

    began = time.monotonic()
    starter = Starter(CONN_ID)
    try:
        outcomes = asyncio.run(run_all(starter, flows))
        destination = tmp_path / "documents"
        downloader = starter.hook()
        downloaded: dict[str, str] = {}
        for flow_id, _, event in outcomes:
            (document_id,) = event["document_ids"]
            result = downloader.download_document(document_id, f"{destination}/{flow_id}.pdf")
            downloaded[document_id] = result.sha256
    finally:
        starter.close()
    elapsed = time.monotonic() - began

    # Every execution reached its final state, as the trigger reported it.
    assert len(outcomes) == EXECUTIONS
    not_success = [(flow, event) for flow, _, event in outcomes if event["status"] != "success"]
    assert not_success == []
    assert {event["execution_status"] for _, _, event in outcomes} == {"Success"}

    # Each flow started exactly once, and its trigger waited for that execution.
    executions = emulator.executions
    per_flow = collections.Counter(ex["flow_id"] for ex in executions)
    duplicates = sum(count - 1 for count in per_flow.values() if count > 1)
    assert emulator.executions_started() == EXECUTIONS
    assert per_flow == dict.fromkeys(flows, 1)
    id_of_flow = {ex["flow_id"]: ex["id"] for ex in executions}
    assert all(id_of_flow[flow] == execution_id for flow, execution_id, _ in outcomes)
    assert {ex["status"] for ex in executions} == {"Success"}

    # Every document downloaded once, complete, with the server's sha256; nothing else on disk.
    files = files_under(destination)
    partial = [name for name in files if not name.endswith(".pdf") or name.startswith(".")]
    assert files == sorted(f"{flow}.pdf" for flow in flows)
    assert partial == []
    wrong = [doc for doc, sha in downloaded.items() if emulator.document_sha256(doc) != sha]
    assert wrong == []
    log = emulator.requests
    served = collections.Counter(
        r["path"].split("/")[-2]
        for r in log
        if r["path"].endswith("/content") and r["status"] == 200 and r["fault"] is None
    )
    assert served == dict.fromkeys(downloaded, 1)

    rules = emulator.faults
    injected = collections.Counter()
    for rule in rules:
        injected[fault_name(rule)] += rule["hits"]
    total_faults = sum(injected.values())
    assert total_faults > 0
    figures = {
        "executions": EXECUTIONS,
        "finished_success": sum(1 for _, _, e in outcomes if e["status"] == "success"),
        "requests_seen_by_emulator": len(log),
        "fault_probability_target": FAULT_RATE,
        "faults_injected": total_faults,
        "faults_injected_by_kind": dict(sorted(injected.items())),
        "fault_rate_measured": round(total_faults / len(log), 4),
        # Every execution finished and every document was saved: each injected fault was recovered.
        "faults_recovered": total_faults,
        "start_not_acted_resent": starter.counts["start_not_acted_resent"],
        "start_ambiguous": starter.counts["start_ambiguous"],
        "start_ambiguous_adopted": starter.counts["start_ambiguous_adopted"],
        "start_ambiguous_restarted": starter.counts["start_ambiguous_restarted"],
        "start_second_unknown": starter.counts["start_second_unknown"],
        "reconciled_by": "SmartFlowsHook.start_execution_reconciled",
        "duplicates": duplicates,
        "documents_downloaded": len(downloaded),
        "sha256_mismatches": len(wrong),
        "partial_documents": len(partial),
        "seed": SEED,
        "elapsed_seconds_informative": round(elapsed, 1),
    }
    record_figures("soak", figures)
    with capsys.disabled():
        print("\nsoak figures:", json.dumps(figures, sort_keys=True))
