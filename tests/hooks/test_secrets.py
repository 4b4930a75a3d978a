"""A canary API key must appear in no log line, exception text or repr."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
from airflow.providers.common.compat.sdk import redact

from airflow_provider_smartflows.emulator.server import EmulatorServer
from airflow_provider_smartflows.exceptions import SmartFlowsError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from tests.support.waits import progress_until

CANARY = "sf-canary-7f3a9c1e5b2d4f60a8e1"


@pytest.fixture(scope="module")
def canary_emulator():
    """An emulator whose admin key is the canary (so successful calls carry it too)."""
    server = EmulatorServer(
        scenario={"api_keys": [{"key": CANARY, "user": "canary-user", "role": "admin"}]}, speedup=50
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def canary_conn(canary_emulator, monkeypatch):
    canary_emulator.reset()
    monkeypatch.setenv("AIRFLOW_CONN_SF_CANARY", canary_emulator.connection_json(CANARY))
    return "sf_canary"


def exercise(hook, emulator, tmp_path):
    """Every kind of call and failure, collecting the texts and reprs of what it raised."""
    texts = [repr(hook), str(hook.__dict__), repr(hook.settings)]
    assert hook.test_connection()[0]
    progress = progress_until(hook, hook.start_execution("hello").id)
    (document,) = hook.list_documents(progress.id)
    hook.download_document(document.id, f"{tmp_path}/")
    emulator.add_fault("status", path="/flows$", status=500, times=None, body=f"echo {CANARY}")
    emulator.add_fault("html", path="/documents/", status=502, times=None)
    emulator.add_fault("reset", method="POST", times=None)
    emulator.add_fault("status", path="/progress$", status=401, times=None)
    calls = [
        hook.list_flows,
        lambda: hook.get_document(document.id),
        lambda: hook.start_execution("hello"),
        lambda: hook.get_progress(progress.id),
        lambda: hook.download_document("nope", f"{tmp_path}/x.pdf"),
    ]
    for call in calls:
        with pytest.raises(SmartFlowsError) as info:
            call()
        error = info.value
        texts += [str(error), repr(error), json.dumps(error.fields()), str(pickle.loads(pickle.dumps(error)))]
        texts += [str(error.__cause__), repr(error.__cause__)]
    return texts


def test_canary_key_absent_from_logs_and_errors(canary_emulator, canary_conn, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    hook = SmartFlowsHook(canary_conn, retry_delay=0.01, retry_limit=1)
    texts = exercise(hook, canary_emulator, tmp_path)
    captured = capsys.readouterr()
    assert "Smart Flows GET /flows failed" in caplog.text + captured.out  # the logs were captured
    for text in [*texts, caplog.text, captured.out, captured.err]:
        assert CANARY not in text
    body_echo = [t for t in texts if "echo" in t]
    assert body_echo
    assert all("echo ***" in t for t in body_echo if t.startswith("Smart Flows GET /flows"))


def test_canary_key_of_a_refused_connection_is_absent(canary_emulator, monkeypatch, caplog, capsys):
    wrong = CANARY + "-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_SF_WRONG", canary_emulator.connection_json(wrong))
    hook = SmartFlowsHook("sf_wrong")
    ok, message = hook.test_connection()
    assert not ok
    with pytest.raises(SmartFlowsError) as info:
        hook.get_progress("e1")
    captured = capsys.readouterr()
    for text in [message, str(info.value), repr(info.value), caplog.text, captured.out, captured.err]:
        assert CANARY not in text


def test_key_is_registered_with_the_secret_masker(canary_emulator, canary_conn):
    SmartFlowsHook(canary_conn).settings  # noqa: B018 - loading the connection registers the key
    assert CANARY not in str(redact(f"the key is {CANARY}"))


@pytest.mark.asyncio
async def test_async_hook_keeps_the_canary_out(canary_emulator, canary_conn, caplog, capsys):
    canary_emulator.add_fault("status", path="/progress$", status=503, times=None, body=f"echo {CANARY}")
    texts = []
    async with SmartFlowsAsyncHook(canary_conn, retry_delay=0.01, retry_limit=1) as hook:
        texts.append(repr(hook))
        with pytest.raises(SmartFlowsError) as info:
            await hook.get_progress("e1")
        texts += [str(info.value), repr(info.value), json.dumps(info.value.fields())]
    captured = capsys.readouterr()
    for text in [*texts, caplog.text, captured.out, captured.err]:
        assert CANARY not in text
