"""The shared session of SmartFlowsAsyncHook (hooks/sessions.py) over real HTTP to the emulator."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsAuthError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.connection import ConnectionSettings
from airflow_provider_smartflows.hooks.sessions import (
    SessionKey,
    acquire_session,
    cached_settings,
    forget_settings,
    key_fingerprint,
    loops_with_sessions,
    pool_limit,
    shared_sessions,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.models import ExecutionStatus
from tests.support.waits import wait_until_async

HOUR = 3600.0


@pytest.fixture
def running(smartflows_emulator: Any, smartflows_conn: str) -> Any:
    """Start executions that stay Running for an hour; returns a function of how many."""
    smartflows_emulator.add_flow(
        {"id": "t-running", "steps": [{"message": "Working", "percentage": 40, "seconds": HOUR}]}
    )
    hook = SmartFlowsHook(smartflows_conn, retry_limit=0)

    def start(count: int = 1) -> list[str]:
        return [hook.start_execution("t-running").id for _ in range(count)]

    return start


async def parked(emulator: Any, count: int, timeout: float = 20.0) -> None:
    """Until ``count`` long-polls are parked in the emulator (bounded: a failure never hangs)."""
    await wait_until_async(
        lambda: sum(e["long_polls"] for e in emulator.executions) >= count,
        timeout,
        message=f"{count} long-polls to reach the server",
    )


@pytest.mark.asyncio
async def test_two_hooks_of_one_connection_share_one_session(smartflows_emulator, smartflows_conn, running):
    (execution_id,) = running()
    async with SmartFlowsAsyncHook(smartflows_conn) as first, SmartFlowsAsyncHook(smartflows_conn) as second:
        assert first._session is second._session
        (info,) = shared_sessions()
        assert info.users == 2
        assert info.key.conn_id == smartflows_conn
        await first.get_progress(execution_id)
        await second.get_progress(execution_id)
    assert len(smartflows_emulator.requests_to("GET", "/progress$")) == 2


@pytest.mark.asyncio
async def test_the_last_hook_to_leave_closes_the_session(smartflows_conn, running):
    (execution_id,) = running()
    first = SmartFlowsAsyncHook(smartflows_conn)
    async with first:
        session = first._session
        async with SmartFlowsAsyncHook(smartflows_conn) as second:
            await second.get_progress(execution_id)
        assert not session.closed
        assert [info.users for info in shared_sessions()] == [1]
        assert (await first.get_progress(execution_id)).status is ExecutionStatus.RUNNING
    assert session.closed
    assert shared_sessions() == []
    async with SmartFlowsAsyncHook(smartflows_conn) as again:
        assert again._session is not session
        assert not again._session.closed


@pytest.mark.asyncio
async def test_a_changed_key_gets_a_new_session(smartflows_emulator, set_conn, running):
    (execution_id,) = running()
    conn_id = set_conn("sf_keys")
    async with SmartFlowsAsyncHook(conn_id) as old:
        set_conn("sf_keys", key=smartflows_emulator.user_key)
        async with SmartFlowsAsyncHook(conn_id) as cached:  # the lookup is cached: same key
            assert cached._session is old._session
        forget_settings(conn_id)
        async with SmartFlowsAsyncHook(conn_id) as new:
            assert new._session is not old._session
            fingerprints = {info.key.key_fingerprint for info in shared_sessions()}
            assert fingerprints == {
                key_fingerprint(smartflows_emulator.api_key),
                key_fingerprint(smartflows_emulator.user_key),
            }
            await new.get_progress(execution_id)
            await old.get_progress(execution_id)
        assert not old._session.closed
    users = [r["user"] for r in smartflows_emulator.requests_to("GET", "/progress$")]
    assert len(set(users)) == 2


@pytest.mark.asyncio
async def test_a_changed_url_gets_a_new_session(smartflows_emulator, set_conn, running, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SMARTFLOWS__CONNECTION_CACHE_SECONDS", "0")
    conn_id = set_conn("sf_url")
    async with SmartFlowsAsyncHook(conn_id) as old:
        url = smartflows_emulator.base_url.replace("127.0.0.1", "localhost")
        monkeypatch.setenv(
            "AIRFLOW_CONN_SF_URL",
            smartflows_emulator.connection_json().replace(smartflows_emulator.base_url, url),
        )
        async with SmartFlowsAsyncHook(conn_id) as new:
            assert new._session is not old._session
            assert {info.key.base_url for info in shared_sessions()} == {smartflows_emulator.base_url, url}


@pytest.mark.asyncio
async def test_two_connections_are_kept_apart(set_conn, running):
    (execution_id,) = running()
    async with SmartFlowsAsyncHook(set_conn("sf_one")) as one, SmartFlowsAsyncHook(set_conn("sf_two")) as two:
        assert one._session is not two._session
        assert sorted(info.key.conn_id for info in shared_sessions()) == ["sf_one", "sf_two"]
        await one.get_progress(execution_id)
        await two.get_progress(execution_id)
    assert shared_sessions() == []


@pytest.mark.asyncio
async def test_a_request_cancelled_midway_leaves_the_session_usable(
    smartflows_emulator, smartflows_conn, running
):
    first_id, second_id = running(2)
    async with SmartFlowsAsyncHook(smartflows_conn, retry_limit=0) as other:
        async with SmartFlowsAsyncHook(smartflows_conn, retry_limit=0) as hook:
            poll = asyncio.create_task(hook.get_progress(first_id, wait_seconds=60))
            await parked(smartflows_emulator, 1)
            poll.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poll
        assert not other._session.closed
        assert [info.users for info in shared_sessions()] == [1]
        # The pool still works, for a long-poll (the emulator answers it after 1 s) and a plain call.
        assert (await other.get_progress(second_id, wait_seconds=1)).id == second_id
        assert (await other.get_progress(first_id)).status is ExecutionStatus.RUNNING


@pytest.mark.asyncio
async def test_more_parked_long_polls_than_aiohttps_default_pool(
    smartflows_emulator, smartflows_conn, running
):
    """aiohttp's default pool (100) would queue the 101st long-poll; the shared pool parks them all."""
    count = 150
    assert pool_limit() >= count
    ids = running(count)
    async with SmartFlowsAsyncHook(smartflows_conn, retry_limit=0) as hook:
        polls = [asyncio.create_task(hook.get_progress(ex, wait_seconds=60)) for ex in ids]
        try:
            await parked(smartflows_emulator, count)
            assert shared_sessions()[0].connections_limit == pool_limit()
        finally:
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)


