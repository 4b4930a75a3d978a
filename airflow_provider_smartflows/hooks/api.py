"""The Smart Flows REST API as the hooks see it: one table of routes, one way to build a request
and one way to read an answer. No I/O here: each hook only sends an :class:`ApiRequest` and hands
back an :class:`Answer`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

from airflow_provider_smartflows.exceptions import SmartFlowsInputError, SmartFlowsListingError
from airflow_provider_smartflows.hooks.connection import API_PREFIX, CANCEL_PATHS, ConnectionSettings
from airflow_provider_smartflows.hooks.errors import error_from_status, not_json_error
from airflow_provider_smartflows.hooks.inputs import (
    JSON_CONTENT_TYPE,
    answers_body,
    callback_body,
    prepare_start_body,
    validate_id,
    validate_priority,
    validate_wait_seconds,
)
from airflow_provider_smartflows.models import DocumentInfo, Execution, ExecutionProgress
from airflow_provider_smartflows.text import one_line
from airflow_provider_smartflows.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

T = TypeVar("T")
ItemT = TypeVar("ItemT")

#: Error bytes read from a streamed answer: enough for a message, bounded for a huge body.
STREAMED_ERROR_BYTES = 4096


def _flows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("content"), list):
        data = data["content"]
    if not isinstance(data, list):
        raise ValueError("expected a JSON array of flows")
    return [flow for flow in data if isinstance(flow, dict)]


def _any_json(data: Any) -> Any:
    return data


def _callback_answer(text: str) -> str:
    """The callback's answer (a string; some servers quote it as JSON), on one bounded line."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = text
    return one_line(data if isinstance(data, str) else text)


def _executions(data: Any) -> list[Any]:
    """A listing page: a plain JSON array (also read: a Spring page ``{"content": [...]}``)."""
    if isinstance(data, dict) and isinstance(data.get("content"), list):
        data = data["content"]
    if not isinstance(data, list):
        raise ValueError("expected a JSON array of executions")
    return data


def _documents(data: Any) -> list[Any]:
    """A page of documents, read as :func:`_executions` reads one of executions."""
    if isinstance(data, dict) and isinstance(data.get("content"), list):
        data = data["content"]
    if not isinstance(data, list):
        raise ValueError("expected a JSON array of documents")
    return data


@dataclass(frozen=True)
class Endpoint(Generic[T]):
    """One route: method, path template (ids in braces, below ``/api/v1``), what its JSON parses to."""

    method: str
    path: str
    parse: Callable[[Any], T]
    #: The path is below the base URL itself, not below ``/api/v1`` (the API description).
    root: bool = False
    #: ``parse`` reads the answer as text, not JSON (the callback answers a string).
    text: bool = False

    @property
    def route(self) -> str:
        """``METHOD /api/v1/path`` as an API description names it (ids in braces)."""
        return f"{self.method} {self.path if self.root else API_PREFIX + self.path}"

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
#: The prompt-free start: every user input takes its default value; answers a FlowExecution.
START_SKIPPING_INPUT = Endpoint("POST", "/flows/executions/start", Execution.from_json)
GET_PROGRESS = Endpoint("GET", "/flows/executions/{execution_id}/progress", ExecutionProgress.from_json)
ANSWER_USER_INPUT = Endpoint("POST", "/flows/executions/{execution_id}/progress", ExecutionProgress.from_json)
GET_EXECUTION = Endpoint("GET", "/flows/executions/{execution_id}", Execution.from_json)
#: Resume a ``Waiting`` execution (the vendor takes POST or GET; POST carries the optional body).
RESUME_CALLBACK = Endpoint("POST", "/flows/callback/{callback_id}", _callback_answer, text=True)
#: Cancel, by the connection extra ``cancel_path`` (see :mod:`.connection`).
CANCEL_EXECUTION = {
    "progress": Endpoint("DELETE", "/flows/executions/{execution_id}/progress", ExecutionProgress.from_json),
    "execution": Endpoint("DELETE", "/flows/executions/{execution_id}", ExecutionProgress.from_json),
}
#: Listings (every one paged: ``page`` 0-based, ``size``, ``sort=field,asc|desc``, ``filter=field:value``).
LIST_FLOWS = Endpoint("GET", "/flows", _flows)
#: One flow: ``{flow}`` is its id or its path.
GET_FLOW = Endpoint("GET", "/flows/{flow}", _any_json)
LIST_EXECUTIONS = Endpoint("GET", "/flows/executions", _executions)
GET_DOCUMENT = Endpoint("GET", "/documents/{document_id}", DocumentInfo.from_json)
LIST_DOCUMENTS = Endpoint("GET", "/documents", _documents)
#: Documents matching a filter-group body (``{"group": {"type": "and", "nodes": [...]}}``), paged.
FILTER_DOCUMENTS = Endpoint("POST", "/documents/filter", _documents)
#: Binary content, streamed by the sync hook (``parse`` is unused).
GET_DOCUMENT_CONTENT = Endpoint("GET", "/documents/{document_id}/content", _any_json)
LIST_FLOW_EXECUTIONS = Endpoint("GET", "/flows/{flow_id}/executions", _executions)
#: Executions selected by a filter-group body, paged like the listings.
FILTER_EXECUTIONS = Endpoint("POST", "/flows/executions/filter", _executions)
GET_CURRENT_USER = Endpoint("GET", "/users/me", _any_json)
GET_SYSTEM_INFO = Endpoint("GET", "/system/info", _any_json)
#: Where a server may describe its API (springfox: v2; springdoc: v3), tried in this order.
API_DESCRIPTIONS = (
    Endpoint("GET", "/v3/api-docs", _any_json, root=True),
    Endpoint("GET", "/v2/api-docs", _any_json, root=True),
)
#: The Swagger UI (HTML; ``parse`` is unused): ``/swagger-ui/``, on older servers ``/swagger-ui.html``.
SWAGGER_UI_PAGES = (
    Endpoint("GET", "/swagger-ui/", _any_json, root=True),
    Endpoint("GET", "/swagger-ui.html", _any_json, root=True),
)


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

    def url(self, settings: ConnectionSettings) -> str:
        """The absolute URL (below ``/api/v1`` unless the route is at the server's root)."""
        return settings.base_url + self.path if self.endpoint.root else settings.url(self.path)


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
        if request.endpoint.text:
            return request.endpoint.parse(answer.body.decode("utf-8", errors="replace"))
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


