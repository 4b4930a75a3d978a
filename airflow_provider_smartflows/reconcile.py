"""Reconciling an ambiguous start (no I/O): did the start POST create an execution, and which one?

A start POST that got no usable answer (a reset, a read timeout, a 500 after sending) may or may not
have created an execution. The search (:mod:`~airflow_provider_smartflows.reconciled_start`) lists
the flow's executions newest first and hands each page to a :class:`ListingScan`, which keeps
those that may be the one it sent:

- created by the connection's user (``createdBy`` against ``GET /users/me``; a ``createdBy`` that
  cannot be read counts as the user's);
- with the same input (:class:`ExpectedInput`: JSON by value, XML by canonical form, no body = no
  input); an input that cannot be compared (missing, another representation) blocks a proof;
- created after the start was sent (:class:`Window`: the client's clock, corrected by the server's
  ``Date`` header). There is no upper bound: a later execution with the same input can only make
  the answer "cannot tell", never a wrong adoption. One created up to the clock skew *before* the
  send cannot be told from the start's own under skewed clocks: it blocks both answers.

:func:`decide` turns the scan into a :class:`Verdict`: exactly one match → adopt it; none, on a
complete listing, again after the settle time → nothing was started; anything else → cannot tell.

UNCONFIRMED on the real server: ``createdAt``'s format (ISO 8601 with or without zone, or epoch
milliseconds: all are read; without a zone it is taken as UTC), ``createdBy``'s shape (an object
with ``id`` or a name string), ``state.inputData``'s shape (the emulator returns JSON by value and
XML as sent), whether the listing carries ``state`` at all, and whether ``createdAt`` comes from the
clock that writes the ``Date`` header.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pendulum

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsInputError

#: Seconds the client's and the server's clocks may differ (the window starts this long before T).
DEFAULT_CLOCK_SKEW = 30.0
#: Seconds to wait before the second listing when the first found nothing.
DEFAULT_SETTLE_TIME = 10.0
DEFAULT_PAGE_SIZE = 100
#: Pages read at most per listing: more executions in the window than this cannot prove anything.
DEFAULT_MAX_PAGES = 10

ADOPTED = "adopted"
NOT_STARTED = "not_started"
UNRESOLVED = "unresolved"


SAME, DIFFERENT, UNKNOWN = "same", "different", "unknown"

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
#: Epoch numbers at least this large are milliseconds (seconds reach it only in the year 5138).
_EPOCH_MS_FROM = 1e11
_NAME_FIELDS = ("displayName", "name", "username", "userName", "login", "email")


def parse_timestamp(value: object) -> float | None:
    """
    A ``createdAt`` as epoch seconds, or None if it cannot be read.

    Accepts ISO 8601 date-times with a zone (``Z``, ``+01:00``) or without one (taken as UTC), and
    epoch milliseconds (or seconds) as a number or a string of digits. A date without a time is
    too coarse to place in a window: None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            value = float(text)
        elif _DATE_TIME.match(text):
            try:
                parsed = pendulum.parse(text, tz="UTC")
            except (ValueError, TypeError, OverflowError):
                return None
            return float(parsed.timestamp()) if isinstance(parsed, pendulum.DateTime) else None
        else:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value) / 1000.0 if abs(value) >= _EPOCH_MS_FROM else float(value)
    return None


