"""Event trigger for ``AssetWatcher``: one event per Smart Flows execution that finishes.

Executions started outside Airflow (the CRM plug-in, the flow execution panel, other programs)
drive DAGs: :class:`SmartFlowsExecutionEventTrigger` watches a server for executions that reach
a final status and fires one :class:`ExecutionFinishedEvent` per matching execution.

How it reads the server. One poll per ``poll_interval`` per connection, whatever the number of
watchers: the triggerer runs one shared stream (:meth:`~SmartFlowsExecutionEventTrigger.open_shared_stream`)
for every watcher with the same ``(connection, poll_interval)``. A poll is
``POST /flows/executions/filter`` (status in the final ones, ``modifiedAt >= `` the oldest cursor
of the group) sorted by ``modifiedAt`` ascending; a full page is followed by a page from its last
modification time (key-set paging, so that nothing shifts between pages). A server without the
filter route (404/405) is polled through the plain listing instead (:mod:`.event_polls`).

Nothing lost, nothing twice in normal operation. Each watcher keeps its cursor, the
``modifiedAt`` of the last execution it passed plus the ids passed at that instant, in its asset's
state store (Airflow >= 3.3). The trigger runs its shared stream in Airflow's ack mode
(:meth:`~SmartFlowsExecutionEventTrigger.create_shared_stream_producer`): a watcher's cursor is
stored only once Airflow has confirmed that it stored every event the watcher drew from a poll
(the producer's ``advance``). A restart, another triggerer taking over, or the trigger being
re-created reads the cursor back and goes on from there, so no execution is skipped. The one
window left: a triggerer killed (SIGKILL) after Airflow stored an event and before the cursor
behind it was stored (the next sync, about a second) fires that execution again after the
restart. Consumers that must act once per execution key on ``execution_id`` (the example DAG's
downloads overwrite the same files). A new watcher starts at the newest finished execution of
the server (earlier ones are history, not events).
Airflow < 3.3 has no asset state store: the trigger refuses to be built there.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsConnectionError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.flow_names import check_flow_choice, match_flow_name
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.models import ExecutionStatus, find_document_refs
from airflow_provider_smartflows.outputs import max_output_bytes, named_outputs
from airflow_provider_smartflows.triggers.event_polls import (
    FINISHED_STATUSES,
    Cursor,
    ExecutionLister,
    mapping_of,
    position_of,
    user_id,
)
from airflow_provider_smartflows.validation import check_number
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION

try:
    from airflow.triggers.base import BaseEventTrigger, TriggerEvent
except ImportError:  # Airflow 2: no event triggers; the constructor refuses (see _refuse_old_airflow)
    from airflow.triggers.base import BaseTrigger as BaseEventTrigger  # type: ignore[assignment]
    from airflow.triggers.base import TriggerEvent
try:
    from airflow.triggers.shared_stream import SharedStreamProducer
except ImportError:  # Airflow < 3.3: no shared streams; the constructor refuses
    SharedStreamProducer = object  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow.triggers.shared_stream import AdvanceItem

__all__ = [
    "FINISHED_STATUSES",
    "Cursor",
    "ExecutionFinishedEvent",
    "SmartFlowsExecutionEventTrigger",
]

log = logging.getLogger(__name__)

#: The asset state store key of a watcher's cursor.
CURSOR_KEY = "smartflows_execution_cursor"
#: Seconds between polls at least (a server is not a message queue).
MIN_POLL_INTERVAL = 1.0


class ExecutionFinishedEvent(TypedDict):
    """The payload of one event: what a DAG needs to download and route the documents."""

    execution_id: str
    flow_id: str | None
    flow_name: str | None
    status: str
    created_at: str | None
    created_by: str | None
    modified_at: str
    document_ids: list[str]
    outputs: dict[str, Any]


def finished_event(item: Mapping[str, Any]) -> ExecutionFinishedEvent:
    """The event of one listed (final) execution."""
    flow = mapping_of(item.get("flow"))
    state = mapping_of(item.get("state"))
    # The input data is the starter's own and may hold anything; documents are in the output.
    output_side = {key: value for key, value in state.items() if key != "inputData"}
    outputs, left_out = named_outputs(item, max_output_bytes())
    if left_out:
        log.warning("Execution %s: outputs left out of the event: %s", item["id"], ", ".join(left_out))
    created_at = item.get("createdAt")
    return ExecutionFinishedEvent(
        execution_id=str(item["id"]),
        flow_id=flow.get("id") if isinstance(flow.get("id"), str) else None,
        flow_name=flow.get("displayName") if isinstance(flow.get("displayName"), str) else None,
        status=str(ExecutionStatus.parse(item.get("status"))),
        created_at=created_at if isinstance(created_at, str) else None,
        created_by=user_id(item.get("createdBy")),
        modified_at=str(item.get("modifiedAt")),
        document_ids=[ref.id for ref in find_document_refs([output_side, item.get("outputs")])],
        outputs=outputs,
    )


# --------------------------------------------------------------------------- the group of one poll


class _Group:
    """The watchers of one shared poll in this triggerer: their cursors say where it lists from."""

    def __init__(self) -> None:
        self.cursors: dict[int, Cursor] = {}
        self.joined = asyncio.Event()

    def move(self, token: int, cursor: Cursor) -> None:
        self.cursors[token] = cursor
        self.joined.set()

    def leave(self, token: int) -> None:
        self.cursors.pop(token, None)
        if not self.cursors:
            self.joined.clear()

    async def since(self) -> Cursor:
        """The oldest cursor of the group (waits until a watcher has joined)."""
        while not self.cursors:
            await self.joined.wait()
        return min(self.cursors.values(), key=lambda c: (c.instant is not None, c.instant or 0))


#: The groups of each event loop (a triggerer runs one; its asyncio objects belong to it).
_GROUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Group]] = (
    weakref.WeakKeyDictionary()
)


def _group(key: Hashable) -> _Group:
    groups = _GROUPS.setdefault(asyncio.get_running_loop(), {})
    return groups.setdefault(key, _Group())


class _Held:
    """The cursors the watchers reached in one poll, stored once Airflow stored the poll's events."""

    def __init__(self) -> None:
        self.cursors: dict[int, tuple[Any, Cursor]] = {}