def start_skipping_input_request(
    flow_id: str | None, data: object, dataset_id: str | None, priority: int | None
) -> ApiRequest[Execution]:
    """``POST /flows/executions/start?flow=``: the start that skips every user input. Whether the
    server reads a body there is unconfirmed: the input is sent when given."""
    if not flow_id:
        raise SmartFlowsInputError("skip_user_input=True needs the flow to run (flow_id or flow_name).")
    params: dict[str, Any] = {"flow": validate_id(flow_id, "flow")}
    if dataset_id is not None:
        params["datasetId"] = validate_id(dataset_id, "dataset")
    if priority is not None:
        params["priority"] = validate_priority(priority)
    body, headers = prepare_start_body(data, flow_id)
    return START_SKIPPING_INPUT.request(
        params=params, body=body, headers=headers, subject=f"Flow {flow_id!r}"
    )


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


def callback_request(execution_id: str, callback_id: str, body: object = None) -> ApiRequest[str]:
    """``POST /flows/callback/{callback_id}?executionId=``: resume a ``Waiting`` execution."""
    execution_id = validate_id(execution_id, "execution")
    callback_id = validate_id(callback_id, "callback")
    payload, headers = callback_body(execution_id, body)
    return RESUME_CALLBACK.request(
        callback_id=callback_id,
        params={"executionId": execution_id},
        body=payload,
        headers=headers,
        subject=f"Callback {callback_id!r} of execution {execution_id!r}",
    )


def flow_request(flow: str) -> ApiRequest[Any]:
    """``GET /flows/{flow}``: the flow of that id or path (a name that is not one: 404)."""
    flow = validate_id(flow, "flow")
    return GET_FLOW.request(flow=flow, subject=f"Flow {flow!r}")


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
    _check_page(page, size)
    params: dict[str, Any] = {"page": page, "size": size, "sort": sort}
    if filter is not None:
        params["filter"] = filter
    return LIST_FLOW_EXECUTIONS.request(flow_id=flow_id, params=params, subject=f"Flow {flow_id!r}")


# --------------------------------------------------------------------------- paged listings

#: Items asked per page: five times the vendor's default of 20, far below Spring's usual cap (2000).
LIST_PAGE_SIZE = 100
#: Pages read at most per listing (10,000 items at the default size).
LIST_MAX_PAGES = 100
#: The vendor's default page size: a page of exactly this many may come from a server that
#: ignored ``size`` (or names it otherwise), so the next page is read to be sure.
SERVER_DEFAULT_PAGE_SIZE = 20


