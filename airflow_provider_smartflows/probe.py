"""``smartflows-probe --conn-id <id>``: ask a Smart Flows server what it is and how it answers, and
print the connection extras to set. Also ``python -m airflow_provider_smartflows.probe``.

Read-only: every request is a GET (:class:`.hooks.discovery.SmartFlowsDiscoveryHook` sends them);
it never starts, answers, cancels or deletes anything. What it asks:

- the server's version and project, the key's user and role (``/system/info``, ``/users/me``);
- whether it serves its API description (``/v3/api-docs``, ``/v2/api-docs``, ``/swagger-ui/``) and,
  when it does, which of the provider's routes it lists, with which methods and query parameters:
  every route the provider uses that the server lacks is named with the feature that needs it;
- the page size its listings answer with (and whether it reads ``page`` and ``size``);
- whether the progress call takes the long-poll ``timeout``, on an execution that already finished
  (read from the listing; never one the probe would start).

Exit status: 0 nothing to fix, 1 the server differs in a way the report names, 2 the probe could
not ask (bad key, no rights, unreachable, TLS: the message says what to do).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_smartflows.exceptions import SmartFlowsApiError
from airflow_provider_smartflows.hooks.api import (
    ANSWER_USER_INPUT,
    CANCEL_EXECUTION,
    GET_CURRENT_USER,
    GET_DOCUMENT,
    GET_DOCUMENT_CONTENT,
    GET_EXECUTION,
    GET_PROGRESS,
    GET_SYSTEM_INFO,
    LIST_EXECUTIONS,
    LIST_FLOW_EXECUTIONS,
    LIST_FLOWS,
    LIST_PAGE_SIZE,
    SERVER_DEFAULT_PAGE_SIZE,
    START_EXECUTION,
)
from airflow_provider_smartflows.hooks.connection import API_PREFIX, DEFAULT_CANCEL_PATH, DEFAULT_CONN_ID
from airflow_provider_smartflows.models import ExecutionStatus

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_smartflows.hooks.discovery import SmartFlowsDiscoveryHook

#: Seconds of the long-poll sent on a finished execution.
DEFAULT_LONG_POLL_SECONDS = 2.0
_PAGING = ("page", "size")


@dataclass(frozen=True)
class Need:
    """A route the provider uses (``METHOD /api/v1/path``), the feature that needs it and the query
    parameters it sends; ``used`` False: listed for information only."""

    route: str
    feature: str
    params: tuple[str, ...] = ()
    used: bool = True


NEEDS = (
    Need(START_EXECUTION.route, "starting an execution (run and batch operators)", ("flowId", "datasetId")),
    Need(GET_PROGRESS.route, "waiting on an execution (operators, sensor, triggers)", ("timeout",)),
    Need(ANSWER_USER_INPUT.route, "answering a form (the human-input operator)"),
    Need(GET_EXECUTION.route, "reading an execution's errors and documents"),
    Need(GET_DOCUMENT.route, "document metadata (download into a folder)"),
    Need(GET_DOCUMENT_CONTENT.route, "downloading documents"),
    Need(
        LIST_FLOW_EXECUTIONS.route,
        "reconciling a start that got no answer",
        ("page", "size", "sort", "filter"),
    ),
    Need(LIST_FLOWS.route, "list_flows", _PAGING),
    Need(
        LIST_EXECUTIONS.route, "list_executions (and this probe's page size check)", ("page", "size", "sort")
    ),
    Need(GET_CURRENT_USER.route, "the connection test"),
    Need(GET_SYSTEM_INFO.route, "the connection test"),
    Need(
        f"POST {API_PREFIX}/flows/executions/start",
        "the prompt-free start (not used by this provider)",
        used=False,
    ),
    Need(
        f"GET {API_PREFIX}/flows/executions/{{id}}/status",
        "status with named outputs (not used by this provider)",
        used=False,
    ),
)
CANCEL_ROUTES = {name: endpoint.route for name, endpoint in CANCEL_EXECUTION.items()}


@dataclass
class ProbeReport:
    """What the probe found; :func:`render` prints it."""

    conn_id: str
    base_url: str
    server: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    swagger_ui: str | None = None
    routes: list[dict[str, Any]] = field(default_factory=list)
    cancel_path: str | None = None
    paging: str = ""
    long_poll: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the API description


def _normal(route: str) -> str:
    """``METHOD /path`` with every path parameter as ``{}`` and no trailing slash."""
    method, _, path = route.partition(" ")
    return f"{method.upper()} {re.sub(r'{[^}]*}', '{}', path).rstrip('/') or '/'}"


def _base_path(spec: Mapping[str, Any]) -> str:
    """The prefix of the description's paths: Swagger 2 ``basePath``, OpenAPI 3 ``servers[0].url``."""
    if isinstance(spec.get("basePath"), str):
        return spec["basePath"].rstrip("/")
    servers = spec.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], Mapping):
        return urlsplit(str(servers[0].get("url", ""))).path.rstrip("/")
    return ""


