"""B6: executions started elsewhere → asset events → DAG runs, on real Airflow services.

Scheduler, triggerer, dag-processor and api-server of ``tests/support/airflow_stack.py``
(LocalExecutor, SQLite), the emulator in its own process, the DAGs of ``b6_dags/``: an asset
watched by ``SmartFlowsExecutionEventTrigger`` at ``poll_interval`` 5 s, scheduling a DAG of one
empty task. Executions are started "by another user" (``POST /_emulator/executions/start-as``,
as the CRM plug-in would) with a flow that waits (the emulator's Waiting stage) and finishes the
moment it is released (``/_emulator/executions/{id}/release``): the release time is the moment
the execution finished on the server. What Airflow did is read from its metadata DB (SQLite):
``asset_event.timestamp`` (the event registered), ``dagrun_asset_event`` and ``dag_run.queued_at``
(the run that consumed it).

- **Burst**: N executions released together (8 threads): time until every asset event is
  registered, events per execution (duplicates, missed), and the DAG runs they produced (Airflow
  3.3.2 merges asset events queued while it creates a run: apache/airflow#56050).
- **Latency**: M executions released one by one at random gaps over a few minutes: finished →
  asset event registered, and → DAG run queued (median, p99).
- **Request cost**: K executions in flight (a long flow); the emulator's request log counts the
  listing requests (``POST /flows/executions/filter``) over a window with 1 watcher, then with 5
  watchers (``bench_b6_more_watchers`` unpaused: same connection and interval, one shared poll),
  against a naive per-execution poller run meanwhile (one ``GET .../progress`` per execution in
  flight per interval, ``NaivePoller``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from benchmarks.b4_batch import _query as query
from benchmarks.common import ROOT, loadavg, log, machine_info, percentile, replace_section

DAGS = Path(__file__).parent / "b6_dags"
DAG_ID = "bench_b6_events"
MORE_DAG_ID = "bench_b6_more_watchers"
ASSET = "bench_b6_executions"
RELEASE_FLOW = "bench-b6-release"
LONG_FLOW = "bench-b6-long"
LISTING = ("POST", "/api/v1/flows/executions/filter")
HEADING = "## B6: executions started elsewhere → DAG runs"
FULL = {"poll": 5.0, "burst": 200, "spread": 40, "spread_seconds": 120.0, "in_flight": 100, "window": 90.0}
SMOKE = {"poll": 2.0, "burst": 10, "spread": 4, "spread_seconds": 8.0, "in_flight": 10, "window": 10.0}
#: Targets: every execution once; p99 finished → event within one poll plus 2 s; 5 watchers cost
#: no more listing requests than 1 (10 % slack for a poll that pages).
TARGET_P99_SLACK = 2.0
TARGET_SHARED_RATIO = 1.1


def scenario() -> dict[str, Any]:
    return {
        "flows": [
            {
                "id": RELEASE_FLOW,
                "displayName": "B6 finishes when released",
                "input": "any",
                "waiting": {"after_step": 0},
                "steps": [{"message": "Working", "percentage": 50, "seconds": 0.1}],
                "final_status": "Success",
            },
            {
                "id": LONG_FLOW,
                "displayName": "B6 in flight",
                "input": "any",
                "steps": [{"message": "Working", "percentage": 50, "seconds": 36000}],
                "final_status": "Success",
            },
        ]
    }


# --- reading Airflow's metadata DB and the emulator's request log ----------------------------------


def instant(value: object) -> float:
    """Epoch seconds of a DB or emulator timestamp (naive ones are UTC)."""
    if not value:
        return float("nan")
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" ", "T"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def asset_events(db: Path) -> list[tuple[int, str, float]]:
    """(event id, execution id, registered at) of every asset event of the watched asset."""
    rows = query(
        db,
        "SELECT e.id, json_extract(e.extra, '$.payload.execution_id'), e.timestamp FROM asset_event e "
        "JOIN asset a ON a.id = e.asset_id WHERE a.name = ? ORDER BY e.id",
        (ASSET,),
    )
    return [(int(i), str(execution), instant(ts)) for i, execution, ts in rows]


def consumers(db: Path) -> dict[int, tuple[int, float]]:
    """Asset event id → (the DAG run that consumed it, when that run was queued)."""
    rows = query(
        db,
        "SELECT x.event_id, r.id, r.queued_at FROM dagrun_asset_event x "
        "JOIN dag_run r ON r.id = x.dag_run_id WHERE r.dag_id = ?",
        (DAG_ID,),
    )
    return {int(event): (int(run), instant(queued)) for event, run, queued in rows}


def run_count(db: Path) -> int:
    ((count,),) = query(db, "SELECT COUNT(*) FROM dag_run WHERE dag_id = ?", (DAG_ID,))
    return int(count)


def watchers_assigned(db: Path) -> int:
    ((count,),) = query(
        db,
        "SELECT COUNT(*) FROM trigger WHERE classpath LIKE '%SmartFlowsExecutionEventTrigger' "
        "AND triggerer_id IS NOT NULL",
    )
    return int(count)


def logged(emulator: Any, since: float, until: float) -> Counter[tuple[str, str]]:
    """Requests the emulator answered between two instants, per (method, route shape)."""
    counts: Counter[tuple[str, str]] = Counter()
    for req in emulator.admin("GET", "/_emulator/requests"):
        if since <= instant(req["ts"]) <= until:
            path = req["path"]
            if path.endswith("/progress"):
                path = "/api/v1/flows/executions/{id}/progress"
            counts[(req["method"], path)] += 1
    return counts


def stats(values: list[float]) -> dict[str, Any]:
    clean = sorted(v for v in values if v == v)
    if not clean:
        return {"n": 0, "median": float("nan"), "p99": float("nan"), "max": float("nan"), "values": []}
    return {
        "n": len(clean),
        "median": percentile(clean, 50),
        "p99": percentile(clean, 99),
        "max": clean[-1],
        "values": [round(v, 3) for v in clean],
    }


def measure(db: Path, finished: dict[str, float]) -> dict[str, Any]:
    """What Airflow made of these executions: events per execution, latencies, DAG runs."""
    mine = [(event, execution, at) for event, execution, at in asset_events(db) if execution in finished]
    per = Counter(execution for _, execution, _ in mine)
    taken = consumers(db)
    first: dict[str, tuple[int, float]] = {}
    for event, execution, at in mine:
        first.setdefault(execution, (event, at))
    to_run = [taken[e][1] - finished[x] for x, (e, _) in first.items() if e in taken]
    return {
        "executions": len(finished),
        "events": len(mine),
        "duplicates": sum(n - 1 for n in per.values()),
        "missed": len(set(finished) - set(per)),
        "to_event": stats([at - finished[x] for x, (_, at) in first.items()]),
        "to_run_queued": stats(to_run),
        "dag_runs": len({taken[e][0] for e, _, _ in mine if e in taken}),
        "not_consumed": sum(1 for e, _, _ in mine if e not in taken),
        "registered": sorted(at for _, _, at in mine),
    }


# --- driving the emulator --------------------------------------------------------------------------


class NaivePoller(threading.Thread):
    """The per-execution alternative: one ``GET .../progress`` per execution in flight per interval."""

    def __init__(self, emulator: Any, ids: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.url = emulator.base_url + "/api/v1/flows/executions/{}/progress"
        self.ids, self.interval = ids, interval
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = emulator.api_key
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            for execution_id in self.ids:
                self.session.get(self.url.format(execution_id), timeout=30).raise_for_status()
                self.sent += 1
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.session.close()


class Driver:
    """The stack, the emulator and the DB, with the steps each phase takes."""

    def __init__(self, stack: Any, emulator: Any, poll: float) -> None:
        self.stack, self.emulator, self.poll = stack, emulator, poll
        self.db = stack.home / "airflow.db"
        self.local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["X-API-Key"] = self.emulator.api_key
        return self.local.session  # type: ignore[no-any-return]

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self._session().post(self.emulator.base_url + path, json=body, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def start(self, flow: str, count: int) -> list[str]:
        """``count`` executions started as ``crm.user`` (not the key Airflow uses)."""
        with ThreadPoolExecutor(4) as pool:
            body = {"flow": flow, "user": "crm.user"}
            return [
                ex["id"]
                for ex in pool.map(lambda _: self._post("/_emulator/executions/start-as", body), range(count))
            ]

    def waiting(self, ids: list[str]) -> None:
        wanted = set(ids)
        self.stack.wait_for(
            lambda: (
                wanted
                <= {
                    ex["id"]
                    for ex in self.emulator.admin("GET", "/_emulator/executions")
                    if ex["status"] == "Waiting"
                }
            ),
            timeout=120,
            what=f"{len(ids)} executions to reach their Waiting stage",
        )

    def release(self, execution_id: str) -> float:
        """Release one execution: it is final from that moment; returns the moment (mid-call)."""
        before = time.time()
        self._post(f"/_emulator/executions/{execution_id}/release")
        return (before + time.time()) / 2

    def registered(self, ids: list[str], timeout: float) -> None:
        wanted = set(ids)
        self.stack.wait_for(
            lambda: wanted <= {execution for _, execution, _ in asset_events(self.db)},
            timeout=timeout,
            interval=0.2,
            what=f"an asset event for each of {len(ids)} executions",
            describe=lambda: len(wanted - {x for _, x, _ in asset_events(self.db)}),
        )

    def settle(self) -> None:
        """Until the scheduler has made the runs it will make (no new run for three polls)."""
        last, quiet_since = run_count(self.db), time.monotonic()
        while time.monotonic() - quiet_since < 3 * self.poll:
            time.sleep(0.5)
            if (now := run_count(self.db)) != last:
                last, quiet_since = now, time.monotonic()

    def listing_polls(self) -> int:
        return len(self.emulator.requests_to(LISTING[0], LISTING[1] + "$"))


# --- the phases ------------------------------------------------------------------------------------


def burst(drv: Driver, count: int) -> tuple[dict[str, Any], set[str]]:
    """The burst's figures, and its executions (whose events later runs may still consume)."""
    ids = drv.start(RELEASE_FLOW, count)
    drv.waiting(ids)
    with ThreadPoolExecutor(8) as pool:
        finished = dict(zip(ids, pool.map(drv.release, ids), strict=True))
    drv.registered(ids, timeout=300)
    drv.settle()
    result = measure(drv.db, finished)
    registered = result.pop("registered")
    first, last, done = min(finished.values()), max(finished.values()), registered[-1]
    result.update(
        finish_spread_s=last - first,
        all_registered_after_first_finish_s=done - first,
        all_registered_after_last_finish_s=done - last,
        events_per_s=count / (done - first),
        trigger_events_per_s=count / max(registered[-1] - registered[0], 1e-3),
        load=loadavg(),
    )
    return result, set(ids)


