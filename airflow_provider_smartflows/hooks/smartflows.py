"""The sync ``SmartFlowsHook`` (an ``HttpHook``): every Smart Flows REST call, streaming downloads.

The routes, request building and answer reading are in :mod:`.api`; the connection and its extras
in :mod:`.connection`; the retry policy in :mod:`.retry`. This module is the ``requests`` transport.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import tenacity
from airflow.providers.common.compat.sdk import ObjectStoragePath, mask_secret
from airflow.providers.http.hooks.http import HttpHook

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsConnectionError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.flow_names import resolve_flow_name
from airflow_provider_smartflows.hooks.api import (
    GET_CURRENT_USER,
    GET_SYSTEM_INFO,
    LIST_MAX_PAGES,
    LIST_PAGE_SIZE,
    STREAMED_ERROR_BYTES,
    Answer,
    ApiRequest,
    Condition,
    answer_request,
    callback_request,
    cancel_request,
    check_answer,
    content_request,
    document_infos,
    document_request,
    documents_filter_paging,
    documents_paging,
    execution_request,
    executions_paging,
    flow_executions_request,
    flow_request,
    flows_paging,
    progress_request,
    read_answer,
    read_pages,
    start_request,
    start_skipping_input_request,
)
from airflow_provider_smartflows.hooks.connection import (
    API_PREFIX,
    DEFAULT_CONN_ID,
    ConnectionSettings,
    connection_form_widgets,
    ui_field_behaviour,
)
from airflow_provider_smartflows.hooks.download import save_document
from airflow_provider_smartflows.hooks.errors import (
    TLS_HANDSHAKE_FAILED,
    TLS_UNTRUSTED,
    caused_by,
    closest_flows,
    connection_error,
    may_have_started_error,
)
from airflow_provider_smartflows.hooks.inputs import validate_id
from airflow_provider_smartflows.hooks.options import SmartFlowsHookOptions
from airflow_provider_smartflows.hooks.retry import NOT_ACTED_STATUSES
from airflow_provider_smartflows.reconciled_start import find_started, start_reconciled
from airflow_provider_smartflows.text import first_text, show_test_message
from airflow_provider_smartflows.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from requests.adapters import HTTPAdapter
    from typing_extensions import Unpack

    from airflow_provider_smartflows.models import (
        DocumentInfo,
        DocumentRef,
        DownloadedDocument,
        Execution,
        ExecutionProgress,
    )
    from airflow_provider_smartflows.reconcile import Verdict
    from airflow_provider_smartflows.reconciled_start import ReconcileOptions, StartedExecution

T = TypeVar("T")
#: Answers to a start that prove no execution was created (the request was refused as it stood).
_NOT_STARTED_STATUSES = frozenset({400, 401, 403, 404, 409, 415, 422})


def _network_reason(exc: requests.RequestException) -> tuple[bool, str]:
    """(request_sent, short reason) for a requests failure."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False, "connect timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return False, TLS_UNTRUSTED if caused_by(exc, ssl.SSLCertVerificationError) else TLS_HANDSHAKE_FAILED
    if isinstance(exc, requests.exceptions.ConnectionError):
        from urllib3.exceptions import NewConnectionError

        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, NewConnectionError) or (
            isinstance(exc, requests.exceptions.ProxyError) and isinstance(reason, Exception)
        ):
            return False, "connection refused"
        return True, "connection reset"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True, "read timeout"
    return True, type(exc).__name__


def _may_have_started(err: SmartFlowsApiError) -> bool:
    """Whether a failed start may have created an execution (the server may have acted on it)."""
    status = err.status_code
    if status is None:
        return not isinstance(err, SmartFlowsConnectionError) or err.request_sent
    redirected = 300 <= status < 400  # a redirect answers instead of acting
    return not (redirected or status in NOT_ACTED_STATUSES or status in _NOT_STARTED_STATUSES)


def _answer(response: requests.Response) -> Answer:
    return Answer(response.status_code, response.headers, response.content)


# --------------------------------------------------------------------------- sync hook


