"""Smart Flows waits in real Airflow services: parallel waits, triggerer restart, user kills (deferred
and on the worker).

One stack (scheduler with parallelism 2, triggerer, dag-processor, api-server) and one emulator
serve the module; each test uses its own DAG and its own emulator flow, so they do not interfere.
Everything is observed from outside, as an operator of the platform would: the REST API, the log
files under AIRFLOW_HOME and the emulator's admin routes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.airflow_stack import AirflowStack, EmulatorProcess

# Functional waits below are bounded well inside this; it only guards against a hang.
# slow, serial: real Airflow services (never beside the parallel pass; one worker per system file)
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.system, pytest.mark.timeout(480)]

FINAL_EXECUTION_STATES = {"Success", "Warning", "Error", "Canceled", "Interrupted"}
PROGRESS_LINE = re.compile(r"execution ([0-9A-Za-z-]+): (\d+) % ")
TASK = "run_flow"


# --- helpers -------------------------------------------------------------------------------------


def flow_tis(stack: AirflowStack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return [ti for ti in stack.task_instances(dag_id, run_id) if ti["task_id"] == TASK]


def states(tis: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(ti["state"]) for ti in tis))


def trigger_logs(stack: AirflowStack, dag_id: str, run_id: str, map_index: int) -> dict[Path, str]:
    """The trigger's log files of one task instance: ``<task log>.trigger.<triggerer job id>.log``."""
    mapped = f"map_index={map_index}/" if map_index >= 0 else ""
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/{mapped}*.trigger.*.log"
    return stack.logs(pattern)


def progress_lines(text: str) -> list[tuple[str, int]]:
    """``(execution id, percentage)`` of every ``execution <id>: NN % ...`` line."""
    return [(m.group(1), int(m.group(2))) for m in PROGRESS_LINE.finditer(text)]


def cancels(emulator: EmulatorProcess, execution_ids: set[str]) -> list[dict[str, Any]]:
    """Recorded cancel requests for these executions (either cancel path of the connection)."""
    cancel = re.compile(r"/flows/executions/([^/]+)(?:/progress)?$")
    return [
        req
        for req in emulator.requests_to("DELETE", cancel.pattern)
        if (m := cancel.search(req["path"])) and m.group(1) in execution_ids
    ]


