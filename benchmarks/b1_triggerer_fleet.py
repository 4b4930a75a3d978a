"""B1: a triggerer's fleet of waits, N concurrent waits in one asyncio loop, three contenders.

The parent process starts the emulator (its own process) and, per run, one *loop process*
(``python -m benchmarks.b1_triggerer_fleet worker ...``) that runs the waits as Airflow's triggerer
does: one task per trigger iterating ``trigger.run()`` until its first event. The parent creates the
executions (POST) and streams their ids to the loop process, which starts a trigger per id as it
arrives, so every wait begins within milliseconds of its execution (creation cost stays out of the
loop's CPU). The loop process reports its CPU seconds, peak RSS, the time each event was yielded
and the TCP connections aiohttp opened (a ``TraceConfig`` added to every ``ClientSession``).

Each execution has one step of 20-60 virtual seconds (uniform, seeded); the emulator runs at
``speedup`` and every contender polls at ``poll_interval / speedup`` real seconds (10 / 5 = 2 s,
a whole number because the trigger long-polls in whole seconds). Completion time of an execution =
its creation time (emulator's clock) + duration / speedup; latency = event time - completion time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    Emulator,
    current_rss_bytes,
    log,
    peak_rss_bytes,
    percentile,
    raise_nofile,
    stop_group,
    summary,
)

CONTENDERS = {
    "a": "SmartFlowsExecutionTrigger (this provider)",
    "b": "HttpSensorTrigger (HTTP provider)",
    "c": "dbt Cloud pattern (session per poll)",
}
MIN_SECONDS, MAX_SECONDS = 20, 60  # virtual seconds of an execution
POLL_INTERVAL = 10  # virtual seconds
FINAL_OK = {"Success", "success"}


def scenario(min_s: int, max_s: int) -> dict[str, Any]:
    """One flow per whole duration (one step each) plus an instant flow for the warm-up wait."""
    flows = [
        {
            "id": f"b1-{s}",
            "displayName": f"B1 {s} s",
            "input": "any",
            "steps": [{"message": "Working", "percentage": 50, "seconds": s}],
            "final_status": "Success",
            "documents": [{"displayName": "Doc", "contentType": "application/pdf", "size": None}],
        }
        for s in range(min_s, max_s + 1)
    ]
    flows.append(
        {
            "id": "b1-instant",
            "displayName": "B1 instant",
            "input": "any",
            "steps": [{"message": "Working", "percentage": 50, "seconds": 0.001}],
            "final_status": "Success",
            "documents": [{"displayName": "Doc", "contentType": "application/pdf", "size": None}],
        }
    )
    return {"replace_default_flows": True, "flows": flows}


# --- the loop process ----------------------------------------------------------------------------


def _count_connections() -> dict[str, int]:
    """Count TCP connections opened by every aiohttp ClientSession of this process."""
    import aiohttp

    counts = {"connections": 0, "requests": 0}

    async def on_conn(session: Any, ctx: Any, params: Any) -> None:
        counts["connections"] += 1

    async def on_request(session: Any, ctx: Any, params: Any) -> None:
        counts["requests"] += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_conn)
    trace.on_request_start.append(on_request)
    trace.freeze()
    original = aiohttp.ClientSession.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or []), trace]
        original(self, *args, **kwargs)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]
    return counts


def make_trigger(contender: str, execution_id: str, poll: float) -> Any:
    end_time = time.time() + 3600
    if contender == "a":
        from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger

        return SmartFlowsExecutionTrigger(
            execution_id, "smartflows_bench", poll_interval=poll, end_time=end_time
        )
    if contender == "b":
        from benchmarks.baselines import ProgressHttpSensorTrigger

        return ProgressHttpSensorTrigger(
            endpoint=f"api/v1/flows/executions/{execution_id}/progress",
            http_conn_id="http_bench",
            poke_interval=poll,
        )
    from benchmarks.baselines import DbtCloudPatternTrigger

    return DbtCloudPatternTrigger("smartflows_bench", execution_id, end_time, poll)


async def _wait_one(contender: str, execution_id: str, poll: float, events: dict[str, Any]) -> None:
    trigger = make_trigger(contender, execution_id, poll)
    try:
        async for event in trigger.run():
            payload = event.payload
            status = payload.get("status") if isinstance(payload, dict) else payload
            events[execution_id] = [time.time(), str(status)]
            break
    except Exception as exc:  # a failed wait is recorded, not fatal to the fleet
        events[execution_id] = [time.time(), f"exception {type(exc).__name__}: {exc}"[:200]]


async def _worker(contender: str, poll: float, warmup_id: str, ready: Path) -> dict[str, Any]:
    counts = _count_connections()
    events: dict[str, Any] = {}
    # Warm-up: one complete wait, so lazy imports and first-use caches are not charged to the fleet.
    await _wait_one(contender, warmup_id, poll, events)
    warm = events.pop(warmup_id)
    if not warm[1].lower().startswith("success"):
        raise RuntimeError(f"warm-up wait failed: {warm}")
    gc.collect()
    counts["connections"] = counts["requests"] = 0
    baseline_rss = current_rss_bytes()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ready.write_text("ready")
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "END":
            break
        tasks.append(asyncio.create_task(_wait_one(contender, line, poll, events)))
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0
    return {
        "contender": contender,
        "n": len(tasks),
        "cpu_seconds": cpu,
        "wall_seconds": time.monotonic() - wall0,
        "baseline_rss": baseline_rss,
        "peak_rss": peak_rss_bytes(),
        "connections": counts["connections"],
        "client_requests": counts["requests"],
        "events": events,
    }


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--contender", choices=sorted(CONTENDERS), required=True)
    p.add_argument("--poll", type=float, required=True)
    p.add_argument("--warmup-id", required=True)
    p.add_argument("--ready", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    args = p.parse_args(argv)
    raise_nofile()
    import logging

    # The same logging for every contender: INFO lines to a file, as a triggerer would keep them.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(args.result.with_suffix(".log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    result = asyncio.run(_worker(args.contender, args.poll, args.warmup_id, args.ready))
    args.result.write_text(json.dumps(result))


# --- the parent ------------------------------------------------------------------------------------


async def _create_and_stream(
    emu: Emulator, durations: list[int], stdin: Any, concurrency: int = 32
) -> dict[str, int]:
    """POST one execution per duration (bounded concurrency), writing each id to the loop process."""
    import aiohttp

    ids: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for d in durations:
        queue.put_nowait(d)
    headers = {"X-API-Key": emu.api_key}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def creator() -> None:
            while not queue.empty():
                d = queue.get_nowait()
                url = f"{emu.base_url}/api/v1/flows/executions?flowId=b1-{d}"
                async with session.post(url) as resp:
                    resp.raise_for_status()
                    body = await resp.json()
                ex_id = body["id"] if isinstance(body, dict) else str(body).strip('"')
                ids[ex_id] = d
                stdin.write(f"{ex_id}\n".encode())
                stdin.flush()

        await asyncio.gather(*(creator() for _ in range(concurrency)))
    stdin.write(b"END\n")
    stdin.flush()
    return ids


def _parse_iso(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def one_run(emu: Emulator, contender: str, n: int, seed: int, speedup: float, work: Path) -> dict[str, Any]:
    emu.admin("POST", "/_emulator/reset")
    warm = emu.api("POST", "/flows/executions", params={"flowId": "b1-instant"})
    warm_id = warm["id"]
    rng = random.Random(seed)
    durations = [rng.randint(MIN_SECONDS, MAX_SECONDS) for _ in range(n)]
    poll = POLL_INTERVAL / speedup
    tag = f"{contender}-{n}-{seed}"
    ready, result = work / f"{tag}.ready", work / f"{tag}.json"
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(work / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SMARTFLOWS_BENCH=json.dumps(emu.connection()),
        AIRFLOW_CONN_HTTP_BENCH=json.dumps(
            {"conn_type": "http", "host": emu.base_url, "extra": {"X-API-Key": emu.api_key}}
        ),
        PYTHONPATH=str(ROOT),
    )
    args = [sys.executable, "-m", "benchmarks.b1_triggerer_fleet", "worker", "--contender", contender]
    args += ["--poll", str(poll), "--warmup-id", warm_id, "--ready", str(ready), "--result", str(result)]
    out = (work / f"{tag}.out").open("w")
    proc = __import__("subprocess").Popen(
        args, stdin=-1, stdout=out, stderr=out, env=env, cwd=ROOT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"loop process did not get ready: {(work / f'{tag}.out').read_text()[-3000:]}"
                )
            time.sleep(0.05)
        emu.admin("DELETE", "/_emulator/requests")
        ids = asyncio.run(_create_and_stream(emu, durations, proc.stdin))
        proc.stdin.close()
        timeout = MAX_SECONDS / speedup + 120 + n / 50
        proc.wait(timeout=timeout)
    finally:
        stop_group(proc, grace=5)
        out.close()
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(
            f"loop process failed ({proc.returncode}): {(work / f'{tag}.out').read_text()[-3000:]}"
        )
    data = json.loads(result.read_text())
    executions = {ex["id"]: ex for ex in emu.admin("GET", "/_emulator/executions")}
    served = [
        r
        for r in emu.admin("GET", "/_emulator/requests")
        if r["method"] == "GET" and r["path"].startswith("/api/v1/flows/executions/")
    ]
    latencies, failures = [], 0
    for ex_id, d in ids.items():
        event = data["events"].get(ex_id)
        if event is None or event[1].lower() not in {"success"}:
            failures += 1
            continue
        done = _parse_iso(executions[ex_id]["created_at"]) + d / speedup
        latencies.append(event[0] - done)
    windows = sum(-(-d // POLL_INTERVAL) for d in durations)  # long-poll windows the waits span
    growth = max(0, data["peak_rss"] - data["baseline_rss"])
    return {
        "contender": contender,
        "n": n,
        "seed": seed,
        "cpu_seconds": data["cpu_seconds"],
        "wall_seconds": data["wall_seconds"],
        "requests": len(served),
        "requests_per_wait": len(served) / n,
        "windows_per_wait": windows / n,
        "requests_per_window": len(served) / windows,
        "client_requests": data["client_requests"],
        "connections": data["connections"],
        "peak_rss_mib": data["peak_rss"] / 2**20,
        "baseline_rss_mib": data["baseline_rss"] / 2**20,
        "rss_per_wait_kib": growth / n / 1024,
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies) if latencies else float("nan"),
        "failures": failures,
    }


METRICS = (
    "cpu_seconds",
    "requests",
    "requests_per_wait",
    "requests_per_window",
    "connections",
    "peak_rss_mib",
    "rss_per_wait_kib",
    "latency_p50",
    "latency_p99",
    "failures",
)


def run(sizes: dict[int, int], speedup: float, work: Path) -> dict[str, Any]:
    """``sizes``: N -> number of runs. Contenders interleave within each repetition."""
    work.mkdir(parents=True, exist_ok=True)
    scen = work / "b1-scenario.json"
    scen.write_text(json.dumps(scenario(MIN_SECONDS, MAX_SECONDS)))
    raw: list[dict[str, Any]] = []
    with Emulator(work, scenario=scen, speedup=speedup) as emu:
        for n, repeats in sizes.items():
            for rep in range(repeats):
                for contender in CONTENDERS:
                    log(f"B1 N={n} run {rep + 1}/{repeats} contender {contender}")
                    res = one_run(emu, contender, n, seed=1000 + rep, speedup=speedup, work=work)
                    log(
                        f"   cpu {res['cpu_seconds']:.2f} s, {res['requests']} requests, "
                        f"{res['connections']} connections, p99 {res['latency_p99']:.3f} s, "
                        f"{res['rss_per_wait_kib']:.1f} KiB/wait, failures {res['failures']}"
                    )
                    raw.append(res)
                    # Let TIME_WAIT sockets and the emulator settle between contenders.
                    time.sleep(1)
    table: dict[str, Any] = {}
    for n in sizes:
        for contender in CONTENDERS:
            rows = [r for r in raw if r["n"] == n and r["contender"] == contender]
            table[f"{n}/{contender}"] = {m: summary([float(r[m]) for r in rows]) for m in METRICS}
            table[f"{n}/{contender}"]["runs"] = len(rows)
    return {
        "speedup": speedup,
        "poll_interval_virtual": POLL_INTERVAL,
        "poll_interval_real": POLL_INTERVAL / speedup,
        "durations_virtual": [MIN_SECONDS, MAX_SECONDS],
        "sizes": sizes,
        "contenders": CONTENDERS,
        "table": table,
        "raw": raw,
    }


def main(argv: list[str]) -> None:
    if argv and argv[0] == "worker":
        worker_main(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="100:3,1000:3,5000:1", help="N:runs,...")
    p.add_argument("--speedup", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = {int(k): int(v) for k, v in (item.split(":") for item in args.sizes.split(","))}
    with tempfile.TemporaryDirectory(prefix="bench-b1-") as tmp:
        result = run(sizes, args.speedup, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
