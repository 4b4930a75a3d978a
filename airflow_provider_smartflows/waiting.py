"""The waiting rules for a Smart Flows execution, shared by the trigger, the operators and the sensor.

Sans-I/O: the one waiting loop, :func:`wait_steps`, is a generator that yields *steps* (long-poll
the progress, pause, read the full execution) and receives their results. Two tiny drivers
perform the steps with the hook they are given: :func:`run_steps` on the worker (blocking calls)
and :func:`run_steps_async` on the triggerer. A driver sends a step's result back, or throws the
:class:`~airflow_provider_smartflows.exceptions.SmartFlowsError` the step raised into the
generator; an error that ends the wait comes back out of the driver. Another wait (several
executions, a person's answer) is another step generator run by the same drivers.

Every wait ends in one :class:`ExecutionEvent`, the JSON payload of the trigger's event (and what
the operators' synchronous wait returns)::

    {"kind": "execution",
     "status": "success" | "failed" | "timeout" | "error" | "input_required" | "gone",
     "execution_id": "...", "execution_status": "Success" | ... | None,
     "message": "...", "document_ids": ["...", ...], "end_time": <epoch seconds> | None}

``input_required`` means the execution waits for a person (``UserInput`` or ``SelectFlow``);
``gone`` that the server no longer knows it (404: purged by its clean-up, or deleted).
Every event a task resumes from carries its ``kind`` (:data:`EventKind`): the execution's outcome,
the human-input trigger's :class:`HumanWaitEvent`, or a person's :class:`HumanAnswerEvent`;
:func:`typed_event` gives one its kind when it was written without (by Airflow, or by an older
version of this provider) so that the worker dispatches on the kind alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypedDict, TypeVar, cast

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.models import MAX_WAIT_SECONDS, ExecutionStatus
from airflow_provider_smartflows.text import one_line

if TYPE_CHECKING:
    from airflow_provider_smartflows.models import Execution, ExecutionProgress

__all__ = [
    "EVENT_ERROR",
    "EVENT_FAILED",
    "EVENT_GONE",
    "EVENT_INPUT_REQUIRED",
    "EVENT_SUCCESS",
    "EVENT_TIMEOUT",
    "KIND_ANSWER",
    "KIND_EXECUTION",
    "KIND_HUMAN_WAIT",
    "UNKNOWN_STATUS_POLLS",
    "AsyncStepHook",
    "EventKind",
    "EventStatus",
    "ExecutionEvent",
    "ExecutionWatch",
    "HumanAnswerEvent",
    "HumanWaitEvent",
    "Pause",
    "Poll",
    "ReadExecution",
    "ResumeEvent",
    "Step",
    "Steps",
    "SyncStepHook",
    "document_ids_steps",
    "event_status_for",
    "execution_gone_message",
    "execution_result",
    "long_poll_seconds",
    "make_event",
    "one_line",
    "outcome_message",
    "poll_steps",
    "progress_line",
    "run_steps",
    "run_steps_async",
    "typed_event",
    "wait_steps",
    "waiting_for_steps",
    "with_document_ids",
]

EventStatus = Literal["success", "failed", "timeout", "error", "input_required", "gone"]

EVENT_SUCCESS: EventStatus = "success"
EVENT_FAILED: EventStatus = "failed"
EVENT_TIMEOUT: EventStatus = "timeout"
EVENT_ERROR: EventStatus = "error"
EVENT_INPUT_REQUIRED: EventStatus = "input_required"
#: The server answered 404 for the execution: purged by its clean-up (or deleted) while it was waited for.
EVENT_GONE: EventStatus = "gone"

EventKind = Literal["execution", "human_wait", "answer"]

#: The execution's outcome (:class:`ExecutionEvent`): the execution trigger's event.
KIND_EXECUTION: Literal["execution"] = "execution"
#: The human-input trigger's event (:class:`HumanWaitEvent`): the execution left the form, or time is up.
KIND_HUMAN_WAIT: Literal["human_wait"] = "human_wait"
#: A person's answer given in Airflow (:class:`HumanAnswerEvent`).
KIND_ANSWER: Literal["answer"] = "answer"
_KINDS = frozenset({KIND_EXECUTION, KIND_HUMAN_WAIT, KIND_ANSWER})

#: How many consecutive answers with a status this provider does not know are tolerated before
#: giving up: a newer server may have a transient status we do not know, but waiting forever on a
#: final one we do not know would hang the task until its timeout.
UNKNOWN_STATUS_POLLS = 3


class ExecutionEvent(TypedDict):
    """The outcome of a wait: the execution trigger's event, JSON-safe (it is stored in its row)."""

    kind: Literal["execution"]
    status: EventStatus
    execution_id: str
    #: The server's status spelling, None when no answer was read.
    execution_status: str | None
    #: One line, at most 500 characters.
    message: str
    #: The generated documents (a ``success`` event only).
    document_ids: list[str]
    #: The wait's deadline in epoch seconds, None without one.
    end_time: float | None