def _query_names(*parameter_lists: object) -> set[str]:
    names = set()
    for parameters in parameter_lists:
        for param in parameters if isinstance(parameters, list) else []:
            if (
                isinstance(param, Mapping)
                and param.get("in") == "query"
                and isinstance(param.get("name"), str)
            ):
                names.add(param["name"])
    return names


def described_routes(spec: object) -> dict[str, set[str]]:
    """The routes an API description lists (normalised ``METHOD /path``) and their query parameters."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("paths"), Mapping):
        return {}
    base = _base_path(spec)
    routes: dict[str, set[str]] = {}
    for path, item in spec["paths"].items():
        if not isinstance(item, Mapping):
            continue
        for method, operation in item.items():
            if method.lower() in ("get", "post", "put", "delete", "patch") and isinstance(operation, Mapping):
                params = _query_names(item.get("parameters"), operation.get("parameters"))
                routes[_normal(f"{method} {base}{path}")] = params
    return routes


def check_routes(report: ProbeReport, routes: dict[str, set[str]]) -> None:
    """Which of the provider's routes the description lists; the missing ones become problems."""
    for need in NEEDS:
        params = routes.get(_normal(need.route))
        listed = params is not None
        missing = [p for p in need.params if params is not None and p not in params]
        report.routes.append(
            {"route": need.route, "feature": need.feature, "listed": listed, "missing_params": missing}
        )
        if need.used and not listed:
            report.problems.append(f"The server lacks {need.route}: {need.feature} will fail.")
        elif need.used and set(missing) & set(_PAGING):
            report.problems.append(
                f"{need.route} lists the query parameters {', '.join(sorted(params or ())) or 'none'}, "
                f"not {' and '.join(_PAGING)}: {need.feature} reads only the first page of that listing."
            )
        elif need.used and missing:
            report.notes.append(
                f"{need.route} does not list the query parameter(s) {', '.join(missing)} that "
                f"{need.feature} sends; listed: {', '.join(sorted(params or ())) or 'none'}."
            )
    _check_cancel(report, routes)


def _check_cancel(report: ProbeReport, routes: dict[str, set[str]]) -> None:
    listed = [name for name, route in CANCEL_ROUTES.items() if _normal(route) in routes]
    for name, route in CANCEL_ROUTES.items():
        report.routes.append(
            {
                "route": route,
                "feature": f'cancelling (cancel_path "{name}")',
                "listed": name in listed,
                "missing_params": [],
            }
        )
    if not listed:
        report.problems.append(
            "The server lists neither cancel route ("
            + " nor ".join(CANCEL_ROUTES.values())
            + "): cancelling an execution (on_kill, timeouts) will fail."
        )
        return
    report.cancel_path = DEFAULT_CANCEL_PATH if DEFAULT_CANCEL_PATH in listed else listed[0]
    report.extras["cancel_path"] = report.cancel_path


def _check_own_cancel_path(report: ProbeReport, routes: dict[str, set[str]], own: str, label: str) -> None:
    """The connection's own ``cancel_path`` is a problem when the server lacks its route."""
    if report.cancel_path is None or _normal(CANCEL_ROUTES[own]) in routes:
        if report.cancel_path is not None:
            report.extras["cancel_path"] = own
        return
    report.problems.append(
        f'{label} cancels through cancel_path "{own}" ({CANCEL_ROUTES[own]}), which the server '
        f'lacks: set the extra "cancel_path": "{report.cancel_path}".'
    )


# --------------------------------------------------------------------------- paging


def _ids(page: list[Any]) -> list[Any]:
    return [item.get("id") if isinstance(item, Mapping) else None for item in page]