def test_the_pool_limit_is_a_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__SMARTFLOWS__MAX_CONNECTIONS_PER_SESSION", "12345")
    assert pool_limit() == 12345


def test_nothing_outlives_the_loop(smartflows_emulator):
    """Neither the session nor the registry keeps a finished loop (Airflow's connection lookup
    remembers its loop by itself, so the sessions are joined here without a lookup)."""
    settings = ConnectionSettings("sf_loop", smartflows_emulator.base_url, smartflows_emulator.api_key)
    # An earlier test's loop may be cyclic garbage still in the registry (a raised exception's
    # traceback holds it) until a collection: collect first, or the gc.collect() below drops it too.
    gc.collect()
    before = loops_with_sessions()
    seen: dict[str, Any] = {}

    async def use() -> None:
        lease = await acquire_session(settings, no_tls)
        async with lease.session.get(f"{smartflows_emulator.base_url}/api/v1/flows") as response:
            seen["status"] = response.status
        await lease.release()
        seen["closed"] = lease.session.closed
        seen["registry"] = shared_sessions()
        seen["loop"] = weakref.ref(asyncio.get_running_loop())

    asyncio.run(use())
    gc.collect()
    assert seen["status"] == 200
    assert seen["closed"]
    assert seen["registry"] == []
    assert seen["loop"]() is None
    assert loops_with_sessions() == before


async def no_tls() -> bool:
    return True


@pytest.mark.asyncio
async def test_one_lookup_for_many_hooks_starting_at_once():
    calls: list[int] = []
    settings = ConnectionSettings("sf_x", "http://127.0.0.1:1", "secret-key")

    async def lookup() -> ConnectionSettings:
        calls.append(1)
        await asyncio.sleep(0)
        return settings

    results = await asyncio.gather(*(cached_settings("sf_x", None, lookup) for _ in range(50)))
    assert calls == [1]
    assert all(result is settings for result in results)


