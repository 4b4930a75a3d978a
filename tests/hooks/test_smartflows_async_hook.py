"""SmartFlowsAsyncHook (aiohttp) against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsConnectionError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.models import ExecutionStatus
from tests.support.processes import nothing_listens_url
from tests.support.waits import progress_until_async

RETRY = {"retry_delay": 0.01, "max_retry_delay": 2.0}


@pytest.fixture
def sync_hook(smartflows_conn):
    return SmartFlowsHook(smartflows_conn, **RETRY)


def waiting(progress):
    return progress.status is ExecutionStatus.WAITING


async def until_finished(hook, execution_id, deadline=30.0):
    return await progress_until_async(hook, execution_id, timeout=deadline)


@pytest.mark.asyncio
async def test_get_progress_follows_an_execution_to_success(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("hello").id
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        progress = await until_finished(hook, execution_id)
    assert progress.status is ExecutionStatus.SUCCESS
    assert [d.display_name for d in progress.documents] == ["Hello"]
    assert {r["query"].get("timeout") for r in smartflows_emulator.requests_to("GET", "/progress$")} <= {
        None,
        "2",
    }


@pytest.mark.asyncio
async def test_one_session_for_the_whole_block(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("hello").id
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        session = hook._session
        await hook.get_progress(execution_id)
        await hook.get_execution(execution_id)
        assert hook._session is session
    assert session.closed


@pytest.mark.asyncio
async def test_long_poll_extends_the_request_timeout(smartflows_emulator, set_conn, sync_hook):
    execution_id = sync_hook.start_execution("signature").id
    async with SmartFlowsAsyncHook(set_conn(), timeout=0.5, retry_limit=0) as hook:
        await progress_until_async(hook, execution_id, waiting)
        started = time.monotonic()
        progress = await hook.get_progress(execution_id, wait_seconds=1)
    assert progress.status is ExecutionStatus.WAITING
    assert time.monotonic() - started >= 0.9


@pytest.mark.asyncio
async def test_get_execution_of_error(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("error").id
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        await until_finished(hook, execution_id)
        execution = await hook.get_execution(execution_id)
    assert execution.status is ExecutionStatus.ERROR
    assert execution.flow_id == "error"
    assert execution.errors


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("cancel_path", "suffix"), [(None, "/progress"), ("execution", "")], ids=["default", "execution"]
)
async def test_cancel_execution(smartflows_emulator, set_conn, sync_hook, long_flows, cancel_path, suffix):
    extra = {"cancel_path": cancel_path} if cancel_path else {}
    conn_id = set_conn(**extra)
    execution_id = sync_hook.start_execution(long_flows["running"]).id
    async with SmartFlowsAsyncHook(conn_id, **RETRY) as hook:
        progress = await hook.cancel_execution(execution_id)
    assert progress.status is ExecutionStatus.CANCELED
    (request,) = smartflows_emulator.requests_to("DELETE", "")
    assert request["path"] == f"/api/v1/flows/executions/{execution_id}{suffix}"


@pytest.mark.asyncio
async def test_execution_url(smartflows_emulator, smartflows_conn):
    async with SmartFlowsAsyncHook(smartflows_conn) as hook:
        assert await hook.execution_url("e1") == f"{smartflows_emulator.base_url}/executions/e1"


@pytest.mark.asyncio
async def test_retries_503_then_succeeds(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("hello").id
    smartflows_emulator.add_fault("status", path="/progress$", status=503, times=2)
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        await hook.get_progress(execution_id)
    assert [r["status"] for r in smartflows_emulator.requests_to("GET", "/progress$")] == [503, 503, 200]


@pytest.mark.asyncio
async def test_gives_up_after_retry_limit(smartflows_emulator, smartflows_conn):
    smartflows_emulator.add_fault("status", path="/progress$", status=502, times=None)
    async with SmartFlowsAsyncHook(smartflows_conn, retry_limit=2, **RETRY) as hook:
        with pytest.raises(SmartFlowsApiError, match="answered 502"):
            await hook.get_progress("e1")
    assert len(smartflows_emulator.requests_to("GET", "/progress$")) == 3


@pytest.mark.asyncio
async def test_retry_after_is_honoured(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("hello").id
    smartflows_emulator.add_fault("status", path="/progress$", status=429, retry_after=1)
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        started = time.monotonic()
        await hook.get_progress(execution_id)
    assert time.monotonic() - started >= 0.95
    assert len(smartflows_emulator.requests_to("GET", "/progress$")) == 2


@pytest.mark.asyncio
async def test_retries_a_connection_reset(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("hello").id
    smartflows_emulator.add_fault("reset", path="/progress$")
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        await hook.get_progress(execution_id)
    assert len(smartflows_emulator.requests_to("GET", "/progress$")) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ({"kind": "status", "status": 401}, SmartFlowsAuthError),
        ({"kind": "status", "status": 403}, SmartFlowsAuthError),
        ({"kind": "status", "status": 404}, SmartFlowsNotFoundError),
        ({"kind": "status", "status": 400}, SmartFlowsApiError),
        ({"kind": "invalid_json"}, SmartFlowsApiError),
    ],
    ids=["401", "403", "404", "400", "invalid-json"],
)
async def test_error_classes_and_no_retry(smartflows_emulator, smartflows_conn, fault, error_class):
    smartflows_emulator.add_fault(path="/progress$", **fault)
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        with pytest.raises(error_class) as info:
            await hook.get_progress("e1")
    assert type(info.value) is error_class
    assert info.value.conn_id == "smartflows_default"
    assert len(smartflows_emulator.requests_to("GET", "/progress$")) == 1


@pytest.mark.asyncio
async def test_unknown_execution_is_not_found(smartflows_emulator, smartflows_conn):
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        with pytest.raises(SmartFlowsNotFoundError, match="Execution 'missing' was not found"):
            await hook.get_execution("missing")


@pytest.mark.asyncio
async def test_revoked_key(smartflows_emulator, set_conn):
    async with SmartFlowsAsyncHook(set_conn(key=smartflows_emulator.revoked_key)) as hook:
        with pytest.raises(SmartFlowsAuthError, match="connection 'sf_test'"):
            await hook.get_progress("e1")


@pytest.mark.asyncio
async def test_connection_refused_is_retried_then_raised(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_DOWN",
        json.dumps({"conn_type": "smartflows", "host": nothing_listens_url(), "password": "k"}),
    )
    async with SmartFlowsAsyncHook("sf_down", retry_limit=1, **RETRY) as hook:
        with pytest.raises(SmartFlowsConnectionError, match="connection refused") as info:
            await hook.get_progress("e1")
    assert not info.value.request_sent


@pytest.mark.asyncio
async def test_bad_id_fails_before_any_request(smartflows_emulator, smartflows_conn):
    async with SmartFlowsAsyncHook(smartflows_conn) as hook:
        with pytest.raises(SmartFlowsInputError, match="execution id"):
            await hook.get_progress("../admin")
    assert smartflows_emulator.requests == []


@pytest.mark.asyncio
async def test_unknown_extra_fails_on_enter(smartflows_emulator, set_conn):
    with pytest.raises(SmartFlowsInputError, match="unknown extra 'headers'"):
        async with SmartFlowsAsyncHook(set_conn(headers={"a": "b"})):
            pass
    assert smartflows_emulator.requests == []


@pytest.mark.asyncio
async def test_use_outside_async_with_is_an_error(smartflows_conn):
    with pytest.raises(SmartFlowsError, match="async with"):
        await SmartFlowsAsyncHook(smartflows_conn).get_progress("e1")


@pytest.mark.asyncio
async def test_long_poll_does_not_block_the_event_loop(smartflows_emulator, smartflows_conn, sync_hook):
    execution_id = sync_hook.start_execution("signature").id
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        task = asyncio.create_task(ticker())
        await progress_until_async(hook, execution_id, waiting)
        await hook.get_progress(execution_id, wait_seconds=1)
        task.cancel()
    assert ticks >= 10  # the loop kept running during the one-second long-poll


# --------------------------------------------------------------------------- listings (every page)


@pytest.mark.asyncio
async def test_list_flows_reads_every_page(smartflows_emulator, smartflows_conn):
    for n in range(33):
        smartflows_emulator.add_flow({"id": f"extra-{n:02d}", "steps": [{"message": "m", "percentage": 100}]})
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        assert len(await hook.list_flows()) == 46
        assert len(await hook.list_flows(page_size=20)) == 46
    sizes = [r["query"] for r in smartflows_emulator.requests_to("GET", "/flows$")]
    assert sizes == [{"page": "0", "size": "100"}] + [{"page": str(n), "size": "20"} for n in range(3)]


@pytest.mark.asyncio
async def test_list_executions_reads_every_page_newest_first(smartflows_emulator, smartflows_conn, sync_hook):
    started = [sync_hook.start_execution("hello").id for _ in range(23)]
    sync_hook.start_execution("warning")
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        of_flow = await hook.list_executions("hello", page_size=10)
        everything = await hook.list_executions()
        filtered = await hook.list_executions(filter="flow:warning")
    assert [e["id"] for e in of_flow] == started[::-1]
    assert len(everything) == 24
    assert len(filtered) == 1
    (first, *_) = smartflows_emulator.requests_to("GET", "/flows/hello/executions$")
    assert first["query"] == {"sort": "createdAt,desc", "page": "0", "size": "10"}


@pytest.mark.asyncio
async def test_list_stops_at_max_pages(smartflows_emulator, smartflows_conn, sync_hook):
    for _ in range(5):
        sync_hook.start_execution("hello")
    async with SmartFlowsAsyncHook(smartflows_conn, **RETRY) as hook:
        with pytest.raises(
            SmartFlowsError, match=r"list_executions \(GET /api/v1/flows/executions\): 2 pages"
        ):
            await hook.list_executions(page_size=2, max_pages=2)
