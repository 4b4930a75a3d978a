"""Executions and documents the server purged (its clean-up) while a task needed them (issue 24, item 2).

``dag.test()`` with retries against the emulator, whose admin call purges an execution or a
document: afterwards the API answers 404 for it, as the vendor's server does. On Airflow >= 3.3 a
retry first asks for the execution the earlier try stored (``ResumableJobMixin``); below 3.3 there
is no task state store and every retry starts anew anyway: the outcome is the same on every line,
only the retry's log line differs.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsDocumentGoneError,
    SmartFlowsExecutionGoneError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS
from tests.operators.batch.batch_helpers import DYNAMICS, customers, manifest, run_batch
from tests.support.dag_runs import make_dag

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smartflows_conn")]  # dag.test() runs

NO_RETRY_DELAY = datetime.timedelta(seconds=0)


@contextlib.contextmanager
def purge_while_waited_on(emulator: Any, count: int = 1) -> Iterator[list[str]]:
    """Purge the first ``count`` executions as soon as a long-poll waits on each (the ids purged)."""
    purged: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and len(purged) < count:
            for execution in emulator.executions:
                if execution["long_polls"] and execution["id"] not in purged:
                    emulator.purge_execution(execution["id"])
                    purged.append(execution["id"])
                    break
            stop.wait(0.02)

    thread = threading.Thread(target=watch, name="purger", daemon=True)
    thread.start()
    try:
        yield purged
    finally:
        stop.set()
        thread.join(timeout=10)


# --- the run operator --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "deferrable",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.airflow_version(
                not_line="3.0",
                reason="Airflow 3.0's dag.test() resumes a retried task from the previous try's "
                "deferral event (next_method is kept), so the retry never runs execute",
            ),
        ),
    ],
    ids=["sync", "deferrable"],
)
def test_an_execution_purged_during_the_wait_fails_the_try_and_the_retry_starts_anew(
    run_dag: Any, smartflows_emulator: Any, capsys: pytest.CaptureFixture[str], deferrable: bool
) -> None:
    smartflows_emulator.set_speedup(10)  # "slow" runs 2 s: the first try surely waits on it
    dag = make_dag(
        "purged_run",
        lambda: SmartFlowsRunFlowOperator(
            task_id="generate",
            flow_id="slow",
            poll_interval=2,
            deferrable=deferrable,
            retries=1,
            retry_delay=NO_RETRY_DELAY,
        ),
    )
    with purge_while_waited_on(smartflows_emulator) as purged:
        result = run_dag(dag)
    (gone,) = purged
    first = result.errors["generate"][0]
    assert isinstance(first, SmartFlowsExecutionGoneError)
    assert first.execution_id == gone
    assert f"Smart Flows execution {gone} disappeared from the server (404" in str(first)
    assert "purged by the server's clean-up or deleted" in str(first)
    assert "a retry of this task starts a new execution" in str(first)
    # The retry started a new execution, which succeeded; nothing else changed.
    assert (result.states["generate"], result.tries["generate"]) == ("success", 2)
    assert smartflows_emulator.executions_started() == 2
    value = result.xcom("generate")
    assert value["execution_id"] != gone
    assert value["status"] == "Success"
    assert result.xcom("generate", "execution_id") == value["execution_id"]
    output = capsys.readouterr().out
    if AIRFLOW_V_3_3_PLUS:
        # The retry asked for the stored execution first (one 404), logged why it starts anew.
        assert f"Smart Flows execution {gone} stored by an earlier try is gone from the server" in output
        assert "Reattach unavailable" not in output
    else:
        assert "Reattach unavailable" in output


def test_purged_on_both_tries_fails_with_the_clear_message_each_time(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    smartflows_emulator.set_speedup(10)
    dag = make_dag(
        "purged_twice",
        lambda: SmartFlowsRunFlowOperator(
            task_id="generate", flow_id="slow", poll_interval=2, retries=1, retry_delay=NO_RETRY_DELAY
        ),
    )
    with purge_while_waited_on(smartflows_emulator, count=2) as purged:
        result = run_dag(dag)
    assert result.states["generate"] == "failed"
    errors = result.errors["generate"]
    assert [type(error) for error in errors] == [SmartFlowsExecutionGoneError] * 2
    assert [error.execution_id for error in errors] == purged
    assert smartflows_emulator.executions_started() == 2


# --- the sensor --------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_the_sensor_fails_clearly_on_a_purged_execution_and_starts_nothing(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    execution_id = SmartFlowsHook().start_execution("hello").id
    smartflows_emulator.purge_execution(execution_id)
    dag = make_dag(
        "purged_sensor",
        lambda: SmartFlowsExecutionSensor(
            task_id="wait", execution_id=execution_id, poke_interval=1, deferrable=deferrable
        ),
    )
    result = run_dag(dag)
    assert result.states["wait"] == "failed"
    error = result.error("wait")
    assert isinstance(error, SmartFlowsExecutionGoneError)
    assert f"Smart Flows execution {execution_id} disappeared from the server (404" in str(error)
    assert "This sensor did not start it" in str(error)
    assert smartflows_emulator.executions_started() == 1  # ours: the sensor starts nothing
    assert smartflows_emulator.requests_to("DELETE", "/flows/executions/") == []


def test_the_sensor_fails_clearly_when_the_execution_is_purged_while_it_waits(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    # "slow" runs 10 s: still running when the sensor's wait starts, however slow dag.test() starts.
    smartflows_emulator.set_speedup(2)
    execution_id = SmartFlowsHook().start_execution("slow").id
    dag = make_dag(
        "purged_sensor_wait",
        lambda: SmartFlowsExecutionSensor(
            task_id="wait", execution_id=execution_id, poke_interval=2, deferrable=True
        ),
    )
    with purge_while_waited_on(smartflows_emulator) as purged:
        result = run_dag(dag)
    assert purged == [execution_id]
    error = result.error("wait")
    assert isinstance(error, SmartFlowsExecutionGoneError)
    assert "This sensor did not start it" in str(error)
    assert smartflows_emulator.executions_started() == 1


# --- the batch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_batch_record_whose_execution_vanished_is_started_again_within_record_retries(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool
) -> None:
    smartflows_emulator.set_speedup(10)
    with purge_while_waited_on(smartflows_emulator) as purged:
        result = run_batch(
            run_dag,
            tmp_path,
            flow_id="slow",
            records=customers(2),
            data_template=DYNAMICS,
            record_retries=1,
            deferrable=deferrable,
        )
    (gone,) = purged
    assert result.states["batch"] == "success"
    assert result.tries["batch"] == 1
    assert smartflows_emulator.executions_started() == 3
    (line,) = [line for line in manifest(tmp_path) if line["attempts"] == 2]
    assert line["status"] == "succeeded"
    (previous,) = line["previous_attempts"]
    assert previous["execution_id"] == gone
    assert "disappeared from the server (404" in previous["messages"][0]
    assert "a new execution is started (record_retries)" in previous["messages"][0]


def test_a_batch_record_whose_execution_vanished_fails_without_record_retries(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.set_speedup(10)
    with purge_while_waited_on(smartflows_emulator) as purged:
        result = run_batch(
            run_dag,
            tmp_path,
            flow_id="slow",
            records=customers(2),
            data_template=DYNAMICS,
            record_retries=0,
            max_failed_records=1,
            deferrable=True,
        )
    (gone,) = purged
    # Recorded as failed like a failed execution: the batch goes on, no Airflow retry loop.
    assert result.states["batch"] == "success"
    assert (result.xcom("batch")["failed"], result.xcom("batch")["succeeded"]) == (1, 1)
    assert smartflows_emulator.executions_started() == 2
    (failed,) = [line for line in manifest(tmp_path) if line["status"] == "failed"]
    assert failed["execution_id"] == gone
    assert "purged by the server's clean-up or deleted" in failed["messages"][0]
    assert "the record failed" in failed["messages"][0]


# --- downloads ---------------------------------------------------------------------------------


def test_downloading_a_purged_document_fails_clearly_and_is_not_retried(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    hook = SmartFlowsHook()
    execution_id = hook.start_execution("hello").id
    smartflows_emulator.set_speedup(50)
    for _ in range(200):
        progress = hook.get_progress(execution_id, wait_seconds=1)
        if progress.status.is_terminal:
            break
    (document,) = progress.documents
    smartflows_emulator.purge_document(document.id)
    dag = make_dag(
        "purged_document",
        lambda: SmartFlowsDownloadDocumentsOperator(
            task_id="download",
            document_ids=[document.id],
            destination=f"file://{tmp_path}/copy.pdf",
            retries=2,
            retry_delay=NO_RETRY_DELAY,
        ),
    )
    result = run_dag(dag)
    assert (result.states["download"], result.tries["download"]) == ("failed", 1)
    error = result.error("download")
    assert isinstance(error, SmartFlowsDocumentGoneError)
    assert (
        f"Document {document.id!r} was not found on Smart Flows (connection 'smartflows_default', GET "
        in str(error)
    )
    assert "purged by the server's clean-up" in str(error)
    assert len(smartflows_emulator.requests_to("GET", rf"/documents/{document.id}")) == 1
    assert list(tmp_path.iterdir()) == []
