"""Fault matrix: every API call of the hooks x every emulator fault, each outcome written down.

Each cell adds one fault (``times=1``) matching exactly the call's method and route, makes the
call once, and checks the outcome written in ``MATRIX`` / ``ASYNC_MATRIX``:

- ``ok(n)``: the call returned normally after the emulator saw ``n`` requests of that route;
- ``err(Class, regex, n)``: it raised ``Class`` whose message matches ``regex`` (it names the
  execution / document / flow id and says what to do) after ``n`` requests;
- ``reconciled(how, n)``: a start whose outcome was unknown, resolved by listing the flow's
  executions (``start_execution_reconciled``): ``adopted`` the one the server created, or
  ``started_again`` once the listing proved none was; one execution in the end either way;
- ``limit(reason)``: what the provider cannot detect; the test pins the actual behaviour;
- ``na(reason)``: the fault cannot happen on that call.

For every cell: executions started <= what the table says (never a duplicate), no temporary or
partial file at the destination, and a bound (small timeouts, tiny retry delays, pytest-timeout).
The requests counted are the fault rule's ``seen`` counter: every request the emulator received
on the call's route after the fault was added.
"""

from __future__ import annotations

import collections
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsConnectionError,
    SmartFlowsDocumentGoneError,
    SmartFlowsDownloadError,
    SmartFlowsError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.reconcile import ADOPTED, STARTED, STARTED_AGAIN
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.models import ExecutionStatus
from tests.support.waits import progress_until, wait_until

from .helpers import files_under, quick_flow, record_figures

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)

CONN_ID = "sf_matrix"
#: Per-request timeout of the hooks under test; latency faults sleep longer than it (+ long-poll wait).
TIMEOUT = 1.5
LONG_POLL_WAIT = 1
RETRY = {"retry_limit": 2, "retry_delay": 0.001, "max_retry_delay": 0.05}


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" | "err" | "limit" | "na"
    requests: int = 0
    error: type[BaseException] | None = None
    match: str = ""
    started: int | None = None  # start row only: executions the server created
    status: str | None = None  # ok: the raw status the call returned, when it matters
    reason: str = ""
    how: str | None = None  # reconciled: adopted | started_again


def ok(requests: int, *, started: int | None = None, status: str | None = None) -> Outcome:
    return Outcome("ok", requests, started=started, status=status)


def err(error: type[BaseException], match: str, requests: int, *, started: int | None = None) -> Outcome:
    return Outcome("err", requests, error=error, match=match, started=started)


def reconciled(how: str, requests: int) -> Outcome:
    return Outcome("reconciled", requests, started=1, how=how)


def limit(reason: str, requests: int) -> Outcome:
    return Outcome("limit", requests, reason=reason)


def na(reason: str) -> Outcome:
    return Outcome("na", reason=reason)


# Faults as emulator rules (method and path are added per call). "after" = the server acted first.
FAULTS: dict[str, dict[str, Any]] = {
    "500": {"kind": "status", "status": 500},
    "500-after": {"kind": "status", "status": 500, "when": "after"},
    "502": {"kind": "status", "status": 502},
    "503": {"kind": "status", "status": 503},
    "504": {"kind": "status", "status": 504},
    "429": {"kind": "status", "status": 429},
    "429-retry-after": {"kind": "status", "status": 429, "retry_after": 1},
    "reset": {"kind": "reset"},
    "reset-after": {"kind": "reset", "when": "after"},
    "latency": {"kind": "latency"},  # seconds set per call: past the client's read timeout
    "truncate": {"kind": "truncate"},
    "html-502": {"kind": "html", "status": 502},  # a proxy's error page
    "html-200": {"kind": "html", "status": 200},  # a login page instead of JSON
    "401": {"kind": "status", "status": 401},
    "403": {"kind": "status", "status": 403},
    "404": {"kind": "status", "status": 404},
    "invalid-json": {"kind": "invalid_json"},
    "unknown-status": {"kind": "unknown_status"},
}

