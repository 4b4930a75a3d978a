"""Reconciling an ambiguous start over real HTTP: the emulator's start faults and its listings.

``when="after"``: the server created the execution, the client got no usable answer; ``"before"``:
nothing was created; ``"delayed"``: the server creates it ``delay`` seconds after answering.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsConnectionError
from airflow_provider_smartflows.hooks.reconcile import ADOPTED, NOT_STARTED, STARTED, STARTED_AGAIN
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

START = r"^/api/v1/flows/executions$"
#: Tests never wait on a wall clock: a settle time of 0, or an emulator event as the "sleep".
NO_SETTLE = {"settle_time": 0}
#: Seconds after which a `delayed` start fault creates the execution: longer than the listings take.
LATE = 3.0
RETRY = {"retry_limit": 3, "retry_delay": 0.01, "max_retry_delay": 2.0}
MAYBE = r"Starting flow '{flow}' failed after the request reached Smart Flows .*may have been started"


def listings(emulator: Any, flow: str) -> list[dict[str, Any]]:
    return emulator.requests_to("GET", rf"^/api/v1/flows/{flow}/executions$")


def start_fault(emulator: Any, kind: str, when: str, **extra: Any) -> None:
    status = {"status": 500} if kind == "status" else {}
    emulator.add_fault(kind, method="POST", path=START, when=when, **status, **extra)


@pytest.fixture
def user_hook(set_conn: Callable[..., str], smartflows_emulator: Any) -> Iterator[SmartFlowsHook]:
    hook = SmartFlowsHook(set_conn("sf_user", key=smartflows_emulator.user_key), timeout=5, **RETRY)
    try:
        yield hook
    finally:
        hook.close()


@pytest.mark.parametrize("kind", ["status", "reset"], ids=["500-after-create", "reset-after-create"])
def test_the_execution_the_server_created_is_adopted(
    hook: SmartFlowsHook,
    smartflows_emulator: Any,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start_fault(smartflows_emulator, kind, "after")
    started = hook.start_execution_reconciled("hello", **NO_SETTLE)
    (created,) = smartflows_emulator.executions
    assert (started.how, started.execution_id) == (ADOPTED, created["id"])
    assert "it is the only one of the executions of flow 'hello'" in started.reason
    assert len(smartflows_emulator.requests_to("POST", START)) == 1
    # Airflow's logging goes to caplog or to stdout, depending on its version.
    assert f"adopted execution {created['id']}" in caplog.text + capsys.readouterr().out
    # Found by the first listing (filtered by the key's user, read to its empty end page): no
    # settle time, no second listing.
    queries = [r["query"] for r in listings(smartflows_emulator, "hello")]
    assert [(q["page"], q["filter"], q["sort"]) for q in queries] == [
        ("0", "createdBy:admin", "createdAt,desc"),
        ("1", "createdBy:admin", "createdAt,desc"),
    ]


def test_a_start_that_created_nothing_is_started_again_once(
    hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    start_fault(smartflows_emulator, "reset", "before")
    started = hook.start_execution_reconciled("hello", **NO_SETTLE)
    (created,) = smartflows_emulator.executions
    assert (started.how, started.execution_id) == (STARTED_AGAIN, created["id"])
    assert "none of the 0 listed" in started.reason
    assert len(smartflows_emulator.requests_to("POST", START)) == 2
    # The proof is the second listing, without the server-side user filter.
    assert [r["query"].get("filter") for r in listings(smartflows_emulator, "hello")] == [
        "createdBy:admin",
        None,
    ]


def test_a_plain_start_is_not_reconciled(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    started = hook.start_execution_reconciled("hello", **NO_SETTLE)
    assert started.how == STARTED
    assert listings(smartflows_emulator, "hello") == []


def test_a_second_unknown_outcome_fails_without_a_third_post(
    hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    start_fault(smartflows_emulator, "reset", "before")
    start_fault(smartflows_emulator, "status", "after")  # the first rule is used up by then
    with pytest.raises(
        SmartFlowsApiError, match=r"This was the second start: the first one was proven"
    ) as info:
        hook.start_execution_reconciled("hello", **NO_SETTLE)
    assert info.value.may_have_started is True
    assert len(smartflows_emulator.requests_to("POST", START)) == 2
    assert smartflows_emulator.executions_started() == 1


def test_two_identical_starts_are_refused_not_adopted(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    # Two tasks start the same no-input flow at the same moment, and both lose the answer.
    sent_at = time.time()
    start_fault(smartflows_emulator, "reset", "after", times=2)
    errors = []
    for _ in range(2):
        with pytest.raises(SmartFlowsConnectionError) as info:
            hook.start_execution("hello")
        errors.append(info.value)
    ids = sorted(ex["id"] for ex in smartflows_emulator.executions)
    for error in errors:
        with pytest.raises(SmartFlowsConnectionError, match=MAYBE.format(flow="hello")) as info:
            hook.find_started_execution("hello", None, sent_at=sent_at, error=error, **NO_SETTLE)
        message = info.value.message
        assert "2 executions of flow 'hello' created since" in message
        assert "cannot tell which one" in message
        assert all(f"{eid} (created 20" in message for eid in ids)
        assert sorted(c["id"] for c in info.value.candidates or []) == ids
        assert info.value.may_have_started is True
    assert smartflows_emulator.executions_started() == 2


@pytest.mark.parametrize(
    ("status", "says"),
    [(403, r"lacks the rights for GET /flows/hello/executions \(403\)"), (404, r"answered 404")],
    ids=["listing-forbidden", "older-server-without-listing"],
)
def test_a_listing_that_is_refused_leaves_the_start_unknown(
    user_hook: SmartFlowsHook, smartflows_emulator: Any, status: int, says: str
) -> None:
    start_fault(smartflows_emulator, "reset", "after")
    smartflows_emulator.add_fault(
        "status", status=status, method="GET", path=r"/flows/hello/executions$", times=None
    )
    with pytest.raises(SmartFlowsConnectionError, match=MAYBE.format(flow="hello")) as info:
        user_hook.start_execution_reconciled("hello", **NO_SETTLE)
    assert re.search(
        r"could not tell whether it was created: the flow's executions could not be listed: .*" + says,
        info.value.message,
    )
    assert info.value.candidates == []
    assert smartflows_emulator.executions_started() == 1
    assert len(smartflows_emulator.requests_to("POST", START)) == 1


def test_a_plain_users_own_execution_is_adopted(
    hook: SmartFlowsHook, user_hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    hook.start_execution("invoice", {"id": ["r1"], "entity": "account"})  # the admin's, same input
    start_fault(smartflows_emulator, "status", "after")
    started = user_hook.start_execution_reconciled(
        "invoice", {"id": ["r1"], "entity": "account"}, **NO_SETTLE
    )
    mine = [ex["id"] for ex in smartflows_emulator.executions if ex["created_by"] == "user"]
    assert [started.how, started.execution_id] == [ADOPTED, *mine]


def test_paging_finds_the_execution_across_pages(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    sent_at = time.time()
    start_fault(smartflows_emulator, "reset", "after")
    with pytest.raises(SmartFlowsConnectionError) as info:
        hook.start_execution("invoice", {"id": ["r0"], "entity": "account"})
    for i in range(1, 13):  # newer executions of the same flow and user, other records
        hook.start_execution("invoice", {"id": [f"r{i}"], "entity": "account"})
    verdict = hook.find_started_execution(
        "invoice",
        {"entity": "account", "id": ["r0"]},
        sent_at=sent_at,
        error=info.value,
        page_size=5,
        **NO_SETTLE,
    )
    (first,) = [
        ex for ex in smartflows_emulator.executions if ex["input_data"] == {"id": ["r0"], "entity": "account"}
    ]
    assert (verdict.outcome, verdict.execution_id) == (ADOPTED, first["id"])
    assert [r["query"]["page"] for r in listings(smartflows_emulator, "invoice")] == ["0", "1", "2", "3"]
    assert {r["query"]["size"] for r in listings(smartflows_emulator, "invoice")} == {"5"}


def test_a_window_with_more_executions_than_pages_cannot_prove_anything(
    hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    sent_at = time.time()
    for i in range(12):
        hook.start_execution("invoice", {"id": [f"r{i}"], "entity": "account"})
    with pytest.raises(
        SmartFlowsApiError, match="2 pages of up to 5 executions did not reach the start of the window"
    ) as info:
        hook.find_started_execution(
            "invoice",
            {"id": ["r99"], "entity": "account"},
            sent_at=sent_at,
            page_size=5,
            max_pages=2,
            **NO_SETTLE,
        )
    assert info.value.may_have_started is True
    assert len(listings(smartflows_emulator, "invoice")) == 2


def test_xml_input_is_matched_by_its_canonical_form(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    hook.start_execution("xml-letter", '<letter to="Bob"><body>Hi</body></letter>')
    start_fault(smartflows_emulator, "reset", "after")
    sent = '<?xml version="1.0" encoding="utf-8"?>\n<letter  to="Ada">\n  <body>Hi</body>\n</letter>\n'
    started = hook.start_execution_reconciled("xml-letter", sent, **NO_SETTLE)
    (ours,) = [ex for ex in smartflows_emulator.executions if "Ada" in str(ex["input_data"])]
    assert (started.how, started.execution_id) == (ADOPTED, ours["id"])


@pytest.mark.parametrize(
    ("clock_skew", "outcome"), [(2, NOT_STARTED), (20, None)], ids=["older-than-the-skew", "within-the-skew"]
)
def test_the_clock_skew_decides_which_earlier_executions_count(
    hook: SmartFlowsHook, smartflows_emulator: Any, clock_skew: float, outcome: str | None
) -> None:
    # The same input was started 10 s before the ambiguous start, which created nothing.
    hook.start_execution("hello")
    start_fault(smartflows_emulator, "reset", "before")
    with pytest.raises(SmartFlowsConnectionError) as info:
        hook.start_execution("hello")
    ten_seconds_later = time.time() + 10  # as if the ambiguous start had been sent then

    def find() -> Any:
        return hook.find_started_execution(
            "hello", None, sent_at=ten_seconds_later, error=info.value, clock_skew=clock_skew, **NO_SETTLE
        )

    if outcome is not None:
        assert find().outcome == outcome
    else:
        # Within the skew it may be this start's own execution under a lagging server clock.
        with pytest.raises(SmartFlowsConnectionError, match="created up to the clock skew before the start"):
            find()
    assert smartflows_emulator.executions_started() == 1


@pytest.mark.parametrize("client_offset", [-600.0, 600.0], ids=["client-clock-behind", "client-clock-ahead"])
def test_a_client_clock_far_off_is_corrected_by_the_date_header(
    hook: SmartFlowsHook, smartflows_emulator: Any, client_offset: float
) -> None:
    # Ten minutes off, far beyond the default skew of 30 s: the server's Date header measures it.
    start_fault(smartflows_emulator, "status", "after")
    started = hook.start_execution_reconciled("hello", clock=lambda: time.time() + client_offset, **NO_SETTLE)
    (created,) = smartflows_emulator.executions
    assert (started.how, started.execution_id) == (ADOPTED, created["id"])


def test_an_execution_created_within_the_settle_time_is_adopted(
    hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    # The server is still writing it when the first listing runs; the settle time waits for it.
    start_fault(smartflows_emulator, "reset", "delayed", delay=LATE)
    settle = {"settle_time": 1, "sleep": lambda seconds: smartflows_emulator.wait_deferred(timeout=10)}
    started = hook.start_execution_reconciled("hello", **settle)
    (created,) = smartflows_emulator.executions
    assert (started.how, started.execution_id) == (ADOPTED, created["id"])
    # The first listing was empty; the second, after the settle, found it (then its empty end page).
    assert [r["query"].get("filter") for r in listings(smartflows_emulator, "hello")] == [
        "createdBy:admin",
        None,
        None,
    ]
    assert len(smartflows_emulator.requests_to("POST", START)) == 1


def test_an_execution_created_after_the_settle_time_is_the_known_limit(
    hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    # Created later than the settle time: the flow was proven not started and started again, and
    # the late execution then appears as a second one. RELIABILITY.md names this limit.
    start_fault(smartflows_emulator, "reset", "delayed", delay=LATE)
    started = hook.start_execution_reconciled("hello", **NO_SETTLE)
    assert started.how == STARTED_AGAIN
    smartflows_emulator.wait_deferred(timeout=10)
    late = [ex["id"] for ex in smartflows_emulator.executions if ex["id"] != started.execution_id]
    assert len(late) == 1
    assert smartflows_emulator.executions_started() == 2
    # A later reconciliation of the same input sees both and refuses to pick one.
    with pytest.raises(SmartFlowsApiError, match="2 executions of flow 'hello'"):
        hook.find_started_execution("hello", None, sent_at=time.time() - 5, **NO_SETTLE)