@dataclass
class Paging(Generic[ItemT]):
    """Every page of one listing, without I/O: the hook sends :meth:`request`, hands the page to
    :meth:`add` and repeats while it answers True; then :attr:`items` holds the whole listing.

    Pages are asked ``size`` at a time from page 0; a page shorter than ``size`` is the last (the
    body is a plain array, so nothing else tells), except one of exactly the vendor's default
    size, which a server that ignored ``size`` would send: then the next page is read as well.
    An item already listed (same ``id``: the listing moved between two pages) is kept once.

    :param call: how errors name the listing, e.g. ``"list_flows (GET /api/v1/flows)"``.
    :param page_request: the request of one page, from ``(page, size)``.
    """

    call: str
    page_request: Callable[[int, int], ApiRequest[list[ItemT]]]
    size: int = LIST_PAGE_SIZE
    max_pages: int = LIST_MAX_PAGES
    items: list[ItemT] = field(default_factory=list)
    page: int = 0
    _ids: set[Any] = field(default_factory=set)
    _last_ids: list[Any] | None = None

    def __post_init__(self) -> None:
        check_int("page_size", self.size, minimum=1)
        check_int("max_pages", self.max_pages, minimum=1)

    def request(self) -> ApiRequest[list[ItemT]]:
        """The request of the next page."""
        return self.page_request(self.page, self.size)

    def add(self, page: list[ItemT]) -> bool:
        """Take the page just read; True if the next one is needed (then :meth:`request` asks it)."""
        ids = [item.get("id") if isinstance(item, Mapping) else None for item in page]
        if page and ids == self._last_ids and None not in ids:
            raise SmartFlowsListingError(
                f"{self.call}: pages {self.page - 1} and {self.page} hold the same items, so this "
                "server does not read the 'page' query parameter (some name it 'pageNumber'). Run "
                "smartflows-probe against this connection to see the parameters the server lists.",
                call=self.call,
                pages=self.page + 1,
            )
        self._last_ids = ids
        for item, item_id in zip(page, ids, strict=True):
            if item_id is None or item_id not in self._ids:
                self.items.append(item)
                self._ids.add(item_id)
        short = len(page) < self.size and len(page) != SERVER_DEFAULT_PAGE_SIZE
        if not page or short:
            return False
        if self.page + 1 >= self.max_pages:
            raise SmartFlowsListingError(
                f"{self.call}: {self.max_pages} pages of {self.size} items did not reach the end of "
                "the listing. Pass a larger max_pages (or page_size) to read more, or a filter to "
                "list less.",
                call=self.call,
                pages=self.max_pages,
            )
        self.page += 1
        return True


def _check_page(page: int, size: int) -> None:
    check_int("page", page, minimum=0)
    check_int("size", size, minimum=1)


def flows_page_request(page: int, size: int) -> ApiRequest[list[dict[str, Any]]]:
    """One page of the flows."""
    _check_page(page, size)
    return LIST_FLOWS.request(params={"page": page, "size": size})


def executions_page_request(
    flow_id: str | None,
    page: int | None,
    size: int | None,
    filter: str | None = None,
    sort: str = "createdAt,desc",
) -> ApiRequest[list[Any]]:
    """One page of the executions (of one flow, or all), newest first unless ``sort`` says otherwise;
    ``page`` / ``size`` None: not sent (the server's defaults); ``filter`` is one ``field:value``."""
    params: dict[str, Any] = {"sort": sort}
    if page is not None or size is not None:
        _check_page(0 if page is None else page, 1 if size is None else size)
        params |= {k: v for k, v in (("page", page), ("size", size)) if v is not None}
    if filter is not None:
        params["filter"] = filter
    if flow_id is None:
        return LIST_EXECUTIONS.request(params=params)
    flow_id = validate_id(flow_id, "flow")
    return LIST_FLOW_EXECUTIONS.request(flow_id=flow_id, params=params, subject=f"Flow {flow_id!r}")


def flows_paging(page_size: int, max_pages: int) -> Paging[dict[str, Any]]:
    return Paging(f"list_flows ({LIST_FLOWS.route})", flows_page_request, page_size, max_pages)


def executions_paging(flow_id: str | None, filter: str | None, page_size: int, max_pages: int) -> Paging[Any]:
    route = (LIST_EXECUTIONS if flow_id is None else LIST_FLOW_EXECUTIONS).route
    return Paging(
        f"list_executions ({route})",
        lambda page, size: executions_page_request(flow_id, page, size, filter),
        page_size,
        max_pages,
    )


def read_pages(paging: Paging[ItemT], call: Callable[[ApiRequest[list[ItemT]]], list[ItemT]]) -> list[ItemT]:
    """Every page of ``paging``, each sent by ``call`` (a sync hook's ``_call``); the async hook
    runs the same loop with ``await``."""
    while paging.add(call(paging.request())):
        pass
    return paging.items


# --------------------------------------------------------------------------- documents

#: A filter condition: ``(key, operator, values)``, e.g. ``("contentType", "in", ["application/pdf"])``.
Condition = tuple[str, str, Sequence[Any]]