# Message patterns; {P} is "METHOD /path" of the call, {S} its subject ("Execution 'id'"), {D} the
# document id's repr. Each names the id (in the path or subject) and says what to do.
A401 = r"refused the API key of connection 'sf_matrix' \({P} answered 401\).*put a valid key in the connection's API key field"
A403 = r"lacks the rights for {P} \(403\).*Use the key of a Smart Flows user allowed to do this"
N404 = r"{S} was not found on Smart Flows \(connection 'sf_matrix', {P} answered 404\).*Check the id"
#: A document's content gone (purged): never retried, nothing written, says it does not come back.
GONE = r"{S} was not found on Smart Flows \(connection 'sf_matrix', {P} answered 404\): it was purged.*nothing was written"
NOT_JSON = r"{P} answered 200 with a body that is not the expected JSON \(connection 'sf_matrix'\).*Is the Host the Smart Flows server"
MAYBE = r"Starting flow 'mx' failed after the request reached Smart Flows \(connection 'sf_matrix'\).*An execution of the flow may have been started; it was not retried.*Check the flow's executions on the server before running it again"
GAVE_UP = r"{P} answered {code} \(connection 'sf_matrix'\).*It will be retried"
CUT = r"Downloading document {D} to .*doc\.pdf failed after \d+ bytes \(\w+\)\. Nothing was saved; run the download again"

STREAMED = (
    "the content is streamed: once the handler has sent the whole document there is no answer left for "
    "an 'after' fault to replace (a body cut short is the 'truncate' column)"
)
NO_STATUS = "a Document has no status field: there is nothing for the fault to rewrite"
BINARY = "document content is bytes, not JSON: it has no status field"
SAVED_AS_IS = (
    "a 200 answer is the document: documents may have any content type (text/html, application/json), "
    "so a proxy page answered with 200 cannot be told apart; it is saved as is and its sha256 is in the "
    "result for the caller to check"
)

_TRANSIENT_GET = {
    "500": ok(2),
    "500-after": ok(2),
    "502": ok(2),
    "503": ok(2),
    "504": ok(2),
    "429": ok(2),
    "429-retry-after": ok(2),
    "reset": ok(2),
    "reset-after": ok(2),
    "latency": ok(2),
    "truncate": ok(2),
    "html-502": ok(2),
    "401": err(SmartFlowsAuthError, A401, 1),
    "403": err(SmartFlowsAuthError, A403, 1),
    "404": err(SmartFlowsNotFoundError, N404, 1),
    "html-200": err(SmartFlowsApiError, NOT_JSON, 1),
    "invalid-json": err(SmartFlowsApiError, NOT_JSON, 1),
    "unknown-status": ok(1, status="Archived"),
}

