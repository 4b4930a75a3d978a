"""Emulator state: flows, executions (a time-driven state machine), documents, request log.

An execution has no task of its own. It stores when its current stage began (on a virtual
clock that runs ``speedup`` times faster than the wall clock) and derives status, percentage
and message from the elapsed time over its step table. ``UserInput`` and ``Waiting`` end a
stage: the clock of the execution stops there until an answer / a release starts the next one.
All of this lives on the server's event loop thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.emulator.content import Document, make_document, sha256_of
from airflow_provider_smartflows.emulator.faults import FaultSet
from airflow_provider_smartflows.emulator.scenario import ApiKey, FlowSpec, Scenario, parse_flow
from airflow_provider_smartflows.emulator.surface import ApiSurface

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

NOT_FINAL = {"Queued", "Running", "Waiting", "UserInput", "SelectFlow"}
DOCUMENT_LIFETIME = timedelta(days=7)


def iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def block_id(*parts: object) -> str:
    """A stable block id like the real server's ("B" + 32 hex digits)."""
    return "B" + hashlib.md5("/".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


class Clock:
    """Virtual seconds: wall time scaled by the speed-up, re-based whenever it changes."""

    def __init__(self, speedup: float) -> None:
        self.speedup = speedup
        self._base_real = time.monotonic()
        self._base_virtual = 0.0

    def now(self) -> float:
        return self._base_virtual + (time.monotonic() - self._base_real) * self.speedup

    def set_speedup(self, speedup: float) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be > 0")
        self._base_virtual = self.now()
        self._base_real = time.monotonic()
        self.speedup = speedup


@dataclass(frozen=True)
class Phase:
    status: str
    message: str
    percentage: int
    duration: float  # virtual seconds


@dataclass(frozen=True)
class Stage:
    phases: tuple[Phase, ...]
    pause: str | None  # "UserInput", "Waiting" or None for the last stage
    end_percentage: int


@dataclass(frozen=True)
class Snapshot:
    status: str
    percentage: int
    message: str


@dataclass
class DocumentRecord:
    id: str
    display_name: str
    content_type: str
    execution_id: str
    flow_id: str
    block: str
    created_at: float
    created_by: str
    content: Document
    sha256: str | None = None
    #: When the server's clean-up removes it (wall clock); set from the state's document retention.
    expires_at: float | None = None

    def metadata(self, execution_display: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "description": "",
            "createdAt": iso(self.created_at),
            "createdBy": {"id": self.created_by, "displayName": self.created_by, "type": "user"},
            "modifiedAt": iso(self.created_at),
            "modifiedBy": {"id": self.created_by, "displayName": self.created_by, "type": "user"},
            "templateId": f"template-{self.flow_id}",
            "language": "en",
            "origin": "flow",
            "finished": True,
            "expiration": iso(
                self.expires_at
                if self.expires_at is not None
                else self.created_at + DOCUMENT_LIFETIME.total_seconds()
            ),
            "contentType": self.content_type,
            "postProcessing": None,
            "usage": "output",
            "flowExecution": {
                "id": self.execution_id,
                "displayName": execution_display,
                "type": "flowExecution",
            },
        }

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "displayName": self.display_name, "type": "document"}


@dataclass
class Execution:
    id: str
    flow: FlowSpec | None
    created_at: float  # wall clock
    created_by: ApiKey
    input_kind: str
    input_data: Any
    input_summary: list[str]
    dataset_id: str | None
    priority: str | None
    skip_user_input: bool
    fails: bool
    seq: int = 0  # creation order: breaks ties between executions created in the same instant
    callback_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stages: list[Stage] = field(default_factory=list)
    stage_index: int = 0
    stage_start: float = 0.0  # virtual clock
    stage_log: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)
    canceled: Snapshot | None = None
    modified_at: float = 0.0
    documents: list[DocumentRecord] | None = None
    removed: bool = False
    long_polls: int = 0  # long-polls waiting right now (tests use it to know one is parked)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """Wake every long-poll waiting on this execution."""
        self.changed.set()
        self.changed = asyncio.Event()


