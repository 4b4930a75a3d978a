"""``SmartFlowsAsyncHook``: the aiohttp client of the Smart Flows API, for triggers.

Same routes, answers and retry policy as :class:`SmartFlowsHook` (see :mod:`.api`); this module
is the aiohttp transport. Nothing blocking runs on the event loop (the connection and the TLS
context are resolved in worker threads).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import tenacity
from airflow.providers.common.compat.sdk import BaseHook
from yarl import URL

from airflow_provider_smartflows.exceptions import SmartFlowsAuthError, SmartFlowsError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.api import (
    GET_CURRENT_USER,
    LIST_MAX_PAGES,
    LIST_PAGE_SIZE,
    Answer,
    ApiRequest,
    FilterCondition,
    Paging,
    cancel_request,
    document_infos,
    documents_filter_paging,
    documents_paging,
    execution_request,
    executions_filter_request,
    executions_page_request,
    executions_paging,
    flow_request,
    flows_paging,
    progress_request,
    read_answer,
)
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID, ConnectionSettings
from airflow_provider_smartflows.hooks.errors import (
    TLS_HANDSHAKE_FAILED,
    TLS_UNTRUSTED,
    connection_error,
)
from airflow_provider_smartflows.hooks.inputs import validate_id
from airflow_provider_smartflows.hooks.options import SmartFlowsHookOptions
from airflow_provider_smartflows.hooks.sessions import (
    SessionKey,
    SessionLease,
    acquire_session,
    cached_settings,
    forget_settings,
    max_long_poll_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from types import TracebackType

    from airflow_provider_smartflows.hooks.api import Condition
    from airflow_provider_smartflows.models import DocumentInfo, Execution, ExecutionProgress

T = TypeVar("T")


async def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow < 3.3: the sync call may talk to the supervisor, so off the loop
        from airflow.providers.common.compat.sdk import mask_secret

        await asyncio.to_thread(mask_secret, secret)
    else:
        await amask_secret(secret)


def _network_reason(exc: BaseException) -> tuple[bool, str]:
    """(request_sent, short reason) for an aiohttp failure."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return False, "connect timeout"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return False, TLS_UNTRUSTED
    if isinstance(exc, aiohttp.ClientSSLError):
        return False, TLS_HANDSHAKE_FAILED
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False, "connection refused"
    if isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return True, "read timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True, "connection reset"
    return True, type(exc).__name__


async def _ssl_option(settings: ConnectionSettings) -> ssl.SSLContext | bool:
    if settings.verify is True or settings.verify is False:
        return settings.verify
    try:
        # Reading a CA bundle is file I/O: keep it off the event loop.
        return await asyncio.to_thread(ssl.create_default_context, cafile=settings.verify)
    except (OSError, ssl.SSLError) as err:
        raise SmartFlowsInputError(
            f"The CA bundle {settings.verify!r} of {settings.label} cannot be read ({err}): set the "
            "extra 'ca_bundle' to the path of a CA bundle file readable by Airflow."
        ) from None


class _Target:
    """Where and how to send one request: absolute URL with its query, timeouts, proxy."""

    __slots__ = ("proxy", "timeout", "url")

    def __init__(self, url: URL, timeout: aiohttp.ClientTimeout, proxy: str | None) -> None:
        self.url = url
        self.timeout = timeout
        self.proxy = proxy

    @classmethod
    def of(cls, request: ApiRequest[Any], settings: ConnectionSettings) -> _Target:
        url = request.url(settings)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.timeout, sock_read=settings.timeout + request.extra_timeout
        )
        proxy = settings.proxies.get(url.split(":", 1)[0])
        # encoded=True keeps the path exactly as the route table quoted it.
        target = URL(url, encoded=True)
        if request.params:
            target = target.with_query(request.params)
        return cls(target, timeout, proxy)


