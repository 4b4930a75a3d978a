"""``SmartFlowsDiscoveryHook``: read-only questions about a Smart Flows server itself (who the key
is, how it describes and pages its API, how its progress call answers), for ``smartflows-probe``.

Every call is a GET and none changes anything. The probe's decisions are in
:mod:`airflow_provider_smartflows.probe`; this module only sends the requests.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsApiError
from airflow_provider_smartflows.hooks.api import (
    API_DESCRIPTIONS,
    GET_CURRENT_USER,
    GET_SYSTEM_INFO,
    SWAGGER_UI_PAGES,
    executions_page_request,
    progress_request,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook

if TYPE_CHECKING:
    from airflow_provider_smartflows.models import ExecutionProgress

#: Answers that mean "not here" for a description or page the server may not serve.
_ABSENT = frozenset({401, 403, 404, 405})


class SmartFlowsDiscoveryHook(SmartFlowsHook):
    """
    A :class:`.SmartFlowsHook` that asks the server about itself; every call is a GET.

    :param smartflows_conn_id: the ``smartflows`` connection to ask about.
    :param kwargs: as :class:`.SmartFlowsHook` (the probe sends each request once: ``retry_limit=0``).
    """

    def get_current_user(self) -> Any:
        """``GET /users/me``: the key's user."""
        return self._call(GET_CURRENT_USER.request())

    def get_system_info(self) -> Any:
        """``GET /system/info``: version, project, the key's role."""
        return self._call(GET_SYSTEM_INFO.request())

    def get_api_description(self) -> tuple[str, Any] | None:
        """The server's own API description as ``(path, parsed JSON)``: ``/v3/api-docs`` (OpenAPI 3),
        else ``/v2/api-docs`` (Swagger 2.0); None when it serves neither."""
        for endpoint in API_DESCRIPTIONS:
            try:
                return endpoint.path, self._call(endpoint.request())
            except SmartFlowsApiError as err:
                if err.status_code not in _ABSENT:
                    raise
        return None

    def get_swagger_ui(self) -> str | None:
        """The path of the Swagger UI page the server serves (``/swagger-ui/``, older servers
        ``/swagger-ui.html``), or None."""
        settings, session = self.settings, self.get_conn()
        for endpoint in SWAGGER_UI_PAGES:
            response = self._send(endpoint.request(headers={"Accept": "text/html"}), settings, session)
            with response:
                if response.status_code < 300:
                    return endpoint.path
                if response.status_code not in _ABSENT:
                    return None
        return None

    def get_executions_page(self, page: int | None = None, size: int | None = None) -> list[Any]:
        """One page of all executions the key may see, newest first; None: the parameter is not
        sent (the server's default)."""
        return self._call(executions_page_request(None, page, size))

    def time_progress(self, execution_id: str, wait_seconds: float) -> tuple[ExecutionProgress, float]:
        """A long-poll of the progress with ``timeout=wait_seconds``: the progress and the seconds
        the server took to answer."""
        started = time.monotonic()
        progress = self._call(progress_request(execution_id, wait_seconds))
        return progress, time.monotonic() - started