class SmartFlowsHook(SmartFlowsHookOptions, HttpHook):
    """
    Call the Smart Flows REST API (sync).

    :param smartflows_conn_id: a ``smartflows`` connection (see :mod:`.connection`).
    :param timeout: seconds per request; overrides the connection's ``timeout`` extra (default 60).
    :param retry_limit: retries after the first attempt (0: none); see :func:`.retry.is_retryable`.
    :param retry_delay: first backoff delay in seconds, doubled per retry, with jitter.
    :param max_retry_delay: cap of any delay, including a server's Retry-After.
    :param adapter: a ``requests`` transport adapter mounted for http:// and https:// (default:
        HttpHook's TCP keep-alive adapter).
    """

    def __init__(
        self,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        adapter: HTTPAdapter | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=smartflows_conn_id, adapter=adapter)
        self._set_options(smartflows_conn_id, timeout, retry_limit, retry_delay, max_retry_delay)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form for Airflow < 3.2 (newer versions read get_provider_info)."""
        return ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form for Airflow < 3.2."""
        return connection_form_widgets()

    # ----------------------------------------------------------------- connection

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The validated connection (loaded once); the API key is registered with the secret masker."""
        settings = self._load_settings()
        self.base_url = settings.base_url  # HttpHook's public attribute (url_from_endpoint)
        return settings

    def _load_settings(self, *, for_test: bool = False) -> ConnectionSettings:
        conn = self.get_connection(self.smartflows_conn_id)
        if conn.password:
            mask_secret(conn.password)
        return self._settings_from(conn, conn.extra_dejson, for_test=for_test)

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """
        The configured ``requests`` session (created once, reused for keep-alive).

        :param headers: headers to add to the session.
        :param extra_options: ignored; kept so that ``HttpHook.run``'s call still works (this
            hook's options are the connection's extras).
        """
        session = self._session
        if headers:
            session.headers.update(headers)
        return session

    @cached_property
    def _session(self) -> requests.Session:
        return self._new_session(self.settings)

    def _new_session(self, settings: ConnectionSettings) -> requests.Session:
        # Our own session, not HttpHook.get_conn's: that one sends the connection's login and
        # password (the API key) as basic auth and applies the extras as HTTP options.
        if isinstance(settings.verify, str) and not os.path.exists(settings.verify):
            raise SmartFlowsInputError(
                f"The CA bundle {settings.verify!r} of {settings.label} does not exist: set the extra "
                "'ca_bundle' to the path of a CA bundle file readable by Airflow."
            )
        session = requests.Session()
        session.headers.update(settings.headers)
        session.verify = settings.verify
        session.proxies.update(settings.proxies)
        adapter = self.adapter or self.keep_alive_adapter
        if adapter is not None:
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        return session

    def close(self) -> None:
        """Close the HTTP session (connections are pooled between calls)."""
        if "_session" in self.__dict__:
            self.__dict__.pop("_session").close()

    def execution_url(self, execution_id: str) -> str:
        """Link to the execution in the Smart Flows UI (connection extra ``execution_url_template``)."""
        return self.settings.execution_url(validate_id(execution_id, "execution"))

    # ----------------------------------------------------------------- transport

    def _send(
        self,
        request: ApiRequest[Any],
        settings: ConnectionSettings,
        session: requests.Session,
        *,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request as it is (no redirect followed); no answer raises SmartFlowsConnectionError."""
        try:
            return session.request(
                request.method,
                request.url(settings),
                params=request.params,
                data=request.body,
                headers=request.headers,
                stream=stream,
                timeout=(settings.timeout, settings.timeout + request.extra_timeout),
                # Per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and *_proxy
                # variables override the session's own verify and proxies (psf/requests#3829).
                verify=settings.verify,
                proxies=dict(settings.proxies),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            sent, reason = _network_reason(exc)
            raise connection_error(
                settings, request.method, request.path, request_sent=sent, reason=reason
            ) from exc

    def _call(self, request: ApiRequest[T]) -> T:
        """One API call under the retry policy; raises the matching SmartFlowsApiError subclass."""
        return self._call_answer(request)[0]

    def _call_answer(self, request: ApiRequest[T]) -> tuple[T, Answer]:
        """:meth:`_call`, with the answer it was read from (headers such as ``Date``)."""
        settings, session = self.settings, self.get_conn()

        def attempt() -> tuple[T, Answer]:
            answer = _answer(self._send(request, settings, session))
            return read_answer(request, answer, settings), answer

        return tenacity.Retrying(**self._retry_arguments(self.log))(attempt)

    def _open_stream(self, request: ApiRequest[Any]) -> requests.Response:
        """A streamed success answer (the caller closes it), under the retry policy."""
        settings, session = self.settings, self.get_conn()

        def attempt() -> requests.Response:
            response = self._send(request, settings, session, stream=True)
            if response.status_code >= 300:
                with response:
                    head = response.raw.read(STREAMED_ERROR_BYTES, decode_content=True)
                check_answer(request, Answer(response.status_code, response.headers, head), settings)
            return response

        return tenacity.Retrying(**self._retry_arguments(self.log))(attempt)

    # ----------------------------------------------------------------- executions

    def start_execution(
        self,
        flow_id: str | None = None,
        data: dict[str, Any] | str | bytes | None = None,
        *,
        dataset_id: str | None = None,
        priority: int | None = None,
        skip_user_input: bool = False,
    ) -> ExecutionProgress | Execution:
        """
        Start a flow execution (``POST /flows/executions``); never retried once the server may have acted.

        :param flow_id: the flow to run; None lets the user pick one (status SelectFlow).
        :param data: None (no input), a dict (Dynamics/Sugar JSON) or XML as str or bytes.
        :param dataset_id: the data set the XML belongs to.
        :param priority: execution priority, if the server supports it.
        :param skip_user_input: start through ``POST /flows/executions/start?flow=``: every user
            input takes its default value (no ``UserInput`` stop); answers the execution itself.
        """
        build = start_skipping_input_request if skip_user_input else start_request
        request: ApiRequest[Any] = build(flow_id, data, dataset_id, priority)
        try:
            progress: ExecutionProgress | Execution = self._call(request)
        except SmartFlowsNotFoundError as err:
            if not flow_id:
                raise
            raise type(err)(err.message + self._flows_hint(flow_id), **err.fields()) from err
        except SmartFlowsApiError as err:
            if _may_have_started(err):
                raise may_have_started_error(err, flow_id) from err
            raise
        self.log.info(
            "Started Smart Flows execution %s of flow %s (%s)",
            progress.id,
            flow_id or "(to select)",
            progress.status,
        )
        return progress

    def _flows_hint(self, flow_id: str) -> str:
        """The flows closest to an unknown ``flow_id`` that the key can see ("" if unlisted)."""
        try:
            return closest_flows(self.list_flows(), flow_id)
        except SmartFlowsError as err:
            self.log.debug("Could not list the flows for an unknown flow id: %s", err)
            return ""

    def start_execution_reconciled(
        self,
        flow_id: str | None,
        data: dict[str, Any] | str | bytes | None = None,
        *,
        dataset_id: str | None = None,
        priority: int | None = None,
        skip_user_input: bool = False,
        **options: Unpack[ReconcileOptions],
    ) -> StartedExecution:
        """
        Start an execution; when the start's outcome is unknown, find out (:meth:`find_started_execution`):
        adopt the execution the server created; if it is proven that none was, start again, once
        (a second unknown outcome raises: never a third POST); if it cannot be told, raise the
        start's error with the candidates. Parameters as those two methods (``options``: ``clock_skew``,
        ``settle_time``, ``clock``, ... of :meth:`find_started_execution`).
        """
        return start_reconciled(
            flow_id,
            lambda: self.start_execution(
                flow_id, data, dataset_id=dataset_id, priority=priority, skip_user_input=skip_user_input
            ),
            lambda error, sent_at: self.find_started_execution(
                flow_id, data, sent_at=sent_at, error=error, **options
            ),
            log=self.log,
            clock=options.get("clock", time.time),
        )

    def find_started_execution(
        self,
        flow_id: str | None,
        data: dict[str, Any] | str | bytes | None,
        *,
        sent_at: float,
        error: SmartFlowsApiError | None = None,
        **options: Unpack[ReconcileOptions],
    ) -> Verdict:
        """
        After a start of ``flow_id`` with ``data`` whose outcome is unknown: the execution it created
        (``outcome`` ADOPTED, ``execution_id``) or the proof that it created none (NOT_STARTED). When
        that cannot be told (several matches, a listing refused or missing, a window too large) it
        raises ``error`` (the start's) with the reason and the candidates' ids and creation times.

        :param sent_at: ``clock()`` just before the start was sent.
        :param options: :class:`~airflow_provider_smartflows.reconciled_start.ReconcileOptions`:
            ``clock_skew``, ``settle_time``, ``page_size``, ``max_pages``, ``clock``, ``sleep`` (see
            :func:`~airflow_provider_smartflows.reconciled_start.find_start`).
        """
        flow = validate_id(flow_id, "flow") if flow_id else ""
        return find_started(
            flow_id,
            data,
            sent_at=sent_at,
            error=error,
            current_user=self._current_user,
            list_page=functools.partial(self._executions_page, flow),
            log=self.log,
            **options,
        )

    def _current_user(self) -> tuple[Any, str | None]:
        """``GET /users/me`` and the answer's ``Date`` header."""
        me, answer = self._call_answer(GET_CURRENT_USER.request())
        return me, answer.headers.get("Date")

    def _executions_page(self, flow_id: str, page: int, size: int, created_by: str | None) -> list[Any]:
        """One page of the flow's executions, newest first; ``created_by`` filters by user id."""
        by = None if created_by is None else f"createdBy:{created_by}"
        try:
            return self._call(flow_executions_request(flow_id, page=page, size=size, filter=by))
        except SmartFlowsApiError as err:
            if by is None or err.status_code != 400:
                raise
            # This server does not filter by createdBy: the scan checks each execution's user anyway.
            return self._call(flow_executions_request(flow_id, page=page, size=size))

    def get_progress(self, execution_id: str, *, wait_seconds: float | None = None) -> ExecutionProgress:
        """
        Progress of an execution; with ``wait_seconds`` a long-poll that answers early on change.

        :param execution_id: the execution.
        :param wait_seconds: how long the server may hold the request (request timeout grows by it).
        """
        return self._call(progress_request(execution_id, wait_seconds))

    def get_execution(self, execution_id: str) -> Execution:
        """The full execution (status, flow, errors, warnings, documents)."""
        return self._call(execution_request(execution_id))

    def cancel_execution(self, execution_id: str) -> ExecutionProgress:
        """Cancel an execution (DELETE; the path is the connection extra ``cancel_path``)."""
        validate_id(execution_id, "execution")
        return self._call(cancel_request(execution_id, self.settings))

    def answer_user_input(self, execution_id: str, answers: Mapping[str, Any]) -> ExecutionProgress:
        """Answer a UserInput form: ``answers`` maps form keys to values."""
        return self._call(answer_request(execution_id, answers))

    def resume_callback(self, execution_id: str, callback_id: str, body: Any = None) -> str:
        """Resume a ``Waiting`` execution: ``POST /flows/callback/{callback_id}?executionId=`` with the
        optional ``body`` (JSON; a str as it is). The key is sent though the vendor needs none there.
        Returns the server's answer, one line."""
        answer = self._call(callback_request(execution_id, callback_id, body))
        self.log.info("Sent callback %s to Smart Flows execution %s", callback_id, execution_id)
        return answer.replace(self.settings.api_key, "***") if self.settings.api_key else answer

    def list_flows(
        self, *, page_size: int = LIST_PAGE_SIZE, max_pages: int = LIST_MAX_PAGES
    ) -> list[dict[str, Any]]:
        """The flows visible to the API key's user (raw Flow objects), every page (:class:`.api.Paging`)."""
        return read_pages(flows_paging(page_size, max_pages), self._call)

    def get_flow(self, flow: str) -> Any:
        """One flow (the raw Flow object), by id or path (``GET /flows/{flow}``)."""
        return self._call(flow_request(flow))

    def resolve_flow(self, name: str) -> tuple[str, str]:
        """``(id, displayName)`` of the flow ``name`` means (:func:`~airflow_provider_smartflows.flow_names.resolve_flow_name`)."""
        return resolve_flow_name(name, self.get_flow, self.list_flows)

    def list_executions(
        self,
        flow_id: str | None = None,
        *,
        filter: str | None = None,
        page_size: int = LIST_PAGE_SIZE,
        max_pages: int = LIST_MAX_PAGES,
    ) -> list[Any]:
        """Executions (of one flow, or all the key may see), newest first, every page; ``filter``: one
        ``field:value`` (a "contains" match, e.g. ``"status:Error"``). Raw FlowExecution objects."""
        return read_pages(executions_paging(flow_id, filter, page_size, max_pages), self._call)

    # ----------------------------------------------------------------- documents

    def get_document(self, document_id: str) -> DocumentInfo:
        """Document metadata; ``file_name`` is a safe local name with the content type's extension."""
        return self._call(document_request(document_id))

    def list_documents(self, execution_id: str) -> list[DocumentRef]:
        """Documents of an execution: every ``type == "document"`` object in its output."""
        documents = list(self.get_execution(execution_id).documents)
        if not documents:
            documents = list(self.get_progress(execution_id).documents)
        return documents

    def list_all_documents(
        self, *, filter: str | None = None, page_size: int = LIST_PAGE_SIZE, max_pages: int = LIST_MAX_PAGES
    ) -> list[DocumentInfo]:
        """Every document the key may see (``GET /documents``), newest first, every page; ``filter``:
        one ``field:value`` (a "contains" match). Not :meth:`list_documents` (one execution's)."""
        return document_infos(read_pages(documents_paging(filter, page_size, max_pages), self._call))

    def filter_documents(
        self,
        conditions: Iterable[Condition] | Mapping[str, Any],
        *,
        match: str = "and",
        page_size: int = LIST_PAGE_SIZE,
        max_pages: int = LIST_MAX_PAGES,
    ) -> list[DocumentInfo]:
        """Documents matching ``(key, operator, values)`` conditions, all (``match="and"``) or any
        (``"or"``), or a whole filter-group body (``POST /documents/filter``, :func:`.api.filter_group`),
        newest first, every page."""
        paging = documents_filter_paging(conditions, match, page_size, max_pages)
        return document_infos(read_pages(paging, self._call))

    def download_document(
        self,
        document_id: str,
        destination: str | ObjectStoragePath,
        *,
        conn_id: str | None = None,
        overwrite: bool = False,
        chunk_size: int = 1024 * 1024,
        execution_id: str | None = None,
        block_size: int | None = None,
        info: DocumentInfo | None = None,
        exact_target: bool = False,
    ) -> DownloadedDocument:
        """
        Stream a document's content to storage, written in place and committed atomically: the
        bucket or container must exist (it is never created); nothing is visible at the target
        unless the whole document arrived. Memory: ``chunk_size`` plus the store's upload blocks.

        :param document_id: the document.
        :param destination: ObjectStoragePath or URI. A folder (a string ending in "/", or an
            existing directory) receives ``<display name>.<extension of the content type>``,
            sanitised; anything else is the exact target file.
        :param conn_id: Airflow connection of the storage (for a string ``destination``).
        :param overwrite: replace an existing target (atomically) instead of failing.
        :param chunk_size: bytes read from the HTTP response at a time.
        :param execution_id: the execution that made the document, stored as object metadata.
        :param block_size: bytes per upload request (default: ``storage.DEFAULT_BLOCK_SIZES``).
        :param info: the document's metadata when already read: a folder target then asks no more.
        :param exact_target: ``destination`` is the object itself: nothing is asked of the store before
            the write (no folder or existence probe); a create-only commit refuses an existing one.
        """
        document_id = validate_id(document_id, "document")
        downloaded = save_document(
            document_id,
            destination,
            get_document=self.get_document,
            open_content=lambda: self._open_stream(content_request(document_id)),
            transport_errors=(requests.RequestException,),
            chunk_size=check_int("chunk_size", chunk_size, minimum=1),
            conn_id=conn_id,
            overwrite=overwrite,
            execution_id=validate_id(execution_id, "execution") if execution_id else None,
            block_size=block_size,
            info=info,
            exact_target=exact_target,
        )
        log = "Saved Smart Flows document %s to %s (%d bytes, sha256 %s)"
        # An exact target is download_all's: it logs one line per call, not one per document.
        (self.log.debug if exact_target else self.log.info)(
            log, document_id, downloaded.uri, downloaded.size, downloaded.sha256
        )
        return downloaded

    # ----------------------------------------------------------------- connection test

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the URL and API key: ``(True, "Connected to Smart Flows <version> as <user>")``.

        One attempt per call with a short timeout (:attr:`test_connection_timeout`), so Airflow's
        Test button answers at once; messages do not name the connection id, since Airflow's UI
        tests an unsaved copy under a random temporary id.
        """
        try:
            settings = self._load_settings(for_test=True)
            with self._new_session(settings) as session:
                me = self._probe(GET_CURRENT_USER.request(), settings, session)
                info = self._probe(GET_SYSTEM_INFO.request(), settings, session)
        except SmartFlowsError as err:
            return False, err.message
        if me is None and info is None:
            return False, (
                f"{settings.base_url} answered 404 for {API_PREFIX}{GET_CURRENT_USER.path} and "
                f"{API_PREFIX}{GET_SYSTEM_INFO.path}: is the Host the base URL of a Smart Flows server?"
            )
        user = first_text(me, "displayName", "name", "username", "login", "email") or "an unnamed user"
        role = first_text(me, "role") or first_text(info, "role")
        version = first_text(info, "version") or "(version unknown)"
        message = f"Connected to Smart Flows {version} as {user}" + (f" ({role})" if role else "")
        show_test_message(message)
        return True, message

    def _probe(
        self, request: ApiRequest[Any], settings: ConnectionSettings, session: requests.Session
    ) -> Any:
        """One attempt, no retry; None if the server has no such route (404)."""
        try:
            return read_answer(request, _answer(self._send(request, settings, session)), settings)
        except SmartFlowsNotFoundError:
            return None
