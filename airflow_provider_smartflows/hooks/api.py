"""The Smart Flows REST API as the hooks see it: one table of routes, one way to build a request
and one way to read an answer. No I/O here: each hook only sends an :class:`ApiRequest` and hands
back an :class:`Answer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

from airflow_provider_smartflows.hooks.connection import CANCEL_PATHS, ConnectionSettings
from airflow_provider_smartflows.hooks.errors import error_from_status, not_json_error
from airflow_provider_smartflows.hooks.inputs import (
    JSON_CONTENT_TYPE,
    answers_body,
    prepare_start_body,
    validate_id,
    validate_priority,
    validate_wait_seconds,
)
from airflow_provider_smartflows.models import DocumentInfo, Execution, ExecutionProgress
from airflow_provider_smartflows.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

T = TypeVar("T")

#: Error bytes read from a streamed answer: enough for a message, bounded for a huge body.
STREAMED_ERROR_BYTES = 4096


def _flows(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise ValueError("expected a JSON array of flows")
    return [flow for flow in data if isinstance(flow, dict)]


def _any_json(data: Any) -> Any:
    return data


def _executions(data: Any) -> list[Any]:
    """A listing page: a plain JSON array (also read: a Spring page ``{"content": [...]}``)."""
    if isinstance(data, dict) and isinstance(data.get("content"), list):
        data = data["content"]
    if not isinstance(data, list):
        raise ValueError("expected a JSON array of executions")
    return data


@dataclass(frozen=True)
class Endpoint(Generic[T]):
    """One route: method, path template (ids in braces, below ``/api/v1``), what its JSON parses to."""

    method: str
    path: str
    parse: Callable[[Any], T]

    def request(
        self,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        extra_timeout: float = 0.0,
        subject: str | None = None,
        hint: str | None = None,
        **ids: str,
    ) -> ApiRequest[T]:
        """The request of this route with its ``ids`` filled in (each quoted as one path segment)."""
        path = self.path.format(**{name: quote(value, safe="") for name, value in ids.items()})
        return ApiRequest(
            self, path, dict(params or {}), body, dict(headers or {}), extra_timeout, subject, hint
        )


START_EXECUTION = Endpoint("POST", "/flows/executions", ExecutionProgress.from_json)
GET_PROGRESS = Endpoint("GET", "/flows/executions/{execution_id}/progress", ExecutionProgress.from_json)
ANSWER_USER_INPUT = Endpoint("POST", "/flows/executions/{execution_id}/progress", ExecutionProgress.from_json)
GET_EXECUTION = Endpoint("GET", "/flows/executions/{execution_id}", Execution.from_json)
#: Cancel, by the connection extra ``cancel_path`` (see :mod:`.connection`).
CANCEL_EXECUTION = {
    "progress": Endpoint("DELETE", "/flows/executions/{execution_id}/progress", ExecutionProgress.from_json),
    "execution": Endpoint("DELETE", "/flows/executions/{execution_id}", ExecutionProgress.from_json),
}
LIST_FLOWS = Endpoint("GET", "/flows", _flows)
GET_DOCUMENT = Endpoint("GET", "/documents/{document_id}", DocumentInfo.from_json)
#: Binary content, streamed by the sync hook (``parse`` is unused).
GET_DOCUMENT_CONTENT = Endpoint("GET", "/documents/{document_id}/content", _any_json)
#: Listings: ``page`` (0-based), ``size``, ``sort=field,asc|desc``, ``filter=field:value``.
LIST_FLOW_EXECUTIONS = Endpoint("GET", "/flows/{flow_id}/executions", _executions)
GET_CURRENT_USER = Endpoint("GET", "/users/me", _any_json)
GET_SYSTEM_INFO = Endpoint("GET", "/system/info", _any_json)


@dataclass(frozen=True)
class ApiRequest(Generic[T]):
    """One call, ready to send: route, path below ``/api/v1``, query, body, headers.

    ``extra_timeout`` lengthens the read timeout (a long-poll); ``subject`` names what a 404 did
    not find; ``hint`` is appended to a 404/405 error (a cancel path this server may not have).
    """

    endpoint: Endpoint[T]
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra_timeout: float = 0.0
    subject: str | None = None
    hint: str | None = None

    @property
    def method(self) -> str:
        return self.endpoint.method


@dataclass(frozen=True)
class Answer:
    """What a transport got back: status, headers, body (for a streamed answer: its first bytes)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def check_answer(request: ApiRequest[Any], answer: Answer, settings: ConnectionSettings) -> None:
    """Raise the typed error of a redirect or error answer; neither hook follows redirects."""
    if answer.status >= 300:
        hint = request.hint if answer.status in (404, 405) else None
        raise error_from_status(
            settings,
            request.method,
            request.path,
            answer.status,
            body=answer.body,
            headers=answer.headers,
            subject=request.subject,
            hint=hint,
        )


