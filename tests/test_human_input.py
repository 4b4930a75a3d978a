"""A Smart Flows form as Airflow params, answers checked against its schema, the request's text."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.human_input import (
    answers_from_params,
    form_params,
    prompt_key,
    refusal_reason,
    request_text,
)
from airflow_provider_smartflows.models import ExecutionProgress
from tests.support.waits import progress_until

# A form as the vendor's JSON-schema-form shows them: sections, labels, a select with a titleMap.
CONTRACT_FORM: dict[str, Any] = {
    "id": "e1",
    "status": "UserInput",
    "currentData": {"id": "B1f2", "displayName": "Approve contract", "type": "userInput"},
    "schema": {
        "type": "object",
        "properties": {
            "approved": {"type": "boolean", "title": "Approved"},
            "discount": {"type": "number", "minimum": 0, "maximum": 30, "default": 5},
            "region": {"type": "string", "enum": ["EU", "US"]},
            "copies": {"type": "integer"},
            "notes": {"type": "string", "description": "Shown on the letter"},
        },
        "required": ["approved", "discount", "region"],
    },
    "model": {"region": "EU"},
    "form": [
        {
            "type": "section",
            "items": [
                {"key": "approved", "type": "checkbox", "title": "Approve the contract"},
                {
                    "key": "region",
                    "type": "select",
                    "titleMap": [{"value": "EU", "name": "Europe"}, {"value": "US", "name": "United States"}],
                },
                {"key": "notes", "type": "textarea"},
            ],
        }
    ],
}


def test_each_property_becomes_a_param_with_its_widget_label_and_default() -> None:
    params = form_params(CONTRACT_FORM).params
    # Form order first, then the schema's remaining keys.
    assert list(params) == ["approved", "region", "notes", "discount", "copies"]
    assert params["approved"]["schema"] == {"type": "boolean", "title": "Approve the contract"}
    assert params["approved"]["value"] is False  # a switch always has a value
    assert params["region"]["schema"] == {
        "type": "string",
        "enum": ["EU", "US"],
        "values_display": {"EU": "Europe", "US": "United States"},
    }
    assert params["region"]["value"] == "EU"  # the form's model pre-fills it
    assert params["discount"] == {
        "value": 5,
        "description": None,
        "schema": {"type": "number", "minimum": 0, "maximum": 30},
        "source": "task",
    }
    # Not required: the field may stay empty.
    assert params["copies"]["schema"] == {"type": ["integer", "null"]}
    assert params["notes"]["schema"] == {"type": ["string", "null"], "format": "multiline"}
    assert params["notes"]["description"] == "Shown on the letter"


# Airflow >= 3.1's ParamValidationError is a ValueError; 3.0's derives from AirflowException only.
try:
    from airflow.exceptions import ParamValidationError

    PARAM_ERRORS: tuple[type[Exception], ...] = (ValueError, ParamValidationError)
except ImportError:
    PARAM_ERRORS = (ValueError,)


def test_the_params_are_what_airflow_s_form_and_validation_accept() -> None:
    try:
        from airflow.sdk.definitions.param import Param, ParamsDict
    except ImportError:  # Airflow 2
        from airflow.models.param import Param, ParamsDict

    params = ParamsDict(
        {
            k: Param(v["value"], description=v["description"], **v["schema"])
            for k, v in form_params(CONTRACT_FORM).params.items()
        }
    )
    params["discount"] = 12.5
    params["copies"] = None
    with pytest.raises(PARAM_ERRORS, match="maximum"):
        params["discount"] = 99


@pytest.mark.parametrize(
    ("params_input", "problems"),
    [
        ({"approved": True, "discount": 10, "region": "US", "copies": None, "notes": None}, []),
        ({"approved": "yes", "discount": 10, "region": "US"}, ["approved: 'yes' is not of type 'boolean'"]),
        (
            {"approved": True, "discount": 40, "region": "US"},
            ["discount: 40 is greater than the maximum of 30"],
        ),
        ({"approved": True, "discount": 1, "region": "FR"}, ["region: 'FR' is not one of ['EU', 'US']"]),
        ({"approved": True, "discount": 1}, ["'region' is a required property"]),
        (
            {"approved": True, "discount": 1, "region": "EU", "extra": 1},
            ["'extra' is not a field of this form"],
        ),
    ],
    ids=[
        "valid-optional-left-empty",
        "wrong-type",
        "above-maximum",
        "not-in-enum",
        "required-missing",
        "unknown-key",
    ],
)
def test_answers_are_checked_against_the_smart_flows_schema(
    params_input: dict[str, Any], problems: list[str]
) -> None:
    answers, found = answers_from_params(params_input, form_params(CONTRACT_FORM))
    assert found == problems
    assert "copies" not in answers  # an empty optional field is not posted


def test_prompt_key_names_the_block_and_its_fields() -> None:
    assert prompt_key(CONTRACT_FORM) == "B1f2|approved,copies,discount,notes,region"
    other = {**CONTRACT_FORM, "currentData": {"id": "B9"}}
    assert prompt_key(other) != prompt_key(CONTRACT_FORM)


@pytest.mark.usefixtures("smartflows_conn")
def test_the_emulator_s_approval_form_maps_and_its_valid_answer_is_accepted(smartflows_emulator: Any) -> None:
    hook = SmartFlowsHook(retry_limit=0)
    execution_id = hook.start_execution("approval").id
    # Short long-polls: one answers early on a change, but a UserInput reached between two polls is
    # no change to the next one, which would then hold for its whole wait.
    progress = progress_until(hook, execution_id, lambda p: p.raw_status == "UserInput", wait_seconds=1)
    form = form_params(progress.raw)
    assert {k: p["schema"]["type"] for k, p in form.params.items()} == {
        "approved": "boolean",
        "comment": "string",
    }
    answers, problems = answers_from_params({"approved": True, "comment": "ok"}, form)
    assert problems == []
    assert hook.answer_user_input(execution_id, answers).raw_status != "UserInput"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"status": 400, "message": "discount needs a manager"}', "discount needs a manager"),
        ("plain text\nreason", "plain text reason"),
        (None, "fallback"),
    ],
    ids=["json-message", "text-body", "no-body"],
)
def test_refusal_reason(body: str | None, reason: str) -> None:
    assert refusal_reason(body, "fallback") == reason


def test_request_text_names_flow_execution_link_and_record() -> None:
    subject, body = request_text(
        flow="contract",
        execution_id="e1",
        execution_url="https://sf.example/executions/e1",
        data={"id": ["acc-7"], "entity": "account"},
        message="Waiting for user input",
        log_url="http://airflow/dags/d/runs/r/tasks/t",
    )
    assert subject == "Smart Flows flow contract waits for your input (execution e1)"
    assert "[e1](https://sf.example/executions/e1)" in body
    assert "**Record:** account acc-7" in body
    assert "[the task's log](http://airflow/dags/d/runs/r/tasks/t)" in body


def test_keys_nested_in_sections_are_read_at_any_depth() -> None:
    raw = {
        "id": "e1",
        "status": "UserInput",
        "currentData": {"id": "B3"},
        "schema": {"properties": {"approved": {"type": "boolean"}}},
        "form": [{"type": "section", "items": [{"type": "fieldset", "items": [{"key": "comment"}]}]}],
    }
    progress = ExecutionProgress.from_json(raw)
    assert progress.form_keys == ("approved", "comment")
    assert list(form_params(raw).params) == ["comment", "approved"]
    assert progress.prompt == prompt_key(raw) == "B3|approved,comment"