class HumanWaitEvent(TypedDict):
    """The human-input trigger's event: the execution left the form, or the wait is over."""

    kind: Literal["human_wait"]
    execution_id: str
    #: What ended the wait; None when the execution left the prompt and runs on.
    execution: ExecutionEvent | None
    #: One line for the task log.
    message: str


class HumanAnswerEvent(TypedDict, total=False):
    """A person's answer to a request, as Airflow resumes a task with it (Airflow writes no kind)."""

    kind: Literal["answer"]
    chosen_options: list[str]
    params_input: dict[str, Any]
    responded_at: str | None
    responded_by_user: dict[str, str] | None
    timedout: bool


ResumeEvent = ExecutionEvent | HumanWaitEvent | HumanAnswerEvent


def typed_event(event: Mapping[str, Any]) -> ResumeEvent:
    """``event`` with its ``kind``, inferred from its shape when it has none (here and nowhere else).

    Airflow's resume event for an answered request has no kind, nor has an event written by an
    older version of this provider (a task deferred before an upgrade resumes after it).
    """
    kind = event.get("kind")
    if kind not in _KINDS:
        if "chosen_options" in event:  # Airflow's resume event for an answered request
            kind = KIND_ANSWER
        elif "status" in event:
            kind = KIND_EXECUTION
        else:
            kind = KIND_HUMAN_WAIT
    return cast("ResumeEvent", {**event, "kind": kind})


def execution_result(
    execution_id: str, status: str | None, document_ids: Sequence[str], execution_url: str
) -> dict[str, Any]:
    """What a waiting task returns: ``{"execution_id", "status", "document_ids", "execution_url"}``.

    The one result builder (the run operator, the sensor, and the trigger that ends a sensor).
    """
    return {
        "execution_id": execution_id,
        "status": status,
        "document_ids": list(document_ids),
        "execution_url": execution_url,
    }


def long_poll_seconds(poll_interval: float, remaining: float | None) -> int:
    """Whole seconds for the next long-poll: up to ``poll_interval`` and the time left, at least 1.

    The API takes whole seconds and answers at once for 0, so a shorter wait would spin.
    """
    wait = poll_interval if remaining is None else min(poll_interval, remaining)
    return int(min(MAX_WAIT_SECONDS, max(1, math.ceil(wait))))


def progress_line(progress: ExecutionProgress) -> str:
    """``execution <id>: 42 % Generating document`` (the one progress log line)."""
    parts = [f"execution {progress.id}:"]
    if progress.percentage is not None:
        parts.append(f"{progress.percentage:g} %")
    parts.append(progress.message or progress.raw_status or "")
    return " ".join(part for part in parts if part)


def make_event(
    status: EventStatus,
    execution_id: str,
    *,
    execution_status: str | None = None,
    message: str = "",
    document_ids: list[str] | None = None,
    end_time: float | None = None,
) -> ExecutionEvent:
    """An event payload; the message is made one bounded line."""
    return {
        "kind": KIND_EXECUTION,
        "status": status,
        "execution_id": execution_id,
        "execution_status": execution_status,
        "message": one_line(message),
        "document_ids": list(document_ids or []),
        "end_time": end_time,
    }


def execution_gone_message(execution_id: str, last_status: str | None) -> str:
    """The one sentence for an execution the server no longer knows (a 404 while waiting)."""
    return (
        f"Smart Flows execution {execution_id} disappeared from the server (404; last status seen: "
        f"{last_status or 'none'}): it was purged by the server's clean-up or deleted"
    )


