"""``SmartFlowsAsyncHook``: the aiohttp client of the Smart Flows API, for triggers.

Same connection handling and retry policy as :class:`SmartFlowsHook`; nothing blocking runs on
the event loop (the connection and the TLS context are resolved in worker threads).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import aiohttp
import tenacity
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsError,
)
from airflow_provider_smartflows.hooks.common import (
    API_PREFIX,
    DEFAULT_CONN_ID,
    TLS_UNTRUSTED,
    ConnectionSettings,
    SmartFlowsHookOptions,
    body_excerpt,
    connection_error,
    error_from_status,
    retry_arguments,
    validate_id,
    validate_wait_seconds,
)
from airflow_provider_smartflows.models import Execution, ExecutionProgress

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

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
        return False, "TLS error"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False, "connection refused"
    if isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return True, "read timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True, "connection reset"
    return True, type(exc).__name__


class SmartFlowsAsyncHook(SmartFlowsHookOptions, BaseHook):
    """
    Call the Smart Flows REST API from an event loop; use as ``async with SmartFlowsAsyncHook(...) as hook``.

    One ``aiohttp.ClientSession`` (bounded connector) lives as long as the ``async with`` block.

    :param smartflows_conn_id: a ``smartflows`` connection (see ``hooks.common``).
    :param timeout: seconds per request; overrides the connection's ``timeout`` extra.
    :param retry_limit: retries after the first attempt (0: none).
    :param retry_delay: first backoff delay in seconds, doubled per retry, with jitter.
    :param max_retry_delay: cap of any delay, including a server's Retry-After.
    :param max_connections: size of the connection pool.
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
        self._session: aiohttp.ClientSession | None = None

    async def get_settings(self) -> ConnectionSettings:
        """The validated connection, resolved once through common-compat's async helpers."""
        if self._settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.smartflows_conn_id, hook=self)
            if conn.password:
                await _mask(conn.password)
            self._settings = ConnectionSettings.from_connection(
                self.smartflows_conn_id,
                host=conn.host,
                port=conn.port,
                password=conn.password,
                extra=await get_async_extra_dejson(conn),
                timeout=self.timeout,
            )
        return self._settings

    async def __aenter__(self) -> SmartFlowsAsyncHook:
        settings = await self.get_settings()
        ssl_option: ssl.SSLContext | bool = True
        if isinstance(settings.verify, str):
            # Reading a CA bundle is file I/O: keep it off the event loop.
            ssl_option = await asyncio.to_thread(ssl.create_default_context, cafile=settings.verify)
        elif settings.verify is False:
            ssl_option = False
        self._session = aiohttp.ClientSession(
            headers=settings.headers,
            connector=aiohttp.TCPConnector(limit=self.max_connections, ssl=ssl_option),
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def execution_url(self, execution_id: str) -> str:
        """Link to the execution in the Smart Flows UI (connection extra ``execution_url_template``)."""
        return (await self.get_settings()).execution_url(validate_id(execution_id, "execution"))

    async def _request_json(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: dict[str, Any] | None = None,
        extra_timeout: float = 0.0,
        subject: str | None = None,
    ) -> T:
        if self._session is None:
            raise SmartFlowsError(
                "SmartFlowsAsyncHook is used outside `async with`: write "
                "`async with SmartFlowsAsyncHook(conn_id) as hook:`."
            )
        session = self._session
        settings = await self.get_settings()
        url = f"{settings.base_url}{API_PREFIX}{path}"
        proxy = settings.proxies.get(url.split(":", 1)[0])
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.timeout, sock_read=settings.timeout + extra_timeout
        )

        async def attempt() -> T:
            try:
                async with session.request(
                    method, url, params=params, timeout=timeout, proxy=proxy, allow_redirects=False
                ) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                sent, reason = _network_reason(exc)
                raise connection_error(settings, method, path, request_sent=sent, reason=reason) from exc
            if status >= 300:
                raise error_from_status(
                    conn_id=settings.conn_id,
                    method=method,
                    path=path,
                    status_code=status,
                    body=raw,
                    retry_after_header=retry_after,
                    api_key=settings.api_key,
                    subject=subject,
                )
            try:
                return parse(json.loads(raw))
            except (ValueError, RecursionError) as err:
                raise SmartFlowsApiError(
                    f"Smart Flows {method} {path} answered {status} with a body that is not the "
                    f"expected JSON (connection {settings.conn_id!r}): {err}. Is the Host the Smart "
                    "Flows server and not a proxy or login page?",
                    status_code=status,
                    method=method,
                    path=path,
                    body_excerpt=body_excerpt(raw, settings.api_key),
                    conn_id=settings.conn_id,
                ) from None

        if self.retry_limit == 0:  # the trigger's case: it counts failures itself; skip tenacity's cost
            return await attempt()
        retrying = tenacity.AsyncRetrying(
            **retry_arguments(
                retry_limit=self.retry_limit,
                retry_delay=self.retry_delay,
                max_retry_delay=self.max_retry_delay,
                log=self.log,
            )
        )
        return await retrying(attempt)

    async def get_progress(
        self, execution_id: str, *, wait_seconds: float | None = None
    ) -> ExecutionProgress:
        """Progress of an execution; with ``wait_seconds`` a long-poll (the timeout grows by it)."""
        execution_id = validate_id(execution_id, "execution")
        wait = validate_wait_seconds(wait_seconds)
        return await self._request_json(
            "GET",
            f"/flows/executions/{quote(execution_id, safe='')}/progress",
            ExecutionProgress.from_json,
            params={"timeout": wait} if wait is not None else None,
            extra_timeout=float(wait or 0),
            subject=f"Execution {execution_id!r}",
        )

    async def get_execution(self, execution_id: str) -> Execution:
        """The full execution (status, flow, errors, warnings, documents)."""
        execution_id = validate_id(execution_id, "execution")
        return await self._request_json(
            "GET",
            f"/flows/executions/{quote(execution_id, safe='')}",
            Execution.from_json,
            subject=f"Execution {execution_id!r}",
        )

    async def cancel_execution(self, execution_id: str) -> ExecutionProgress:
        """Cancel an execution (DELETE; the path is the connection extra ``cancel_path``)."""
        execution_id = validate_id(execution_id, "execution")
        settings = await self.get_settings()
        return await self._request_json(
            "DELETE",
            settings.cancel_endpoint(execution_id),
            ExecutionProgress.from_json,
            subject=f"Execution {execution_id!r}",
        )
