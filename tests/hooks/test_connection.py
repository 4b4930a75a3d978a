"""The ``smartflows`` connection: base URL, extras, id validation, test_connection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsConnectionError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.connection import ALLOWED_EXTRAS, ConnectionSettings
from airflow_provider_smartflows.hooks.retry import is_retryable, parse_retry_after
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from tests.support.processes import nothing_listens_url


def settings(host="https://sf.example.com", port=None, password="k", extra=None, timeout=None):
    return ConnectionSettings.from_connection(
        "sf", host=host, port=port, password=password, extra=extra, timeout=timeout
    )


@pytest.mark.parametrize(
    ("host", "port", "base_url"),
    [
        ("https://acme.smartflows.xpertdoc.com", None, "https://acme.smartflows.xpertdoc.com"),
        ("acme.smartflows.xpertdoc.com", None, "https://acme.smartflows.xpertdoc.com"),
        ("http://127.0.0.1", 8099, "http://127.0.0.1:8099"),
        ("http://127.0.0.1:8099/", None, "http://127.0.0.1:8099"),
        ("https://sf.example.com/api/v1/", None, "https://sf.example.com"),
        ("https://user:pw@sf.example.com", None, "https://sf.example.com"),
        ("https://sf.example.com/prefix", 8443, "https://sf.example.com:8443/prefix"),
    ],
    ids=[
        "https-url",
        "bare-host-means-https",
        "host-and-port",
        "trailing-slash",
        "api-suffix",
        "no-userinfo",
        "path-prefix",
    ],
)
def test_base_url_from_host_and_port(host, port, base_url):
    assert settings(host=host, port=port).base_url == base_url


@pytest.mark.parametrize("host", ["", None, "ftp://sf.example.com"], ids=["empty", "none", "ftp"])
def test_bad_host_is_an_input_error(host):
    with pytest.raises(SmartFlowsInputError, match="Host"):
        settings(host=host)


def test_missing_api_key_is_an_input_error():
    with pytest.raises(SmartFlowsInputError, match="no API key"):
        settings(password=None)


def test_defaults_and_documented_extras():
    result = settings(
        extra={
            "verify": "/etc/ssl/ca.pem",
            "timeout": "12.5",
            "proxies": "http://proxy:3128",
            "cancel_path": "execution",
            "execution_url_template": "{base_url}/#/run/{execution_id}",
        }
    )
    assert (result.verify, result.timeout, result.cancel_path) == ("/etc/ssl/ca.pem", 12.5, "execution")
    assert result.proxies == {"http": "http://proxy:3128", "https": "http://proxy:3128"}
    assert result.execution_url("e 1") == "https://sf.example.com/#/run/e%201"
    defaults = settings()
    assert (defaults.verify, defaults.timeout, defaults.cancel_path, defaults.proxies) == (
        True,
        60.0,
        "progress",
        {},
    )
    assert defaults.execution_url("e1") == "https://sf.example.com/executions/e1"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"ca_bundle": "/etc/ssl/ca.pem"}, "/etc/ssl/ca.pem"),
        ({"ca_bundle": "/etc/ssl/ca.pem", "verify": True}, "/etc/ssl/ca.pem"),
        ({"ca_bundle": "/etc/ssl/ca.pem", "verify": "/etc/ssl/ca.pem"}, "/etc/ssl/ca.pem"),
        ({"ca_bundle": "", "verify": False}, False),
        ({"verify": "false"}, False),
        ({"verify": False}, False),
        ({"verify": "True"}, True),
        ({"verify": ""}, True),
    ],
    ids=[
        "ca-bundle",
        "ca-bundle-verify-true",
        "ca-bundle-same-path",
        "empty-ca-bundle-from-ui",
        "false-str",
        "false-bool",
        "true-str",
        "empty-from-ui",
    ],
)
def test_verify_extra(extra, expected):
    assert settings(extra=extra).verify == expected


def test_prefixed_extras_from_older_ui_are_accepted():
    assert settings(extra={"extra__smartflows__cancel_path": "execution"}).cancel_path == "execution"


def test_hook_timeout_overrides_the_extra():
    assert settings(extra={"timeout": 9}, timeout=3).timeout == 3


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"X-Custom-Header": "x"}, "unknown extra 'X-Custom-Header'.*Allowed extras: verify, timeout"),
        ({"timeout": "soon"}, "'timeout' must be a positive number"),
        ({"timeout": 0}, "'timeout' must be a positive number"),
        ({"verify": 3}, "'verify' must be true, false or a CA bundle path"),
        ({"ca_bundle": "/ca.pem", "verify": False}, "sets both 'ca_bundle'.*and 'verify'.*choose one"),
        ({"ca_bundle": "/ca.pem", "verify": "/other.pem"}, "sets both 'ca_bundle'.*choose one"),
        ({"ca_bundle": 5}, "'ca_bundle' must be the path of a CA bundle file"),
        ({"proxies": ["p"]}, "'proxies' must be a proxy URL"),
        ({"cancel_path": "delete"}, "'cancel_path' must be one of progress, execution"),
        ({"execution_url_template": "{base_url}/{run}"}, "may only use"),
    ],
    ids=[
        "unknown",
        "timeout-text",
        "timeout-zero",
        "verify-int",
        "ca-bundle-and-verify-false",
        "ca-bundle-and-other-verify-path",
        "ca-bundle-int",
        "proxies-list",
        "cancel-path",
        "url-template",
    ],
)
def test_bad_extras_are_input_errors(extra, match):
    with pytest.raises(SmartFlowsInputError, match=match):
        settings(extra=extra)


def test_unknown_extra_fails_before_any_request(smartflows_emulator, set_conn):
    conn_id = set_conn(**{"Authorization": "Bearer x"})
    hook = SmartFlowsHook(conn_id)
    with pytest.raises(
        SmartFlowsInputError, match=f"Connection '{conn_id}' has an unknown extra 'Authorization'"
    ):
        hook.get_progress("e1")
    assert smartflows_emulator.requests == []


@pytest.mark.parametrize(
    "bad_id",
    ["", "a/b", "..", "a..b", "a b", "a\nb", "a\x00b", "x" * 201, "a\\b", "\u202eab", 5],
    ids=[
        "empty",
        "slash",
        "dotdot",
        "inner-dotdot",
        "space",
        "newline",
        "nul",
        "too-long",
        "backslash",
        "bidi",
        "int",
    ],
)
@pytest.mark.parametrize(
    "call",
    [
        lambda h, i: h.get_progress(i),
        lambda h, i: h.get_execution(i),
        lambda h, i: h.cancel_execution(i),
        lambda h, i: h.answer_user_input(i, {}),
        lambda h, i: h.get_document(i),
        lambda h, i: h.list_documents(i),
        lambda h, i: h.start_execution(i),
        lambda h, i: h.execution_url(i),
    ],
    ids=["progress", "execution", "cancel", "answer", "document", "list-documents", "start", "url"],
)
def test_bad_ids_are_rejected_before_any_request(smartflows_emulator, hook, bad_id, call):
    with pytest.raises(SmartFlowsInputError, match="id"):
        call(hook, bad_id)
    assert smartflows_emulator.requests == []


def test_none_execution_id_is_rejected_before_any_request(smartflows_emulator, hook):
    with pytest.raises(SmartFlowsInputError, match="execution id must be a non-empty string"):
        hook.get_progress(None)
    assert smartflows_emulator.requests == []


def test_bad_download_id_is_rejected_before_any_request(smartflows_emulator, hook, tmp_path):
    with pytest.raises(SmartFlowsInputError, match="document id"):
        hook.download_document("../x", f"{tmp_path}/")
    assert smartflows_emulator.requests == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retry_limit": -1}, "retry_limit must be an integer >= 0, not -1"),
        ({"retry_limit": True}, "retry_limit must be an integer >= 0, not True"),
        ({"retry_delay": -1}, "retry_delay must be a number of seconds >= 0"),
        ({"max_retry_delay": "5"}, "max_retry_delay must be a number of seconds >= 0, not '5'"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0 or None, not 0"),
        ({"timeout": True}, "timeout must be a number of seconds > 0 or None, not True"),
    ],
    ids=["retry-limit", "bool-retry-limit", "retry-delay", "text-max-retry-delay", "timeout", "bool-timeout"],
)
def test_bad_hook_arguments(kwargs, match):
    with pytest.raises(SmartFlowsInputError, match=match):
        SmartFlowsHook("sf", **kwargs)


def test_execution_url_uses_the_connection_template(set_conn):
    conn_id = set_conn(execution_url_template="{base_url}/app/#/executions/{execution_id}")
    hook = SmartFlowsHook(conn_id)
    assert hook.execution_url("abc") == f"{hook.settings.base_url}/app/#/executions/abc"


def test_requests_carry_the_api_key_and_user_agent(smartflows_emulator, hook):
    hook.list_flows()
    (request,) = smartflows_emulator.requests
    assert request["user"] == "admin"  # the emulator resolved the X-API-Key header to its user
    assert request["headers"]["User-Agent"].startswith("airflow-provider-smartflows/")


# --------------------------------------------------------------------------- test_connection


def test_test_connection_with_a_good_key(smartflows_emulator, hook):
    ok, message = hook.test_connection()
    assert ok
    assert message == "Connected to Smart Flows 4.0.0-emulator as admin (admin)"


def test_test_connection_with_a_plain_user_key(smartflows_emulator, set_conn):
    ok, message = SmartFlowsHook(set_conn(key=smartflows_emulator.user_key)).test_connection()
    assert ok
    assert message.endswith("(user)")


@pytest.mark.parametrize("which", ["wrong", "revoked"])
def test_test_connection_with_a_bad_key(smartflows_emulator, set_conn, which):
    key = "sf-not-a-key" if which == "wrong" else smartflows_emulator.revoked_key
    ok, message = SmartFlowsHook(set_conn(key=key), retry_delay=0.01).test_connection()
    assert not ok
    assert "refused the API key of the connection" in message
    assert "put a valid key in the connection's API key field" in message
    assert "Password" not in message
    assert "sf_test" not in message  # Airflow's UI tests an unsaved copy under a random id
    assert key not in message
    assert len(smartflows_emulator.requests) == 1  # 401 is never retried


def test_test_connection_falls_back_to_system_info(smartflows_emulator, hook):
    smartflows_emulator.add_fault("status", path="/users/me", status=404)
    ok, message = hook.test_connection()
    assert ok
    assert message == "Connected to Smart Flows 4.0.0-emulator as an unnamed user (admin)"


def test_test_connection_when_nothing_listens(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_DOWN",
        json.dumps({"conn_type": "smartflows", "host": nothing_listens_url(), "password": "k"}),
    )
    ok, message = SmartFlowsHook("sf_down", retry_limit=1, retry_delay=0.01).test_connection()
    assert not ok
    assert "connection refused" in message
    assert "sf_down" not in message


def test_test_connection_makes_one_attempt(smartflows_emulator, set_conn):
    """The Test button answers at once: no retry policy, even for a retryable answer."""
    smartflows_emulator.add_fault("status", path="/users/me", status=503, times=None)
    ok, message = SmartFlowsHook(set_conn(), retry_limit=3, retry_delay=0.01).test_connection()
    assert not ok
    assert "GET /users/me answered 503" in message
    assert len(smartflows_emulator.requests) == 1


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers; yields (url, accepted sockets)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        listener.close()
        thread.join(5)
        for conn in accepted:
            conn.close()


def test_test_connection_timeout_caps_the_connection_timeout(silent_server, monkeypatch):
    """One attempt with the test's own timeout, shorter than the connection's 60 s."""
    url, accepted = silent_server
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_SILENT",
        json.dumps({"conn_type": "smartflows", "host": url, "password": "k", "extra": {"timeout": 60}}),
    )
    hook = SmartFlowsHook("sf_silent", retry_delay=0.01)
    hook.test_connection_timeout = 0.3
    ok, message = hook.test_connection()
    assert not ok
    assert "read timeout" in message
    assert len(accepted) == 1


def test_test_connection_with_an_unknown_extra(set_conn):
    ok, message = SmartFlowsHook(set_conn(verify_ssl=False)).test_connection()
    assert not ok
    assert "The connection has an unknown extra 'verify_ssl'" in message
    assert "sf_test" not in message


def test_test_connection_without_a_key_says_api_key(smartflows_emulator, monkeypatch):
    conn = {"conn_type": "smartflows", "host": smartflows_emulator.base_url}
    monkeypatch.setenv("AIRFLOW_CONN_SF_NO_KEY", json.dumps(conn))
    ok, message = SmartFlowsHook("sf_no_key").test_connection()
    assert not ok
    assert message == "The connection has no API key: put the key of a Smart Flows user in its API key field."


def test_allowed_extras_are_the_documented_ones():
    assert ALLOWED_EXTRAS == (
        "verify",
        "timeout",
        "proxies",
        "cancel_path",
        "execution_url_template",
        "ca_bundle",
    )


# --------------------------------------------------------------------------- retry policy (pure)


@pytest.mark.parametrize(
    ("method", "status", "sent", "expected"),
    [
        ("GET", None, True, True),
        ("GET", 500, True, True),
        ("GET", 502, True, True),
        ("GET", 503, True, True),
        ("GET", 504, True, True),
        ("GET", 429, True, True),
        ("DELETE", 500, True, True),
        ("GET", 400, True, False),
        ("GET", 401, True, False),
        ("GET", 403, True, False),
        ("GET", 404, True, False),
        ("POST", None, False, True),
        ("POST", None, True, False),
        ("POST", 429, True, True),
        ("POST", 503, True, True),
        ("POST", 500, True, False),
        ("POST", 502, True, False),
        ("POST", 504, True, False),
        ("POST", 400, True, False),
    ],
    ids=lambda v: str(v),
)
def test_is_retryable(method, status, sent, expected):
    assert is_retryable(method, status, request_sent=sent) is expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),
        ("soon", None),
        (None, None),
    ],
    ids=["seconds", "http-date", "date-in-past", "garbage", "absent"],
)
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header, now=60.0) == seconds


def test_uri_form_connection_with_an_http_host(smartflows_emulator, monkeypatch):
    scheme_host, port = smartflows_emulator.base_url.rsplit(":", 1)
    key = quote(smartflows_emulator.api_key, safe="")
    monkeypatch.setenv("AIRFLOW_CONN_SF_URI", f"smartflows://:{key}@{quote(scheme_host, safe='')}:{port}")
    hook = SmartFlowsHook("sf_uri")
    assert hook.settings.base_url == smartflows_emulator.base_url
    assert hook.test_connection()[0]


@pytest.mark.slow  # the airflow CLI
@pytest.mark.serial  # `airflow db migrate` and four CLI runs: CPU-bound, make test runs it alone
def test_airflow_cli_connections_add_and_test(smartflows_emulator, tmp_path):
    """``airflow connections add --conn-type smartflows`` then ``airflow connections test``, good and revoked key."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
    }
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_CONN_")}
    host = smartflows_emulator.base_url
    script = f"""
set -e
airflow db migrate > /dev/null 2>&1
airflow connections add sf_good --conn-type smartflows --conn-host {host} --conn-password {smartflows_emulator.api_key}
airflow connections add sf_revoked --conn-type smartflows --conn-host {host} --conn-password {smartflows_emulator.revoked_key}
echo "== good"; airflow connections test sf_good
echo "== revoked"; airflow connections test sf_revoked || true
"""
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    good, revoked = result.stdout.split("== good", 1)[1].split("== revoked", 1)
    assert "Connection success!" in good
    # The hook's message, which Airflow's CLI does not print itself: logged at INFO.
    good_output = good + result.stderr.split("== revoked", 1)[0]
    assert "Connected to Smart Flows 4.0.0-emulator as" in good_output
    assert "Connection failed!" in revoked
    assert "refused the API key of the connection" in revoked
    assert "sf_revoked" not in revoked.split("Connection failed!", 1)[1]
    assert smartflows_emulator.revoked_key not in result.stdout + result.stderr