MATRIX: dict[str, dict[str, Outcome]] = {
    # POST /flows/executions: resent only when the answer proves nothing was created (429, 503).
    "start": {
        "500": err(SmartFlowsApiError, MAYBE, 1, started=0),
        "500-after": err(SmartFlowsApiError, MAYBE, 1, started=1),
        "502": err(SmartFlowsApiError, MAYBE, 1, started=0),
        "503": ok(2, started=1),
        "504": err(SmartFlowsApiError, MAYBE, 1, started=0),
        "429": ok(2, started=1),
        "429-retry-after": ok(2, started=1),
        "reset": err(SmartFlowsConnectionError, MAYBE, 1, started=0),
        "reset-after": err(SmartFlowsConnectionError, MAYBE, 1, started=1),
        "latency": err(SmartFlowsConnectionError, MAYBE, 1, started=1),  # the server acts late
        "truncate": err(SmartFlowsConnectionError, MAYBE, 1, started=1),
        "html-502": err(SmartFlowsApiError, MAYBE, 1, started=0),
        "html-200": err(SmartFlowsApiError, MAYBE, 1, started=0),
        "401": err(SmartFlowsAuthError, A401, 1, started=0),
        "403": err(SmartFlowsAuthError, A403, 1, started=0),
        "404": err(SmartFlowsNotFoundError, N404, 1, started=0),
        "invalid-json": err(SmartFlowsApiError, MAYBE, 1, started=0),
        "unknown-status": ok(1, started=1, status="Archived"),
    },
    # The same start through start_execution_reconciled: every unknown outcome is resolved by the
    # listing (GET /flows/mx/executions): adopted when the server had created it, else started again.
    "start-reconciled": {
        "500": reconciled(STARTED_AGAIN, 2),
        "500-after": reconciled(ADOPTED, 1),
        "502": reconciled(STARTED_AGAIN, 2),
        "503": ok(2, started=1),
        "504": reconciled(STARTED_AGAIN, 2),
        "429": ok(2, started=1),
        "429-retry-after": ok(2, started=1),
        "reset": reconciled(STARTED_AGAIN, 2),
        "reset-after": reconciled(ADOPTED, 1),
        # The server acts after the client gave up: the settle time covers it (here it waits for the
        # late answer); a server slower than the settle time is the limit in RELIABILITY.md.
        "latency": reconciled(ADOPTED, 1),
        "truncate": reconciled(ADOPTED, 1),
        "html-502": reconciled(STARTED_AGAIN, 2),
        "html-200": reconciled(STARTED_AGAIN, 2),
        "401": err(SmartFlowsAuthError, A401, 1, started=0),
        "403": err(SmartFlowsAuthError, A403, 1, started=0),
        "404": err(SmartFlowsNotFoundError, N404, 1, started=0),
        "invalid-json": reconciled(STARTED_AGAIN, 2),
        "unknown-status": ok(1, started=1, status="Archived"),
    },
    "progress": dict(_TRANSIENT_GET),
    "long-poll": dict(_TRANSIENT_GET),
    "execution": dict(_TRANSIENT_GET),
    # DELETE is idempotent: retried like a GET; a second cancel of a cancelled execution is harmless.
    "cancel": {
        **_TRANSIENT_GET,
        "404": err(SmartFlowsNotFoundError, N404 + r".*set the extra \"cancel_path\": \"execution\"", 1),
    },
    "document": {**_TRANSIENT_GET, "unknown-status": na(NO_STATUS)},
    # Streamed: errors before the body are retried; a body cut short is never saved.
    "content": {
        **_TRANSIENT_GET,
        "truncate": err(SmartFlowsDownloadError, CUT, 1),
        "404": err(SmartFlowsDocumentGoneError, GONE, 1),
        "html-200": limit(SAVED_AS_IS, 1),
        "invalid-json": limit(SAVED_AS_IS, 1),
        "unknown-status": na(BINARY),
        "500-after": na(STREAMED),
        "reset-after": na(STREAMED),
    },
}

#: The async hook (triggers) has the read calls and cancel; same policy, same messages.
ASYNC_MATRIX: dict[str, dict[str, Outcome]] = {
    "progress": MATRIX["progress"],
    "long-poll": MATRIX["long-poll"],
    "execution": MATRIX["execution"],
    "cancel": MATRIX["cancel"],
}

ROUTES = {
    "start": ("POST", r"^/api/v1/flows/executions$"),
    "start-reconciled": ("POST", r"^/api/v1/flows/executions$"),
    "progress": ("GET", r"^/api/v1/flows/executions/[^/]+/progress$"),
    "long-poll": ("GET", r"^/api/v1/flows/executions/[^/]+/progress$"),
    "execution": ("GET", r"^/api/v1/flows/executions/[^/]+$"),
    "cancel": ("DELETE", r"^/api/v1/flows/executions/[^/]+/progress$"),
    "document": ("GET", r"^/api/v1/documents/[^/]+$"),
    "content": ("GET", r"^/api/v1/documents/[^/]+/content$"),
}


def test_the_table_covers_every_call_and_fault() -> None:
    assert set(MATRIX) == set(ROUTES)
    for call, row in MATRIX.items():
        assert set(row) == set(FAULTS), call
    for call, row in ASYNC_MATRIX.items():
        assert set(row) == set(FAULTS), call
    for row in (*MATRIX.values(), *ASYNC_MATRIX.values()):
        for outcome in row.values():
            assert outcome.kind != "na" or outcome.reason
            assert outcome.kind != "err" or (outcome.error and outcome.match and outcome.requests)
            assert outcome.kind != "reconciled" or outcome.how in (ADOPTED, STARTED_AGAIN)
    kinds = collections.Counter(o.kind for row in MATRIX.values() for o in row.values())
    async_kinds = collections.Counter(o.kind for row in ASYNC_MATRIX.values() for o in row.values())
    record_figures(
        "fault_matrix",
        {"sync_cells": dict(sorted(kinds.items())), "async_cells": dict(sorted(async_kinds.items()))},
    )


