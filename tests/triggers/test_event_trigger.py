"""SmartFlowsExecutionEventTrigger against the emulator over real HTTP: one event per execution
that finishes, none twice across restarts, one poll per interval whatever the watchers."""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsFlowNameError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.triggers.events import (
    CURSOR_KEY,
    FINISHED_STATUSES,
    Cursor,
    SmartFlowsExecutionEventTrigger,
)
from tests.support.waits import wait_until_async
from tests.triggers.event_support import Collector, MemoryAssetStateStore, watcher

pytestmark = [
    pytest.mark.usefixtures("smartflows_conn"),
    pytest.mark.airflow_version(
        min="3.3", reason="the event trigger keeps its cursor in the asset state store"
    ),
]

#: What "the plug-in" starts in the main test: (flow, final status), 20 in all, some failing.
OUTSIDE_RUNS = [
    ("hello", "Success"),
    ("error", "Error"),
    ("warning", "Warning"),
    ("approval", "Success"),
    ("interrupted", "Interrupted"),
] * 4


def finished(emulator: Any, ids: list[str]) -> bool:
    status = {ex["id"]: ex["status"] for ex in emulator.executions}
    return all(status.get(i) in FINISHED_STATUSES for i in ids)


async def start_spread(emulator: Any, runs: list[tuple[str, str]], user: str = "crm.user") -> list[str]:
    """Start ``runs`` as ``user`` at spread times (0-150 ms apart): they finish spread too."""
    rng = random.Random(26)
    ids = []
    for flow, _ in runs:
        ids.append(await asyncio.to_thread(emulator.start_as, flow, user))
        await asyncio.sleep(rng.uniform(0, 0.15))
    return ids


async def own_run(flow: str) -> str:
    """An execution the API key's own user starts (what Airflow's operators do)."""
    return await asyncio.to_thread(lambda: SmartFlowsHook(retry_limit=0).start_execution(flow).id)


def polls(emulator: Any) -> list[dict[str, Any]]:
    """The poll requests (the start-up lookup of the newest execution sorts the other way)."""
    return [
        r
        for r in emulator.requests_to("POST", r"/flows/executions/filter$")
        if r["query"].get("sort") == "modifiedAt,asc"
    ]


# --------------------------------------------------------------------------- construction


def test_serialize_returns_the_init_kwargs_without_the_key(smartflows_emulator: Any) -> None:
    kwargs = {
        "smartflows_conn_id": "sf_prod",
        "flow_id": None,
        "flow_name": "Invoice",
        "statuses": ["Success", "Error"],
        "created_by": ["crm.user"],
        "include_own": True,
        "poll_interval": 5.0,
    }
    classpath, serialized = SmartFlowsExecutionEventTrigger(**kwargs).serialize()
    assert serialized == kwargs
    text = json.dumps(serialized)
    assert smartflows_emulator.api_key not in text
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(text))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_statuses_are_read_case_insensitively_and_kept_in_wire_spelling() -> None:
    trigger = SmartFlowsExecutionEventTrigger(statuses=["error", "Cancelled", "Success"])
    assert trigger.statuses == ["Success", "Error", "Canceled"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"statuses": ["Done"]}, r"'Done' is not a Smart Flows status"),
        ({"statuses": ["Running"]}, r"'Running' is not final"),
        ({"statuses": "Success"}, r"statuses must be a non-empty list"),
        ({"statuses": []}, r"statuses must be a non-empty list"),
        ({"poll_interval": 0}, r"poll_interval must be"),
        ({"poll_interval": True}, r"poll_interval must be"),
        ({"poll_interval": "30"}, r"poll_interval must be"),
        ({"flow_id": "hello", "flow_name": "Hello"}, r"not both"),
        ({"flow_name": "  "}, r"flow_name must be a non-empty string"),
        ({"created_by": ["crm.user", ""]}, r"created_by must be"),
        ({"include_own": "yes"}, r"include_own must be True or False"),
    ],
    ids=[
        "unknown-status",
        "unfinished-status",
        "status-string",
        "no-status",
        "zero-interval",
        "bool-interval",
        "text-interval",
        "flow-id-and-name",
        "blank-flow-name",
        "blank-creator",
        "include-own-text",
    ],
)
def test_bad_parameters_are_refused_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SmartFlowsInputError, match=match):
        SmartFlowsExecutionEventTrigger(**kwargs)


@pytest.mark.asyncio
async def test_without_an_asset_state_store_the_trigger_fails_saying_why() -> None:
    with pytest.raises(SmartFlowsInputError, match=r"asset state store.*AssetWatcher"):
        await anext(watcher(None).run())