def filter_group(conditions: Iterable[Condition] | Mapping[str, Any], match: str = "and") -> dict[str, Any]:
    """The filter-group body of a ``.../filter`` listing: ``{"group": {"type": match, "nodes":
    [{"id": <uuid>, "condition": {"key", "operator", "values"}}]}}``. A mapping with ``"group"`` is
    taken as the whole body, as it is (nested groups, operators this builder does not know). The
    operator vocabulary is the server's (UNCONFIRMED: ``in``, ``lessThanOrEqualTo`` are documented)."""
    if isinstance(conditions, Mapping):
        if not isinstance(conditions.get("group"), Mapping):
            raise SmartFlowsInputError('A filter body must be {"group": {"type": "and", "nodes": [...]}}.')
        return dict(conditions)
    if match not in ("and", "or"):
        raise SmartFlowsInputError(f'match must be "and" or "or", not {match!r}.')
    nodes = []
    for condition in conditions:
        if not (isinstance(condition, (tuple, list)) and len(condition) == 3):
            raise SmartFlowsInputError(
                f"A filter condition is (key, operator, values), e.g. "
                f'("contentType", "in", ["application/pdf"]), not {condition!r}.'
            )
        key, operator, values = condition
        if not (isinstance(key, str) and key and isinstance(operator, str) and operator):
            raise SmartFlowsInputError(f"A filter condition's key and operator are texts: {condition!r}.")
        values = [values] if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) else values
        node = {"key": key, "operator": operator, "values": [str(value) for value in values]}
        nodes.append({"id": str(uuid.uuid4()), "condition": node})
    if not nodes:
        raise SmartFlowsInputError(
            "A filter needs at least one condition (key, operator, values), e.g. "
            '("contentType", "in", ["application/pdf"]).'
        )
    return {"group": {"type": match, "nodes": nodes}}


def documents_page_request(page: int, size: int, filter: str | None = None) -> ApiRequest[list[Any]]:
    """One page of the documents the key may see, newest first; ``filter`` is one ``field:value``."""
    _check_page(page, size)
    params: dict[str, Any] = {"page": page, "size": size, "sort": "createdAt,desc"}
    if filter is not None:
        params["filter"] = filter
    return LIST_DOCUMENTS.request(params=params)


def documents_filter_request(body: Mapping[str, Any], page: int, size: int) -> ApiRequest[list[Any]]:
    """One page of the documents matching the filter-group ``body``, newest first."""
    _check_page(page, size)
    params = {"page": page, "size": size, "sort": "createdAt,desc"}
    data = json.dumps(body).encode()
    return FILTER_DOCUMENTS.request(params=params, body=data, headers={"Content-Type": JSON_CONTENT_TYPE})


def documents_paging(filter: str | None, page_size: int, max_pages: int) -> Paging[Any]:
    return Paging(
        f"list_all_documents ({LIST_DOCUMENTS.route})",
        lambda page, size: documents_page_request(page, size, filter),
        page_size,
        max_pages,
    )


def documents_filter_paging(
    conditions: Iterable[Condition] | Mapping[str, Any], match: str, page_size: int, max_pages: int
) -> Paging[Any]:
    body = filter_group(conditions, match)
    return Paging(
        f"filter_documents ({FILTER_DOCUMENTS.route})",
        lambda page, size: documents_filter_request(body, page, size),
        page_size,
        max_pages,
    )


def document_infos(items: Iterable[Any]) -> list[DocumentInfo]:
    """The listed documents' metadata; an item that is not a document (no id) is left out."""
    return [DocumentInfo.from_json(item) for item in items if isinstance(item, Mapping) and item.get("id")]


# --------------------------------------------------------------------------- filtered listings

#: One condition of a filter-group body: (key, operator, values), e.g. ``("status", "in", [...])``.
FilterCondition = tuple[str, str, list[str]]


def filter_body(conditions: Sequence[FilterCondition]) -> bytes:
    """The vendor's filter-group body: every condition must hold (an ``and`` group)."""
    return json.dumps(filter_group(conditions)).encode()


def executions_filter_request(
    conditions: Sequence[FilterCondition], *, page: int, size: int, sort: str
) -> ApiRequest[list[Any]]:
    """One page of ``POST /flows/executions/filter``: the executions meeting every condition."""
    _check_page(page, size)
    return FILTER_EXECUTIONS.request(
        params={"page": page, "size": size, "sort": sort},
        body=filter_body(conditions),
        headers={"Content-Type": JSON_CONTENT_TYPE},
        hint="This server may not have the filter route: smartflows-probe lists the routes it has.",
    )