def wait_for_run(stack: AirflowStack, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
    """Poll the run until it is final; return what was seen (max deferred/running at once, states)."""
    seen: dict[str, Any] = {"max_deferred": 0, "max_running": 0, "tis": []}

    def finished() -> bool:
        # The run first: once it is final, so are its task instances read after it (read before it,
        # a task instance could still show "running" beside a run that just failed).
        seen["run_state"] = stack.dag_run_state(dag_id, run_id)
        tis = flow_tis(stack, dag_id, run_id)
        counts = states(tis)
        seen["tis"] = tis
        seen["max_deferred"] = max(seen["max_deferred"], counts.get("deferred", 0))
        seen["max_running"] = max(seen["max_running"], counts.get("running", 0))
        return seen["run_state"] in ("success", "failed")

    stack.wait_for(
        finished,
        timeout=timeout,
        what=f"run {run_id} of {dag_id} to finish",
        describe=lambda: {"run": seen.get("run_state"), "states": states(seen["tis"])},
    )
    return seen


# --- scenarios -----------------------------------------------------------------------------------


def test_ten_deferred_waits_on_two_worker_slots(
    stack: AirflowStack, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    """Ten ~20 s executions wait on the triggerer at once while only two worker slots exist."""
    dag_id, flow_id = "smartflows_system_parallel", "system-parallel"
    destination = tmp_path / "documents"
    destination.mkdir()
    stack.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = stack.trigger(dag_id, conf={"destination": destination.as_uri() + "/"})
    seen = wait_for_run(stack, dag_id, run_id, timeout=240)
    print(f"\n{dag_id}: {time.monotonic() - started:.0f} s, at most {seen['max_deferred']} deferred at once")

    context = f"seen={seen}\n{stack.dump()}"
    assert seen["run_state"] == "success", context
    assert sorted(ti["map_index"] for ti in seen["tis"]) == list(range(10)), context
    assert states(seen["tis"]) == {"success": 10}, context
    # Two worker slots, yet (nearly) all ten waits were parked on the triggerer together.
    assert seen["max_running"] <= 2, context
    assert seen["max_deferred"] >= 5, context

    executions = emulator.executions(flow_id)
    assert len(executions) == 10, executions
    assert {ex["status"] for ex in executions} == {"Success"}, executions

    # The trigger of each task instance logged the progress of its own execution into the task's
    # trigger log file, step by step (not only the outcome).
    waited_on: set[str] = set()
    for map_index in range(10):
        logs = trigger_logs(stack, dag_id, run_id, map_index)
        lines = progress_lines("".join(logs.values()))
        assert lines, f"no progress line in the trigger logs of map_index {map_index}: {logs}\n{stack.dump()}"
        ids = {execution_id for execution_id, _ in lines}
        assert len(ids) == 1, lines
        percentages = {percentage for _, percentage in lines}
        assert 100 in percentages, lines
        assert len(percentages) >= 2, lines
        waited_on |= ids
        # ... and the task's log as the UI shows it (REST API) merges the trigger's lines in.
        api_log = stack.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/logs/1",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        (execution_id,) = ids
        assert f"execution {execution_id}: 100 %" in json.dumps(api_log), api_log
    assert waited_on == {ex["id"] for ex in executions}

    # The download task after them wrote every document, byte for byte what the server holds.
    files = sorted(p.name for p in destination.iterdir())
    assert files == sorted(f"System report rec-{i}.pdf" for i in range(10)), context
    for execution in executions:
        (document_id,) = execution["documents"]
        record = execution["input_data"]["id"][0]
        expected = emulator.admin("GET", f"/_emulator/documents/{document_id}/sha256")["sha256"]
        content = (destination / f"System report {record}.pdf").read_bytes()
        assert content.startswith(b"%PDF-")
        assert hashlib.sha256(content).hexdigest() == expected, record


def test_waits_survive_a_triggerer_restart(stack: AirflowStack, emulator: EmulatorProcess) -> None:
    """Stopping and starting the triggerer mid-wait neither loses a wait nor starts a flow twice."""
    dag_id, flow_id, count = "smartflows_system_restart", "system-restart", 4
    stack.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = stack.trigger(dag_id)

    def all_waiting_on_triggerer() -> bool:
        tis = flow_tis(stack, dag_id, run_id)
        deferred = [ti for ti in tis if ti["state"] == "deferred"]
        # Deferred and picked up: the running trigger has logged a progress line.
        return len(deferred) == count and all(
            progress_lines("".join(trigger_logs(stack, dag_id, run_id, ti["map_index"]).values()))
            for ti in deferred
        )

    stack.wait_for(
        all_waiting_on_triggerer,
        timeout=150,
        what=f"{count} deferred waits running on the triggerer",
        describe=lambda: states(flow_tis(stack, dag_id, run_id)),
    )
    running = [ex for ex in emulator.executions(flow_id) if ex["status"] not in FINAL_EXECUTION_STATES]
    assert running, "every execution finished before the restart: nothing was tested"

    stop_started = time.monotonic()
    graceful = stack.stop("triggerer")
    stopped_in = time.monotonic() - stop_started
    try:
        assert states(flow_tis(stack, dag_id, run_id)) == {"deferred": count}, stack.dump()
    finally:
        stack.start("triggerer")  # also when the assertion fails: the next tests need a triggerer

    seen = wait_for_run(stack, dag_id, run_id, timeout=180)
    print(
        f"\n{dag_id}: {time.monotonic() - started:.0f} s (triggerer stopped in {stopped_in:.1f} s, "
        f"{'on SIGTERM' if graceful else 'SIGKILLed'}; {len(running)} executions running at the restart)"
    )
    context = f"seen={seen}\n{stack.dump()}"
    assert seen["run_state"] == "success", context
    assert states(seen["tis"]) == {"success": count}, context

    # Each flow was started exactly once, and none was cancelled by the shutdown (no on_kill).
    executions = emulator.executions(flow_id)
    ids = {ex["id"] for ex in executions}
    assert len(executions) == count, executions
    assert {ex["status"] for ex in executions} == {"Success"}, executions
    starts = [
        r for r in emulator.requests_to("POST", r"/flows/executions$") if r["query"].get("flowId") == flow_id
    ]
    assert len(starts) == count, starts
    assert not cancels(emulator, ids)

    # Every wait ran on both triggerer jobs (one trigger log file per job), the new one saw the end.
    for ti in seen["tis"]:
        logs = trigger_logs(stack, dag_id, run_id, ti["map_index"])
        assert len(logs) >= 2, f"map_index {ti['map_index']}: trigger logs {sorted(logs)}\n{stack.dump()}"
        newest = max(logs, key=lambda path: int(path.name.rsplit(".", 2)[-2]))
        after_restart = [percentage for _, percentage in progress_lines(logs[newest])]
        assert 100 in after_restart, logs[newest]
        print(f"map_index {ti['map_index']}: progress seen by the new triggerer {after_restart}")


def wait_until_running_on_the_triggerer(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    """The id of the execution that the (single, unmapped) task waits for, once its trigger has
    logged progress on the triggerer."""

    def waiting_execution() -> str | None:
        tis = flow_tis(stack, dag_id, run_id)
        if not tis or tis[0]["state"] != "deferred":
            return None
        lines = progress_lines("".join(trigger_logs(stack, dag_id, run_id, -1).values()))
        return lines[0][0] if lines else None

    return str(
        stack.wait_for(
            waiting_execution,
            timeout=120,
            what="the wait to run on the triggerer",
            describe=lambda: states(flow_tis(stack, dag_id, run_id)),
        )
    )


@pytest.mark.airflow_version(min="3.3", reason="the triggerer calls a trigger's on_kill from Airflow 3.3")
def test_marking_a_deferred_task_failed_cancels_the_execution(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    """A user marks the deferred task failed: the trigger's on_kill cancels the remote execution."""
    dag_id, flow_id = "smartflows_system_cancel", "system-cancel"
    stack.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = stack.trigger(dag_id)

    # on_kill runs only for a trigger that is running: wait until the triggerer has logged progress.
    execution_id = wait_until_running_on_the_triggerer(stack, dag_id, run_id)
    killed_at = time.monotonic()
    stack.set_task_state(dag_id, run_id, TASK, "failed")

    def cancelled() -> bool:
        (execution,) = [ex for ex in emulator.executions(flow_id) if ex["id"] == execution_id]
        return bool(execution["status"] == "Canceled")

    stack.wait_for(
        cancelled,
        timeout=90,
        what=f"execution {execution_id} to be cancelled by the trigger's on_kill",
        describe=lambda: emulator.executions(flow_id),
    )
    print(
        f"\n{dag_id}: {time.monotonic() - started:.0f} s, cancelled {time.monotonic() - killed_at:.1f} s "
        "after the task was marked failed"
    )
    deletes = cancels(emulator, {execution_id})
    assert len(deletes) == 1, deletes
    assert deletes[0]["status"] == 200, deletes
    assert [ti["state"] for ti in flow_tis(stack, dag_id, run_id)] == ["failed"], stack.dump()
    assert len(emulator.executions(flow_id)) == 1
    # The trigger's own log file tells the story: Airflow invoked on_kill, which cancelled.
    stack.wait_for(
        lambda: (
            f"Cancelling Smart Flows execution {execution_id} (task killed)"
            in "".join(trigger_logs(stack, dag_id, run_id, -1).values())
        ),
        timeout=30,
        what="the trigger's on_kill line in its log file",
    )
    assert "invoking on_kill" in "".join(trigger_logs(stack, dag_id, run_id, -1).values())


@pytest.mark.airflow_version(below="3.3", reason="Airflow >= 3.3 cancels it (the test above)")
def test_marking_a_deferred_task_failed_leaves_the_execution_and_the_task_log_says_so(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    """Before Airflow 3.3 no on_kill reaches the trigger: the execution runs on, as the log warned."""
    dag_id, flow_id = "smartflows_system_cancel", "system-cancel"
    stack.wait_for_dag(dag_id)
    run_id = stack.trigger(dag_id)

    execution_id = wait_until_running_on_the_triggerer(stack, dag_id, run_id)
    stack.set_task_state(dag_id, run_id, TASK, "failed")

    # The triggerer drops the trigger of a task that is no longer deferred: "trigger <dag>/<run>/
    # <task>/<map index>/<try> (ID n) completed" in Airflow 2's triggerer log.
    def trigger_dropped() -> bool:
        triggerer_log = (stack.home / "triggerer.log").read_text(errors="replace")
        name = f"trigger {dag_id}/{run_id}/{TASK}/"
        return any(name in line and line.endswith("completed") for line in triggerer_log.splitlines())

    stack.wait_for(trigger_dropped, timeout=90, what=f"the trigger of {execution_id} to be dropped")
    assert [ti["state"] for ti in flow_tis(stack, dag_id, run_id)] == ["failed"], stack.dump()
    (execution,) = [ex for ex in emulator.executions(flow_id) if ex["id"] == execution_id]
    assert execution["status"] not in FINAL_EXECUTION_STATES, execution
    assert emulator.requests_to("DELETE", rf"/flows/executions/{re.escape(execution_id)}") == []
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/attempt=*.log"
    task_log = "".join(stack.logs(pattern).values())
    assert "cancel_on_kill while deferred is unavailable" in task_log, stack.dump()
    assert execution_id in task_log


def test_killing_a_task_waiting_on_a_worker_cancels_the_execution(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    """A user marks failed a task that waits on its worker (deferrable=False): Airflow stops the task
    and the operator's on_kill cancels the remote execution, on every Airflow version."""
    dag_id, flow_id = "smartflows_system_sync_cancel", "system-sync-cancel"
    stack.wait_for_dag(dag_id)
    run_id = stack.trigger(dag_id)

    def waiting_on_the_worker() -> str | None:
        tis = flow_tis(stack, dag_id, run_id)
        executions = emulator.executions(flow_id)
        if not tis or tis[0]["state"] != "running" or len(executions) != 1:
            return None
        execution_id = str(executions[0]["id"])
        # The operator polls: it holds the id it will cancel.
        polled = emulator.requests_to("GET", rf"/flows/executions/{re.escape(execution_id)}/progress")
        return execution_id if polled else None

    execution_id = stack.wait_for(
        waiting_on_the_worker,
        timeout=120,
        what="the task to wait for its execution on the worker",
        describe=lambda: (states(flow_tis(stack, dag_id, run_id)), emulator.executions(flow_id)),
    )
    killed_at = time.monotonic()
    stack.set_task_state(dag_id, run_id, TASK, "failed")

    def cancelled() -> bool:
        return [ex["status"] for ex in emulator.executions(flow_id)] == ["Canceled"]

    stack.wait_for(
        cancelled,
        timeout=90,
        what=f"execution {execution_id} to be cancelled by the operator's on_kill",
        describe=lambda: emulator.executions(flow_id),
    )
    print(f"\n{dag_id}: cancelled {time.monotonic() - killed_at:.1f} s after the task was marked failed")
    deletes = cancels(emulator, {execution_id})
    assert [req["status"] for req in deletes] == [200], deletes
    assert [ti["state"] for ti in flow_tis(stack, dag_id, run_id)] == ["failed"], stack.dump()
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/attempt=*.log"
    stack.wait_for(
        lambda: (
            f"Cancelling Smart Flows execution {execution_id} (task killed)"
            in "".join(stack.logs(pattern).values())
        ),
        timeout=30,
        what="the operator's on_kill line in the task log",
    )


def test_the_api_key_appears_nowhere_under_airflow_home(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    """Runs last: after every scenario, no log file, metadata DB row (XCom, trigger kwargs, rendered
    fields) or other file the services wrote contains the connection's key (scenario.json's canary)."""
    import base64

    key = emulator.api_key
    assert key.startswith("sf-canary-")
    needles = [key.encode(), base64.b64encode(key.encode()), base64.b64encode(key.encode())[:-4]]
    scanned, hits = 0, []
    for path in stack.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += len(data)
            hits += [f"{path}: {needle[:12]!r}" for needle in needles if needle in data]
    print(f"canary scan: {scanned} bytes under {stack.home}, {len(hits)} hits")
    assert scanned > 100_000  # the DB and the task and trigger logs of the scenarios above
    assert hits == []


def iso_seconds(text: str) -> float:
    """Epoch seconds of a timestamp as the emulator writes it."""
    from airflow_provider_smartflows.hooks.reconcile import parse_timestamp

    seconds = parse_timestamp(text)
    assert seconds is not None, text
    return seconds


def test_airflow_timeout_while_deferred_cancels_the_execution(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    """The task's execution_timeout (10 s) passes while it waits deferred: Airflow resumes it only to
    fail it; the operator cancels the execution first (one cancel) and its error names both."""
    dag_id, flow_id = "smartflows_system_timeout", "system-timeout"
    stack.wait_for_dag(dag_id)
    run_id = stack.trigger(dag_id)
    seen = wait_for_run(stack, dag_id, run_id, timeout=180)

    context = f"seen={seen}\n{stack.dump()}"
    assert seen["run_state"] == "failed", context
    assert states(seen["tis"]) == {"failed": 1}, context
    (execution,) = emulator.executions(flow_id)
    execution_id = str(execution["id"])
    assert execution["status"] == "Canceled", execution
    deletes = cancels(emulator, {execution_id})
    assert len(deletes) == 1, deletes
    assert deletes[0]["status"] == 200, deletes
    # The deadline is the task's start + 10 s; the execution was created just after that start.
    deadline = iso_seconds(str(execution["created_at"])) + 10
    lag = iso_seconds(str(deletes[0]["ts"])) - deadline
    print(f"\n{dag_id}: cancelled {lag:.1f} s after the 10 s execution_timeout passed, 1 cancel request")
    assert lag > -5, (lag, deletes, execution)  # not before the timeout (5 s: the start's own time)
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/attempt=*.log"
    task_log = "".join(stack.logs(pattern).values())
    assert "Airflow's timeout of this deferred task passed (execution_timeout=0:00:10)" in task_log, context
    assert f"Smart Flows execution {execution_id}. It was cancelled." in task_log, context


def test_airflow_timeout_while_deferred_fails_a_sensor_and_leaves_the_execution(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    """A deferred sensor's execution_timeout passes: the sensor fails with an error that names the
    execution, which runs on (a sensor does not own what it waits for)."""
    dag_id, flow_id = "smartflows_system_timeout_sensor", "system-timeout-sensor"
    emulator.api(
        "POST",
        "/flows/executions",
        params={"flowId": flow_id},
        json={"entity": "account", "id": ["sensor-1"]},
    )
    (execution,) = emulator.executions(flow_id)
    execution_id = str(execution["id"])
    stack.wait_for_dag(dag_id)
    run_id = stack.trigger(dag_id, conf={"execution_id": execution_id})
    seen = wait_for_run(stack, dag_id, run_id, timeout=180)

    context = f"seen={seen}\n{stack.dump()}"
    assert seen["run_state"] == "failed", context
    assert states(seen["tis"]) == {"failed": 1}, context
    (execution,) = emulator.executions(flow_id)
    assert execution["status"] not in FINAL_EXECUTION_STATES, execution
    assert cancels(emulator, {execution_id}) == []
    pattern = f"logs/dag_id={dag_id}/run_id={glob.escape(run_id)}/task_id={TASK}/attempt=*.log"
    task_log = "".join(stack.logs(pattern).values())
    assert "Airflow's timeout of this deferred sensor passed (execution_timeout=0:00:10)" in task_log, context
    assert f"Smart Flows execution {execution_id}; the execution was left running" in task_log, context
    emulator.api("DELETE", f"/flows/executions/{execution_id}")  # tidy: the flow would run 10 min