class _CursorProducer(SharedStreamProducer):
    """Ack mode: the trigger's polls, each with a :class:`_Held` that its watchers fill; Airflow
    calls :meth:`advance` for a poll once every event the watchers drew from it is in its database."""

    def __init__(self, trigger_class: type[SmartFlowsExecutionEventTrigger], kwargs: dict[str, Any]) -> None:
        self._polls = trigger_class.open_shared_stream(kwargs)

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        async for poll in self._polls:
            held = _Held()
            yield {**poll, "held": held}, held

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        latest: dict[int, tuple[Any, Cursor]] = {}
        for item in batch:
            if item.outcome.failed:
                # A watcher was failed on this poll (Airflow's ack timeout): its events may not be
                # stored. Keep every cursor of the poll where it was; later polls move the others.
                log.warning("A watcher failed on a poll: its executions fire again when it restarts")
                continue
            latest.update(item.broker_payload.cursors)
        for store, cursor in latest.values():
            await SmartFlowsExecutionEventTrigger._save(store, cursor)


# --------------------------------------------------------------------------- the trigger


def _statuses(value: object) -> list[str]:
    """The wire spellings of ``statuses``; an unknown or unfinished status is refused."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise SmartFlowsInputError(
            f"statuses must be a non-empty list of final statuses ({', '.join(FINISHED_STATUSES)}), "
            f"not {value!r}."
        )
    spelled = []
    for raw in value:
        status = ExecutionStatus.parse(raw)
        if status is ExecutionStatus.UNKNOWN:
            raise SmartFlowsInputError(
                f"statuses: {raw!r} is not a Smart Flows status; the final ones are "
                f"{', '.join(FINISHED_STATUSES)}."
            )
        if not status.is_terminal:
            raise SmartFlowsInputError(
                f"statuses: {status.value!r} is not final (the execution goes on); this trigger fires on "
                f"final statuses only: {', '.join(FINISHED_STATUSES)}."
            )
        spelled.append(status.value)
    return sorted(set(spelled), key=FINISHED_STATUSES.index)


def _creators(value: object) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not values or not all(isinstance(v, str) and v for v in values):
        raise SmartFlowsInputError(f"created_by must be a user id or a list of user ids, not {value!r}.")
    return list(values)


def _transient(err: SmartFlowsError) -> bool:
    """A poll that may work next time (the filter is a POST that changes nothing: 5xx and 429 too)."""
    if isinstance(err, SmartFlowsConnectionError):
        return True
    status = err.status_code if isinstance(err, SmartFlowsApiError) else None
    return status is not None and (status == 429 or status >= 500)


def _refuse_old_airflow() -> None:
    if not AIRFLOW_V_3_3_PLUS:
        raise SmartFlowsInputError(
            f"SmartFlowsExecutionEventTrigger needs Airflow >= 3.3 (this is {AIRFLOW_VERSION}): it keeps "
            "its cursor in the asset state store, which older Airflow lacks, and without it a triggerer "
            "restart would report executions twice or not at all."
        )


class SmartFlowsExecutionEventTrigger(BaseEventTrigger):
    """
    Fire one event per Smart Flows execution that reaches a final status (for ``AssetWatcher``).

    The event's payload is an :class:`ExecutionFinishedEvent`: execution id, flow id and name,
    status, creation time and creator, modification time, document ids and named outputs. It
    reaches the DAG run as the triggering asset event's ``extra``.

    Needs Airflow >= 3.3 (the asset state store keeps the cursor) and a key that may see the
    executions of other users (on most servers an admin's key).

    :param smartflows_conn_id: the ``smartflows`` connection.
    :param flow_id: only executions of this flow (id).
    :param flow_name: only executions of the flow of this name (resolved when the watcher starts;
        a name that matches no flow fails it, naming the closest names). Not with ``flow_id``.
    :param statuses: the final statuses that fire (default: all five, ``FINISHED_STATUSES``).
    :param created_by: only executions created by this user id (or these).
    :param include_own: also fire for executions created by the API key's own user. Off by
        default: those are Airflow's own runs, which would otherwise trigger DAGs a second time.
    :param poll_interval: seconds between two polls of the server (shared by every watcher of the
        connection with the same interval).
    """

    def __init__(
        self,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        flow_id: str | None = None,
        flow_name: str | None = None,
        statuses: Sequence[str] = FINISHED_STATUSES,
        created_by: str | Sequence[str] | None = None,
        include_own: bool = False,
        poll_interval: float = 30.0,
    ) -> None:
        _refuse_old_airflow()
        super().__init__()
        check_flow_choice(flow_id, flow_name, type(self).__name__)
        for name, value in (("flow_id", flow_id), ("flow_name", flow_name)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SmartFlowsInputError(f"{name} must be a non-empty string or None, not {value!r}.")
        if not isinstance(smartflows_conn_id, str) or not smartflows_conn_id:
            raise SmartFlowsInputError(
                f"smartflows_conn_id must be a connection id, not {smartflows_conn_id!r}."
            )
        if not isinstance(include_own, bool):
            raise SmartFlowsInputError(f"include_own must be True or False, not {include_own!r}.")
        self.smartflows_conn_id = smartflows_conn_id
        self.flow_id = flow_id
        self.flow_name = flow_name
        self.statuses = _statuses(statuses)
        self.created_by = _creators(created_by)
        self.include_own = include_own
        self.poll_interval = float(
            check_number(
                "poll_interval", poll_interval, minimum=MIN_POLL_INTERVAL, unit="a number of seconds"
            )
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "smartflows_conn_id": self.smartflows_conn_id,
            "flow_id": self.flow_id,
            "flow_name": self.flow_name,
            "statuses": list(self.statuses),
            "created_by": None if self.created_by is None else list(self.created_by),
            "include_own": self.include_own,
            "poll_interval": self.poll_interval,
        }

    # ----------------------------------------------------------------- the shared poll

    def shared_stream_key(self) -> Hashable:
        """Watchers of one connection polled at one interval share one poll."""
        return ("smartflows-finished-executions", self.smartflows_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Poll forever: each poll yields ``{"since", "executions", "me"}`` (see the module doc)."""
        conn_id = kwargs.get("smartflows_conn_id", DEFAULT_CONN_ID)
        interval = float(kwargs.get("poll_interval", 30.0))
        group = _group(("smartflows-finished-executions", conn_id, interval))
        lister = ExecutionLister()
        async with SmartFlowsAsyncHook(conn_id, retry_limit=2, max_retry_delay=interval) as hook:
            me = user_id(await hook.current_user())
            while True:
                since = (await group.since()).at
                try:
                    executions = await lister.since(hook, since)
                except SmartFlowsError as err:
                    if not _transient(err):
                        raise
                    log.warning("Smart Flows poll of %s failed, trying again next poll: %s", conn_id, err)
                else:
                    yield {"since": since, "executions": executions, "me": me}
                await asyncio.sleep(interval)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        """Ack mode: a cursor is stored once Airflow has stored the events behind it."""
        return _CursorProducer(cls, kwargs)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """This watcher alone (a triggerer without shared streams): its own poll, same events."""
        async for event in self.filter_shared_stream(self.open_shared_stream(self.serialize()[1])):
            yield event

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """This watcher's events from the shared polls; its cursor is stored once they are handed
        over: in ack mode when Airflow stored them (the poll's ``held``), else after each one."""
        store = self._state_store()
        cursor, flow_id = await self._start(store)
        group, token = _group(self.shared_stream_key()), id(self)
        group.move(token, cursor)
        try:
            async for poll in shared_stream:
                if not cursor.covered_by(poll["since"]):
                    continue  # listed before this watcher joined: the next poll starts at its cursor
                held: _Held | None = poll.get("held")
                moved = False
                for item in poll["executions"]:
                    position = position_of(item)
                    if position is None or cursor.passed(position[1], position[2]):
                        continue
                    cursor, moved = cursor.advance(*position), True
                    if self._wants(item, poll["me"], flow_id):
                        yield TriggerEvent(finished_event(item))
                        # Handed over: only now is the execution behind the cursor.
                        await self._keep(store, cursor, held, token)
                        group.move(token, cursor)
                        moved = False
                if moved:
                    await self._keep(store, cursor, held, token)
                    group.move(token, cursor)
        finally:
            group.leave(token)

    @classmethod
    async def _keep(cls, store: Any, cursor: Cursor, held: _Held | None, token: int) -> None:
        """Store ``cursor`` now, or (ack mode) once Airflow stored the poll's events."""
        if held is None:
            await cls._save(store, cursor)
        else:
            held.cursors[token] = (store, cursor)

    # ----------------------------------------------------------------- one watcher

    def _wants(self, item: Mapping[str, Any], me: str | None, flow_id: str | None) -> bool:
        if str(ExecutionStatus.parse(item.get("status"))) not in self.statuses:
            return False
        flow = item.get("flow")
        if flow_id is not None and not (isinstance(flow, Mapping) and flow.get("id") == flow_id):
            return False
        creator = user_id(item.get("createdBy"))
        if self.created_by is not None and creator not in self.created_by:
            return False
        return self.include_own or me is None or creator != me

    def _state_store(self) -> Any:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            raise SmartFlowsInputError(
                f"{type(self).__name__} keeps its cursor in the asset state store, and Airflow gave it none: "
                "use it in an AssetWatcher (Asset(..., watchers=[AssetWatcher(name=..., trigger=...)])) "
                "on Airflow >= 3.3."
            )
        return store

    async def _start(self, store: Any) -> tuple[Cursor, str | None]:
        """The stored cursor (a new watcher: after the newest final execution, stored at once) and
        the flow id to keep."""
        try:
            cursor = Cursor.from_json(await store.aget(CURSOR_KEY, default=None))
        except ValueError as err:  # several assets share this very trigger: one cursor per asset
            raise SmartFlowsInputError(
                f"{type(self).__name__}: one trigger watches several assets ({err}). Give each asset's "
                "watcher its own trigger arguments (another flow, statuses or poll_interval)."
            ) from None
        async with SmartFlowsAsyncHook(self.smartflows_conn_id, retry_limit=3) as hook:
            flow_id = await self._flow_id(hook)
            if cursor is None:
                cursor = await ExecutionLister().newest(hook)
                await self._save(store, cursor)
                self.log.info("New watcher: executions finished after %s fire", cursor.at or "now")
            else:
                self.log.info("Watching from %s (%d execution(s) passed there)", cursor.at, len(cursor.ids))
        return cursor, flow_id

    async def _flow_id(self, hook: SmartFlowsAsyncHook) -> str | None:
        if self.flow_name is None:
            return self.flow_id
        try:
            flow = await hook.get_flow(self.flow_name)
        except (SmartFlowsNotFoundError, SmartFlowsInputError):
            flow_id, _ = match_flow_name(self.flow_name, await hook.list_flows())
            return flow_id
        if not isinstance(flow, Mapping) or not isinstance(flow.get("id"), str):
            raise SmartFlowsError(
                f"The flow named {self.flow_name!r} came back without an id: {flow!r:.200}."
            )
        return flow["id"]

    @staticmethod
    async def _save(store: Any, cursor: Cursor) -> None:
        await store.aset(CURSOR_KEY, cursor.to_json())