def check_paging(report: ProbeReport, hook: SmartFlowsDiscoveryHook) -> list[Any]:
    """The page size the executions listing answers with; returns its first page of up to 100."""
    route = LIST_EXECUTIONS.route
    default = hook.get_executions_page()
    asked = LIST_PAGE_SIZE
    first = hook.get_executions_page(0, asked)
    second = hook.get_executions_page(1, asked) if first else []
    if second and _ids(second) == _ids(first):
        report.problems.append(
            f"{route} answered page 1 with the items of page 0: the server does not read 'page' "
            "(some name it 'pageNumber'), so listings cannot go past their first page."
        )
    elif len(first) > len(default):
        report.paging = f"default page size {len(default)}; {len(first)} items when asked for {asked}"
        if len(first) < asked and second:
            _capped(report, route, len(first), asked)
        elif len(first) < asked:
            report.paging += " (the whole listing)"
    elif len(first) == len(default) and second:
        report.paging = f"answers {len(first)} items per page whether asked for {asked} or not"
        _capped(report, route, len(first), asked)
    elif len(first) == len(default):
        report.paging = (
            f"the listing holds only {len(first)} execution(s) visible to this key, fewer than the "
            "server's default page: the page size could not be seen"
        )
    else:
        report.paging = f"answers {len(default)} by default but {len(first)} when asked for {asked}"
        report.notes.append(f"{route} answers fewer items when asked for {asked} than by default.")
    return first


def _capped(report: ProbeReport, route: str, got: int, asked: int) -> None:
    if got == SERVER_DEFAULT_PAGE_SIZE:
        report.notes.append(
            f"{route} holds {got} items per page whatever 'size' asks (the vendor's default): the "
            "provider's listings still read every page, one request per page of 20."
        )
    else:
        report.problems.append(
            f"{route} holds at most {got} items per page when asked for {asked}: the provider takes "
            "a page shorter than it asked for as the last one, so its listings stop after the first page."
        )


# --------------------------------------------------------------------------- long-poll


def long_poll_verdict(elapsed: float, wait: float, listed: bool | None) -> str:
    """What a long-poll of ``wait`` s on a finished execution, answered after ``elapsed`` s, shows."""
    described = {True: "listed in the API description", False: "NOT listed in the API description", None: ""}[
        listed
    ]
    if elapsed >= 0.8 * wait:
        how = (
            f"held the request {elapsed:.1f} s of the {wait:g} s asked although the execution had "
            "finished: the server honours 'timeout' (and waits it out even when nothing can change; "
            "harmless: the provider stops polling at a final status)"
        )
    else:
        how = (
            f"answered in {elapsed:.2f} s with timeout={wait:g} on a finished execution, as a "
            "long-poll should (a server that ignores 'timeout' answers at once as well: only a "
            "running execution would tell, and the probe never starts one)"
        )
    return f"'timeout' {described}; {how}" if described else how


def check_long_poll(
    report: ProbeReport, hook: SmartFlowsDiscoveryHook, listing: list[Any], wait: float, listed: bool | None
) -> None:
    """A long-poll on the newest finished execution of the listing (never one the probe starts)."""
    finished = [
        item["id"]
        for item in listing
        if isinstance(item, Mapping)
        and isinstance(item.get("id"), str)
        and ExecutionStatus.parse(item.get("status")).is_terminal
    ]
    if not finished:
        report.long_poll = "not checked: the listing shows no finished execution visible to this key"
        return
    try:
        _, elapsed = hook.time_progress(finished[0], wait)
    except SmartFlowsApiError as err:
        report.long_poll = f"refused on execution {finished[0]}: {err.message}"
        report.problems.append(
            f"{GET_PROGRESS.route}?timeout={wait:g} failed on a finished execution ({err.status_code or err.message}): "
            "every wait of the provider sends 'timeout'."
        )
        return
    report.long_poll = f"execution {finished[0]}: " + long_poll_verdict(elapsed, wait, listed)


# --------------------------------------------------------------------------- the whole probe


def _text(data: object, *keys: str) -> str:
    if isinstance(data, Mapping):
        for key in keys:
            value = data.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                return str(value)
    return "(not given)"


def check_identity(report: ProbeReport, hook: SmartFlowsDiscoveryHook) -> None:
    me = hook.get_current_user()
    info = hook.get_system_info()
    report.server = {
        "version": _text(info, "version"),
        "project": _text(info, "projectId", "displayName"),
        "user": _text(me, "displayName", "name", "username", "login", "email", "id"),
        "role": _text(me, "role") if _text(me, "role") != "(not given)" else _text(info, "role"),
    }


