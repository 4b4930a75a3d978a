"""One request path: each call behaves the same on the sync and the async hook (redirects, errors,
retries, the cancel-path hint), over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsNotFoundError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

RETRY = {"retry_limit": 2, "retry_delay": 0.01, "max_retry_delay": 0.1}

#: The calls both hooks make: name -> (method, path of execution "e1" below /api/v1).
CALLS = {
    "get_progress": ("GET", "/flows/executions/e1/progress"),
    "get_execution": ("GET", "/flows/executions/e1"),
    "cancel_execution": ("DELETE", "/flows/executions/e1/progress"),
}


def call_with(kind: str, conn_id: str, name: str, *args: Any) -> Any:
    """Run hook method ``name`` on a fresh hook of ``kind`` ("sync" or "async")."""
    if kind == "sync":
        hook = SmartFlowsHook(conn_id, **RETRY)
        try:
            return getattr(hook, name)(*args)
        finally:
            hook.close()

    async def run() -> Any:
        async with SmartFlowsAsyncHook(conn_id, **RETRY) as hook:
            return await getattr(hook, name)(*args)

    return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    def run(conn_id: str, name: str, *args: Any) -> Any:
        return call_with(request.param, conn_id, name, *args)

    return run


class Redirector(ThreadingHTTPServer):
    """Answers every request with ``status`` and ``location``; counts what it received."""

    status = 302
    location: str | None = None
    hits: list[str]


class _RedirectHandler(BaseHTTPRequestHandler):
    server: Redirector

    def _answer(self) -> None:
        self.server.hits.append(f"{self.command} {self.path}")
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_DELETE = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        pass


@pytest.fixture
def redirector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Redirector]:
    """A server in front of the API that only redirects; connection ``sf_redirect`` points at it."""
    server = Redirector(("127.0.0.1", 0), _RedirectHandler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_REDIRECT", json.dumps({"conn_type": "smartflows", "host": host, "password": "k"})
    )
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("name", list(CALLS))
def test_a_redirect_is_an_error_naming_where_to_point_the_host(
    smartflows_emulator: Any, redirector: Redirector, call: Callable[..., Any], name: str, status: int
) -> None:
    method, path = CALLS[name]
    redirector.status = status
    redirector.location = f"{smartflows_emulator.base_url}/api/v1{path}?token=s3cret"
    with pytest.raises(SmartFlowsApiError) as info:
        call("sf_redirect", name, "e1")
    message = str(info.value)
    assert f"{method} {path} answered {status} (connection 'sf_redirect')" in message
    assert f"a redirect to {smartflows_emulator.base_url}/api/v1{path}." in message
    assert (
        f"set the connection's Host to the URL the server redirects to, {smartflows_emulator.base_url}"
        in message
    )
    assert "s3cret" not in message
    assert (info.value.status_code, info.value.retryable) == (status, False)
    assert redirector.hits == [f"{method} /api/v1{path}"]  # sent once, never retried
    assert smartflows_emulator.requests == []  # and not followed


@pytest.mark.parametrize("name", list(CALLS))
def test_a_redirect_without_location(
    smartflows_emulator: Any, smartflows_conn: str, call: Callable[..., Any], name: str
) -> None:
    smartflows_emulator.add_fault("status", status=302)
    with pytest.raises(SmartFlowsApiError, match=r"answered 302 .*a redirect without a Location header"):
        call(smartflows_conn, name, "e1")
    assert len(smartflows_emulator.requests) == 1


@pytest.mark.parametrize("name", list(CALLS))
def test_not_found_names_the_execution(
    smartflows_emulator: Any, smartflows_conn: str, call: Callable[..., Any], name: str
) -> None:
    with pytest.raises(SmartFlowsNotFoundError, match=r"Execution 'missing' was not found") as info:
        call(smartflows_conn, name, "missing")
    hint = 'set the extra "cancel_path": "execution" on connection'
    assert (hint in str(info.value)) is (name == "cancel_execution")
    assert len(smartflows_emulator.requests) == 1


@pytest.mark.parametrize("status", [404, 405])
def test_cancel_suggests_the_other_cancel_path(
    smartflows_emulator: Any, set_conn: Callable[..., str], call: Callable[..., Any], status: int
) -> None:
    smartflows_emulator.add_fault("status", method="DELETE", status=status)
    with pytest.raises(
        SmartFlowsApiError, match=f'answered {status}.*set the extra "cancel_path": "progress"'
    ):
        call(set_conn(cancel_path="execution"), "cancel_execution", "e1")


@pytest.mark.parametrize("name", list(CALLS))
def test_a_body_that_is_not_json(
    smartflows_emulator: Any, smartflows_conn: str, call: Callable[..., Any], name: str
) -> None:
    method, path = CALLS[name]
    smartflows_emulator.add_fault("html", status=200)
    with pytest.raises(SmartFlowsApiError, match=f"{method} {path} answered 200 with a body that is not"):
        call(smartflows_conn, name, "e1")
    assert len(smartflows_emulator.requests) == 1


@pytest.mark.parametrize("name", list(CALLS))
def test_a_503_is_retried_then_answers(
    smartflows_emulator: Any, smartflows_conn: str, call: Callable[..., Any], name: str
) -> None:
    execution_id = SmartFlowsHook(smartflows_conn).start_execution("hello").id
    smartflows_emulator.add_fault("status", path="/flows/executions/.", status=503)
    assert call(smartflows_conn, name, execution_id).id == execution_id
    statuses = [r["status"] for r in smartflows_emulator.requests if r["method"] != "POST"]
    assert statuses == [503, 200]


#: The calls only the sync hook makes, with the path each sends.
SYNC_CALLS: dict[str, tuple[Callable[[SmartFlowsHook, Any], Any], str]] = {
    "start_execution": (lambda hook, tmp: hook.start_execution("hello"), "POST /flows/executions"),
    "answer_user_input": (
        lambda hook, tmp: hook.answer_user_input("e1", {"ok": True}),
        "POST /flows/executions/e1/progress",
    ),
    "list_flows": (lambda hook, tmp: hook.list_flows(), "GET /flows"),
    "get_document": (lambda hook, tmp: hook.get_document("d1"), "GET /documents/d1"),
    "download_document": (
        lambda hook, tmp: hook.download_document("d1", f"{tmp}/d1.pdf"),
        "GET /documents/d1/content",
    ),
}


@pytest.mark.parametrize("name", list(SYNC_CALLS))
def test_sync_only_calls_refuse_a_redirect_too(
    smartflows_emulator: Any, redirector: Redirector, tmp_path: Any, name: str
) -> None:
    run, what = SYNC_CALLS[name]
    redirector.location = f"{smartflows_emulator.base_url}/api/v1/elsewhere"
    hook = SmartFlowsHook("sf_redirect", **RETRY)
    with pytest.raises(SmartFlowsApiError, match=f"{what} answered 302 .*a redirect to") as info:
        run(hook, tmp_path)
    assert not getattr(info.value, "may_have_started", False)  # a redirect started nothing
    assert len(redirector.hits) == 1
    assert list(tmp_path.iterdir()) == []
    assert smartflows_emulator.requests == []
