"""The prompt-free start (issue 25, item 2): ``start_execution(skip_user_input=True)`` over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.hooks.reconcile import ADOPTED, STARTED_AGAIN
from airflow_provider_smartflows.models import Execution

SKIP_START = r"^/api/v1/flows/executions/start$"
NO_SETTLE = {"settle_time": 0}


def test_it_posts_the_flow_to_the_prompt_free_start(hook: Any, smartflows_emulator: Any) -> None:
    started = hook.start_execution("approval", skip_user_input=True)
    assert isinstance(started, Execution)
    (request,) = smartflows_emulator.requests_to("POST", SKIP_START)
    assert request["query"] == {"flow": "approval"}
    assert smartflows_emulator.requests_to("POST", r"^/api/v1/flows/executions$") == []
    assert started.id == smartflows_emulator.executions[0]["id"]


def test_a_flow_with_a_prompt_runs_through_it(hook: Any, smartflows_emulator: Any) -> None:
    execution_id = hook.start_execution("approval", skip_user_input=True).id
    smartflows_emulator.set_speedup(1000)
    statuses = set()
    for _ in range(200):
        progress = hook.get_progress(execution_id, wait_seconds=1)
        statuses.add(progress.raw_status)
        if progress.status.is_terminal:
            break
    assert progress.raw_status == "Success"
    assert "UserInput" not in statuses


def test_the_input_is_sent_when_given(hook: Any, smartflows_emulator: Any) -> None:
    hook.start_execution("xml-letter", "<root><name>Ada</name></root>", skip_user_input=True)
    (request,) = smartflows_emulator.requests_to("POST", SKIP_START)
    assert request["query"] == {"flow": "xml-letter"}
    assert "<name>Ada</name>" in str(smartflows_emulator.executions[0]["input_data"])


def test_it_needs_a_flow(hook: Any, smartflows_emulator: Any) -> None:
    with pytest.raises(SmartFlowsInputError, match="skip_user_input=True needs the flow"):
        hook.start_execution(None, skip_user_input=True)
    assert smartflows_emulator.requests == []


@pytest.mark.parametrize(
    ("when", "how"), [("after", ADOPTED), ("before", STARTED_AGAIN)], ids=["after", "before"]
)
def test_an_ambiguous_prompt_free_start_is_reconciled(
    hook: Any, smartflows_emulator: Any, when: str, how: str
) -> None:
    smartflows_emulator.add_fault("reset", method="POST", path=SKIP_START, when=when)
    started = hook.start_execution_reconciled("hello", skip_user_input=True, **NO_SETTLE)
    (created,) = smartflows_emulator.executions
    assert (started.how, started.execution_id) == (how, created["id"])