@pytest.mark.asyncio
async def test_a_failed_lookup_is_not_cached():
    settings = ConnectionSettings("sf_y", "http://127.0.0.1:1", "secret-key")
    answers: list[Any] = [SmartFlowsInputError("connection 'sf_y' has no Host"), settings]

    async def lookup() -> ConnectionSettings:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(SmartFlowsInputError, match="no Host"):
        await cached_settings("sf_y", None, lookup)
    assert await cached_settings("sf_y", None, lookup) is settings


@pytest.mark.asyncio
async def test_the_registry_never_shows_the_key(smartflows_emulator, smartflows_conn):
    async with SmartFlowsAsyncHook(smartflows_conn):
        text = repr(shared_sessions()) + str(SessionKey.of(ConnectionSettings("c", "http://h", "k-123456")))
    assert smartflows_emulator.api_key not in text
    assert "k-123456" not in text


@pytest.mark.asyncio
async def test_triggers_of_one_connection_share_one_session_and_close_it_when_cancelled(
    smartflows_emulator, smartflows_conn, running
):
    """As in a triggerer: two waits park their long-polls on one session; removing both closes it."""
    from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger

    async def first_event(trigger: SmartFlowsExecutionTrigger) -> Any:
        async for event in trigger.run():
            return event

    triggers = [
        SmartFlowsExecutionTrigger(ex, smartflows_conn, poll_interval=60, end_time=time.time() + HOUR)
        for ex in running(2)
    ]
    tasks = [asyncio.create_task(first_event(trigger)) for trigger in triggers]
    await parked(smartflows_emulator, 2)
    (info,) = shared_sessions()
    assert info.users == 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert shared_sessions() == []


@pytest.mark.asyncio
async def test_long_polls_are_capped_by_the_setting(
    smartflows_emulator, smartflows_conn, running, monkeypatch
):
    """A proxy that cuts quiet connections after a minute: the operator caps every long-poll."""
    (execution_id,) = running()
    monkeypatch.setenv("AIRFLOW__SMARTFLOWS__MAX_LONG_POLL_SECONDS", "1")
    async with SmartFlowsAsyncHook(smartflows_conn, retry_limit=0) as hook:
        assert (await hook.get_progress(execution_id, wait_seconds=120)).status is ExecutionStatus.RUNNING
    (request,) = smartflows_emulator.requests_to("GET", "/progress$")
    assert request["query"]["timeout"] == "1"


@pytest.mark.asyncio
async def test_a_rotated_key_is_looked_up_again_after_a_refusal(smartflows_emulator, set_conn, running):
    """The cached lookup still holds the revoked key: the 401 makes the hook look the connection
    up again and repeat the call once with the new key."""
    (execution_id,) = running()
    conn_id = set_conn("sf_rotated", key=smartflows_emulator.revoked_key)
    async with SmartFlowsAsyncHook(conn_id, retry_limit=0):  # caches the revoked key
        set_conn("sf_rotated")  # the key is rotated in the connection
        async with SmartFlowsAsyncHook(conn_id, retry_limit=0) as hook:
            assert (await hook.get_progress(execution_id)).status is ExecutionStatus.RUNNING
            assert (await hook.get_progress(execution_id)).status is ExecutionStatus.RUNNING
    assert [r["status"] for r in smartflows_emulator.requests_to("GET", "/progress$")] == [401, 200, 200]


@pytest.mark.asyncio
async def test_a_refused_key_that_did_not_change_is_not_tried_again(smartflows_emulator, set_conn, running):
    (execution_id,) = running()
    conn_id = set_conn("sf_revoked", key=smartflows_emulator.revoked_key)
    async with SmartFlowsAsyncHook(conn_id, retry_limit=0) as hook:
        with pytest.raises(SmartFlowsAuthError):
            await hook.get_progress(execution_id)
    assert [r["status"] for r in smartflows_emulator.requests_to("GET", "/progress$")] == [401]