def iso(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds (for messages)."""
    return pendulum.from_timestamp(timestamp, tz="UTC").format("YYYY-MM-DDTHH:mm:ss.SSS[Z]")


# --------------------------------------------------------------------------- input


def _without_nulls(value: Any) -> Any:
    """JSON with ``null`` members dropped: ``{"userId": null}`` and ``{}`` carry the same input."""
    if isinstance(value, Mapping):
        return {str(k): _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _canonical_xml(data: str | bytes) -> str | None:
    try:
        return ET.canonicalize(xml_data=data, strip_text=True)
    except (ET.ParseError, ValueError, TypeError):
        return None


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ({}, [])


@dataclass(frozen=True)
class ExpectedInput:
    """The input a start sent, in comparable form: ``kind`` is ``none``, ``json`` or ``xml``."""

    kind: str
    value: Any = None

    @classmethod
    def of(cls, data: object) -> ExpectedInput:
        """From the ``data`` given to ``start_execution`` (None, a dict, or XML text/bytes)."""
        if data is None:
            return cls("none")
        if isinstance(data, Mapping):
            return cls("json", _without_nulls(json.loads(json.dumps(data))))
        if isinstance(data, (str, bytes, bytearray)):
            canonical = _canonical_xml(bytes(data) if isinstance(data, bytearray) else data)
            if canonical is None:
                raise SmartFlowsInputError("The start's XML input is not well-formed: cannot compare it.")
            return cls("xml", canonical)
        raise SmartFlowsInputError(f"Cannot compare a start input of type {type(data).__name__}.")

    def compare(self, state: object) -> str:
        """SAME, DIFFERENT or UNKNOWN for an execution's ``state`` (its ``inputData``)."""
        if not isinstance(state, Mapping) or "inputData" not in state:
            return UNKNOWN  # the listing did not say what the input was
        actual = state["inputData"]
        if self.kind == "none":
            return SAME if _is_empty(actual) else DIFFERENT
        if _is_empty(actual):
            return DIFFERENT
        if isinstance(actual, str) and self.kind == "json":
            text = actual.strip()
            if text.startswith("<"):
                return DIFFERENT  # XML input, ours is JSON
            try:
                actual = json.loads(text)
            except ValueError:
                return UNKNOWN
        if self.kind == "json":
            if not isinstance(actual, Mapping):
                return UNKNOWN
            return SAME if _without_nulls(actual) == self.value else DIFFERENT
        if isinstance(actual, str):
            canonical = _canonical_xml(actual)
            if canonical is None:
                return DIFFERENT if actual.strip().startswith("{") else UNKNOWN
            return SAME if canonical == self.value else DIFFERENT
        if isinstance(actual, Mapping) and "entity" in actual and "id" in actual:
            return DIFFERENT  # a Dynamics/Sugar JSON input, ours is XML
        return UNKNOWN  # e.g. a server that shows XML input parsed into an object


# --------------------------------------------------------------------------- user


@dataclass(frozen=True)
class UserIdentity:
    """The connection's user, from ``GET /users/me``: its id and the names it may appear under."""

    id: str | None
    names: frozenset[str]

    @classmethod
    def of(cls, me: object) -> UserIdentity:
        """ValueError if ``me`` names no user (no id and no name)."""
        if not isinstance(me, Mapping):
            raise ValueError("GET /users/me did not answer a user object")
        user_id = me.get("id")
        user_id = str(user_id) if isinstance(user_id, (str, int)) and str(user_id) else None
        names = frozenset(str(me[k]) for k in _NAME_FIELDS if isinstance(me.get(k), str) and me[k])
        if user_id is None and not names:
            raise ValueError("GET /users/me answered a user without id or name")
        return cls(user_id, names)

    def label(self) -> str:
        return repr(self.id) if self.id else repr(sorted(self.names)[0])

    def owns(self, created_by: object) -> bool | None:
        """Whether an execution's ``createdBy`` is this user; None if it cannot be told."""
        if isinstance(created_by, str) and created_by:
            return created_by == self.id or created_by in self.names
        if not isinstance(created_by, Mapping):
            return None
        other_id = created_by.get("id")
        if self.id is not None and isinstance(other_id, (str, int)) and str(other_id):
            return str(other_id) == self.id
        names = {
            str(created_by[k]) for k in _NAME_FIELDS if isinstance(created_by.get(k), str) and created_by[k]
        }
        if not names:
            return None
        return bool(names & self.names)


# --------------------------------------------------------------------------- the scan


@dataclass(frozen=True)
class Candidate:
    """An execution that may be the one the start created."""

    id: str
    created_at: str  # as the server wrote it
    why: str = ""  # why it is not a plain match (input or creation time unreadable)

    def describe(self) -> str:
        return f"{self.id} (created {self.created_at}{'; ' + self.why if self.why else ''})"

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "createdAt": self.created_at}


@dataclass(frozen=True)
class Window:
    """
    Where a start's execution can be, in the server's ``createdAt`` time (epoch seconds).

    ``not_before``: the server's time when the start was sent, as far as it can be told: the
    client's ``sent_at`` plus the server's clock offset read from a ``Date`` header (a lower bound:
    the header has whole seconds), or ``sent_at`` without one. An execution created after it may be
    the start's. ``since`` = the earlier of ``sent_at`` and ``not_before``, minus the clock skew:
    executions created between ``since`` and ``not_before`` predate the send by the clocks, but a
    server clock off by up to the skew could put the start's own execution there. They can neither
    be adopted nor ignored: one with the same input makes the verdict "cannot tell".
    """

    since: float
    not_before: float

    @classmethod
    def of(cls, sent_at: float, clock_skew: float, server_offset: float | None) -> Window:
        not_before = sent_at + (server_offset or 0.0)
        return cls(min(sent_at, not_before) - clock_skew, not_before)