def spread(drv: Driver, count: int, seconds: float, seed: int = 6) -> dict[str, Any]:
    ids = drv.start(RELEASE_FLOW, count)
    drv.waiting(ids)
    rng, mean_gap = random.Random(seed), seconds / count
    finished = {}
    for execution_id in ids:
        time.sleep(rng.uniform(0, 2 * mean_gap))  # the pace of the load, not a wait for async work
        finished[execution_id] = drv.release(execution_id)
    drv.registered(ids, timeout=120 + 4 * drv.poll)
    drv.settle()
    result = measure(drv.db, finished)
    result.pop("registered")
    result.update(over_s=max(finished.values()) - min(finished.values()), load=loadavg())
    return result


def window(drv: Driver, seconds: float, naive: NaivePoller | None = None) -> dict[str, Any]:
    """Requests the emulator answered over ``seconds`` (the naive poller running meanwhile, if any)."""
    if naive is not None:
        naive.start()
    since = time.time()
    time.sleep(seconds)  # the measuring window itself
    until = time.time()
    if naive is not None:
        naive.stop()
    counts = logged(drv.emulator, since, until)
    intervals = (until - since) / drv.poll
    listing = counts.pop(LISTING, 0)
    progress = counts.pop(("GET", "/api/v1/flows/executions/{id}/progress"), 0)
    return {
        "seconds": until - since,
        "listing_requests": listing,
        "listing_per_interval": listing / intervals,
        "listing_per_hour": listing * 3600 / (until - since),
        "other_requests": {f"{m} {p}": n for (m, p), n in counts.items()},
        "naive_requests": progress,
        "naive_per_interval": progress / intervals,
        "naive_per_hour": progress * 3600 / (until - since),
        "load": loadavg(),
    }