class EmulatorState:
    def __init__(self, scenario: Scenario, speedup: float, seed: int, api: ApiSurface | None = None) -> None:
        self.scenario = scenario
        #: What the server offers (API description, routes it lacks, page limit); reset() restores it.
        self.initial_api = api or ApiSurface()
        self.api = self.initial_api
        self.initial_speedup = speedup
        self.seed = seed
        self.clock = Clock(speedup)
        self.keys = {k.key: k for k in scenario.api_keys}
        self.faults = FaultSet(seed)
        self.flows: dict[str, FlowSpec] = {}
        self.flow_starts: dict[str, int] = {}
        self.executions: dict[str, Execution] = {}
        self.documents: dict[str, DocumentRecord] = {}
        self.callbacks: dict[str, str] = {}
        #: Seconds from a document's creation to its ``expiration`` (reset() restores the default).
        self.document_retention = DOCUMENT_LIFETIME.total_seconds()
        self.request_log: list[dict[str, Any]] = []
        self.generation = 0  # bumped by reset(): requests begun before it are not logged after it
        self.starts = 0
        self.closing = False  # set on shutdown so long-polls return at once
        self._seq = itertools.count(1)
        # Exceptions no handler should raise (emulator bugs), oldest first; reset() keeps them:
        # only whoever reports them (the pytest fixture, the CLI) takes them away.
        self.errors: list[dict[str, Any]] = []
        self.error_listener: Callable[[dict[str, Any]], None] | None = None
        self.deferred: set[asyncio.Task[None]] = set()  # handlers a `delayed` fault runs later
        self.reset()

    # --- lifecycle -------------------------------------------------------------------------

    def reset(self) -> None:
        self.cancel_deferred()
        for ex in self.executions.values():
            ex.removed = True
            ex.notify()
        self.executions.clear()
        self.documents.clear()
        self.document_retention = DOCUMENT_LIFETIME.total_seconds()
        self.callbacks.clear()
        self.request_log.clear()
        self.generation += 1
        self.flows = {f.id: f for f in self.scenario.flows}
        self.flow_starts = {}
        self.starts = 0
        self.clock.set_speedup(self.initial_speedup)
        self.api = self.initial_api
        self.faults.clear()
        self.faults.reseed(self.seed)
        for spec in self.scenario.faults:
            self.faults.add(spec)

    def record_error(self, method: str, target: str, exc: BaseException) -> dict[str, Any]:
        """Keep an unexpected exception of a handler (an emulator bug) with its traceback."""
        entry = {
            "ts": iso(time.time()),
            "method": method,
            "path": target,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        }
        self.errors.append(entry)
        if self.error_listener is not None:
            try:
                self.error_listener(entry)
            except Exception:  # a broken listener must not hide the error it was told about
                print(entry["traceback"], file=sys.stderr)
        return entry

    def defer(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (on this loop); reset() and shutdown cancel it."""
        task = asyncio.get_running_loop().create_task(work)
        self.deferred.add(task)
        task.add_done_callback(self.deferred.discard)

    async def wait_deferred(self, timeout: float) -> int:
        """Wait until the deferred work has run (at most ``timeout`` s); how much is still pending."""
        if self.deferred:
            await asyncio.wait(set(self.deferred), timeout=timeout)
        return sum(1 for task in self.deferred if not task.done())

    def cancel_deferred(self) -> None:
        for task in list(self.deferred):
            task.cancel()
        self.deferred.clear()

    def set_speedup(self, speedup: float) -> None:
        self.clock.set_speedup(speedup)
        # Scheduled changes move in wall time: long-polls recompute their deadlines.
        for ex in self.executions.values():
            ex.notify()

    def add_flow(self, raw: dict[str, Any]) -> str:
        flow = parse_flow(raw)
        self.flows[flow.id] = flow
        return flow.id

    def find_flow(self, ref: str) -> FlowSpec | None:
        if ref in self.flows:
            return self.flows[ref]
        return next((f for f in self.flows.values() if f.display_name == ref), None)

    # --- executions --------------------------------------------------------------------------

    def _build_stages(self, ex: Execution) -> None:
        flow = ex.flow
        assert flow is not None
        pauses: dict[int, list[str]] = {}
        if flow.user_input_after is not None and not ex.skip_user_input:
            pauses.setdefault(flow.user_input_after, []).append("UserInput")
        if flow.waiting_after is not None:
            pauses.setdefault(flow.waiting_after, []).append("Waiting")
        stages: list[Stage] = []
        phases: list[Phase] = []
        pct = 0
        if flow.queued_seconds > 0:
            phases.append(Phase("Queued", "Queued", 0, flow.queued_seconds))
        for i, step in enumerate(flow.steps):
            phases.append(Phase("Running", step.message, step.percentage, step.duration(ex.seq)))
            pct = step.percentage
            for pause in pauses.get(i, []):
                stages.append(Stage(tuple(phases), pause, pct))
                phases = []
        stages.append(Stage(tuple(phases), None, pct))
        ex.stages = stages

    def start_execution(
        self,
        *,
        flow: FlowSpec | None,
        key: ApiKey,
        input_kind: str,
        input_data: Any,
        input_summary: list[str],
        dataset_id: str | None,
        priority: str | None,
        skip_user_input: bool = False,
    ) -> Execution:
        fails = False
        if flow is not None:
            count = self.flow_starts.get(flow.id, 0)
            self.flow_starts[flow.id] = count + 1
            fails = count < flow.fail_first
        now = time.time()
        ex = Execution(
            id=str(uuid.uuid4()),
            flow=flow,
            created_at=now,
            created_by=key,
            input_kind=input_kind,
            input_data=input_data,
            input_summary=input_summary,
            dataset_id=dataset_id,
            priority=priority,
            skip_user_input=skip_user_input,
            fails=fails,
            modified_at=now,
            seq=next(self._seq),
        )
        if flow is not None:
            self._begin(ex)
        self.executions[ex.id] = ex
        self.callbacks[ex.callback_id] = ex.id
        self.starts += 1
        return ex

    def _begin(self, ex: Execution) -> None:
        if ex.flow is not None and ex.flow.waiting_callback:
            ex.callback_id = ex.flow.waiting_callback  # named by the flow: executionId tells them apart
        self._build_stages(ex)
        ex.stage_index = 0
        ex.stage_start = self.clock.now()
        ex.stage_log.append({"start": iso(time.time()), "end": None, "input": None})

    def select_flow(self, ex: Execution, flow: FlowSpec) -> None:
        ex.flow = flow
        count = self.flow_starts.get(flow.id, 0)
        self.flow_starts[flow.id] = count + 1
        ex.fails = count < flow.fail_first
        self._touch(ex)
        self._begin(ex)
        self.callbacks[ex.callback_id] = ex.id

    def _touch(self, ex: Execution) -> None:
        ex.modified_at = time.time()
        if ex.stage_log and ex.stage_log[-1]["end"] is None:
            ex.stage_log[-1]["end"] = iso(ex.modified_at)
        ex.notify()

    def _final(self, ex: Execution, last_pct: int) -> Snapshot:
        flow = ex.flow
        assert flow is not None
        if ex.fails:
            return Snapshot("Error", last_pct, "Simulated failure (fail_first)")
        status = flow.final_status
        if status == "Error":
            message = flow.errors[0]["message"] if flow.errors else "Flow execution failed"
            return Snapshot(status, last_pct, message)
        if status == "Interrupted":
            return Snapshot(status, last_pct, "Flow execution interrupted: it ran too long")
        if status == "Warning":
            message = flow.warnings[0]["message"] if flow.warnings else "Finished with warnings"
            return Snapshot(status, 100, message)
        return Snapshot(status, 100, "Flow execution finished")

    def snapshot(self, ex: Execution, now: float | None = None) -> tuple[Snapshot, float | None]:
        """(current snapshot, virtual seconds until the next scheduled change or None)."""
        if ex.canceled is not None:
            return ex.canceled, None
        if ex.flow is None:
            return Snapshot("SelectFlow", 0, "Select a flow"), None
        now = self.clock.now() if now is None else now
        stage = ex.stages[ex.stage_index]
        elapsed = now - ex.stage_start
        for phase in stage.phases:
            if elapsed < phase.duration:
                return Snapshot(phase.status, phase.percentage, phase.message), phase.duration - elapsed
            elapsed -= phase.duration
        if stage.pause == "UserInput":
            return Snapshot("UserInput", stage.end_percentage, "Waiting for user input"), None
        if stage.pause == "Waiting":
            return Snapshot("Waiting", stage.end_percentage, "Waiting for an external event"), None
        snap = self._final(ex, stage.end_percentage)
        if ex.documents is None:
            self._materialize(ex, snap)
        return snap, None

    def status(self, ex: Execution) -> Snapshot:
        return self.snapshot(ex)[0]

    def answer(self, ex: Execution, answers: dict[str, Any]) -> None:
        ex.answers.update(answers)
        ex.stage_log[-1]["input"] = answers
        self._resume(ex)

    def release(self, ex: Execution, payload: Any = None) -> None:
        """Leave Waiting; a callback's payload is the ``input`` of the stage that waited."""
        if payload is not None:
            ex.stage_log[-1]["input"] = payload
        self._resume(ex)

    def _resume(self, ex: Execution) -> None:
        self._touch(ex)
        ex.stage_index += 1
        ex.stage_start = self.clock.now()
        ex.stage_log.append({"start": iso(time.time()), "end": None, "input": None})

    def cancel(self, ex: Execution) -> bool:
        """Cancel unless already final; True when it changed anything."""
        snap = self.status(ex)
        if snap.status not in NOT_FINAL:
            return False
        ex.canceled = Snapshot("Canceled", snap.percentage, "Canceled by user")
        self._touch(ex)
        return True

    def purge_execution(self, ex: Execution) -> None:
        """Forget the execution and its documents, as the server's clean-up does: both answer 404."""
        self.executions.pop(ex.id, None)
        for doc in ex.documents or []:
            self.documents.pop(doc.id, None)
        for callback, exec_id in list(self.callbacks.items()):
            if exec_id == ex.id:
                del self.callbacks[callback]
        ex.removed = True  # a long-poll parked on it answers now (with 404: it is gone)
        ex.notify()

    def purge_document(self, doc: DocumentRecord) -> None:
        """Forget one document (its execution still lists nothing for it): it answers 404."""
        self.documents.pop(doc.id, None)
        ex = self.executions.get(doc.execution_id)
        if ex is not None and ex.documents is not None:
            ex.documents = [other for other in ex.documents if other.id != doc.id]

    # --- documents ---------------------------------------------------------------------------

    def _materialize(self, ex: Execution, snap: Snapshot) -> None:
        flow = ex.flow
        assert flow is not None
        ex.documents = []
        # Finished now (first seen final): a failed run is modified too, documents or not.
        ex.modified_at = time.time()
        if snap.status in ("Error", "Interrupted", "Canceled"):
            return
        records: list[str | None] = [None]
        if flow.documents_per_record and isinstance(ex.input_data, dict):
            records = list(ex.input_data.get("id") or [None])
        now = time.time()
        for index, spec in enumerate(flow.documents):
            for record in records:
                name = spec.display_name.replace("{record}", record or "").strip()
                doc_id = str(uuid.uuid4())
                lines = [
                    f"Flow: {flow.display_name} ({flow.id})",
                    f"Execution: {ex.id}",
                    f"Document: {name}",
                    "",
                    "Input data:",
                    *ex.input_summary,
                ]
                if ex.answers:
                    lines += ["", "Answers:", *(f"  {k}: {v!r}" for k, v in ex.answers.items())]
                doc = DocumentRecord(
                    id=doc_id,
                    display_name=name,
                    content_type=spec.content_type,
                    execution_id=ex.id,
                    flow_id=flow.id,
                    block=block_id(flow.id, index),
                    created_at=now,
                    created_by=ex.created_by.user,
                    content=make_document(spec.content_type, name, lines, spec.size),
                    expires_at=now + self.document_retention,
                )
                ex.documents.append(doc)
                self.documents[doc_id] = doc
        ex.modified_at = now

    def document_sha256(self, doc: DocumentRecord) -> str:
        """Computed by the same generator the download streams from; cached (call off-loop)."""
        if doc.sha256 is None:
            doc.sha256 = sha256_of(doc.content)
        return doc.sha256