def event_status_for(status: ExecutionStatus, *, fail_on_warning: bool) -> EventStatus | None:
    """The event status that ends a wait on ``status``; None while the execution keeps running."""
    if status is ExecutionStatus.WARNING and fail_on_warning:
        return EVENT_FAILED
    if status.is_success:
        return EVENT_SUCCESS
    if status.is_failure:
        return EVENT_FAILED
    if status.needs_input:
        return EVENT_INPUT_REQUIRED
    return None


def outcome_message(progress: ExecutionProgress, event_status: EventStatus) -> str:
    """Human sentence for an event built from a progress."""
    status = progress.raw_status or progress.status.value
    if event_status == EVENT_INPUT_REQUIRED:
        if progress.status is ExecutionStatus.SELECT_FLOW:
            return f"Smart Flows execution {progress.id} waits for a flow to be selected (SelectFlow)"
        keys = ", ".join(progress.form_keys) or "unknown"
        return f"Smart Flows execution {progress.id} waits for user input (form keys: {keys})"
    text = f"Smart Flows execution {progress.id} finished with status {status}"
    if progress.message:
        text += f": {progress.message}"
    return text


class WatchSettings(Protocol):
    """The settings of a wait, as the operators, the sensor and the triggers hold them."""

    @property
    def poll_interval(self) -> float: ...
    @property
    def fail_on_warning(self) -> bool: ...
    @property
    def max_consecutive_failures(self) -> int: ...
    @property
    def log(self) -> Any: ...


class ExecutionWatch:
    """
    The bookkeeping of one wait: deadline, failures in a row, unknown statuses, the last log line.

    No I/O. :func:`wait_steps` asks it how long to poll (:meth:`poll_seconds`) and reports what a
    poll got, an answer (:meth:`on_progress`) or a failure (:meth:`on_failure`). One progress line
    is logged whenever percentage or message changes.
    """

    def __init__(
        self,
        execution_id: str,
        *,
        poll_interval: float,
        end_time: float | None,
        fail_on_warning: bool,
        max_consecutive_failures: int,
        log: Any,
    ) -> None:
        self.execution_id = execution_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.fail_on_warning = fail_on_warning
        self.max_consecutive_failures = max_consecutive_failures
        self.log = log
        self.failures = 0
        self.unknown_polls = 0
        self.last_line: str | None = None
        self.last_status: str | None = None
        self.saw_waiting = False  # the last poll found it Waiting (what for is logged once per stop)

    @classmethod
    def of(
        cls, owner: WatchSettings, execution_id: str, end_time: float | None, *, log: Any = None
    ) -> ExecutionWatch:
        """A watch with ``owner``'s settings (a task or a trigger): the one place one is built.

        :param log: where progress goes instead of ``owner.log``.
        """
        return cls(
            execution_id,
            poll_interval=float(owner.poll_interval),
            end_time=end_time,
            fail_on_warning=owner.fail_on_warning,
            max_consecutive_failures=owner.max_consecutive_failures,
            log=owner.log if log is None else log,
        )

    def event(self, status: EventStatus, **kwargs: Any) -> ExecutionEvent:
        """An event for this execution, carrying its deadline."""
        return make_event(status, self.execution_id, end_time=self.end_time, **kwargs)

    def _remaining(self) -> float | None:
        return None if self.end_time is None else self.end_time - time.time()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        remaining = self._remaining()
        return remaining is not None and remaining <= 0

    def poll_seconds(self) -> int:
        """Seconds for the next long-poll (the poll interval, or less near the deadline)."""
        return long_poll_seconds(self.poll_interval, self._remaining())

    def timeout_event(self) -> ExecutionEvent:
        """The ``timeout`` event: the deadline passed before the execution finished."""
        return self.event(
            EVENT_TIMEOUT,
            execution_status=self.last_status,
            message=(
                f"Smart Flows execution {self.execution_id} did not finish before its deadline "
                f"(last status {self.last_status or 'unknown'})"
            ),
        )

    def error_event(self, err: SmartFlowsError) -> ExecutionEvent:
        """The ``error`` event for an error that ended the wait (the triggerer cannot raise it);
        ``gone`` for a 404: the execution no longer exists."""
        if isinstance(err, SmartFlowsNotFoundError):
            return self.event(
                EVENT_GONE,
                execution_status=self.last_status,
                message=execution_gone_message(self.execution_id, self.last_status),
            )
        retryable = isinstance(err, SmartFlowsApiError) and err.retryable
        what = f" ({self.failures} transient failures in a row)" if retryable else ""
        return self.event(EVENT_ERROR, execution_status=self.last_status, message=f"{err}{what}")

    def on_failure(self, err: SmartFlowsApiError) -> float | None:
        """Count a failed poll: seconds to pause before the next one, or None when it ends the wait.

        A refused key and other non-retryable errors end the wait at once; transient ones end it
        after ``max_consecutive_failures`` in a row.
        """
        self.failures += 1
        if not err.retryable or self.failures > self.max_consecutive_failures:
            return None
        delay = min(self.poll_interval, err.retry_after or 2.0 ** (self.failures - 1))
        remaining = self._remaining()
        if remaining is not None:
            delay = min(delay, max(remaining, 0.0))
        self.log.warning(
            "execution %s: transient failure %d of %d tolerated, next poll in %.1f s: %s",
            self.execution_id,
            self.failures,
            self.max_consecutive_failures,
            delay,
            one_line(err, 200),
        )
        return delay

    def on_progress(self, progress: ExecutionProgress) -> ExecutionEvent | None:
        """The event when the execution is final or needs a person; None while it runs.

        A ``success`` event carries the document ids found in the progress; when it has none,
        :func:`with_document_ids` looks them up in the full execution.
        """
        self.failures = 0
        self.last_status = progress.raw_status
        line = progress_line(progress)
        if line != self.last_line:
            self.log.info("%s", line)
            self.last_line = line
        if progress.status is ExecutionStatus.UNKNOWN:
            return self._on_unknown_status(progress)
        self.unknown_polls = 0
        event_status = event_status_for(progress.status, fail_on_warning=self.fail_on_warning)
        if event_status is None:
            return None
        return self.event(
            event_status,
            execution_status=progress.raw_status,
            message=outcome_message(progress, event_status),
            document_ids=[doc.id for doc in progress.documents] if event_status == EVENT_SUCCESS else [],
        )

    def _on_unknown_status(self, progress: ExecutionProgress) -> ExecutionEvent | None:
        self.unknown_polls += 1
        if self.unknown_polls < UNKNOWN_STATUS_POLLS:
            return None
        return self.event(
            EVENT_ERROR,
            execution_status=progress.raw_status,
            message=(
                f"Smart Flows execution {self.execution_id} reports the status "
                f"{progress.raw_status!r}, which this provider does not know; the execution "
                "was left as it is. Check it in Smart Flows."
            ),
        )