@pytest.mark.asyncio
async def test_an_unknown_flow_name_fails_the_watcher_with_the_closest_names() -> None:
    with pytest.raises(SmartFlowsFlowNameError, match=r"No flow is named 'Helo'.*'Hello'"):
        await anext(watcher(MemoryAssetStateStore(), flow_name="Helo").run())


# --------------------------------------------------------------------------- events


@pytest.mark.asyncio
async def test_one_event_per_execution_finished_elsewhere_none_for_own_runs(smartflows_emulator: Any) -> None:
    old = smartflows_emulator.start_as("hello")  # history: finished before the watcher existed
    await wait_until_async(lambda: finished(smartflows_emulator, [old]), 10, message="the old run")
    everything, failures = MemoryAssetStateStore(), MemoryAssetStateStore()
    watchers = [
        Collector(watcher(everything).run()),
        Collector(watcher(failures, statuses=["Error", "Interrupted"]).run()),
    ]
    await wait_until_async(lambda: everything.writes and failures.writes, 10, message="both watchers started")
    own = [await own_run("hello"), await own_run("error")]
    outside = await start_spread(smartflows_emulator, OUTSIDE_RUNS)
    failing = [
        i for i, (_, status) in zip(outside, OUTSIDE_RUNS, strict=True) if status in ("Error", "Interrupted")
    ]

    await wait_until_async(lambda: len(watchers[0].ids) >= len(outside), 30, message=lambda: watchers[0].ids)
    await wait_until_async(lambda: len(watchers[1].ids) >= len(failing), 30, message=lambda: watchers[1].ids)
    assert finished(smartflows_emulator, own)
    await asyncio.sleep(2.5)  # two more polls: anything extra would show now
    for collector in watchers:
        await collector.stop()

    assert sorted(watchers[0].ids) == sorted(outside)  # each once; none of the own runs, not the old one
    assert sorted(watchers[1].ids) == sorted(failing)
    statuses = {p["execution_id"]: p["status"] for p in watchers[0].payloads}
    assert statuses == {i: status for i, (_, status) in zip(outside, OUTSIDE_RUNS, strict=True)}


@pytest.mark.asyncio
async def test_the_event_carries_what_a_dag_needs(smartflows_emulator: Any) -> None:
    store = MemoryAssetStateStore()
    collector = Collector(watcher(store, flow_name="Approval").run())
    await wait_until_async(lambda: store.writes, 10, message="the watcher started")
    smartflows_emulator.start_as("hello")  # another flow: no event
    execution_id = smartflows_emulator.start_as("approval")
    await wait_until_async(lambda: collector.payloads, 20, message="the event")
    await collector.stop()

    [payload] = collector.payloads
    [execution] = [ex for ex in smartflows_emulator.executions if ex["id"] == execution_id]
    assert payload == {
        "execution_id": execution_id,
        "flow_id": "approval",
        "flow_name": "Approval",
        "status": "Success",
        "created_at": payload["created_at"],
        "created_by": "crm.user",
        "modified_at": payload["modified_at"],
        "document_ids": execution["documents"],
        "outputs": {"Decision": "approved"},
    }
    assert execution["documents"]
    assert payload["created_at"] <= payload["modified_at"]
    assert json.loads(json.dumps(payload)) == payload
    cursor = json.loads(store.values[CURSOR_KEY])  # the other flow's run may share the instant
    assert cursor["at"] == payload["modified_at"]
    assert execution_id in cursor["ids"]


@pytest.mark.asyncio
async def test_created_by_and_include_own_choose_whose_executions_fire(smartflows_emulator: Any) -> None:
    stores = [MemoryAssetStateStore() for _ in range(2)]
    only_sales = Collector(watcher(stores[0], created_by="sales.user").run())
    with_own = Collector(watcher(stores[1], include_own=True, poll_interval=2.0).run())
    await wait_until_async(lambda: all(s.writes for s in stores), 10, message="the watchers started")
    sales = smartflows_emulator.start_as("hello", "sales.user")
    crm = smartflows_emulator.start_as("hello", "crm.user")
    own = await own_run("hello")
    await wait_until_async(lambda: len(with_own.ids) == 3, 20, message=lambda: with_own.ids)
    await asyncio.sleep(1.5)
    await only_sales.stop()
    await with_own.stop()
    assert only_sales.ids == [sales]
    assert sorted(with_own.ids) == sorted([sales, crm, own])


# --------------------------------------------------------------------------- exactly once


