"""The batch operator on real Airflow services: a triggerer restart and a SIGKILLed task process
mid-batch leave 0 duplicates and 0 lost records.

One stack (scheduler with LocalExecutor, one triggerer, dag-processor, api-server) and one emulator
serve the module. Each scenario runs one ``SmartFlowsRunFlowBatchOperator`` task
(``dags/smartflows_batch_system.py``) over a JSON Lines file of records, with its manifest,
checkpoint and documents in the test's own folder, and is judged from outside: the REST API, the
task logs, the emulator's executions and request log, the manifest and the files on disk.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import itertools
import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION

AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3

if TYPE_CHECKING:
    from tests.support.airflow_stack import AirflowStack, EmulatorProcess

# slow, serial: real Airflow services (never beside the parallel pass; one worker per system file)
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.system, pytest.mark.timeout(420)]

TASK = "batch"
MAX_ACTIVE = 8  # the DAGs' max_active


# --- helpers -------------------------------------------------------------------------------------


def write_records(folder: Path, count: int, prefix: str) -> tuple[dict[str, Any], list[str]]:
    """A JSONL file of ``count`` records; the run's conf and the accounts (one per record)."""
    records = [{"customer_id": f"{prefix}{n:03d}", "account": f"{prefix}-acc-{n}"} for n in range(count)]
    source = folder / "records.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    conf = {"records_uri": source.as_uri(), "out": (folder / "out").as_uri()}
    return conf, [record["account"] for record in records]


def checkpoint(folder: Path) -> dict[str, Any] | None:
    """The batch's checkpoint as the operator last wrote it (None before the first write)."""
    path = folder / "out" / "manifest.jsonl.checkpoint.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):  # not written yet (the write is a rename: never half a file)
        return None


def batch_ti(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any]:
    (ti,) = [ti for ti in stack.task_instances(dag_id, run_id) if ti["task_id"] == TASK]
    return ti


PROGRESS = re.compile(r"(\d[\d,]*) / (\d[\d,]*) done, ")


def progress(log: str) -> list[int]:
    """The done count of every progress line (one per resume) of a task log."""
    return [int(m.group(1).replace(",", "")) for m in PROGRESS.finditer(log)]


def wait_for_run(stack: AirflowStack, dag_id: str, run_id: str, timeout: float) -> str:
    """Poll the run until it is final. Fails at once if a try's progress goes backwards: a resume
    that counts fewer records done than an earlier one of the same try lost recorded results."""

    def final() -> str | None:
        for attempt in (1, 2):
            done = progress(task_log(stack, dag_id, run_id, attempt))
            backwards = [(a, b) for a, b in itertools.pairwise(done) if b < a]
            assert not backwards, (
                f"attempt {attempt}: the batch's progress went backwards between resumes {backwards} "
                f"(done counts {done}): a resume lost results recorded by the one before\n{stack.dump()}"
            )
        state = stack.dag_run_state(dag_id, run_id)
        return state if state in ("success", "failed") else None

    return str(
        stack.wait_for(
            final,
            timeout=timeout,
            what=f"run {run_id} of {dag_id} to finish",
            describe=lambda: batch_ti(stack, dag_id, run_id)["state"],
        )
    )