class SmartFlowsAsyncHook(SmartFlowsHookOptions, BaseHook):
    """
    Call the Smart Flows REST API from an event loop; use as ``async with SmartFlowsAsyncHook(...) as hook``.

    Inside the ``async with`` block the hook uses the event loop's shared session of its connection
    (:mod:`.sessions`): every hook of one connection in one loop shares one ``aiohttp`` session and
    keep-alive pool, and the connection lookup is cached for a short time. The session closes
    when the last hook using it leaves its block.

    :param smartflows_conn_id: a ``smartflows`` connection (see ``hooks.connection``).
    :param timeout: seconds per request; overrides the connection's ``timeout`` extra.
    :param retry_limit: retries after the first attempt (0: none).
    :param retry_delay: first backoff delay in seconds, doubled per retry, with jitter.
    :param max_retry_delay: cap of any delay, including a server's Retry-After.
    :param max_connections: kept for compatibility and unused: the shared session's pool is sized
        for every parked long-poll of the loop (``[smartflows] max_connections_per_session``).
    """

    def __init__(
        self,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        max_connections: int = 4,
    ) -> None:
        super().__init__()
        self._set_options(smartflows_conn_id, timeout, retry_limit, retry_delay, max_retry_delay)
        self.max_connections = max_connections
        self._settings: ConnectionSettings | None = None
        self._lease: SessionLease | None = None
        self._session: aiohttp.ClientSession | None = None
        # The last progress request and what sending it needs (the poll path repeats it).
        self._progress: tuple[tuple[str, float | None], ApiRequest[Any], _Target] | None = None

    async def _lookup_settings(self) -> ConnectionSettings:
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn = await get_async_connection(self.smartflows_conn_id, hook=self)
        if conn.password:
            await _mask(conn.password)
        return self._settings_from(conn, await get_async_extra_dejson(conn))

    async def get_settings(self) -> ConnectionSettings:
        """The validated connection, from the loop's short-lived cache of lookups (:mod:`.sessions`)."""
        if self._settings is None:
            self._settings = await cached_settings(
                self.smartflows_conn_id, self.timeout, self._lookup_settings
            )
        return self._settings

    async def __aenter__(self) -> SmartFlowsAsyncHook:
        settings = await self.get_settings()
        self._lease = await acquire_session(settings, lambda: _ssl_option(settings))
        self._session = self._lease.session
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the shared session (the last hook to leave closes it)."""
        lease, self._lease, self._session = self._lease, None, None
        if lease is not None:
            await lease.release()

    async def execution_url(self, execution_id: str) -> str:
        """Link to the execution in the Smart Flows UI (connection extra ``execution_url_template``)."""
        return (await self.get_settings()).execution_url(validate_id(execution_id, "execution"))

    # ----------------------------------------------------------------- transport

    async def _send(self, request: ApiRequest[Any], settings: ConnectionSettings, target: _Target) -> Answer:
        """Send one request as it is (no redirect followed); no answer raises SmartFlowsConnectionError."""
        if self._session is None:
            raise SmartFlowsError(
                "SmartFlowsAsyncHook is used outside `async with`: write "
                "`async with SmartFlowsAsyncHook(conn_id) as hook:`."
            )
        try:
            async with self._session.request(
                request.method,
                target.url,
                data=request.body,
                headers=request.headers or None,
                timeout=target.timeout,
                proxy=target.proxy,
                allow_redirects=False,
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            sent, reason = _network_reason(exc)
            raise connection_error(
                settings, request.method, request.path, request_sent=sent, reason=reason
            ) from exc

    async def _call(self, request: ApiRequest[T], target: _Target | None = None) -> T:
        """One API call under the retry policy; raises the matching SmartFlowsApiError subclass.

        A refused key may be a cached lookup of a key rotated since (:mod:`.sessions` caches
        lookups): the connection is looked up again and, if its key or URL changed, the call is
        made once more with it.
        """
        try:
            return await self._call_once(request, target)
        except SmartFlowsAuthError:
            if not await self._reload_settings():
                raise
            return await self._call_once(request)

    async def _reload_settings(self) -> bool:
        """Look the connection up afresh; True if it changed (the hook then uses its session)."""
        old = self._settings
        if old is None or self._lease is None:
            return False
        forget_settings(self.smartflows_conn_id, stale=old)
        self._settings = None
        new = await self.get_settings()
        if SessionKey.of(new) == SessionKey.of(old):
            return False
        lease, self._progress = self._lease, None
        self._lease = await acquire_session(new, lambda: _ssl_option(new))
        self._session = self._lease.session
        await lease.release()
        return True

    async def _call_once(self, request: ApiRequest[T], target: _Target | None = None) -> T:
        settings = await self.get_settings()
        if target is None:
            target = _Target.of(request, settings)

        async def attempt() -> T:
            return read_answer(request, await self._send(request, settings, target), settings)

        if self.retry_limit == 0:  # the trigger's case: it counts failures itself; skip tenacity's cost
            return await attempt()
        return await tenacity.AsyncRetrying(**self._retry_arguments(self.log))(attempt)

    # ----------------------------------------------------------------- calls

    async def get_progress(
        self, execution_id: str, *, wait_seconds: float | None = None
    ) -> ExecutionProgress:
        """Progress of an execution; with ``wait_seconds`` a long-poll (the timeout grows by it),
        at most ``[smartflows] max_long_poll_seconds`` (see :mod:`.sessions`)."""
        # A trigger repeats one request per poll: build it (checks, URL, query, timeout) once.
        cache_key = (execution_id, wait_seconds)
        if self._progress is None or self._progress[0] != cache_key:
            if wait_seconds is not None:
                wait_seconds = min(wait_seconds, max_long_poll_seconds())
            request = progress_request(execution_id, wait_seconds)
            self._progress = (cache_key, request, _Target.of(request, await self.get_settings()))
        _, request, target = self._progress
        return await self._call(request, target)

    async def get_execution(self, execution_id: str) -> Execution:
        """The full execution (status, flow, errors, warnings, documents)."""
        return await self._call(execution_request(execution_id))

    async def cancel_execution(self, execution_id: str) -> ExecutionProgress:
        """Cancel an execution (DELETE; the path is the connection extra ``cancel_path``)."""
        validate_id(execution_id, "execution")
        return await self._call(cancel_request(execution_id, await self.get_settings()))

    # ----------------------------------------------------------------- listings (every page)

    async def list_flows(
        self, *, page_size: int = LIST_PAGE_SIZE, max_pages: int = LIST_MAX_PAGES
    ) -> list[dict[str, Any]]:
        """The flows visible to the API key's user, every page (as :meth:`.SmartFlowsHook.list_flows`)."""
        return await self._read_pages(flows_paging(page_size, max_pages))

    async def list_executions(
        self,
        flow_id: str | None = None,
        *,
        filter: str | None = None,
        page_size: int = LIST_PAGE_SIZE,
        max_pages: int = LIST_MAX_PAGES,
    ) -> list[Any]:
        """Executions (of one flow, or all the key may see), newest first, every page; ``filter``: one
        ``field:value`` (a "contains" match, e.g. ``"status:Error"``). Raw FlowExecution objects."""
        return await self._read_pages(executions_paging(flow_id, filter, page_size, max_pages))

    async def list_all_documents(
        self, *, filter: str | None = None, page_size: int = LIST_PAGE_SIZE, max_pages: int = LIST_MAX_PAGES
    ) -> list[DocumentInfo]:
        """Every document the key may see, every page (as :meth:`.SmartFlowsHook.list_all_documents`)."""
        return document_infos(await self._read_pages(documents_paging(filter, page_size, max_pages)))

    async def filter_documents(
        self,
        conditions: Iterable[Condition] | Mapping[str, Any],
        *,
        match: str = "and",
        page_size: int = LIST_PAGE_SIZE,
        max_pages: int = LIST_MAX_PAGES,
    ) -> list[DocumentInfo]:
        """Documents matching a filter, every page (as :meth:`.SmartFlowsHook.filter_documents`)."""
        paging = documents_filter_paging(conditions, match, page_size, max_pages)
        return document_infos(await self._read_pages(paging))

    async def filter_executions(
        self,
        conditions: Sequence[FilterCondition],
        *,
        sort: str = "modifiedAt,asc",
        page: int = 0,
        page_size: int = LIST_PAGE_SIZE,
    ) -> list[Any]:
        """One page of ``POST /flows/executions/filter``: the executions meeting every condition,
        e.g. ``[("status", "in", ["Success"]), ("modifiedAt", "greaterThanOrEqualTo", [ts])]``.
        Raw FlowExecution objects."""
        return await self._call(executions_filter_request(conditions, page=page, size=page_size, sort=sort))

    async def list_executions_page(
        self, *, page: int, page_size: int = LIST_PAGE_SIZE, sort: str = "createdAt,desc"
    ) -> list[Any]:
        """One page of ``GET /flows/executions`` in the order ``sort`` names (``field,asc|desc``)."""
        return await self._call(executions_page_request(None, page, page_size, sort=sort))

    async def get_flow(self, flow: str) -> Any:
        """The flow of that id or name (``GET /flows/{flow}``; an unknown one: SmartFlowsNotFoundError)."""
        return await self._call(flow_request(flow))

    async def current_user(self) -> Any:
        """The API key's own user (``GET /users/me``)."""
        return await self._call(GET_CURRENT_USER.request())

    async def _read_pages(self, paging: Paging[T]) -> list[T]:
        """:func:`.api.read_pages` with ``await``: the same :class:`.api.Paging` decides."""
        while paging.add(await self._call(paging.request())):
            pass
        return paging.items
