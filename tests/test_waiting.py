"""The waiting loop as steps, without I/O: what it asks for and what it returns for each answer.

The trigger and operator tests run the same loop over real HTTP through the two drivers; these
tests pin the rules that are hard to provoke there (the exact step sequence, the fallback's
failure).
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsAuthError
from airflow_provider_smartflows.models import Execution, ExecutionProgress
from airflow_provider_smartflows.waiting import (
    ExecutionWatch,
    Pause,
    Poll,
    ReadExecution,
    event_status_for,
    execution_result,
    make_event,
    one_line,
    run_steps,
    typed_event,
    wait_steps,
)

pytestmark = pytest.mark.airflow_agnostic  # pure rules, the same on every Airflow line

LOG = logging.getLogger("test_waiting")


def watch(**kwargs: Any) -> ExecutionWatch:
    kwargs.setdefault("poll_interval", 30.0)
    kwargs.setdefault("end_time", None)
    kwargs.setdefault("fail_on_warning", False)
    kwargs.setdefault("max_consecutive_failures", 2)
    return ExecutionWatch("e1", log=LOG, **kwargs)


def progress(status: str, **extra: Any) -> ExecutionProgress:
    return ExecutionProgress.from_json({"id": "e1", "status": status, **extra})


DOCUMENT = {"type": "document", "id": "d1", "displayName": "Letter"}
TRANSIENT = SmartFlowsApiError("503 from the server", status_code=503, retryable=True)


def finish(steps: Any, reply: Any) -> Any:
    with pytest.raises(StopIteration) as done:
        steps.send(reply)
    return done.value.value


def test_polls_for_the_interval_then_reports_success_with_the_progress_documents() -> None:
    steps = wait_steps(watch())
    assert next(steps) == Poll("e1", 30)
    assert steps.send(progress("Running")) == Poll("e1", 30)
    event = finish(steps, progress("Success", model={"out": DOCUMENT}))
    assert (event["status"], event["document_ids"]) == ("success", ["d1"])


def test_success_without_documents_reads_the_execution_once() -> None:
    steps = wait_steps(watch())
    next(steps)
    assert steps.send(progress("Success")) == ReadExecution("e1")
    event = finish(steps, Execution.from_json({"id": "e1", "status": "Success", "outputs": [DOCUMENT]}))
    assert event["document_ids"] == ["d1"]


def test_unreadable_execution_leaves_the_success_without_documents(caplog: pytest.LogCaptureFixture) -> None:
    steps = wait_steps(watch())
    next(steps)
    steps.send(progress("Success"))
    with pytest.raises(StopIteration) as done:
        steps.throw(TRANSIENT)
    assert (done.value.value["status"], done.value.value["document_ids"]) == ("success", [])
    assert "could not list its documents" in caplog.text


def test_transient_failures_pause_then_poll_again_until_too_many() -> None:
    steps = wait_steps(watch(max_consecutive_failures=2))
    next(steps)
    assert steps.throw(TRANSIENT) == Pause(1.0)
    assert steps.send(None) == Poll("e1", 30)
    assert steps.throw(TRANSIENT) == Pause(2.0)
    steps.send(None)
    with pytest.raises(SmartFlowsApiError, match="503"):
        steps.throw(TRANSIENT)


def test_a_good_answer_resets_the_failure_count() -> None:
    steps = wait_steps(watch(max_consecutive_failures=1))
    next(steps)
    steps.throw(TRANSIENT)
    steps.send(None)
    steps.send(progress("Running"))
    assert steps.throw(TRANSIENT) == Pause(1.0)


def test_refused_key_ends_the_wait_at_once() -> None:
    steps = wait_steps(watch())
    next(steps)
    with pytest.raises(SmartFlowsAuthError):
        steps.throw(SmartFlowsAuthError("401 refused", status_code=401))


def test_deadline_passed_times_out_without_a_step() -> None:
    event = finish(wait_steps(watch(end_time=time.time() - 1)), None)
    assert event["status"] == "timeout"


def test_error_event_counts_transient_failures_only() -> None:
    w = watch(max_consecutive_failures=0)
    assert w.on_failure(TRANSIENT) is None
    assert w.error_event(TRANSIENT)["message"] == "503 from the server (1 transient failures in a row)"
    assert w.error_event(SmartFlowsAuthError("401 refused"))["message"] == "401 refused"


@pytest.mark.parametrize(
    ("status", "fail_on_warning", "expected"),
    [
        ("Success", False, "success"),
        ("Warning", False, "success"),
        ("Warning", True, "failed"),
        ("Canceled", False, "failed"),
        ("UserInput", False, "input_required"),
        ("SelectFlow", False, "input_required"),
        ("Running", False, None),
        ("Archived", False, None),
    ],
    ids=[
        "success",
        "warning",
        "warning-fails",
        "canceled",
        "user-input",
        "select-flow",
        "running",
        "unknown",
    ],
)
def test_event_status_for(status: str, fail_on_warning: bool, expected: str | None) -> None:
    parsed = progress(status).status
    assert event_status_for(parsed, fail_on_warning=fail_on_warning) == expected


def test_one_line_joins_whitespace_and_bounds_the_length() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 20, limit=10) == "x" * 9 + "…"


def test_an_execution_event_carries_its_kind() -> None:
    assert make_event("success", "e1")["kind"] == "execution"


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ({"status": "success", "execution_id": "e1", "end_time": None}, "execution"),
        ({"execution_id": "e1", "execution": None, "message": "left the form"}, "human_wait"),
        ({"chosen_options": ["Submit to Smart Flows"], "params_input": {}, "timedout": False}, "answer"),
        ({"kind": "human_wait", "execution_id": "e1", "status": "odd", "execution": None}, "human_wait"),
        ({"kind": "future-kind", "chosen_options": []}, "answer"),
    ],
    ids=[
        "old-execution-event",
        "old-human-wait-event",
        "airflow-answer",
        "explicit-kind-wins",
        "unknown-kind",
    ],
)
def test_typed_event_gives_an_event_without_a_kind_its_kind(event: dict[str, Any], kind: str) -> None:
    typed = typed_event(event)
    assert typed["kind"] == kind
    assert {k: v for k, v in typed.items() if k != "kind"} == {k: v for k, v in event.items() if k != "kind"}


def test_execution_result_is_the_task_result() -> None:
    assert execution_result("e1", "Success", ("d1",), "https://sf/e1") == {
        "execution_id": "e1",
        "status": "Success",
        "document_ids": ["d1"],
        "execution_url": "https://sf/e1",
    }


def test_watch_of_takes_its_owner_s_settings() -> None:
    owner = SimpleNamespace(poll_interval=5, fail_on_warning=True, max_consecutive_failures=3, log=LOG)
    built = ExecutionWatch.of(owner, "e1", 1_900_000_000.0)
    assert (built.execution_id, built.end_time, built.poll_interval) == ("e1", 1_900_000_000.0, 5.0)
    assert (built.fail_on_warning, built.max_consecutive_failures, built.log) == (True, 3, LOG)


class ScriptedHook:
    """A hook that answers from a script (the drivers' contract is two methods)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, Any]] = []

    def _answer(self) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get_progress(self, execution_id: str, *, wait_seconds: float | None = None) -> ExecutionProgress:
        self.calls.append(("progress", wait_seconds))
        return self._answer()  # type: ignore[no-any-return]

    def get_execution(self, execution_id: str) -> Execution:
        self.calls.append(("execution", None))
        return self._answer()  # type: ignore[no-any-return]


def test_sync_driver_throws_errors_in_and_returns_the_event() -> None:
    retry_now = SmartFlowsApiError("429", status_code=429, retryable=True, retry_after=0.01)
    hook = ScriptedHook(
        retry_now, progress("Success"), Execution.from_json({"id": "e1", "status": "Success"})
    )
    event = run_steps(wait_steps(watch(poll_interval=2.0)), hook)
    assert event["status"] == "success"
    assert hook.calls == [("progress", 2), ("progress", 2), ("execution", None)]
