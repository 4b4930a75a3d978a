"""What the sync and the async hook share: the connection type, the checked call options, the
retry arguments and the way an Airflow connection becomes :class:`ConnectionSettings`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID, ConnectionSettings
from airflow_provider_smartflows.hooks.retry import check_retry_arguments, retry_arguments
from airflow_provider_smartflows.validation import check_optional_number

if TYPE_CHECKING:
    from collections.abc import Mapping


class SmartFlowsHookOptions:
    """Mixin of both hooks: connection type attributes and the options every call uses."""

    conn_name_attr = "smartflows_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "smartflows"
    hook_name = "Smart Flows"
    #: Seconds (connect and read) of the connection test's single attempt; shorter timeouts win.
    test_connection_timeout = 10.0

    def _set_options(
        self,
        smartflows_conn_id: str,
        timeout: float | None,
        retry_limit: int,
        retry_delay: float,
        max_retry_delay: float,
    ) -> None:
        check_retry_arguments(retry_limit, retry_delay, max_retry_delay)
        check_optional_number("timeout", timeout, above=0, unit="a number of seconds")
        self.smartflows_conn_id = smartflows_conn_id
        self.timeout = timeout
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay

    def _retry_arguments(self, log: Any) -> dict[str, Any]:
        return retry_arguments(
            retry_limit=self.retry_limit,
            retry_delay=self.retry_delay,
            max_retry_delay=self.max_retry_delay,
            log=log,
        )

    def _settings_from(
        self, conn: Any, extra: Mapping[str, Any] | None, *, for_test: bool = False
    ) -> ConnectionSettings:
        """Validate an Airflow connection. ``for_test``: the short timeout of a connection test, and
        messages that do not name the connection id (the UI tests an unsaved copy under a random id).
        """
        settings = ConnectionSettings.from_connection(
            self.smartflows_conn_id,
            host=conn.host,
            port=conn.port,
            password=conn.password,
            extra=extra,
            timeout=self.timeout,
            label="the connection" if for_test else None,
        )
        if for_test:
            return dataclasses.replace(settings, timeout=min(settings.timeout, self.test_connection_timeout))
        return settings

    def __repr__(self) -> str:
        return f"{type(self).__name__}(smartflows_conn_id={self.smartflows_conn_id!r})"