# --- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poll:
    """Long-poll the execution's progress for ``wait_seconds``; the result is its ExecutionProgress."""

    execution_id: str
    wait_seconds: int


@dataclass(frozen=True)
class Pause:
    """Sleep ``seconds`` (after a transient failure); the result is None."""

    seconds: float


@dataclass(frozen=True)
class ReadExecution:
    """Read the full execution; the result is its Execution."""

    execution_id: str


Step = Poll | Pause | ReadExecution
T = TypeVar("T")
Steps = Generator[Step, Any, T]


def document_ids_steps(execution_id: str, log: Any) -> Steps[list[str]]:
    """The ids of the documents in the full execution; [] (and a warning) when it cannot be read.

    The one document-ids fallback: a finished execution whose progress named no documents.
    """
    try:
        execution: Execution = yield ReadExecution(execution_id)
    except SmartFlowsError as err:
        # The outcome is known; the download step can still list the documents itself.
        log.warning("execution %s: could not list its documents: %s", execution_id, err)
        return []
    return [doc.id for doc in execution.documents]


def with_document_ids(event: ExecutionEvent, log: Any) -> Steps[ExecutionEvent]:
    """``event``, with the execution's documents when it is a success whose progress named none."""
    if event["status"] == EVENT_SUCCESS and not event["document_ids"]:
        event["document_ids"] = yield from document_ids_steps(event["execution_id"], log)
    return event


