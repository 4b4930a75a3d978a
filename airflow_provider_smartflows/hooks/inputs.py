"""Checks of what callers pass to the hooks (ids, waits, request bodies), before any request."""

from __future__ import annotations

import json
import math
import re
import unicodedata
import xml.parsers.expat
from collections.abc import Mapping
from typing import Any

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.models import MAX_WAIT_SECONDS
from airflow_provider_smartflows.validation import check_int, check_number

MAX_ID_LENGTH = 200
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_PLAIN_ID = re.compile(r"(?:[A-Za-z0-9_\-]|\.(?!\.))+")


def validate_id(value: object, kind: str) -> str:
    """Return ``value`` if it is a usable id of ``kind`` (execution, document, flow, dataset)."""
    if not isinstance(value, str) or not value:
        raise SmartFlowsInputError(f"The {kind} id must be a non-empty string, not {value!r}.")
    if len(value) > MAX_ID_LENGTH:
        raise SmartFlowsInputError(
            f"The {kind} id is {len(value)} characters long (at most {MAX_ID_LENGTH})."
        )
    # Plain ids (uuids, names) pass the cheap regex; others get the full check (unicode spaces,
    # control and format characters). This runs on every poll of every wait.
    bad = value == "." or (
        not _PLAIN_ID.fullmatch(value)
        and (
            "/" in value
            or "\\" in value
            or ".." in value
            or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in value)
        )
    )
    if bad:
        raise SmartFlowsInputError(
            f"The {kind} id {value!r} is not valid: ids contain no '/', '\\', '..', spaces or control characters."
        )
    return value


def validate_wait_seconds(wait_seconds: float | None) -> int | None:
    if wait_seconds is None:
        return None
    check_number("wait_seconds", wait_seconds, unit="a number of seconds")
    if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise SmartFlowsInputError(
            f"wait_seconds must be between 0 and {MAX_WAIT_SECONDS}, not {wait_seconds}."
        )
    # The API takes whole seconds and answers at once for 0: round up so a short wait still waits.
    return math.ceil(wait_seconds)


def validate_priority(priority: object) -> int:
    return check_int("priority", priority)


def answers_body(execution_id: str, answers: object) -> bytes:
    """The JSON body answering a UserInput form; ``answers`` maps form keys to values."""
    if not isinstance(answers, Mapping) or not all(isinstance(key, str) for key in answers):
        raise SmartFlowsInputError(
            f"Answers for execution {execution_id!r} must be a dict of form keys to values."
        )
    try:
        return json.dumps(dict(answers), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise SmartFlowsInputError(
            f"Answers for execution {execution_id!r} are not JSON-serialisable: {err}"
        ) from None


def callback_body(execution_id: str, body: object) -> tuple[bytes | None, dict[str, str]]:
    """Body and Content-Type of a callback: none; a str or bytes as it is (JSON when it parses as
    JSON, else text); anything else as JSON."""
    if body is None:
        return None, {}
    if isinstance(body, (str, bytes, bytearray)):
        payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        try:
            json.loads(payload)
        except (ValueError, RecursionError):
            return payload, {"Content-Type": "text/plain; charset=utf-8"}
        return payload, {"Content-Type": JSON_CONTENT_TYPE}
    try:
        return json.dumps(body, allow_nan=False).encode("utf-8"), {"Content-Type": JSON_CONTENT_TYPE}
    except (TypeError, ValueError) as err:
        raise SmartFlowsInputError(
            f"The callback body for execution {execution_id!r} is not JSON-serialisable: {err}"
        ) from None


def _declared_xml_encoding(payload: bytes) -> str | None:
    match = re.match(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']", payload)
    return match.group(1).decode("ascii").lower() if match else None


def _records_body(data: Mapping[str, Any], flow: str) -> bytes:
    ids = data.get("id")
    if not (isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids)):
        raise SmartFlowsInputError(
            f"Input for flow {flow}: a Dynamics/Sugar input needs 'id', a non-empty list of record ids."
        )
    if not isinstance(data.get("entity"), str) or not data["entity"]:
        raise SmartFlowsInputError(
            f"Input for flow {flow}: a Dynamics/Sugar input needs 'entity', the entity name."
        )
    try:
        return json.dumps(data, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise SmartFlowsInputError(f"Input for flow {flow} is not JSON-serialisable: {err}") from None


def _xml_body(data: str | bytes | bytearray, flow: str) -> tuple[bytes, str]:
    if isinstance(data, str):
        encoding = _declared_xml_encoding(data.encode("utf-8", errors="replace"))
        if encoding not in (None, "utf-8", "utf8"):
            raise SmartFlowsInputError(
                f"XML input for flow {flow} declares encoding {encoding!r}: pass it as bytes, "
                "or declare utf-8."
            )
        payload = data.encode("utf-8")
    else:
        payload = bytes(data)
    parser = xml.parsers.expat.ParserCreate()
    try:
        parser.Parse(payload, True)
    except xml.parsers.expat.ExpatError as err:
        raise SmartFlowsInputError(f"XML input for flow {flow} is not well-formed: {err}.") from None
    encoding = _declared_xml_encoding(payload)
    utf8 = encoding in (None, "utf-8", "utf8")
    return payload, 'application/xml; charset="utf-8"' if utf8 else "application/xml"


def prepare_start_body(data: object, flow_id: str | None) -> tuple[bytes | None, dict[str, str]]:
    """Body and Content-Type for starting an execution: none, Dynamics/Sugar JSON, or XML."""
    flow = repr(flow_id) if flow_id else "(no flow id)"
    if data is None:
        return None, {}
    if isinstance(data, Mapping):
        return _records_body(data, flow), {"Content-Type": JSON_CONTENT_TYPE}
    if isinstance(data, (str, bytes, bytearray)):
        payload, content_type = _xml_body(data, flow)
        return payload, {"Content-Type": content_type}
    raise SmartFlowsInputError(
        f"Input for flow {flow} must be None, a dict (Dynamics/Sugar) or XML (str or bytes), "
        f"not {type(data).__name__}."
    )
