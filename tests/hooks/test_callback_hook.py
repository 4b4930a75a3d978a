"""Resuming a Waiting execution (issue 25, item 4): ``SmartFlowsHook.resume_callback`` over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.models import ExecutionStatus

CALLBACK = r"^/api/v1/flows/callback/"


def waiting_execution(hook: Any) -> tuple[str, str]:
    """A ``signature`` execution once Waiting, and the callback id its waitingFor names."""
    execution_id = hook.start_execution("signature").id
    for _ in range(100):
        if hook.get_progress(execution_id, wait_seconds=1).status is ExecutionStatus.WAITING:
            break
    execution = hook.get_execution(execution_id)
    assert execution.status is ExecutionStatus.WAITING
    return execution_id, execution.raw["state"]["waitingFor"]["callbackId"]


def test_the_execution_reads_what_it_waits_for(hook: Any) -> None:
    execution_id, callback_id = waiting_execution(hook)
    assert hook.get_execution(execution_id).waiting_for == f"type=callback, callbackId={callback_id}"


def test_it_posts_the_callback_with_the_execution_and_the_key(hook: Any, smartflows_emulator: Any) -> None:
    execution_id, callback_id = waiting_execution(hook)
    assert hook.resume_callback(execution_id, callback_id) == "OK"
    (request,) = smartflows_emulator.requests_to("POST", CALLBACK)
    assert request["path"] == f"/api/v1/flows/callback/{callback_id}"
    assert request["query"] == {"executionId": execution_id}
    assert request["headers"]["X-API-Key"] == "***"  # sent (the log redacts it)
    assert request["body_bytes"] == 0
    assert hook.get_execution(execution_id).status is not ExecutionStatus.WAITING


@pytest.mark.parametrize(
    ("body", "content_type", "kept"),
    [
        ({"signed": True, "by": "Ada"}, "application/json", {"signed": True, "by": "Ada"}),
        ('{"signed": true}', "application/json", {"signed": True}),
        ("signed by Ada", "text/plain", "signed by Ada"),
    ],
    ids=["dict", "json-text", "text"],
)
def test_the_body_reaches_the_flow(
    hook: Any, smartflows_emulator: Any, body: Any, content_type: str, kept: Any
) -> None:
    execution_id, callback_id = waiting_execution(hook)
    hook.resume_callback(execution_id, callback_id, body)
    (request,) = smartflows_emulator.requests_to("POST", CALLBACK)
    assert request["headers"]["Content-Type"].startswith(content_type)
    assert hook.get_execution(execution_id).raw["state"]["stages"][0]["input"] == kept


def test_an_unknown_callback_is_a_not_found_error_naming_it(hook: Any, smartflows_emulator: Any) -> None:
    execution_id, _ = waiting_execution(hook)
    with pytest.raises(SmartFlowsNotFoundError, match="Callback 'nope' of execution") as caught:
        hook.resume_callback(execution_id, "nope")
    assert smartflows_emulator.api_key not in str(caught.value)
    assert hook.get_execution(execution_id).status is ExecutionStatus.WAITING


def test_a_callback_to_an_execution_not_waiting_is_refused(hook: Any, smartflows_emulator: Any) -> None:
    execution_id, callback_id = waiting_execution(hook)
    smartflows_emulator.release(execution_id)
    with pytest.raises(SmartFlowsApiError, match="answered 409") as caught:
        hook.resume_callback(execution_id, callback_id)
    assert caught.value.status_code == 409
    assert len(smartflows_emulator.requests_to("POST", CALLBACK)) == 1  # a 409 is not retried


@pytest.mark.parametrize(
    ("execution_id", "callback_id", "body", "match"),
    [
        ("e-1", "a/b", None, "callback id"),
        ("", "cb", None, "execution id"),
        ("e-1", "cb", {"when": object()}, "not JSON-serialisable"),
    ],
    ids=["callback-id", "execution-id", "body"],
)
def test_bad_input_is_refused_before_any_request(
    hook: Any, smartflows_emulator: Any, execution_id: str, callback_id: str, body: Any, match: str
) -> None:
    with pytest.raises(SmartFlowsInputError, match=match):
        hook.resume_callback(execution_id, callback_id, body)
    assert smartflows_emulator.requests == []


def test_a_json_quoted_answer_is_unquoted() -> None:
    from airflow_provider_smartflows.hooks.api import RESUME_CALLBACK

    assert RESUME_CALLBACK.parse(json.dumps("Resumed")) == "Resumed"
    assert RESUME_CALLBACK.parse("  Resumed\n  now ") == "Resumed now"