def probe(
    conn_id: str = DEFAULT_CONN_ID,
    *,
    long_poll_seconds: float = DEFAULT_LONG_POLL_SECONDS,
    hook: SmartFlowsDiscoveryHook | None = None,
) -> ProbeReport:
    """Ask the server of connection ``conn_id``; only GETs. Raises the hook's SmartFlowsError when
    a question every server answers fails (bad key, no rights, unreachable, TLS)."""
    from airflow_provider_smartflows.hooks.discovery import SmartFlowsDiscoveryHook

    hook = hook or SmartFlowsDiscoveryHook(conn_id, retry_limit=0)
    report = ProbeReport(conn_id, hook.settings.base_url)
    check_identity(report, hook)
    found = hook.get_api_description()
    report.swagger_ui = hook.get_swagger_ui()
    routes: dict[str, set[str]] | None = None
    if found is None:
        report.notes.append(
            "The server serves no API description (/v3/api-docs, /v2/api-docs): the routes and the "
            "cancel path could not be checked. Ask its administrator which cancel route it has."
        )
    else:
        report.description, spec = found
        routes = described_routes(spec)
        check_routes(report, routes)
        _check_own_cancel_path(report, routes, hook.settings.cancel_path, hook.settings.label)
    try:
        listing = check_paging(report, hook)
    except SmartFlowsApiError as err:
        report.paging = report.long_poll = f"not checked: the executions listing failed ({err.message})"
        report.problems.append(f"{LIST_EXECUTIONS.route} failed: {err.message}")
        return report
    listed = None if routes is None else "timeout" in routes.get(_normal(GET_PROGRESS.route), set())
    check_long_poll(report, hook, listing, long_poll_seconds, listed)
    return report


def render(report: ProbeReport) -> str:
    """The report as text for a terminal."""
    server = report.server
    lines = [
        f"Smart Flows at {report.base_url} (connection {report.conn_id!r})",
        f"  version {server.get('version')}, project {server.get('project')}",
        f"  API key of {server.get('user')} (role {server.get('role')})",
        f"API description: {report.description or 'not served'}; Swagger UI: {report.swagger_ui or 'not served'}",
    ]
    for row in report.routes:
        mark = "ok     " if row["listed"] else "MISSING"
        lines.append(f"  {mark} {row['route']}  ({row['feature']})")
    lines += [f"Paging: {report.paging}", f"Long-poll: {report.long_poll}"]
    lines += [f"PROBLEM: {text}" for text in report.problems]
    lines += [f"Note: {text}" for text in report.notes]
    if report.extras:
        lines.append("Connection extras to set (JSON):")
        lines.append(json.dumps(report.extras, indent=2))
    else:
        lines.append("Connection extras to set: none could be told (keep the defaults).")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smartflows-probe",
        description="Ask a Smart Flows server (read-only: GETs only) what it offers and print the "
        "connection extras to set.",
    )
    parser.add_argument(
        "--conn-id", default=DEFAULT_CONN_ID, help=f"the smartflows connection (default {DEFAULT_CONN_ID})"
    )
    parser.add_argument(
        "--long-poll-seconds",
        type=float,
        default=DEFAULT_LONG_POLL_SECONDS,
        help="the long-poll 'timeout' sent on a finished execution (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """Airflow 2's logging writes its INFO lines (``Retrieving connection ...``) to stdout: move every
    stdout handler to stderr while the probe runs, so stdout carries the report alone (``--json``
    stays parseable), and put them back after (``main`` may run inside another program)."""
    moved: list[logging.StreamHandler[Any]] = []
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                moved.append(handler)
    for handler in moved:
        if hasattr(handler, "_use_stderr"):  # Airflow 2's RedirectStdHandler: stream is a property
            handler._use_stderr = True
        else:
            handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in moved:
            if hasattr(handler, "_use_stderr"):
                handler._use_stderr = False
            else:
                handler.setStream(sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """The console script ``smartflows-probe``: 0 nothing to fix, 1 problems found, 2 could not ask."""
    args = _parser().parse_args(argv)
    with _logs_to_stderr():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    from airflow_provider_smartflows.exceptions import SmartFlowsError

    if not args.long_poll_seconds > 0:
        print("smartflows-probe: error: --long-poll-seconds must be > 0", file=sys.stderr)
        return 2
    try:
        report = probe(args.conn_id, long_poll_seconds=args.long_poll_seconds)
    except SmartFlowsError as err:
        print(
            f"smartflows-probe: could not probe connection {args.conn_id!r}: {err.message}", file=sys.stderr
        )
        return 2
    except AirflowNotFoundException:
        print(
            f"smartflows-probe: there is no connection {args.conn_id!r}: define it (Airflow UI, "
            f"`airflow connections add`, or AIRFLOW_CONN_{args.conn_id.upper()}) or pass --conn-id.",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(asdict(report), indent=2) if args.json else render(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
