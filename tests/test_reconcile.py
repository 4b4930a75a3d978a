"""The rules of reconciling an ambiguous start (``reconcile.py``, ``reconciled_start.py``), without I/O.

Over real HTTP with the emulator's faults: ``hooks/test_reconcile_http.py``.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsConnectionError,
    SmartFlowsInputError,
)
from airflow_provider_smartflows.models import ExecutionProgress
from airflow_provider_smartflows.reconcile import (
    ADOPTED,
    DIFFERENT,
    NOT_STARTED,
    SAME,
    UNKNOWN,
    UNRESOLVED,
    Candidate,
    ExpectedInput,
    ListingScan,
    UserIdentity,
    Verdict,
    Window,
    decide,
    parse_timestamp,
    server_offset,
    unresolved_error,
)
from airflow_provider_smartflows.reconciled_start import (
    STARTED,
    STARTED_AGAIN,
    StartedExecution,
    find_start,
    start_reconciled,
)

pytestmark = pytest.mark.airflow_agnostic  # pure rules, the same on every Airflow line

T = 1_800_000_000.0  # the client's clock when the start was sent
ME = UserIdentity.of({"id": "u1", "displayName": "Ada"})
RECORDS = {"id": ["r1"], "entity": "account"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2027-01-15T08:00:00.123Z", T + 0.123, id="iso-z-ms"),
        pytest.param("2027-01-15T08:00:00Z", T, id="iso-z"),
        pytest.param("2027-01-15T09:00:00+01:00", T, id="iso-offset"),
        pytest.param("2027-01-15T08:00:00", T, id="iso-no-zone-is-utc"),
        pytest.param("2027-01-15 08:00:00.5", T + 0.5, id="iso-space"),
        pytest.param(int(T * 1000), T, id="epoch-ms-number"),
        pytest.param(str(int(T * 1000) + 250), T + 0.25, id="epoch-ms-string"),
        pytest.param(T, T, id="epoch-seconds"),
        pytest.param("2027-01-15", None, id="date-only-too-coarse"),
        pytest.param("yesterday", None, id="text"),
        pytest.param("2027-13-45T99:00:00", None, id="invalid"),
        pytest.param(None, None, id="none"),
        pytest.param(True, None, id="bool"),
        pytest.param(float("nan"), None, id="nan"),
    ],
)
def test_created_at_is_parsed_robustly(value: object, expected: float | None) -> None:
    parsed = parse_timestamp(value)
    if expected is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(expected, abs=1e-6)


XML = '<?xml version="1.0" encoding="utf-8"?>\n<letter lang="en" to="Ada">\n  <body>Hi</body>\n</letter>'


@pytest.mark.parametrize(
    ("data", "input_data", "expected"),
    [
        pytest.param(None, None, SAME, id="none-null"),
        pytest.param(None, "", SAME, id="none-empty-text"),
        pytest.param(None, {}, SAME, id="none-empty-object"),
        pytest.param(None, RECORDS, DIFFERENT, id="none-vs-json"),
        pytest.param(None, XML, DIFFERENT, id="none-vs-xml"),
        pytest.param(RECORDS, {"entity": "account", "id": ["r1"]}, SAME, id="json-by-value"),
        pytest.param(RECORDS, {**RECORDS, "userId": None}, SAME, id="json-null-member-is-absent"),
        pytest.param(RECORDS, '{"entity": "account", "id": ["r1"]}', SAME, id="json-as-text"),
        pytest.param(
            RECORDS,
            {"id": ["r2"], "entity": "account"},
            DIFFERENT,
            id="json-other-record",
        ),
        pytest.param(
            RECORDS,
            {"id": ["r1", "r2"], "entity": "account"},
            DIFFERENT,
            id="json-more",
        ),
        pytest.param(RECORDS, None, DIFFERENT, id="json-vs-none"),
        pytest.param(RECORDS, XML, DIFFERENT, id="json-vs-xml"),
        pytest.param(RECORDS, "not json", UNKNOWN, id="json-vs-garbage"),
        pytest.param(RECORDS, ["r1"], UNKNOWN, id="json-vs-list"),
        pytest.param(
            XML,
            '<letter to="Ada" lang="en"><body>Hi</body></letter>',
            SAME,
            id="xml-canonical",
        ),
        pytest.param(XML.encode(), XML, SAME, id="xml-bytes"),
        pytest.param(
            XML,
            '<letter lang="en" to="Bob"><body>Hi</body></letter>',
            DIFFERENT,
            id="xml-other",
        ),
        pytest.param(XML, None, DIFFERENT, id="xml-vs-none"),
        pytest.param(XML, RECORDS, DIFFERENT, id="xml-vs-json"),
        pytest.param(XML, {"letter": {"to": "Ada"}}, UNKNOWN, id="xml-vs-parsed-object"),
        pytest.param(XML, "<letter", UNKNOWN, id="xml-vs-broken-xml"),
    ],
)
def test_input_is_compared_by_value_or_canonical_form(data: Any, input_data: Any, expected: str) -> None:
    assert ExpectedInput.of(data).compare({"inputData": input_data}) == expected


@pytest.mark.parametrize("state", [None, {}, {"output": {}}, "x"], ids=["null", "empty", "no-input", "text"])
def test_a_state_without_input_data_cannot_be_compared(state: object) -> None:
    assert ExpectedInput.of(None).compare(state) == UNKNOWN


@pytest.mark.parametrize(
    ("created_by", "expected"),
    [
        pytest.param({"id": "u1", "displayName": "someone"}, True, id="same-id"),
        pytest.param({"id": "u2", "displayName": "Ada"}, False, id="other-id-same-name"),
        pytest.param({"displayName": "Ada"}, True, id="name-only"),
        pytest.param({"displayName": "Bob"}, False, id="other-name-only"),
        pytest.param("u1", True, id="id-as-text"),
        pytest.param("Ada", True, id="name-as-text"),
        pytest.param("Bob", False, id="other-as-text"),
        pytest.param(None, None, id="missing"),
        pytest.param({"type": "user"}, None, id="no-id-no-name"),
    ],
)
def test_created_by_is_matched_against_the_connection_user(created_by: object, expected: bool | None) -> None:
    assert ME.owns(created_by) is expected


def test_a_user_without_id_or_name_is_refused() -> None:
    with pytest.raises(ValueError, match="without id or name"):
        UserIdentity.of({"role": "admin"})


def test_server_offset_reads_the_date_header_as_a_lower_bound() -> None:
    assert server_offset("Fri, 15 Jan 2027 08:00:00 GMT", T + 0.4) == pytest.approx(-0.4)
    assert server_offset("Fri, 15 Jan 2027 08:02:00 GMT", T) == pytest.approx(120)
    assert server_offset(None, T) is None
    assert server_offset("not a date", T) is None


@pytest.mark.parametrize(
    ("offset", "since", "not_before"),
    [
        pytest.param(None, T - 30, T, id="no-date-header"),
        pytest.param(-120.0, T - 150, T - 120, id="client-ahead"),
        pytest.param(120.0, T - 30, T + 120, id="client-behind"),
    ],
)
def test_the_window_follows_the_measured_offset_and_the_skew(
    offset: float | None, since: float, not_before: float
) -> None:
    assert Window.of(T, 30, offset) == Window(since, not_before)


def execution(eid: str, created: object, data: Any = None, by: object = "u1") -> dict[str, Any]:
    return {
        "id": eid,
        "createdAt": created,
        "createdBy": {"id": by},
        "state": {"inputData": data},
    }


def scan_of(
    *pages: list[dict[str, Any]],
    data: Any = None,
    page_size: int = 3,
    max_pages: int = 5,
) -> ListingScan:
    scan = ListingScan(ExpectedInput.of(data), ME, Window(T - 30, T), page_size, max_pages)
    for page in pages:
        if not scan.add_page(page):
            break
    return scan


def test_one_match_after_the_send_is_adopted_others_do_not_count() -> None:
    scan = scan_of(
        [
            execution("later-other-input", T + 9, RECORDS),
            execution("other-user", T + 8, by="u2"),
            execution("mine", T + 1),
        ],
        [execution("too-old", T - 31)],
    )
    verdict = decide(scan, "f", final=False)
    assert verdict is not None
    assert (verdict.outcome, verdict.execution_id) == (ADOPTED, "mine")
    assert scan.pages == 2
    assert scan.complete


def test_a_short_page_is_not_the_end_of_the_listing() -> None:
    # A server may cap ``size``: only an empty page (or an execution older than the window) ends it.
    scan = scan_of([execution("other", T + 1, RECORDS)])
    assert not scan.complete
    assert scan.add_page([]) is False
    assert scan.complete
    verdict = decide(scan, "f", final=True)
    assert verdict is not None
    assert verdict.outcome == NOT_STARTED


def test_no_match_proves_nothing_only_on_the_final_listing() -> None:
    scan = scan_of([execution("other", T + 1, RECORDS), execution("old", T - 60)])
    assert decide(scan, "f", final=False) is None
    verdict = decide(scan, "f", final=True)
    assert verdict is not None
    assert verdict.outcome == NOT_STARTED
    assert "none of the 2 listed" in verdict.reason


@pytest.mark.parametrize(
    ("pages", "why"),
    [
        pytest.param(
            [[execution("a", T + 2), execution("b", T + 1)]],
            "2 executions of flow 'f'",
            id="two-matches",
        ),
        pytest.param(
            [[execution("early", T - 5)]],
            "created up to the clock skew before",
            id="early-match",
        ),
        pytest.param(
            [[{"id": "x", "createdAt": T + 1, "createdBy": {"id": "u1"}}]],
            "could not be compared",
            id="no-state",
        ),
        pytest.param([[execution("x", "garbage")]], "could not be compared", id="unreadable-time"),
        pytest.param(
            [[execution("a", T + 1, RECORDS), execution("b", T + 2, RECORDS)]],
            "did not sort",
            id="unsorted",
        ),
        pytest.param([[{"no": "id"}]], "not an execution with an id", id="not-an-execution"),
        pytest.param(
            [[execution(f"e{p}{i}", T + 100 - p * 3 - i, RECORDS) for i in range(3)] for p in range(5)],
            "5 pages of up to 3 executions did not reach the start of the window",
            id="window-too-large",
        ),
    ],
)
def test_what_cannot_be_told(pages: list[list[dict[str, Any]]], why: str) -> None:
    verdict = decide(scan_of(*pages), "f", final=True)
    assert verdict is not None
    assert verdict.outcome == UNRESOLVED
    assert why in verdict.reason


def test_paging_repeats_are_counted_once() -> None:
    # A new execution pushes the newest-first pages down: the next page repeats an item.
    first = [
        execution("c", T + 3, RECORDS),
        execution("b", T + 2, RECORDS),
        execution("mine", T + 1),
    ]
    second = [execution("mine", T + 1), execution("old", T - 40)]
    verdict = decide(scan_of(first, second), "f", final=True)
    assert verdict is not None
    assert (verdict.outcome, verdict.execution_id) == (
        ADOPTED,
        "mine",
    )


def fake_listing(executions: list[dict[str, Any]], calls: list[tuple[int, int, str | None]]) -> Any:
    def list_page(page: int, size: int, created_by: str | None) -> list[dict[str, Any]]:
        calls.append((page, size, created_by))
        return executions[page * size : (page + 1) * size]

    return list_page


def test_find_start_lists_again_after_the_settle_time_without_the_user_filter() -> None:
    calls: list[tuple[int, int, str | None]] = []
    settled: list[float] = []
    verdict = find_start(
        "f",
        None,
        sent_at=T,
        current_user=lambda: ({"id": "u1"}, None),
        list_page=fake_listing([], calls),
        settle_time=2.5,
        clock=lambda: T,
        sleep=settled.append,
    )
    assert verdict.outcome == NOT_STARTED
    assert settled == [2.5]
    assert calls == [(0, 100, "u1"), (0, 100, None)]


def test_find_start_turns_a_refused_listing_into_cannot_tell() -> None:
    def refused(page: int, size: int, created_by: str | None) -> list[Any]:
        raise SmartFlowsApiError(
            "The API key lacks the rights for GET /flows/f/executions (403).",
            status_code=403,
        )

    verdict = find_start(
        "f",
        None,
        sent_at=T,
        current_user=lambda: ({"id": "u1"}, None),
        list_page=refused,
        sleep=lambda s: None,
    )
    assert verdict.outcome == UNRESOLVED
    assert "could not be listed: The API key lacks the rights" in verdict.reason


@pytest.mark.parametrize(
    "options",
    [
        {"clock_skew": -1},
        {"settle_time": "5"},
        {"page_size": 0},
        {"max_pages": 1.5},
        {"clock_skew": True},
    ],
    ids=["negative-skew", "text-settle", "zero-page", "float-pages", "bool-skew"],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(SmartFlowsInputError, match="Reconciling a start needs"):
        find_start(
            "f",
            None,
            sent_at=T,
            current_user=lambda: ({}, None),
            list_page=lambda *a: [],
            **options,
        )


def test_the_unresolved_error_keeps_the_start_error_and_names_the_candidates() -> None:
    start_error = SmartFlowsConnectionError(
        "Starting flow 'f' failed. Check the flow's executions on the server before running it again.",
        conn_id="sf",
        request_sent=True,
        may_have_started=True,
    )
    verdict = Verdict(
        UNRESOLVED,
        "2 executions match",
        None,
        (Candidate("a", "2027-01-15T08:00:01Z"), Candidate("b", "x", "why")),
    )
    err = unresolved_error(start_error, "f", verdict)
    assert type(err) is SmartFlowsConnectionError
    assert err.message.startswith(start_error.message)
    assert (
        "2 executions match. Candidates: a (created 2027-01-15T08:00:01Z), b (created x; why)." in err.message
    )
    assert (err.may_have_started, err.retryable, err.request_sent, err.conn_id) == (
        True,
        False,
        True,
        "sf",
    )
    assert err.candidates == [
        {"id": "a", "createdAt": "2027-01-15T08:00:01Z"},
        {"id": "b", "createdAt": "x"},
    ]
    assert pickle.loads(pickle.dumps(err)).candidates == err.candidates


# --------------------------------------------------------------------------- the reconciled start


class Starts:
    """A fake ``start()``: each call raises or answers the next outcome; ``find`` records its calls."""

    def __init__(self, *outcomes: Exception | str, verdict: Verdict | None = None) -> None:
        self.outcomes = list(outcomes)
        self.verdict = verdict
        self.found: list[tuple[SmartFlowsApiError, float]] = []

    def start(self) -> Any:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return ExecutionProgress.from_json({"id": outcome, "status": "Running"})

    def find(self, error: SmartFlowsApiError, sent_at: float) -> Verdict:
        self.found.append((error, sent_at))
        assert self.verdict is not None
        return self.verdict

    def run(self) -> StartedExecution:
        return start_reconciled("f", self.start, self.find, log=logging.getLogger(__name__), clock=lambda: T)


def unknown_start(reason: str = "read timeout") -> SmartFlowsConnectionError:
    return SmartFlowsConnectionError("Starting flow 'f' failed.", reason=reason, may_have_started=True)


ONE = Candidate("e1", "2027-01-15T08:00:01Z")


def test_a_start_with_an_answer_is_not_reconciled() -> None:
    starts = Starts("e1")
    assert starts.run() == StartedExecution("e1", STARTED, "Running")
    assert starts.found == []


def test_a_refused_start_is_raised_without_looking() -> None:
    refused = SmartFlowsApiError("bad input", status_code=422)
    starts = Starts(refused)
    with pytest.raises(SmartFlowsApiError) as info:
        starts.run()
    assert (info.value, starts.found) == (refused, [])


def test_an_unknown_start_adopts_what_the_listing_proves() -> None:
    error = unknown_start()
    starts = Starts(error, verdict=Verdict(ADOPTED, "it is the only one", ONE))
    assert starts.run() == StartedExecution("e1", ADOPTED, None, "it is the only one", "read timeout")
    assert starts.found == [(error, T)]


def test_an_unknown_start_that_created_nothing_starts_again_once() -> None:
    starts = Starts(unknown_start("HTTP 500"), "e2", verdict=Verdict(NOT_STARTED, "none listed"))
    assert starts.run() == StartedExecution("e2", STARTED_AGAIN, "Running", "none listed", "HTTP 500")


def test_a_second_unknown_start_fails_without_a_third() -> None:
    starts = Starts(unknown_start(), unknown_start(), verdict=Verdict(NOT_STARTED, "none listed"))
    with pytest.raises(SmartFlowsConnectionError, match="This was the second start") as info:
        starts.run()
    assert (info.value.may_have_started, info.value.retryable, starts.outcomes) == (True, False, [])
