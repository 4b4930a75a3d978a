"""Retry policy of SmartFlowsHook, read from the emulator's request log; starts never duplicate work."""

from __future__ import annotations

import email.utils
import json
import re
import time
from datetime import datetime

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsConnectionError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from tests.support.processes import nothing_listens_url

RETRY_LINE = re.compile(r"Smart Flows (\w+) (\S+) failed \(([^)]*)\); retry (\d+) of (\d+) in ([\d.]+) s")


def request_times(requests):
    return [datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() for r in requests]


def settle(emulator, method, path, count, deadline=5.0):
    """Wait until the emulator has logged ``count`` requests (a delayed answer logs late)."""
    end = time.monotonic() + deadline
    while len(emulator.requests_to(method, path)) < count and time.monotonic() < end:
        time.sleep(0.05)
    return emulator.requests_to(method, path)


@pytest.fixture
def retry_lines(caplog, capsys):
    """The retry log lines emitted so far (Airflow's logging may go to either caplog or stdout)."""

    def read():
        captured = capsys.readouterr()
        # Airflow 2 shows a record in both (its root handler prints to stdout): count it once.
        lines = RETRY_LINE.findall(caplog.text) or RETRY_LINE.findall(captured.out + captured.err)
        caplog.clear()
        return lines

    return read


# --------------------------------------------------------------------------- GET / DELETE


def test_get_is_retried_on_503_until_it_succeeds(smartflows_emulator, hook, retry_lines):
    smartflows_emulator.add_fault("status", path="/flows$", status=503, times=2)
    assert hook.list_flows()
    assert [r["status"] for r in smartflows_emulator.requests_to("GET", "/flows$")] == [503, 503, 200]
    lines = retry_lines()
    assert [(m, p, reason, n, limit) for m, p, reason, n, limit, _ in lines] == [
        ("GET", "/flows", "HTTP 503", "1", "3"),
        ("GET", "/flows", "HTTP 503", "2", "3"),
    ]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_get_gives_up_after_retry_limit(smartflows_emulator, hook, status):
    smartflows_emulator.add_fault("status", path="/flows$", status=status, times=None)
    with pytest.raises(SmartFlowsApiError, match=f"answered {status}") as info:
        hook.list_flows()
    assert info.value.status_code == status
    assert len(smartflows_emulator.requests_to("GET", "/flows$")) == 1 + 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
def test_client_errors_are_never_retried(smartflows_emulator, hook, status, retry_lines):
    smartflows_emulator.add_fault("status", path="/flows$", status=status, times=None)
    with pytest.raises(SmartFlowsApiError):
        hook.list_flows()
    assert len(smartflows_emulator.requests_to("GET", "/flows$")) == 1
    assert retry_lines() == []


def test_retry_limit_zero_sends_once(smartflows_emulator, set_conn):
    hook = SmartFlowsHook(set_conn(), retry_limit=0)
    smartflows_emulator.add_fault("status", path="/flows$", status=503, times=None)
    with pytest.raises(SmartFlowsApiError):
        hook.list_flows()
    assert len(smartflows_emulator.requests_to("GET", "/flows$")) == 1


def test_get_is_retried_after_a_connection_reset(smartflows_emulator, hook, retry_lines):
    smartflows_emulator.add_fault("reset", path="/flows$")
    assert hook.list_flows()
    assert len(smartflows_emulator.requests_to("GET", "/flows$")) == 2
    assert [line[2] for line in retry_lines()] == ["connection reset"]


def test_get_is_retried_after_a_read_timeout(smartflows_emulator, set_conn, retry_lines):
    hook = SmartFlowsHook(set_conn(), timeout=0.3, retry_delay=0.01)
    smartflows_emulator.add_fault("latency", path="/flows$", latency=1.0)
    assert hook.list_flows()
    assert [line[2] for line in retry_lines()] == ["read timeout"]
    assert len(settle(smartflows_emulator, "GET", "/flows$", 2)) == 2


def test_delete_is_retried_on_502(smartflows_emulator, hook, long_flows):
    execution_id = hook.start_execution(long_flows["running"]).id
    smartflows_emulator.add_fault("status", method="DELETE", status=502)
    assert hook.cancel_execution(execution_id).status.value == "Canceled"
    assert [r["status"] for r in smartflows_emulator.requests_to("DELETE", "")] == [502, 200]


# --------------------------------------------------------------------------- Retry-After


def test_retry_after_seconds_is_honoured(smartflows_emulator, hook, retry_lines):
    smartflows_emulator.add_fault("status", path="/flows$", status=503, retry_after=1)
    hook.list_flows()
    first, second = request_times(smartflows_emulator.requests_to("GET", "/flows$"))
    assert second - first >= 0.95
    assert [line[5] for line in retry_lines()] == ["1.00"]


def test_retry_after_http_date_is_honoured(smartflows_emulator, hook, retry_lines):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    smartflows_emulator.add_fault("status", path="/flows$", status=429, retry_after=when)
    hook.list_flows()
    first, second = request_times(smartflows_emulator.requests_to("GET", "/flows$"))
    (line,) = retry_lines()
    delay = float(line[5])
    assert 0.5 <= delay <= 2.0  # whole-second HTTP dates: 1 to 2 s from now
    assert second - first >= delay - 0.05