@pytest.mark.asyncio
@pytest.mark.parametrize("kill_after", [3, 9, 15], ids=["early", "middle", "late"])
async def test_a_trigger_recreated_mid_stream_neither_repeats_nor_skips(
    smartflows_emulator: Any, kill_after: int
) -> None:
    """A triggerer going away (the trigger cancelled wherever it is) and the trigger rebuilt from
    its serialized kwargs with the same asset state store: every execution once, in all."""
    store = MemoryAssetStateStore()
    first = Collector(watcher(store).run())
    await wait_until_async(lambda: store.writes, 10, message="the watcher started")
    starting = asyncio.ensure_future(start_spread(smartflows_emulator, OUTSIDE_RUNS))
    await wait_until_async(lambda: len(first.ids) >= kill_after, 30, message=lambda: first.ids)
    await first.stop()
    await asyncio.sleep(1.2)  # executions finish while no trigger runs
    second = Collector(watcher(store).run())
    outside = await starting
    await wait_until_async(
        lambda: len(first.ids) + len(second.ids) >= len(outside), 30, message=lambda: second.ids
    )
    await asyncio.sleep(2.5)
    await second.stop()

    delivered = first.ids + second.ids
    assert len(delivered) == len(set(delivered)), "an execution fired twice"
    assert sorted(delivered) == sorted(outside), "an execution never fired"


@pytest.mark.asyncio
async def test_in_ack_mode_the_cursor_waits_until_airflow_stored_the_events(smartflows_emulator: Any) -> None:
    """Through Airflow's SharedStreamManager in ack mode, as the triggerer runs the watcher: until
    Airflow confirms it stored the events, the stored cursor stays before them (a triggerer killed
    now is followed by one that fires them again); once confirmed, it moves past them."""
    from airflow.triggers.shared_stream import SharedStreamManager

    store, manager = MemoryAssetStateStore(), SharedStreamManager(ack_timeout=60)
    trigger = watcher(store)
    key = trigger.shared_stream_key()
    stream = manager.subscribe(trigger_id=1, trigger=trigger, key=key)
    first = Collector(
        trigger.filter_shared_stream(stream), bind=lambda: manager.bind_pending_event(trigger_id=1, key=key)
    )
    try:
        await wait_until_async(lambda: store.writes, 10, message="the watcher started")
        before = store.get(CURSOR_KEY)
        started = [smartflows_emulator.start_as("hello", "crm.user") for _ in range(3)]
        await wait_until_async(lambda: len(first.ids) == 3, 20, message=lambda: first.ids)
        await asyncio.sleep(2.5)  # more polls, and nothing confirmed
        assert store.get(CURSOR_KEY) == before, "the cursor moved before Airflow stored the events"
        assert None not in first.seqs, "an event was not bound to Airflow's persist confirmation"

        successor = Collector(watcher(MemoryAssetStateStore(store.values)).run())  # the store as it is now
        await wait_until_async(lambda: len(successor.ids) == 3, 20, message=lambda: successor.ids)
        await successor.stop()
        assert sorted(successor.ids) == sorted(started) == sorted(first.ids)

        manager.confirm_persisted(seq for seq in first.seqs if seq is not None)
        await wait_until_async(lambda: store.get(CURSOR_KEY) != before, 10, message="the cursor stored")
        after = Collector(watcher(MemoryAssetStateStore(store.values)).run())
        await asyncio.sleep(2.5)
        await after.stop()
        assert after.ids == [], "a confirmed execution fired again"
    finally:
        await first.stop()
        await manager.unsubscribe(1, key)
        await manager.stop_all()


@pytest.mark.asyncio
@pytest.mark.parametrize("final_status", ["Error", "Success"])
async def test_an_execution_started_before_the_watcher_fires_when_it_finishes_after(
    smartflows_emulator: Any, final_status: str
) -> None:
    """Its modification time is when it finished, not when it started (a failed run too)."""
    flow = {"id": "long", "steps": [{"message": "Working", "percentage": 50, "seconds": 150}]}
    smartflows_emulator.add_flow({**flow, "final_status": final_status})
    long_run = smartflows_emulator.start_as("long")
    quick = smartflows_emulator.start_as("hello")
    await wait_until_async(lambda: finished(smartflows_emulator, [quick]), 10, message="the quick run")
    store = MemoryAssetStateStore()
    collector = Collector(watcher(store).run())
    await wait_until_async(lambda: store.writes, 10, message="the watcher started")
    await wait_until_async(lambda: collector.ids, 20, message="the long run's event")
    await asyncio.sleep(1.5)
    await collector.stop()
    assert collector.ids == [long_run]


