"""``EmulatorServer``: the emulator app on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from airflow_provider_smartflows.emulator.app import build_app
from airflow_provider_smartflows.emulator.description import route_names
from airflow_provider_smartflows.emulator.scenario import ApiKey, Scenario, load_scenario
from airflow_provider_smartflows.emulator.state import EmulatorState
from airflow_provider_smartflows.emulator.surface import ApiSurface
from airflow_provider_smartflows.emulator.views import execution_summary

if TYPE_CHECKING:
    import logging
    import ssl
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

T = TypeVar("T")
SHUTDOWN_TIMEOUT = 2.0


class EmulatorInternalError(AssertionError):
    """A handler of the emulator raised: an emulator bug (the client got a 500 it may retry)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(format_errors(errors))


def format_errors(errors: list[dict[str, Any]]) -> str:
    """The recorded emulator errors as text: what was requested, then the traceback."""
    head = (
        f"{len(errors)} unexpected exception(s) inside the Smart Flows emulator: an emulator bug,"
        " answered as HTTP 500 (which a client may retry as a transient fault)"
    )
    parts = [f"--- {e['method']} {e['path']} at {e['ts']}\n{e['traceback'].rstrip()}" for e in errors]
    return "\n".join([head, *parts])


def resolve_settings(
    scenario: str | Path | dict[str, Any] | Scenario | None, speedup: float | None, seed: int | None
) -> tuple[Scenario, float, int]:
    """Explicit arguments win over the scenario's values, which win over 1.0 / 0."""
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    final_speedup = speedup if speedup is not None else (sc.speedup or 1.0)
    if final_speedup <= 0:
        raise ValueError("speedup must be > 0")
    final_seed = seed if seed is not None else (sc.seed or 0)
    return sc, final_speedup, final_seed