def waiting_for_steps(watch: ExecutionWatch, progress: ExecutionProgress) -> Steps[None]:
    """Log what the execution waits for (``state.waitingFor``) once each time it becomes ``Waiting``."""
    waiting = progress.status is ExecutionStatus.WAITING
    if waiting and not watch.saw_waiting:
        try:
            execution: Execution = yield ReadExecution(watch.execution_id)
            what = execution.waiting_for or "an external event it does not name"
        except SmartFlowsError as err:  # only this line is lost: the wait goes on
            what = f"an external event (state.waitingFor not read: {one_line(err, 200)})"
        watch.log.info("execution %s is Waiting for %s", watch.execution_id, what)
    watch.saw_waiting = waiting


def poll_steps(watch: ExecutionWatch, wait_seconds: int) -> Steps[ExecutionProgress | None]:
    """One long-poll; None after a failure ``watch`` tolerates (paused before the next poll).

    A poll's :class:`SmartFlowsApiError` that ends the wait, and every other error, is raised out
    of the driver (a trigger turns it into an ``error`` event with :meth:`ExecutionWatch.error_event`).
    """
    try:
        progress: ExecutionProgress = yield Poll(watch.execution_id, wait_seconds)
    except SmartFlowsApiError as err:
        delay = watch.on_failure(err)
        if delay is None:
            raise
        yield Pause(delay)
        return None
    return progress


def wait_steps(watch: ExecutionWatch) -> Steps[ExecutionEvent]:
    """The one waiting loop: long-poll until the execution is final, needs a person, or times out.

    Failed polls are tolerated as :func:`poll_steps` says.
    """
    while True:
        if watch.expired():
            return watch.timeout_event()
        progress = yield from poll_steps(watch, watch.poll_seconds())
        if progress is None:
            continue
        event = watch.on_progress(progress)
        if event is not None:
            return (yield from with_document_ids(event, watch.log))
        yield from waiting_for_steps(watch, progress)


# --- drivers -------------------------------------------------------------------------------------


class SyncStepHook(Protocol):
    """What :func:`run_steps` needs of a hook (the synchronous SmartFlowsHook)."""

    def get_progress(self, execution_id: str, *, wait_seconds: float | None = None) -> ExecutionProgress: ...

    def get_execution(self, execution_id: str) -> Execution: ...


class AsyncStepHook(Protocol):
    """What :func:`run_steps_async` needs of a hook (the SmartFlowsAsyncHook)."""

    async def get_progress(
        self, execution_id: str, *, wait_seconds: float | None = None
    ) -> ExecutionProgress: ...

    async def get_execution(self, execution_id: str) -> Execution: ...


class _Run(Generic[T]):
    """One run of a step generator: hands each step's result (or error) back, keeps the outcome."""

    def __init__(self, steps: Steps[T]) -> None:
        self.steps = steps
        self.reply: Any = None
        self.error: SmartFlowsError | None = None
        self.outcome: T | None = None

    def next_step(self) -> Step | None:
        """The next step, or None once the generator has returned (its value is ``outcome``)."""
        error, self.error = self.error, None
        try:
            return self.steps.throw(error) if error is not None else self.steps.send(self.reply)
        except StopIteration as done:
            self.outcome = done.value
            return None


def _perform(step: Step, hook: Any, sleep: Callable[[float], Any]) -> Any:
    """Start the call a step stands for: a value from a sync hook, an awaitable from an async one."""
    match step:
        case Poll(execution_id, wait_seconds):
            return hook.get_progress(execution_id, wait_seconds=wait_seconds)
        case ReadExecution(execution_id):
            return hook.get_execution(execution_id)
        case Pause(seconds):
            return sleep(seconds)


def run_steps(steps: Steps[T], hook: SyncStepHook) -> T:
    """Perform ``steps`` with blocking hook calls (the worker); return what the generator returns."""
    run = _Run(steps)
    while (step := run.next_step()) is not None:
        try:
            run.reply = _perform(step, hook, time.sleep)
        except SmartFlowsError as err:
            run.error = err
    return run.outcome  # type: ignore[return-value]


async def run_steps_async(steps: Steps[T], hook: AsyncStepHook) -> T:
    """Perform ``steps`` with the async hook (the triggerer); return what the generator returns."""
    run = _Run(steps)
    while (step := run.next_step()) is not None:
        try:
            run.reply = await _perform(step, hook, asyncio.sleep)
        except SmartFlowsError as err:
            run.error = err
    return run.outcome  # type: ignore[return-value]