@pytest.mark.parametrize("hook_class", [SmartFlowsHook, SmartFlowsAsyncHook], ids=["sync", "async"])
@pytest.mark.parametrize("timeout", [0, -5], ids=["zero", "negative"])
def test_hooks_refuse_a_non_positive_timeout(hook_class: type, timeout: float) -> None:
    with pytest.raises(SmartFlowsInputError, match="timeout must be a number of seconds > 0"):
        hook_class("smartflows_default", timeout=timeout)


def test_bare_host_on_a_plain_http_server_says_to_write_http(smartflows_emulator, monkeypatch):
    """A Host without a scheme means https: on a plain-HTTP server the error says to write http://."""
    host = smartflows_emulator.base_url.split("://", 1)[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_BARE",
        json.dumps({"conn_type": "smartflows", "host": host, "password": "k"}),
    )
    hook = SmartFlowsHook("sf_bare", retry_limit=1, retry_delay=0.01)
    try:
        with pytest.raises(SmartFlowsConnectionError) as raised:
            hook.list_flows()
        ok, message = hook.test_connection()
    finally:
        hook.close()
    text = str(raised.value)
    assert f"https://{host}" in text
    assert "TLS error" in text
    assert "A Host without a scheme means https" in text
    assert "write http://" in text
    assert not ok
    assert "write http://" in message
