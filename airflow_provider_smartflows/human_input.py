"""A Smart Flows ``UserInput`` form as an Airflow human-in-the-loop request (pure functions, no I/O).

Smart Flows describes a prompt with a JSON schema (``schema.properties``, ``required``) and a
form layout (``form[].items[]`` with ``key``, ``title``, ``type``, ``titleMap``). Airflow's
"Required actions" page renders a request's ``params`` like a DAG's trigger form: one field per
param, its widget chosen by the param's JSON schema (``type``, ``enum``, ``format``, ``title``).
This module maps one to the other, checks a person's answer against the Smart Flows schema before
it is posted, and writes the request's subject and body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft7Validator

from airflow_provider_smartflows.models import form_items, prompt_key
from airflow_provider_smartflows.text import one_line

__all__ = [
    "ANSWER_OPTION",
    "CLOSED_OPTION",
    "FormRequest",
    "answers_from_params",
    "form_params",
    "prompt_key",
    "refusal_reason",
    "request_text",
]

#: The one button of the request: submitting the form answers the Smart Flows prompt.
ANSWER_OPTION = "Submit to Smart Flows"
#: The option recorded when the provider closes a request nobody needs to answer any more.
CLOSED_OPTION = "Closed: no answer needed"

_JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object")
# JSON-schema keywords of a property that Airflow's form understands and that are copied over.
_COPIED_KEYWORDS = (
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
    "examples",
)


@dataclass(frozen=True)
class FormRequest:
    """What one prompt becomes in Airflow: the request's params and the keys Smart Flows requires."""

    params: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    schema: Mapping[str, Any]


def _param_schema(prop: Mapping[str, Any], item: Mapping[str, Any], required: bool) -> dict[str, Any]:
    kind = prop.get("type")
    kinds = [kind] if isinstance(kind, str) else [k for k in kind or [] if isinstance(k, str)]
    kinds = [k for k in kinds if k in _JSON_TYPES] or ["string"]
    if not required and "null" not in kinds:
        kinds.append("null")  # the form may leave an optional field empty
    schema: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
    for keyword in _COPIED_KEYWORDS:
        if keyword in prop:
            schema[keyword] = prop[keyword]
    title = item.get("title") or prop.get("title")
    if title:
        schema["title"] = str(title)
    if item.get("type") == "textarea" and "string" in kinds and "format" not in schema:
        schema["format"] = "multiline"
    title_map = item.get("titleMap")
    if isinstance(title_map, Sequence) and not isinstance(title_map, str):
        pairs = [(e.get("value"), e.get("name")) for e in title_map if isinstance(e, Mapping)]
        pairs = [(v, n) for v, n in pairs if v is not None and n is not None]
        if pairs:
            schema.setdefault("enum", [v for v, _ in pairs])
            schema["values_display"] = {str(v): str(n) for v, n in pairs}
    return schema


def form_params(progress_raw: Mapping[str, Any]) -> FormRequest:
    """The params of a request for the prompt in a FlowExecutionProgress.

    Each ``schema.properties`` key becomes one param (in the form's order, then the schema's):
    its JSON type, ``enum``, bounds, ``format`` and default, and its label (the form item's
    ``title``, else the property's) as the field's title. A key the schema does not require may
    be left empty; a required boolean without a default starts as ``False`` (a switch always shows
    a value). A form key without a schema property becomes a text field.
    """
    schema = progress_raw.get("schema")
    schema = schema if isinstance(schema, Mapping) else {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required_raw = schema.get("required")
    required = tuple(str(k) for k in required_raw) if isinstance(required_raw, Sequence) else ()
    items = {str(item["key"]): item for item in form_items(progress_raw.get("form"))}
    model = progress_raw.get("model")
    model = model if isinstance(model, Mapping) else {}
    params: dict[str, dict[str, Any]] = {}
    for key in [*items, *(k for k in properties if k not in items)]:
        prop = properties.get(key)
        prop = prop if isinstance(prop, Mapping) else {}
        item = items.get(key, {})
        value = model.get(key, prop.get("default"))
        field_schema = _param_schema(prop, item, key in required)
        if value is None and field_schema["type"] == "boolean":
            value = False  # a switch always shows a value: unset would read as a missing answer
        params[str(key)] = {
            "value": value,
            "description": str(prop["description"]) if prop.get("description") else None,
            "schema": field_schema,
            "source": "task",
        }
    return FormRequest(params=params, required=required, schema=schema)


def answers_from_params(
    params_input: Mapping[str, Any], form: FormRequest
) -> tuple[dict[str, Any], list[str]]:
    """(the answers to post, what is wrong with them) for a person's ``params_input``.

    Empty optional fields (``None``) are left out; keys that are not in the form are refused; the
    rest is checked against the prompt's own JSON schema (types, required keys, enums, bounds).
    """
    answers = {str(k): v for k, v in params_input.items() if not (v is None and str(k) not in form.required)}
    problems = [f"{key!r} is not a field of this form" for key in answers if key not in form.params]
    validator = Draft7Validator(dict(form.schema))
    for error in sorted(validator.iter_errors(answers), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path)
        problems.append(one_line(f"{where}: {error.message}" if where else error.message, 200))
    return answers, problems


def refusal_reason(body_excerpt: str | None, fallback: str) -> str:
    """The reason in a Smart Flows error answer (its ``message``, else the body), one line."""
    if body_excerpt:
        try:
            data = json.loads(body_excerpt)
        except ValueError:
            return one_line(body_excerpt, 300)
        if isinstance(data, Mapping) and data.get("message"):
            return one_line(data["message"], 300)
        return one_line(body_excerpt, 300)
    return one_line(fallback, 300)


def _record_text(data: Any) -> str | None:
    """The record an execution is about, from the run operator's input."""
    if isinstance(data, Mapping):
        ids = data.get("id")
        ids = [str(i) for i in ids] if isinstance(ids, Sequence) and not isinstance(ids, str) else []
        entity = data.get("entity")
        if ids:
            return f"{entity or 'record'} {', '.join(ids)}"
    if isinstance(data, (str, bytes)) and data:
        return f"XML data set ({len(data)} characters)"
    return None


def request_text(
    *,
    flow: str | None,
    execution_id: str,
    execution_url: str,
    data: Any = None,
    message: str | None = None,
    log_url: str | None = None,
) -> tuple[str, str]:
    """(subject, Markdown body) of the request for one prompt.

    Airflow 3.3 keeps one request per task instance: when the prompt is asked again (an answer was
    refused, or a second prompt comes), the request opens again with this same text. So the body
    says where the reason of a refusal is (the task log) rather than carrying it.
    """
    what = f"Smart Flows flow {flow}" if flow else "Smart Flows execution"
    subject = one_line(f"{what} waits for your input (execution {execution_id})", 200)
    lines = [
        f"**Flow:** {flow or 'unknown'}",
        f"**Execution:** [{execution_id}]({execution_url})",
    ]
    record = _record_text(data)
    if record:
        lines.append(f"**Record:** {one_line(record, 300)}")
    if message:
        lines.append(f"**Smart Flows says:** {one_line(message, 300)}")
    lines.append(
        f"Fill in the form and choose *{ANSWER_OPTION}*: the answer is checked against the form and "
        "posted to the execution, which then continues. You may also answer in Smart Flows "
        "itself; this request then closes."
    )
    refusal = "If Smart Flows refuses an answer, this request opens again"
    lines.append(f"{refusal}; the reason is in [the task's log]({log_url})." if log_url else f"{refusal}.")
    return subject, "\n\n".join(lines)