@dataclass
class ListingScan:
    """One pass over a listing sorted by ``createdAt`` descending, page by page (:meth:`add_page`)."""

    expected: ExpectedInput
    user: UserIdentity
    window: Window
    page_size: int
    max_pages: int
    matches: list[Candidate] = field(default_factory=list)
    #: Same user, input the same or not comparable, created before the send by the clocks.
    early: list[Candidate] = field(default_factory=list)
    unknown: list[Candidate] = field(default_factory=list)
    listed: int = 0
    pages: int = 0
    complete: bool = False
    problem: str | None = None
    _seen: set[str] = field(default_factory=set)
    _last: float | None = None

    def add_page(self, items: list[Any]) -> bool:
        """Take the next page; True if the page after it is needed."""
        self.pages += 1
        for item in items:
            if self._take(item):
                return False
        if not items:
            # Only an empty page ends the listing: a short one may be a server capping ``size``.
            self.complete = True
        elif self.pages >= self.max_pages:
            self.problem = (
                f"{self.pages} pages of up to {self.page_size} executions did not reach the start of "
                f"the window (since {iso(self.window.since)}): too many executions to search"
            )
        return not (self.complete or self.problem)

    def _take(self, item: object) -> bool:
        """Classify one execution; True when the scan is over (older than the window, or unsorted)."""
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), (str, int)):
            self.problem = "the listing holds an item that is not an execution with an id"
            return True
        execution_id = str(item["id"])
        if execution_id in self._seen:
            return False  # offset paging while executions are created repeats items, never skips
        self._seen.add(execution_id)
        self.listed += 1
        created = parse_timestamp(item.get("createdAt"))
        if created is not None:
            if self._last is not None and created > self._last:
                self.problem = "the server did not sort the listing by createdAt, newest first"
                return True
            self._last = created
            if created < self.window.since:
                self.complete = True
                return True
        if self.user.owns(item.get("createdBy")) is False:
            return False
        verdict = self.expected.compare(item.get("state"))
        if verdict != DIFFERENT:
            self._keep(Candidate(execution_id, str(item.get("createdAt"))), created, verdict)
        return False

    def _keep(self, candidate: Candidate, created: float | None, verdict: str) -> None:
        if created is None:
            self.unknown.append(replace(candidate, why="creation time unreadable"))
        elif created < self.window.not_before:
            self.early.append(replace(candidate, why="created before the start was sent, by the clocks"))
        elif verdict == SAME:
            self.matches.append(candidate)
        else:
            self.unknown.append(replace(candidate, why="input not comparable"))


@dataclass(frozen=True)
class Verdict:
    """What a scan proves: ``outcome`` ADOPTED (``execution``), NOT_STARTED or UNRESOLVED."""

    outcome: str
    reason: str
    execution: Candidate | None = None
    candidates: tuple[Candidate, ...] = ()

    @property
    def execution_id(self) -> str | None:
        return self.execution.id if self.execution else None


def decide(scan: ListingScan, flow_id: str, *, final: bool) -> Verdict | None:
    """The verdict of a scan; None when nothing matched and the listing should be taken again."""
    looked = (
        f"executions of flow {flow_id!r} created since {iso(scan.window.since)} by user "
        f"{scan.user.label()} with the same input"
    )
    candidates = tuple(scan.matches + scan.early + scan.unknown)
    if len(scan.matches) > 1:
        return Verdict(UNRESOLVED, f"{len(scan.matches)} {looked}: cannot tell which one", None, candidates)
    if scan.problem:
        return Verdict(UNRESOLVED, scan.problem, None, candidates)
    if scan.early:
        return Verdict(
            UNRESOLVED,
            f"{len(scan.early)} of the {looked} were created up to the clock skew before the start "
            "was sent: another run's, or this one's if the clocks differ more than measured",
            None,
            candidates,
        )
    if scan.unknown:
        return Verdict(
            UNRESOLVED, f"{len(scan.unknown)} of the window could not be compared", None, candidates
        )
    if not scan.complete:
        return Verdict(UNRESOLVED, "the listing ended early", None, candidates)
    if scan.matches:
        (match,) = scan.matches
        return Verdict(ADOPTED, f"it is the only one of the {looked}", match, candidates)
    if final:
        return Verdict(NOT_STARTED, f"none of the {scan.listed} listed is one of the {looked}")
    return None


def server_offset(date_header: str | None, client_now: float) -> float | None:
    """
    The server's clock minus the client's, from an answer's ``Date`` header read at ``client_now``:
    a lower bound (the header has whole seconds and the answer took time to arrive); None without it.
    """
    if not date_header:
        return None
    try:
        server_now = email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return server_now - client_now


# --------------------------------------------------------------------------- errors


def unresolved_error(
    error: SmartFlowsApiError | None, flow_id: str | None, verdict: Verdict
) -> SmartFlowsApiError:
    """The ambiguous start's error (same class, ``may_have_started``), saying why it stays unknown."""
    shown = [c.describe() for c in verdict.candidates[:10]]
    if len(verdict.candidates) > len(shown):
        shown.append(f"and {len(verdict.candidates) - len(shown)} more")
    text = (
        "Looked for it among the flow's executions and could not tell whether it was created: "
        f"{verdict.reason}." + (f" Candidates: {', '.join(shown)}." if shown else "")
    )
    if error is None:
        flow = repr(flow_id) if flow_id else "(chosen by the user)"
        error = SmartFlowsApiError(
            f"Starting flow {flow} may have created an execution. Check the flow's executions on "
            "the server before running it again."
        )
    fields = error.fields()
    fields.update(
        retryable=False, may_have_started=True, candidates=[c.to_json() for c in verdict.candidates]
    )
    return type(error)(f"{error.message} {text}", **fields)


def second_start_error(error: SmartFlowsApiError, first: Verdict) -> SmartFlowsApiError:
    """A start again whose outcome is unknown too: it fails, never a third POST."""
    fields = error.fields()
    fields.update(retryable=False, may_have_started=True)
    return type(error)(
        f"{error.message} This was the second start: the first one was proven to have created "
        f"nothing ({first.reason}), and the flow is started again at most once.",
        **fields,
    )