async def start_site(
    state: EmulatorState,
    host: str,
    port: int,
    access_log: logging.Logger | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, str]:
    """Set the app up and listen (HTTPS with ``ssl_context``); returns the runner and the base URL."""
    runner = web.AppRunner(build_app(state), access_log=access_log, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    shown_host = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://{shown_host}:{bound[1]}"


class EmulatorServer:
    """A Smart Flows emulator on ``host:port`` (0 = a free port), run in a background thread.

    :param scenario: scenario file path, a dict in the scenario format, or None (built-ins)
    :param speedup: time factor for flow steps; None = the scenario's value or 1.0
    :param seed: seed of the fault RNG; None = the scenario's value or 0
    :param ssl_context: serve HTTPS with this server-side context (``base_url`` becomes https)
    :param api: what the server offers after each reset (see :meth:`set_api`); default: everything
    """

    def __init__(
        self,
        scenario: str | Path | dict[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        speedup: float | None = None,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        api: dict[str, Any] | None = None,
    ) -> None:
        self.scenario, speed, seed_ = resolve_settings(scenario, speedup, seed)
        self._api = ApiSurface.parse(api) if api is not None else None
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self._speedup = speed
        self._seed = seed_
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._state: EmulatorState | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        if self._thread is not None:
            raise RuntimeError("EmulatorServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                # The state's asyncio objects must be created on this loop's thread.
                self._state = EmulatorState(self.scenario, self._speedup, self._seed, self._api)
                self._runner, self.base_url = loop.run_until_complete(
                    start_site(self._state, self.host, self.port, ssl_context=self.ssl_context)
                )
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="smartflows-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._loop = None
            raise failure[0]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, runner = self._loop, self._runner
        try:
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=SHUTDOWN_TIMEOUT + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
            self._thread = None
            self._loop = None
            self._runner = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- helpers -------------------------------------------------------------------------------

    def _call(self, fn: Callable[[EmulatorState], T]) -> T:
        """Run ``fn(state)`` on the server's loop (all state lives there) and return its result."""
        if self._loop is None or self._state is None:
            raise RuntimeError("EmulatorServer is not running: call start() first")
        state = self._state

        async def hop() -> T:
            return fn(state)

        return asyncio.run_coroutine_threadsafe(hop(), self._loop).result()

    def _key(self, role: str, revoked: bool) -> str:
        for key in self.scenario.api_keys:
            if key.role == role and key.revoked == revoked:
                return key.key
        raise LookupError(f"the scenario defines no {'revoked' if revoked else role} API key")

    # --- public API ----------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """An admin key (the first of the scenario)."""
        return self._key("admin", False)

    @property
    def user_key(self) -> str:
        """A plain user's key (role "user")."""
        return self._key("user", False)

    @property
    def revoked_key(self) -> str:
        """A removed key: every call with it gets 401."""
        for key in self.scenario.api_keys:
            if key.revoked:
                return key.key
        raise LookupError("the scenario defines no revoked API key")

    def connection_json(self, key: str | None = None, **extra: Any) -> str:
        """JSON for ``AIRFLOW_CONN_<ID>`` pointing at this emulator."""
        return json.dumps(
            {
                "conn_type": "smartflows",
                "host": self.base_url,
                "password": key or self.api_key,
                "extra": extra,
            }
        )

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The request log, newest last (a copy)."""
        return self._call(lambda s: copy.deepcopy(s.request_log))

    def requests_to(self, method: str, path_regex: str) -> list[dict[str, Any]]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r["method"] == method.upper() and pattern.search(r["path"])]

    def add_fault(
        self,
        kind: str,
        *,
        method: str | None = None,
        path: str | None = None,
        flow_id: str | None = None,
        status: int | None = None,
        retry_after: int | float | str | None = None,
        latency: float | None = None,
        times: int | None = 1,
        probability: float = 1.0,
        after: int = 0,
        body: Any = None,
        when: str = "before",
        delay: float | None = None,
    ) -> str:
        """Add a fault rule (see docs/EMULATOR.md); returns its id. Raises ScenarioError if malformed.

        ``when="delayed"`` with ``delay`` seconds: the client gets the fault's answer at once and
        the request is carried out ``delay`` seconds later (a start creates its execution then).
        """
        spec = {
            "kind": kind,
            "method": method,
            "path": path,
            "flow_id": flow_id,
            "status": status,
            "retry_after": retry_after,
            "latency": latency,
            "times": times,
            "probability": probability,
            "after": after,
            "body": body,
            "when": when,
            "delay": delay,
        }
        return self._call(lambda s: s.faults.add(spec).id)

    def clear_faults(self) -> None:
        self._call(lambda s: s.faults.clear())

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The active fault rules with their seen/hits counters."""
        return self._call(lambda s: s.faults.list())

    def add_flow(self, flow: dict[str, Any]) -> str:
        """Add (or replace, same id) a flow in the scenario-file format; returns its id."""
        return self._call(lambda s: s.add_flow(copy.deepcopy(flow)))

    def set_speedup(self, speedup: float) -> None:
        self._call(lambda s: s.set_speedup(float(speedup)))

    def set_api(
        self, *, description: str = "v3", drop_routes: list[str] | None = None, page_cap: int | None = None
    ) -> None:
        """Until the next reset, serve the API description as ``description`` ("v3", "v2" or "none"),
        lack the ``drop_routes`` ("METHOD /path" as the description names them) and hold at most
        ``page_cap`` items per list page. ValueError if malformed or a route is unknown."""
        raw = {"description": description, "drop_routes": list(drop_routes or []), "page_cap": page_cap}
        if self._runner is None:
            raise RuntimeError("EmulatorServer is not running: call start() first")
        surface = ApiSurface.parse(raw, route_names(self._runner.app))

        def apply(s: EmulatorState) -> None:
            s.api = surface

        self._call(apply)

    def reset(self) -> None:
        """Executions, documents, request log, faults, speed-up, flows and API surface back to the start."""
        self._call(lambda s: s.reset())

    @property
    def executions(self) -> list[dict[str, Any]]:
        return self._call(lambda s: [execution_summary(s, ex) for ex in s.executions.values()])

    def executions_started(self, flow_id: str | None = None) -> int:
        """How many executions the start routes created (of one flow, or all)."""

        def count(s: EmulatorState) -> int:
            if flow_id is None:
                return s.starts
            return sum(1 for ex in s.executions.values() if ex.flow is not None and ex.flow.id == flow_id)

        return self._call(count)

    @staticmethod
    def _document_in(s: EmulatorState, document_id: str) -> Any:
        doc = s.documents.get(document_id)
        if doc is None:
            raise KeyError(f"unknown document {document_id}")
        return doc

    def _document(self, document_id: str) -> Any:
        return self._call(lambda s: self._document_in(s, document_id))

    def document_sha256(self, document_id: str) -> str:
        """Hex sha256 of the bytes the content route sends (computed by the same generator)."""
        doc = self._document(document_id)
        assert self._state is not None
        # Hashed on the calling thread: a 1 GiB document must not stall the server's loop.
        return self._state.document_sha256(doc)

    def document_size(self, document_id: str) -> int:
        return int(self._document(document_id).content.size)

    def purge_execution(self, execution_id: str) -> None:
        """Purge an execution and its documents like the server's clean-up: then they answer 404."""

        def do(s: EmulatorState) -> None:
            ex = s.executions.get(execution_id)
            if ex is None:
                raise KeyError(f"unknown execution {execution_id}")
            s.purge_execution(ex)

        self._call(do)

    def purge_document(self, document_id: str) -> None:
        """Purge one document like the server's clean-up: then it answers 404."""

        def do(s: EmulatorState) -> None:
            s.purge_document(self._document_in(s, document_id))

        self._call(do)

    def set_document_retention(self, seconds: float) -> None:
        """Until the next reset, documents made from now on expire ``seconds`` after creation
        (default 7 days); as ``PUT /_emulator/documents/retention``."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")

        def do(s: EmulatorState) -> None:
            s.document_retention = float(seconds)

        self._call(do)

    def set_document_expiration(self, document_id: str, in_seconds: float) -> None:
        """The document's ``expiration`` becomes ``in_seconds`` from now (negative: already past);
        as ``PUT /_emulator/documents/{id}/expiration``. It keeps answering until purged."""

        def do(s: EmulatorState) -> None:
            self._document_in(s, document_id).expires_at = time.time() + float(in_seconds)

        self._call(do)

    def start_as(self, flow: str, user: str = "crm.user") -> str:
        """Start an execution of ``flow`` as ``user`` (not an API key's user: the CRM plug-in's
        part, see ``POST /_emulator/executions/start-as``); returns its id."""

        def do(s: EmulatorState) -> str:
            found = s.find_flow(flow)
            if found is None:
                raise LookupError(f"no flow {flow!r}")
            key = ApiKey(key="", user=user, role="user")
            return s.start_execution(
                flow=found,
                key=key,
                input_kind="none",
                input_data=None,
                input_summary=["  (none)"],
                dataset_id=None,
                priority=None,
                skip_user_input=True,
            ).id

        return self._call(do)

    def release(self, execution_id: str) -> None:
        """Leave ``Waiting`` (same as the callback route); ValueError if it is not Waiting."""

        def do(s: EmulatorState) -> None:
            ex = s.executions.get(execution_id)
            if ex is None:
                raise KeyError(f"unknown execution {execution_id}")
            status = s.status(ex).status
            if status != "Waiting":
                raise ValueError(f"execution {execution_id} is {status}, not Waiting")
            s.release(ex)

        self._call(do)

    def wait_deferred(self, timeout: float = 30.0) -> None:
        """Block until the work of ``delayed`` faults has run; TimeoutError after ``timeout`` s."""
        if self._loop is None or self._state is None:
            raise RuntimeError("EmulatorServer is not running: call start() first")
        pending = asyncio.run_coroutine_threadsafe(self._state.wait_deferred(timeout), self._loop).result()
        if pending:
            raise TimeoutError(f"{pending} delayed request(s) still not carried out after {timeout} s")

    # --- the emulator's own errors -------------------------------------------------------------

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Unexpected exceptions inside handlers (emulator bugs), oldest first: dicts with ``ts``,
        ``method``, ``path`` (with the query), ``error`` ("Type: message") and ``traceback``.
        Injected faults are not errors. ``reset()`` keeps them; ``check_errors()`` takes them."""
        return self._call(lambda s: copy.deepcopy(s.errors))

    def clear_errors(self) -> None:
        self._call(lambda s: s.errors.clear())

    def check_errors(self) -> None:
        """Raise ``EmulatorInternalError`` with every recorded traceback (then forget them), if any.

        The ``smartflows_emulator`` fixture calls it after each test, like pytest-httpserver's
        ``check_handler_errors``; call it yourself around an ``EmulatorServer`` of your own.
        """

        def take(s: EmulatorState) -> list[dict[str, Any]]:
            taken = list(s.errors)
            s.errors.clear()
            return taken

        errors = self._call(take)
        if errors:
            raise EmulatorInternalError(errors)
