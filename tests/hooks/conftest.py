"""Fixtures of the hook tests: hooks with small retry delays, connections, flows to drive."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Small delays keep retry tests fast; Retry-After tests use the server's value.
RETRY = {"retry_limit": 3, "retry_delay": 0.01, "max_retry_delay": 2.0}
HOUR = 3600.0


@pytest.fixture
def hook(smartflows_conn: str) -> Iterator[SmartFlowsHook]:
    sync_hook = SmartFlowsHook(smartflows_conn, timeout=5, **RETRY)
    try:
        yield sync_hook
    finally:
        sync_hook.close()


@pytest.fixture
def set_conn(smartflows_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define connection ``conn_id`` (default ``sf_test``) on the emulator with a key and extras."""

    def define(conn_id: str = "sf_test", *, key: str | None = None, **extra: Any) -> str:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", smartflows_emulator.connection_json(key, **extra)
        )
        return conn_id

    return define


@pytest.fixture
def long_flows(smartflows_emulator: Any) -> dict[str, str]:
    """Flows that stay Queued / Running for an hour, so those statuses can be observed."""
    return {
        "queued": smartflows_emulator.add_flow(
            {
                "id": "t-queued",
                "queued_seconds": HOUR,
                "steps": [{"message": "m", "percentage": 10, "seconds": 1}],
            }
        ),
        "running": smartflows_emulator.add_flow(
            {"id": "t-running", "steps": [{"message": "Working", "percentage": 40, "seconds": HOUR * 50}]}
        ),
    }
