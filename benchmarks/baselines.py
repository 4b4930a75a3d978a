"""The two contenders of B1 that are not this provider: what a user would otherwise build.

(b) :class:`ProgressHttpSensorTrigger` is the HTTP provider's ``HttpSensorTrigger`` (its hook, its
    ``run`` loop: a new ``aiohttp.ClientSession`` per poll, ``HttpAsyncHook.run``, then
    ``asyncio.sleep(poke_interval)``). As shipped it fires on the first answer that is not a 404, and
    the progress endpoint answers 200 while the execution runs, so it cannot wait for a status by
    itself; the only change is a check of the body's ``status`` (what ``HttpSensor``'s
    ``response_check`` would do on a worker) before deciding to fire or to sleep again.

(c) :class:`DbtCloudPatternTrigger` re-implements, for the Smart Flows progress endpoint, the polling
    of the dbt Cloud provider (``apache-airflow-providers-dbt-cloud``, not installed here):
    ``DbtCloudRunJobTrigger.run`` (``triggers/dbt.py``: ``while True``: ``hook.get_job_status``, stop on a
    terminal status, else ``asyncio.sleep(poll_interval)``) and ``DbtCloudHook.get_job_details``
    (``hooks/dbt.py``: headers from the connection, then ``async with aiohttp.ClientSession(headers=...)``
    and ``session.get(url)``, ``raise_for_status()``, ``await response.json()``, one session and so one
    TCP connection per poll; ``get_job_status`` logs "Getting the status of job run ..." at INFO each
    poll). The connection is read once per hook (``DbtCloudHook.connection`` is a cached property).
"""

from __future__ import annotations

import asyncio
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

import aiohttp
from airflow.providers.common.compat.sdk import AirflowException, BaseHook
from airflow.providers.http.triggers.http import HttpSensorTrigger
from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Smart Flows statuses after which an execution never changes (or needs a person).
FINAL = {"Success", "Warning", "Error", "Canceled", "Interrupted", "UserInput", "SelectFlow"}


class ProgressHttpSensorTrigger(HttpSensorTrigger):
    """``HttpSensorTrigger`` polling ``GET .../progress`` until the body's status is final."""

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._get_async_hook()
        while True:
            try:
                async with aiohttp.ClientSession() as session:
                    response = await hook.run(
                        session=session,
                        endpoint=self.endpoint,
                        data=self.data,
                        headers=self.headers,
                        extra_options=self.extra_options,
                    )
                    body = await response.json()
                if body.get("status") in FINAL:
                    yield TriggerEvent({"status": body["status"], "execution_id": body.get("id")})
                    return
            except AirflowException as exc:
                if not str(exc).startswith("404"):
                    raise
            await asyncio.sleep(self.poke_interval)


class DbtCloudPatternHook(BaseHook):
    """The request path of ``DbtCloudHook.get_job_details`` / ``get_job_status``, for Smart Flows."""

    def __init__(self, conn_id: str, timeout_seconds: float | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.timeout_seconds = timeout_seconds

    @cached_property
    def connection(self) -> Any:
        return self.get_connection(self.conn_id)

    async def get_headers_from_connection(self) -> tuple[dict[str, str], str]:
        headers = {"User-Agent": "bench-dbt-pattern", "Content-Type": "application/json"}
        headers["X-API-Key"] = self.connection.password
        return headers, self.connection.host

    async def get_job_details(self, execution_id: str) -> Any:
        headers, base_url = await self.get_headers_from_connection()
        url = f"{base_url}/api/v1/flows/executions/{execution_id}/progress"
        timeout = (
            aiohttp.ClientTimeout(total=self.timeout_seconds) if self.timeout_seconds is not None else None
        )
        async with (
            aiohttp.ClientSession(headers=headers, timeout=timeout) as session,
            session.get(url) as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def get_job_status(self, execution_id: str) -> str:
        self.log.info("Getting the status of job run %s.", execution_id)
        response = await self.get_job_details(execution_id)
        return str(response["status"])


class DbtCloudPatternTrigger(BaseTrigger):
    """``DbtCloudRunJobTrigger.run``'s loop: poll, stop on a terminal status, else sleep a fixed interval."""

    def __init__(self, conn_id: str, execution_id: str, end_time: float, poll_interval: float) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.execution_id = execution_id
        self.end_time = end_time
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "execution_id": self.execution_id,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DbtCloudPatternHook(self.conn_id)
        try:
            while True:
                now = time.time()
                status = await hook.get_job_status(self.execution_id)
                if status in FINAL:
                    yield TriggerEvent({"status": status, "execution_id": self.execution_id})
                    return
                if self.end_time <= now:
                    yield TriggerEvent({"status": "error", "execution_id": self.execution_id})
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:
            yield TriggerEvent({"status": "error", "message": str(exc), "execution_id": self.execution_id})