def test_retry_after_is_capped_by_max_retry_delay(smartflows_emulator, set_conn, retry_lines):
    hook = SmartFlowsHook(set_conn(), retry_delay=0.01, max_retry_delay=0.3)
    smartflows_emulator.add_fault("status", path="/flows$", status=503, retry_after=3600)
    hook.list_flows()
    assert [line[5] for line in retry_lines()] == ["0.30"]


def test_backoff_grows_exponentially_and_is_capped(smartflows_emulator, set_conn, retry_lines):
    hook = SmartFlowsHook(set_conn(), retry_limit=4, retry_delay=0.05, max_retry_delay=0.25)
    smartflows_emulator.add_fault("status", path="/flows$", status=500, times=4)
    hook.list_flows()
    delays = [float(line[5]) for line in retry_lines()]
    assert len(delays) == 4
    assert 0.05 <= delays[0] <= 0.1  # retry_delay plus up to retry_delay of jitter
    assert 0.1 <= delays[1] <= 0.15
    assert delays[3] == 0.25


# --------------------------------------------------------------------------- the start POST

POST_FAULTS = [
    # kind, fault arguments, executions created, POSTs sent, succeeds
    pytest.param("status", {"status": 503}, 1, 2, True, id="503-retried"),
    pytest.param("status", {"status": 429, "retry_after": 1}, 1, 2, True, id="429-retried"),
    pytest.param("status", {"status": 500}, 0, 1, False, id="500-before-not-retried"),
    pytest.param("status", {"status": 500, "when": "after"}, 1, 1, False, id="500-after-not-retried"),
    pytest.param("reset", {}, 0, 1, False, id="reset-before-not-retried"),
    pytest.param("reset", {"when": "after"}, 1, 1, False, id="reset-after-not-retried"),
    pytest.param("status", {"status": 502}, 0, 1, False, id="502-not-retried"),
    pytest.param("status", {"status": 504}, 0, 1, False, id="504-not-retried"),
    pytest.param("html", {"status": 502}, 0, 1, False, id="html-502-not-retried"),
    pytest.param("invalid_json", {}, 0, 1, False, id="invalid-json-not-retried"),
]


@pytest.mark.parametrize(("kind", "fault", "started", "posts", "succeeds"), POST_FAULTS)
def test_start_never_creates_a_second_execution(
    smartflows_emulator, hook, kind, fault, started, posts, succeeds
):
    smartflows_emulator.add_fault(kind, method="POST", path=r"/flows/executions$", **fault)
    if succeeds:
        assert hook.start_execution("hello").id
    else:
        with pytest.raises(SmartFlowsApiError, match="may have been started") as info:
            hook.start_execution("hello")
        assert "flow 'hello'" in str(info.value)
        assert not info.value.retryable
    assert len(smartflows_emulator.requests_to("POST", r"/flows/executions$")) == posts
    assert smartflows_emulator.executions_started() == started


def test_start_is_not_retried_after_a_read_timeout(smartflows_emulator, set_conn):
    hook = SmartFlowsHook(set_conn(), timeout=0.3, retry_delay=0.01)
    smartflows_emulator.add_fault("latency", method="POST", path=r"/flows/executions$", latency=1.0)
    with pytest.raises(SmartFlowsConnectionError, match=r"read timeout.*may have been started") as info:
        hook.start_execution("hello")
    assert info.value.request_sent
    # The slow answer is logged after we gave up: wait for it, then count.
    assert len(settle(smartflows_emulator, "POST", r"/flows/executions$", 1)) == 1
    assert smartflows_emulator.executions_started() == 1


def test_start_gives_up_on_persistent_503_without_claiming_a_start(smartflows_emulator, hook):
    smartflows_emulator.add_fault("status", method="POST", status=503, times=None)
    with pytest.raises(SmartFlowsApiError, match="answered 503") as info:
        hook.start_execution("hello")
    assert "may have been started" not in str(info.value)
    assert len(smartflows_emulator.requests_to("POST", "")) == 4
    assert smartflows_emulator.executions_started() == 0


def test_start_is_retried_when_the_connection_is_refused(monkeypatch, retry_lines):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_DOWN",
        json.dumps({"conn_type": "smartflows", "host": nothing_listens_url(), "password": "k"}),
    )
    hook = SmartFlowsHook("sf_down", retry_limit=2, retry_delay=0.01)
    with pytest.raises(SmartFlowsConnectionError, match="connection refused") as info:
        hook.start_execution("hello")
    assert not info.value.request_sent
    assert info.value.status_code is None
    assert "may have been started" not in str(info.value)
    assert [(line[0], line[2]) for line in retry_lines()] == [("POST", "connection refused")] * 2


def test_answering_user_input_is_not_retried_after_a_500(smartflows_emulator, hook):
    smartflows_emulator.add_fault("status", method="POST", path="/progress$", status=500)
    with pytest.raises(SmartFlowsApiError, match="answered 500"):
        hook.answer_user_input("e1", {"approved": True})
    assert len(smartflows_emulator.requests_to("POST", "/progress$")) == 1
