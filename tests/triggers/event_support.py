"""Helpers for the event trigger's tests: an asset state store, the watcher loop of a triggerer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.triggers.events import SmartFlowsExecutionEventTrigger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class MemoryAssetStateStore:
    """The interface of Airflow's ``AssetStateStoreAccessors`` for one watched asset (``get``/``set``/
    ``delete``/``clear`` and their ``a``-prefixed async forms), kept in memory.

    Airflow's own accessors talk to a triggerer's supervisor (``SUPERVISOR_COMMS``), which a test
    without a running triggerer does not have. Values go through JSON, as into the database, and
    ``None`` is refused, as Airflow refuses it. ``writes`` counts every ``set``.
    """

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.dumps(value)
        self.writes += 1

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def clear(self) -> None:
        self.values.clear()

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.set(key, value)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def aclear(self) -> None:
        self.clear()


def watcher(store: MemoryAssetStateStore | None, **kwargs: Any) -> SmartFlowsExecutionEventTrigger:
    """A trigger as the triggerer builds it: from its serialized kwargs, the store injected."""
    kwargs.setdefault("poll_interval", 1.0)
    _, serialized = SmartFlowsExecutionEventTrigger(**kwargs).serialize()
    trigger = SmartFlowsExecutionEventTrigger(**serialized)
    trigger.asset_state_store = store  # type: ignore[assignment]
    return trigger


class Collector:
    """Consume a trigger's events as the triggerer does (take one, ask for the next at once) in a
    task; ``stop()`` cancels it wherever it is (a triggerer going away)."""

    def __init__(self, events: AsyncIterator[Any], bind: Callable[[], int | None] | None = None) -> None:
        self.payloads: list[dict[str, Any]] = []
        #: What ``bind`` returned per event: in ack mode, the seq Airflow confirms once it stored it.
        self.seqs: list[int | None] = []
        self._bind = bind
        self.task = asyncio.ensure_future(self._consume(events))

    async def _consume(self, events: AsyncIterator[Any]) -> None:
        async for event in events:
            self.payloads.append(event.payload)
            if self._bind is not None:  # as the triggerer: bound with no await after taking it
                self.seqs.append(self._bind())

    @property
    def ids(self) -> list[str]:
        return [payload["execution_id"] for payload in self.payloads]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]