def test_the_cursor_passes_executions_at_one_instant_by_id() -> None:
    cursor = Cursor("2026-12-05T14:00:00.123Z", ("a",))
    at = cursor.instant
    assert at is not None
    assert cursor.passed(at, "a")
    assert not cursor.passed(at, "b")
    moved = cursor.advance("2026-12-05T14:00:00.123Z", at, "b")
    assert moved == Cursor("2026-12-05T14:00:00.123Z", ("a", "b"))
    assert Cursor.from_json(moved.to_json()) == moved
    assert Cursor().covered_by(None)
    assert not Cursor().covered_by(cursor.at)
    assert cursor.covered_by("2026-12-05T14:00:00.123+00:00")
    assert not cursor.covered_by("2026-12-05T14:00:01Z")


# --------------------------------------------------------------------------- cost


@pytest.mark.asyncio
@pytest.mark.parametrize("watchers", [1, 5], ids=["one-watcher", "five-watchers"])
async def test_one_poll_per_interval_whatever_the_watchers(smartflows_emulator: Any, watchers: int) -> None:
    """Through Airflow's own SharedStreamManager: the watchers of one connection share one poll."""
    from airflow.triggers.shared_stream import SharedStreamManager

    manager = SharedStreamManager()
    triggers = [watcher(MemoryAssetStateStore(), created_by=f"user-{n}") for n in range(watchers)]
    collectors = []
    for trigger_id, trigger in enumerate(triggers):
        stream = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=trigger.shared_stream_key())
        collectors.append(Collector(trigger.filter_shared_stream(stream)))
    try:
        await wait_until_async(lambda: polls(smartflows_emulator), 10, message="a first poll")
        started = [smartflows_emulator.start_as("hello", f"user-{n}") for n in range(watchers)]
        await wait_until_async(
            lambda: all(c.ids for c in collectors), 20, message=lambda: [c.ids for c in collectors]
        )
        first = len(polls(smartflows_emulator))
        await asyncio.sleep(4.5)  # about four more poll intervals
        during = len(polls(smartflows_emulator)) - first
    finally:
        for collector in collectors:
            await collector.stop()
        for trigger_id, trigger in enumerate(triggers):
            await manager.unsubscribe(trigger_id, trigger.shared_stream_key())
        await manager.stop_all()

    assert [c.ids for c in collectors] == [[execution_id] for execution_id in started]
    assert 3 <= during <= 6, f"{during} polls in 4.5 s at a 1 s interval with {watchers} watcher(s)"


# --------------------------------------------------------------------------- servers that differ


@pytest.mark.asyncio
async def test_a_server_without_the_filter_route_is_polled_through_the_plain_listing(
    smartflows_emulator: Any,
) -> None:
    smartflows_emulator.set_api(drop_routes=["POST /api/v1/flows/executions/filter"])
    store = MemoryAssetStateStore()
    collector = Collector(watcher(store).run())
    await wait_until_async(lambda: store.writes, 10, message="the watcher started")
    own = await own_run("hello")
    outside = await start_spread(smartflows_emulator, OUTSIDE_RUNS[:10])
    await wait_until_async(lambda: len(collector.ids) >= len(outside), 30, message=lambda: collector.ids)
    await asyncio.sleep(2.5)
    await collector.stop()

    assert sorted(collector.ids) == sorted(outside)
    assert own not in collector.ids
    plain = smartflows_emulator.requests_to("GET", r"/api/v1/flows/executions$")
    assert plain
    assert {r["query"]["sort"] for r in plain} == {"modifiedAt,desc"}


@pytest.mark.asyncio
async def test_pages_capped_by_the_server_are_read_from_the_last_modification_on(
    smartflows_emulator: Any,
) -> None:
    """A server holding 20 per page (whatever ``size`` asks): 45 executions arrive in full."""
    smartflows_emulator.set_api(page_cap=20)
    store = MemoryAssetStateStore()
    collector = Collector(watcher(store).run())
    await wait_until_async(lambda: store.writes, 10, message="the watcher started")
    outside = [smartflows_emulator.start_as("hello") for _ in range(45)]
    await wait_until_async(lambda: len(collector.ids) >= len(outside), 30, message=lambda: len(collector.ids))
    await asyncio.sleep(2.5)
    await collector.stop()

    assert sorted(collector.ids) == sorted(outside)
    assert any(
        r["query"].get("page") == "0" and r["query"].get("size") == "100" for r in polls(smartflows_emulator)
    )