def summary_xcom(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any]:
    """The task's return value (the batch summary) through the REST API."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/xcomEntries/return_value"
    params = {"deserialize": True, "stringify": False} if not AIRFLOW_V_3_0_PLUS else {}
    value = stack.api("GET", path, params=params)["value"]
    if isinstance(value, str):  # a stringified dict on some versions
        value = ast.literal_eval(value)
    return dict(value)


def task_log(stack: AirflowStack, dag_id: str, run_id: str, attempt: int) -> str:
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/attempt={attempt}.log"
    return "".join(stack.logs(pattern).values())


def executions_by_account(emulator: EmulatorProcess, flow_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for execution in emulator.executions(flow_id):
        found.setdefault(execution["input_data"]["id"][0], []).append(execution)
    return found


def max_concurrent(executions: list[dict[str, Any]]) -> int:
    """Most executions running at once on the server (created_at .. created_at + duration at speed-up 1)."""
    from airflow_provider_smartflows.hooks.reconcile import parse_timestamp

    edges: list[tuple[float, int]] = []
    for execution in executions:
        start = parse_timestamp(execution["created_at"])
        assert start is not None, execution
        edges += [(start, 1), (start + float(execution["duration"]), -1)]
    running = peak = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def assert_exactly_once(
    emulator: EmulatorProcess, flow_id: str, accounts: list[str], folder: Path
) -> list[dict[str, Any]]:
    """0 duplicates (one execution and one successful start per record), 0 lost (every record in
    the manifest, succeeded, its document on disk as the manifest and the server say)."""
    by_account = executions_by_account(emulator, flow_id)
    duplicates = {account: len(found) for account, found in by_account.items() if len(found) != 1}
    assert duplicates == {}, by_account
    assert sorted(by_account) == sorted(accounts), "records never started on the server"
    executions = [found[0] for found in by_account.values()]
    assert {ex["status"] for ex in executions} == {"Success"}, executions
    starts = [
        req
        for req in emulator.requests_to("POST", r"/flows/executions$")
        if req["query"].get("flowId") == flow_id and req["status"] in (200, 201)
    ]
    assert len(starts) == len(accounts), [req["status"] for req in starts]
    assert max_concurrent(executions) <= MAX_ACTIVE

    lines = [json.loads(line) for line in (folder / "out" / "manifest.jsonl").read_text().splitlines()]
    by_key = Counter(line["key"] for line in lines)
    assert {key: n for key, n in by_key.items() if n != 1} == {}, lines
    assert len(lines) == len(accounts), lines
    by_id = {ex["id"]: ex for ex in executions}
    for line in lines:
        execution = by_id[line["execution_id"]]  # the one execution of that record
        assert line["status"] == "succeeded", line
        assert execution["input_data"]["id"] == [accounts[line["line"] - 1]], (line, execution)
        (document,) = line["documents"]
        assert document["document_id"] == execution["documents"][0]
        path = Path(document["uri"].removeprefix("file://"))
        assert path == folder / "out" / "docs" / f"{line['key']}.pdf"
        content = path.read_bytes()
        assert content.startswith(b"%PDF-")
        assert document["size"] == len(content)
        assert document["sha256"] == hashlib.sha256(content).hexdigest()
        server = emulator.admin("GET", f"/_emulator/documents/{document['document_id']}/sha256")
        assert document["sha256"] == server["sha256"], line
    return lines


# --- scenarios -----------------------------------------------------------------------------------


def test_a_batch_survives_a_triggerer_restart(
    stack: AirflowStack, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    """The triggerer is stopped and started while the batch waits on it mid-batch: every record
    runs exactly once and lands in the manifest with its document."""
    dag_id, flow_id, count = "smartflows_system_batch_restart", "system-batch-restart", 32
    conf, accounts = write_records(tmp_path, count, "r")
    stack.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = stack.trigger(dag_id, conf=conf)

    def waiting_mid_batch() -> list[str] | None:
        """Deferred after a first wave finished, with executions running that the trigger polls."""
        state = checkpoint(tmp_path)
        if (
            not state
            or state["counts"]["succeeded"] == 0
            or batch_ti(stack, dag_id, run_id)["state"] != "deferred"
        ):
            return None
        running = [e["execution_id"] for e in state["entries"] if e["state"] == "running"]
        polled = {req["path"].split("/")[-2] for req in emulator.requests_to("GET", r"/progress$")}
        return running if running and set(running) <= polled else None

    running = stack.wait_for(
        waiting_mid_batch,
        timeout=150,
        what="the batch to wait on the triggerer mid-batch",
        describe=lambda: (batch_ti(stack, dag_id, run_id)["state"], checkpoint(tmp_path)),
    )
    at_stop = checkpoint(tmp_path)
    assert at_stop is not None
    restart_at = time.monotonic() - started
    graceful = stack.stop("triggerer")
    stopped_in = time.monotonic() - started - restart_at

    def finished_meanwhile() -> list[str]:
        return [
            ex["id"]
            for ex in emulator.executions(flow_id)
            if ex["id"] in running and ex["status"] == "Success"
        ]

    try:
        # Down until some of the executions it waited on have finished: nobody saw them finish.
        stack.wait_for(finished_meanwhile, timeout=60, interval=0.2, what="an execution to finish meanwhile")
        assert batch_ti(stack, dag_id, run_id)["state"] == "deferred", stack.dump()
    finally:
        stack.start("triggerer")  # also when an assertion fails: the next test needs a triggerer
    down_for = time.monotonic() - started - restart_at
    finished_while_down = finished_meanwhile()

    assert wait_for_run(stack, dag_id, run_id, timeout=240) == "success", stack.dump()
    lines = assert_exactly_once(emulator, flow_id, accounts, tmp_path)
    summary = summary_xcom(stack, dag_id, run_id)
    assert {
        k: summary[k] for k in ("total", "succeeded", "failed", "unknown", "executions", "documents")
    } == {
        "total": count,
        "succeeded": count,
        "failed": 0,
        "unknown": 0,
        "executions": count,
        "documents": count,
    }, summary
    # One try: the restart cost the task nothing but a wait; the worker resumed once per wave.
    assert batch_ti(stack, dag_id, run_id)["try_number"] == 1
    log = task_log(stack, dag_id, run_id, 1)
    assert f"{count:,} / {count:,} done, 0 failed, 0 running" in log, stack.dump()
    # The deferred wait that spanned the restart ran on both triggerer jobs.
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/*.trigger.*.log"
    trigger_jobs = {path.name.rsplit(".", 2)[-2] for path in stack.logs(pattern)}
    assert len(trigger_jobs) >= 2, trigger_jobs
    print(
        f"\n{dag_id}: {count} records in {time.monotonic() - started:.0f} s; triggerer stopped at "
        f"{restart_at:.0f} s ({at_stop['counts']['succeeded']} done, {len(running)} running) in "
        f"{stopped_in:.1f} s {'on SIGTERM' if graceful else 'SIGKILLed'}, down {down_for:.1f} s, "
        f"{len(finished_while_down)} of those finished meanwhile; {summary['resumes']} resumes, worker "
        f"{summary['worker_seconds']} s busy; trigger jobs {sorted(trigger_jobs)}; "
        f"{len(lines)} manifest lines, 0 duplicates, 0 lost"
    )


def test_a_batch_resumes_after_its_task_process_is_sigkilled_mid_start(
    stack: AirflowStack, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    """SIGKILL hits the task process while it starts a wave (records ``starting`` in the
    checkpoint): the try fails, the retry reconciles those records (adopts the executions they
    created, starts again the ones a listing proves absent) and finishes the batch exactly once."""
    dag_id, flow_id, count = "smartflows_system_batch_kill", "system-batch-kill", 24
    conf, accounts = write_records(tmp_path, count, "k")
    pids = tmp_path / "out" / "pids.txt"
    stack.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = stack.trigger(dag_id, conf=conf)

    def mid_start() -> int | None:
        """The first try's task process while it is sending a wave's starts (some already created)."""
        state = checkpoint(tmp_path)
        if not state or not any(e["state"] == "starting" for e in state["entries"]):
            return None
        created = executions_by_account(emulator, flow_id)
        starting = [e for e in state["entries"] if e["state"] == "starting"]
        if sum(e["record"]["account"] in created for e in starting) < 2:
            return None
        tries = [line.split() for line in pids.read_text().splitlines()] if pids.exists() else []
        return int(tries[-1][1]) if tries and tries[-1][0] == "1" else None

    pid = stack.wait_for(
        mid_start,
        timeout=150,
        interval=0.1,
        what="the batch task to be starting a wave",
        describe=lambda: checkpoint(tmp_path),
    )
    assert stack.service_of(pid) == "scheduler", f"pid {pid} is not a task process under the scheduler"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic() - started
    at_kill = checkpoint(tmp_path)  # the process is dead: this is what the retry resumes from
    assert at_kill is not None
    starting = {e["record"]["account"]: e["key"] for e in at_kill["entries"] if e["state"] == "starting"}
    created_at_kill = set(executions_by_account(emulator, flow_id))
    assert starting, at_kill
    assert set(starting) - created_at_kill, "every start of the wave had been sent: nothing to start again"

    assert wait_for_run(stack, dag_id, run_id, timeout=240) == "success", stack.dump()
    ti = batch_ti(stack, dag_id, run_id)
    assert ti["try_number"] == 2, ti  # the killed try failed, its retry finished the batch
    tries = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/tries")
    assert [(t["try_number"], t["state"]) for t in tries["task_instances"]] == [(1, "failed"), (2, "success")]

    assert_exactly_once(emulator, flow_id, accounts, tmp_path)
    summary = summary_xcom(stack, dag_id, run_id)
    assert (summary["total"], summary["succeeded"], summary["executions"]) == (count, count, count), summary
    assert (summary["failed"], summary["unknown"]) == (0, 0), summary

    # The retry reconciled every record found mid-start: created ones adopted, the others (proven
    # absent by the listing) started again; none marked unknown.
    log = task_log(stack, dag_id, run_id, 2)
    adopted = {key for key in starting.values() if _logged(log, key, "adopted execution")}
    again = {key for key in starting.values() if _logged(log, key, "starting it again")}
    assert adopted | again == set(starting.values()), (starting, adopted, again)
    assert not adopted & again, (adopted, again)
    assert {starting[a] for a in created_at_kill & set(starting)} <= adopted, log
    print(
        f"\n{dag_id}: {count} records in {time.monotonic() - started:.0f} s; task process {pid} SIGKILLed "
        f"at {killed_at:.1f} s with {len(starting)} records 'starting' in the checkpoint "
        f"({len(created_at_kill & set(starting))} of them created on the server, "
        f"{at_kill['counts']['succeeded']} done before); the retry adopted {len(adopted)} and started "
        f"{len(again)} again; {len(emulator.executions(flow_id))} executions for {count} records, "
        f"{summary['resumes']} resumes, 0 duplicates, 0 lost"
    )


def _logged(log: str, key: str, what: str) -> bool:
    return any(f"record {key} (line" in line and what in line for line in log.splitlines())


def test_airflow_timeout_while_deferred_cancels_the_running_executions(
    stack: AirflowStack, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    """The batch's execution_timeout (15 s) passes while it waits deferred: Airflow resumes it only
    to fail it; the operator cancels every running execution first (one cancel each)."""
    dag_id, flow_id, count = "smartflows_system_batch_timeout", "system-batch-timeout", 4
    conf, _accounts = write_records(tmp_path, count, "t")
    stack.wait_for_dag(dag_id)
    run_id = stack.trigger(dag_id, conf=conf)
    assert wait_for_run(stack, dag_id, run_id, timeout=180) == "failed", stack.dump()

    executions = emulator.executions(flow_id)
    assert len(executions) == count, executions
    assert {ex["status"] for ex in executions} == {"Canceled"}, executions
    ids = {str(ex["id"]) for ex in executions}
    cancel = re.compile(r"/flows/executions/([^/]+)(?:/progress)?$")
    deletes = [
        (m.group(1), req)
        for req in emulator.requests_to("DELETE", cancel.pattern)
        if (m := cancel.search(req["path"])) and m.group(1) in ids
    ]
    assert sorted(execution_id for execution_id, _ in deletes) == sorted(ids), deletes
    first_start = min(parse_seconds(ex["created_at"]) for ex in executions)
    lags = [parse_seconds(req["ts"]) - (first_start + 15) for _, req in deletes]
    print(
        f"\n{dag_id}: {count} executions cancelled {min(lags):.1f}-{max(lags):.1f} s after the 15 s timeout"
    )
    log = task_log(stack, dag_id, run_id, 1)
    assert "Airflow's timeout of this deferred batch passed (execution_timeout=0:00:15)" in log, stack.dump()
    assert f"{count} of its {count} running executions were cancelled" in log, stack.dump()


def parse_seconds(text: str) -> float:
    from airflow_provider_smartflows.hooks.reconcile import parse_timestamp

    seconds = parse_timestamp(text)
    assert seconds is not None, text
    return seconds