def read_answer(request: ApiRequest[T], answer: Answer, settings: ConnectionSettings) -> T:
    """The parsed result of an answer, or its typed error."""
    check_answer(request, answer, settings)
    try:
        return request.endpoint.parse(json.loads(answer.body))
    except (ValueError, RecursionError) as err:
        raise not_json_error(
            settings, request.method, request.path, answer.status, answer.body, err
        ) from None


# --------------------------------------------------------------------------- the calls


def _execution(execution_id: str) -> tuple[str, str]:
    """The checked execution id and how a 404 names it."""
    execution_id = validate_id(execution_id, "execution")
    return execution_id, f"Execution {execution_id!r}"


def start_request(
    flow_id: str | None, data: object, dataset_id: str | None, priority: int | None
) -> ApiRequest[ExecutionProgress]:
    params: dict[str, Any] = {}
    if flow_id is not None:
        params["flowId"] = validate_id(flow_id, "flow")
    if dataset_id is not None:
        params["datasetId"] = validate_id(dataset_id, "dataset")
    if priority is not None:
        params["priority"] = validate_priority(priority)
    body, headers = prepare_start_body(data, flow_id)
    subject = f"Flow {flow_id!r}" if flow_id else None
    return START_EXECUTION.request(params=params, body=body, headers=headers, subject=subject)


def progress_request(execution_id: str, wait_seconds: float | None) -> ApiRequest[ExecutionProgress]:
    execution_id, subject = _execution(execution_id)
    wait = validate_wait_seconds(wait_seconds)
    params = {"timeout": wait} if wait is not None else None
    return GET_PROGRESS.request(
        execution_id=execution_id, params=params, extra_timeout=float(wait or 0), subject=subject
    )


def execution_request(execution_id: str) -> ApiRequest[Execution]:
    execution_id, subject = _execution(execution_id)
    return GET_EXECUTION.request(execution_id=execution_id, subject=subject)


def cancel_request(execution_id: str, settings: ConnectionSettings) -> ApiRequest[ExecutionProgress]:
    execution_id, subject = _execution(execution_id)
    other = next(name for name in CANCEL_PATHS if name != settings.cancel_path)
    hint = (
        "If the execution exists, this server may cancel through the other path: "
        f'set the extra "cancel_path": "{other}" on {settings.label}.'
    )
    endpoint = CANCEL_EXECUTION[settings.cancel_path]
    return endpoint.request(execution_id=execution_id, subject=subject, hint=hint)


def answer_request(execution_id: str, answers: Mapping[str, Any]) -> ApiRequest[ExecutionProgress]:
    execution_id, subject = _execution(execution_id)
    body = answers_body(execution_id, answers)
    headers = {"Content-Type": JSON_CONTENT_TYPE}
    return ANSWER_USER_INPUT.request(execution_id=execution_id, body=body, headers=headers, subject=subject)


def document_request(document_id: str) -> ApiRequest[DocumentInfo]:
    document_id = validate_id(document_id, "document")
    return GET_DOCUMENT.request(document_id=document_id, subject=f"Document {document_id!r}")


def content_request(document_id: str) -> ApiRequest[Any]:
    document_id = validate_id(document_id, "document")
    # Identity encoding: the byte count is checked against Content-Length.
    return GET_DOCUMENT_CONTENT.request(
        document_id=document_id,
        headers={"Accept-Encoding": "identity"},
        subject=f"Document {document_id!r}",
    )


def flow_executions_request(
    flow_id: str, *, page: int, size: int, sort: str = "createdAt,desc", filter: str | None = None
) -> ApiRequest[list[Any]]:
    """One page of a flow's executions; ``filter`` is one ``field:value``."""
    flow_id = validate_id(flow_id, "flow")
    check_int("page", page, minimum=0)
    check_int("size", size, minimum=1)
    params: dict[str, Any] = {"page": page, "size": size, "sort": sort}
    if filter is not None:
        params["filter"] = filter
    return LIST_FLOW_EXECUTIONS.request(flow_id=flow_id, params=params, subject=f"Flow {flow_id!r}")