def cells(matrix: dict[str, dict[str, Outcome]]) -> list[Any]:
    return [
        pytest.param(call, fault, outcome, id=f"{call}-{fault}")
        for call, row in matrix.items()
        for fault, outcome in row.items()
    ]


@pytest.fixture
def matrix_conn(smartflows_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", smartflows_emulator.connection_json())
    smartflows_emulator.add_flow(quick_flow("mx"))
    smartflows_emulator.add_flow(
        {"id": "mx-long", "steps": [{"message": "Working", "percentage": 40, "seconds": 360000}]}
    )
    return CONN_ID


@dataclass
class Target:
    """What a cell's call works on, made before the fault is added."""

    execution_id: str = "none"
    document_id: str = "none"


def prepare(call: str, hook: SmartFlowsHook) -> Target:
    if call in ("start", "start-reconciled"):
        return Target()
    if call == "cancel":
        return Target(execution_id=hook.start_execution("mx-long").id)
    progress = progress_until(hook, hook.start_execution("mx").id, wait_seconds=1)
    assert progress.status is ExecutionStatus.SUCCESS
    (document,) = progress.documents
    return Target(execution_id=progress.id, document_id=document.id)


def subject_and_path(call: str, target: Target) -> tuple[str, str]:
    eid, did = target.execution_id, target.document_id
    return {
        "start": ("Flow 'mx'", "POST /flows/executions"),
        "start-reconciled": ("Flow 'mx'", "POST /flows/executions"),
        "progress": (f"Execution '{eid}'", f"GET /flows/executions/{eid}/progress"),
        "long-poll": (f"Execution '{eid}'", f"GET /flows/executions/{eid}/progress"),
        "execution": (f"Execution '{eid}'", f"GET /flows/executions/{eid}"),
        "cancel": (f"Execution '{eid}'", f"DELETE /flows/executions/{eid}/progress"),
        "document": (f"Document '{did}'", f"GET /documents/{did}"),
        "content": (f"Document '{did}'", f"GET /documents/{did}/content"),
    }[call]


def add_fault(emulator: Any, call: str, fault: str) -> str:
    spec = dict(FAULTS[fault])
    method, path = ROUTES[call]
    if spec["kind"] == "latency":
        spec["latency"] = TIMEOUT + (LONG_POLL_WAIT if call == "long-poll" else 0) + 1.0
    return emulator.add_fault(spec.pop("kind"), method=method, path=path, **spec)


def seen(emulator: Any, fault_id: str) -> int:
    (rule,) = [rule for rule in emulator.faults if rule["id"] == fault_id]
    return int(rule["seen"])


def pattern(outcome: Outcome, call: str, fault: str, target: Target) -> str:
    subject, path = subject_and_path(call, target)
    return outcome.match.format(
        P=re.escape(path),
        S=re.escape(subject),
        D=re.escape(repr(target.document_id)),
        code=re.escape(fault),
    )


def settle(emulator: Any, fault: str) -> dict[str, Any]:
    """No settle time, except for the server that acts late: then the settle waits for it to act."""
    if fault != "latency":
        return {"settle_time": 0}

    def late_start_done(seconds: float) -> None:
        method, path = ROUTES["start"]
        late = lambda: any(r["fault"] == "latency" for r in emulator.requests_to(method, path))  # noqa: E731
        wait_until(late, 15, interval=0.02, message="the late start")

    return {"settle_time": 0, "sleep": late_start_done}


def run_sync(
    call: str, hook: SmartFlowsHook, target: Target, destination: Path, settling: dict[str, Any]
) -> Any:
    eid, did = target.execution_id, target.document_id
    if call == "start":
        return hook.start_execution("mx")
    if call == "start-reconciled":
        return hook.start_execution_reconciled("mx", **settling)
    if call == "progress":
        return hook.get_progress(eid)
    if call == "long-poll":
        return hook.get_progress(eid, wait_seconds=LONG_POLL_WAIT)
    if call == "execution":
        return hook.get_execution(eid)
    if call == "cancel":
        return hook.cancel_execution(eid)
    if call == "document":
        return hook.get_document(did)
    return hook.download_document(did, str(destination / "doc.pdf"))


def check_no_duplicate(emulator: Any, call: str, outcome: Outcome) -> None:
    if not call.startswith("start"):
        assert emulator.executions_started() == 1, "a call other than start created an execution"
        return
    assert outcome.started is not None
    if outcome.started:
        # A slow or cut answer: the server creates the execution when its handler runs.
        wait_until(
            lambda: emulator.executions_started() >= outcome.started,
            15,
            interval=0.02,
            message="the late start",
        )
    assert emulator.executions_started() == outcome.started


@pytest.mark.parametrize(("call", "fault", "outcome"), cells(MATRIX))
def test_sync_hook_cell(
    smartflows_emulator: Any,
    matrix_conn: str,
    tmp_path: Path,
    call: str,
    fault: str,
    outcome: Outcome,
) -> None:
    if outcome.kind == "na":
        pytest.skip(f"not applicable: {outcome.reason}")
    hook = SmartFlowsHook(matrix_conn, timeout=TIMEOUT, **RETRY)
    destination = tmp_path / "dest"
    destination.mkdir()
    try:
        target = prepare(call, hook)
        fault_id = add_fault(smartflows_emulator, call, fault)
        settling = settle(smartflows_emulator, fault)
        if outcome.kind == "err":
            assert outcome.error is not None
            with pytest.raises(outcome.error, match=pattern(outcome, call, fault, target)):
                run_sync(call, hook, target, destination, settling)
            assert files_under(destination) == []
        elif call == "start-reconciled":
            result = run_sync(call, hook, target, destination, settling)
            assert result.how == (outcome.how or STARTED)
            (execution,) = smartflows_emulator.executions
            assert result.execution_id == execution["id"]
            if outcome.status is not None:
                assert result.raw_status == outcome.status
        else:
            result = run_sync(call, hook, target, destination, settling)
            if outcome.status is not None:
                assert result.raw_status == outcome.status
                assert result.status is ExecutionStatus.UNKNOWN
            if call == "content":
                assert files_under(destination) == ["doc.pdf"]
                data = (destination / "doc.pdf").read_bytes()
                assert result.sha256 == hashlib.sha256(data).hexdigest()
                right = smartflows_emulator.document_sha256(target.document_id)
                # Recovered: the right bytes. A limit cell: the proxy's page, visible by its sha256.
                assert (result.sha256 == right) is (outcome.kind == "ok")
            else:
                assert files_under(destination) == []
        assert seen(smartflows_emulator, fault_id) == outcome.requests
        check_no_duplicate(smartflows_emulator, call, outcome)
    finally:
        hook.close()


async def run_async(call: str, hook: SmartFlowsAsyncHook, target: Target) -> Any:
    eid = target.execution_id
    if call == "progress":
        return await hook.get_progress(eid)
    if call == "long-poll":
        return await hook.get_progress(eid, wait_seconds=LONG_POLL_WAIT)
    if call == "execution":
        return await hook.get_execution(eid)
    return await hook.cancel_execution(eid)


@pytest.mark.asyncio
@pytest.mark.parametrize(("call", "fault", "outcome"), cells(ASYNC_MATRIX))
async def test_async_hook_cell(
    smartflows_emulator: Any, matrix_conn: str, call: str, fault: str, outcome: Outcome
) -> None:
    setup = SmartFlowsHook(matrix_conn, timeout=TIMEOUT, **RETRY)
    try:
        target = prepare(call, setup)
    finally:
        setup.close()
    fault_id = add_fault(smartflows_emulator, call, fault)
    async with SmartFlowsAsyncHook(matrix_conn, timeout=TIMEOUT, **RETRY) as hook:
        if outcome.kind == "err":
            assert outcome.error is not None
            with pytest.raises(outcome.error, match=pattern(outcome, call, fault, target)):
                await run_async(call, hook, target)
        else:
            result = await run_async(call, hook, target)
            assert result.id == target.execution_id
            if outcome.status is not None:
                assert (result.raw_status, result.status) == (outcome.status, ExecutionStatus.UNKNOWN)
    assert seen(smartflows_emulator, fault_id) == outcome.requests
    assert smartflows_emulator.executions_started() == 1


def test_every_error_of_the_table_is_a_smartflows_error() -> None:
    for row in (*MATRIX.values(), *ASYNC_MATRIX.values()):
        for outcome in row.values():
            if outcome.error is not None:
                assert issubclass(outcome.error, SmartFlowsError)