def request_cost(drv: Driver, in_flight: int, seconds: float) -> dict[str, Any]:
    ids = drv.start(LONG_FLOW, in_flight)
    one = window(drv, seconds, NaivePoller(drv.emulator, ids, drv.poll))
    drv.stack.api("PATCH", f"/dags/{MORE_DAG_ID}", json={"is_paused": False})
    drv.stack.wait_for(
        lambda: watchers_assigned(drv.db) >= 5,
        timeout=240,
        interval=1.0,
        what="the five watchers to be assigned to the triggerer",
        describe=lambda: watchers_assigned(drv.db),
    )
    time.sleep(3 * drv.poll)  # past the new watchers' own start requests (flow, newest execution)
    five = window(drv, seconds)
    per_execution = one["naive_per_interval"] / in_flight
    return {
        "in_flight": in_flight,
        "one_watcher": one,
        "five_watchers": five,
        "naive_for_100_per_interval": per_execution * 100,
        "naive_for_100_per_hour": per_execution * 100 * 3600 / drv.poll,
        "still_in_flight": sum(
            1
            for ex in drv.emulator.admin("GET", "/_emulator/executions")
            if ex["flow_id"] == LONG_FLOW and ex["status"] == "Running"
        ),
    }


def run(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from tests.support.airflow_stack import AirflowStack, EmulatorProcess

    work.mkdir(parents=True, exist_ok=True)
    loads = {"start": loadavg()}
    machine = machine_info()
    (work / "scenario.json").write_text(json.dumps(scenario()))
    poll = float(cfg["poll"])
    emulator = EmulatorProcess(work / "emulator", scenario=work / "scenario.json", speedup=1.0, quiet=True)
    try:
        stack = AirflowStack(
            work / "airflow-home",
            DAGS,
            {
                "AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(emulator.connection()),
                "BENCH_B6_POLL": str(poll),
                # Unpausing a DAG adds its watchers when its file is parsed again.
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "PYTHONPATH": str(ROOT),
            },
            extra_logs=[emulator.log_path],
        )
        (work / "airflow-home").mkdir(exist_ok=True)
        try:
            log("B6: starting Airflow services (db migrate, scheduler, triggerer, dag-processor, api-server)")
            stack.start_all()
            stack.fail_on_exit = True
            for dag_id in (DAG_ID, MORE_DAG_ID):
                stack.wait_for_dag(dag_id, timeout=180)
            drv = Driver(stack, emulator, poll)
            stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
            # The watcher's start lists the newest execution; then its shared poll lists again.
            stack.wait_for(lambda: drv.listing_polls() >= 2, timeout=240, what="the watcher's first polls")
            loads["watching"] = loadavg()
            log(f"B6 burst: {cfg['burst']} executions released together, poll_interval {poll:g} s")
            b, burst_ids = burst(drv, cfg["burst"])
            loads["after the burst"] = loadavg()
            log(
                f"   all registered {b['all_registered_after_last_finish_s']:.1f} s after the last finished, {b['dag_runs']} runs"
            )
            log(f"B6 latency: {cfg['spread']} executions over ~{cfg['spread_seconds']:g} s")
            s = spread(drv, cfg["spread"], cfg["spread_seconds"])
            loads["after the latency run"] = loadavg()
            log(f"   to event median {s['to_event']['median']:.2f} s, p99 {s['to_event']['p99']:.2f} s")
            log(f"B6 requests: {cfg['in_flight']} in flight, windows of {cfg['window']:g} s")
            r = request_cost(drv, cfg["in_flight"], cfg["window"])
            loads["after the request counts"] = loadavg()
            polls_total = drv.listing_polls()
            taken = consumers(drv.db)
            b["consumed_by_the_end"] = sum(
                1 for e, x, _ in asset_events(drv.db) if x in burst_ids and e in taken
            )
        except Exception as exc:
            raise RuntimeError(f"B6 failed: {exc}\n{stack.dump()[-6000:]}") from exc
        finally:
            stack.stop_all()
    finally:
        emulator.stop()
    return {
        **cfg,
        "burst_result": b,
        "latency": s,
        "requests": r,
        "listing_requests_total": polls_total,
        "load": loads,
        "machine": machine,
    }


# --- report ----------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def section(b6: dict[str, Any]) -> list[str]:
    if "skipped" in b6:
        return [HEADING, "", f"Skipped: {b6['skipped']} DAG check: {b6.get('dag_check', 'n/a')}.", ""]
    b, s, r, poll = b6["burst_result"], b6["latency"], b6["requests"], b6["poll"]
    one, five = r["one_watcher"], r["five_watchers"]
    shared = (
        five["listing_per_interval"] / one["listing_per_interval"]
        if one["listing_per_interval"]
        else float("nan")
    )
    p99_target = poll + TARGET_P99_SLACK
    te, tr, ste = s["to_event"], s["to_run_queued"], b["to_event"]
    out = [
        HEADING,
        "",
        f"Executions started by another user (`crm.user`, the emulator's `start-as`: as the CRM plug-in would) "
        f"finish the moment the benchmark releases them; one asset watched by `SmartFlowsExecutionEventTrigger` "
        f"at `poll_interval` {poll:g} s schedules a DAG of one empty task. Real scheduler, triggerer, "
        "dag-processor and api-server of `tests/support/airflow_stack.py` (LocalExecutor, SQLite), the emulator "
        "in its own process; times from the release to `asset_event.timestamp` and to the consuming run's "
        f"`dag_run.queued_at`, read from the metadata DB. One run ({b6.get('machine', {}).get('date', '?')}, "
        "`python -m benchmarks.b6_events`); load averages (1/5/15 min): "
        + ", ".join(f"{k}: {v}" for k, v in b6.get("load", {}).items())
        + ".",
        "",
        "| measure | result | target / note |",
        "|---|---|---|",
        f"| burst: {b['executions']} executions finishing within {b['finish_spread_s']:.2f} s → every asset event "
        f"registered | {b['all_registered_after_last_finish_s']:.1f} s after the last finished "
        f"({b['all_registered_after_first_finish_s']:.1f} s after the first: **{b['events_per_s']:.1f} events/s** end to "
        f"end; {b['trigger_events_per_s']:.0f} events/s once the poll listed them) | within one poll + the hand-over |",
        f"| burst: events per execution | {b['events']} events, {b['duplicates']} duplicates, {b['missed']} missed | "
        f"0 / 0: {_verdict(b['duplicates'] == 0 and b['missed'] == 0)} |",
        f"| burst: finished → event | median {ste['median']:.2f} s, p99 {ste['p99']:.2f} s | |",
        f"| burst: DAG runs | **{b['dag_runs']} runs** for {b['events']} events ({b['not_consumed']} events not "
        f"consumed by a run when the scheduler went quiet; {b.get('consumed_by_the_end', '?')} consumed by the end "
        "of the benchmark, by the runs of later events) | Airflow 3.3.2 merges queued asset events into fewer runs "
        "(apache/airflow#56050) |",
        f"| latency: {s['executions']} executions finishing over {s['over_s']:.0f} s → asset event registered | "
        f"**median {te['median']:.2f} s, p99 {te['p99']:.2f} s** (max {te['max']:.2f} s); {s['duplicates']} "
        f"duplicates, {s['missed']} missed | p99 ≤ poll + {TARGET_P99_SLACK:g} s ({p99_target:g} s): "
        f"{_verdict(te['p99'] <= p99_target)} |",
        f"| latency: finished → DAG run queued | **median {tr['median']:.2f} s, p99 {tr['p99']:.2f} s** "
        f"({tr['n']} of {s['executions']} events consumed by a run; {s['dag_runs']} runs) | an event that arrives while its "
        "run is being created waits for a later event's run (apache/airflow#56050) |",
        f"| listing requests, 1 watcher ({r['in_flight']} executions in flight) | {one['listing_per_interval']:.2f} per "
        f"interval, {one['listing_per_hour']:,.0f}/h | ~1 per interval |",
        f"| listing requests, 5 watchers on the server | {five['listing_per_interval']:.2f} per interval, "
        f"{five['listing_per_hour']:,.0f}/h ({shared:.2f} x 1 watcher) | ≤ {TARGET_SHARED_RATIO} x: "
        f"{_verdict(shared <= TARGET_SHARED_RATIO)} |",
        f"| naive per-execution poller, {r['in_flight']} in flight | {one['naive_per_interval']:.1f} per interval, "
        f"{one['naive_per_hour']:,.0f}/h measured; for 100 in flight: {r['naive_for_100_per_interval']:.0f} per "
        f"interval, **{r['naive_for_100_per_hour']:,.0f}/h** | one GET per execution per interval |",
        "",
        f"- Other requests in the 1-watcher window: {one['other_requests'] or 'none'}; in the 5-watcher "
        f"window: {five['other_requests'] or 'none'} (each watcher's own start requests came before it).",
        f"- Listing requests over the whole run: {b6['listing_requests_total']} (the burst's poll read "
        f"{b['executions']} executions in pages of 100).",
        f"- The burst's hand-over ({b['trigger_events_per_s']:.0f} events/s once listed): the trigger stores its "
        "cursor in the asset state store once per poll, when Airflow has confirmed it stored the poll's "
        "events (Airflow's ack mode), so that a killed triggerer skips none (22 events/s when it was "
        "stored after each event, one round trip through the triggerer's supervisor each).",
        "",
    ]
    return out


def check_dags() -> str:
    """Parse the B6 DAG file (no services): both DAGs present, no import errors."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    if bag.import_errors:
        raise RuntimeError(f"B6 DAG import errors: {bag.import_errors}")
    missing = {DAG_ID, MORE_DAG_ID} - set(bag.dag_ids)
    if missing:
        raise RuntimeError(f"B6 DAGs missing: {missing}")
    return f"parsed: {', '.join(sorted(bag.dag_ids))}"


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes")
    p.add_argument("--out", type=Path, default=None, help="JSON of the raw results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md whose B6 section to rewrite")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-b6-") as tmp:
        result = run(SMOKE if args.smoke else FULL, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    if args.results:
        replace_section(args.results, section(result), "## B6", before="## Profile")
    print("\n".join(section(result)))
    if not args.out and not args.results:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
