"""B1: a triggerer's fleet of waits: N concurrent waits in one asyncio loop, three contenders.

The parent process starts the emulator (its own process) and, per run, one *loop process*
(``python -m benchmarks.b1_triggerer_fleet worker ...``) that runs the waits as Airflow's triggerer
does: one task per trigger iterating ``trigger.run()`` until its first event. The parent creates the
executions (POST) and streams their ids to the loop process, which starts a trigger per id as it
arrives, so every wait begins within milliseconds of its execution (creation cost stays out of the
loop's CPU). The loop process reports its CPU seconds, peak RSS, the time each event was yielded
and the TCP connections aiohttp opened (a ``TraceConfig`` added to every ``ClientSession``).

Each execution has one step of 20-40 virtual seconds (uniform, seeded). A *run* is one contender at
one poll interval (real seconds) for N waits, over HTTP or HTTPS. The plan (see :func:`full_plan`):

- **sweep** (N=1,000, speed-up 1): the pollers at 0.5, 1, 2 and 5 s against our trigger at its
  default long-poll window: what each costs for the latency it gives;
- **scale**: our trigger alone at N=1,000, 5,000 and 10,000 in one loop process;
- **tls**: the same N=1,000 comparison over HTTPS, where a session per poll pays a handshake.

Completion time of an execution = its creation time (emulator's clock) + duration / speed-up;
latency = event time - completion time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    Emulator,
    TlsEmulator,
    current_rss_bytes,
    loadavg,
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
MIN_SECONDS, MAX_SECONDS = 20, 40  # virtual seconds of an execution
POLL_INTERVAL = 10  # virtual seconds: the profile's poll interval (profile_trigger.py)
#: Our trigger's default long-poll window (SmartFlowsExecutionTrigger's poll_interval default).
DEFAULT_WINDOW = 30.0
SWEEP_POLLS = (0.5, 1.0, 2.0, 5.0)
SCALE_SIZES = (1000, 5000, 10000)


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
    ca_file = getattr(emu, "ca_file", None)
    tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=tls)) as session:

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


def _worker_env(emu: Emulator, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    http_extra: dict[str, Any] = {"X-API-Key": emu.api_key}
    ca_file = getattr(emu, "ca_file", None)
    if ca_file is not None:
        # The pollers verify with aiohttp's default context, which reads SSL_CERT_FILE; ours
        # with the connection's ca_bundle extra (TlsEmulator.connection).
        env["SSL_CERT_FILE"] = str(ca_file)
    env.update(
        AIRFLOW_HOME=str(work / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SMARTFLOWS_BENCH=json.dumps(emu.connection()),
        AIRFLOW_CONN_HTTP_BENCH=json.dumps({"conn_type": "http", "host": emu.base_url, "extra": http_extra}),
        PYTHONPATH=str(ROOT),
    )
    return env


def _loop_process(
    emu: Emulator, contender: str, poll: float, durations: list[int], speedup: float, work: Path, tag: str
) -> tuple[dict[str, Any], dict[str, int]]:
    """Start the loop process, stream the executions to it, wait for its result."""
    warm_id = emu.api("POST", "/flows/executions", params={"flowId": "b1-instant"})["id"]
    ready, result = work / f"{tag}.ready", work / f"{tag}.json"
    args = [sys.executable, "-m", "benchmarks.b1_triggerer_fleet", "worker", "--contender", contender]
    args += ["--poll", str(poll), "--warmup-id", warm_id, "--ready", str(ready), "--result", str(result)]
    out = (work / f"{tag}.out").open("w")
    proc = subprocess.Popen(
        args, stdin=-1, stdout=out, stderr=out, env=_worker_env(emu, work), cwd=ROOT, start_new_session=True
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
        proc.wait(timeout=MAX_SECONDS / speedup + 120 + len(durations) / 50)
    finally:
        stop_group(proc, grace=5)
        out.close()
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(
            f"loop process failed ({proc.returncode}): {(work / f'{tag}.out').read_text()[-3000:]}"
        )
    return json.loads(result.read_text()), ids


def one_run(
    emu: Emulator,
    contender: str,
    n: int,
    seed: int,
    speedup: float,
    poll: float,
    work: Path,
    tls: bool = False,
) -> dict[str, Any]:
    """One contender polling every ``poll`` real seconds (ours: long-poll window) for N waits."""
    emu.admin("POST", "/_emulator/reset")
    rng = random.Random(seed)
    durations = [rng.randint(MIN_SECONDS, MAX_SECONDS) for _ in range(n)]
    tag = f"{contender}-{poll:g}-{n}-{seed}-{'tls' if tls else 'tcp'}"
    data, ids = _loop_process(emu, contender, poll, durations, speedup, work, tag)
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
    growth = max(0, data["peak_rss"] - data["baseline_rss"])
    wait_hours = sum(durations) / speedup / 3600
    return {
        "contender": contender,
        "poll": poll,
        "tls": tls,
        "n": n,
        "seed": seed,
        "cpu_seconds": data["cpu_seconds"],
        "cpu_ms_per_wait_hour": data["cpu_seconds"] * 1000 / wait_hours,
        "wall_seconds": data["wall_seconds"],
        "requests": len(served),
        "requests_per_wait": len(served) / n,
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
    "cpu_ms_per_wait_hour",
    "requests",
    "requests_per_wait",
    "connections",
    "peak_rss_mib",
    "rss_per_wait_kib",
    "latency_p50",
    "latency_p99",
    "failures",
)


def full_plan(
    n: int = 1000,
    polls: tuple[float, ...] = SWEEP_POLLS,
    scale: tuple[int, ...] = SCALE_SIZES,
    windows: tuple[float, ...] = (),
) -> list[dict[str, Any]]:
    """The runs of B1: (part, contender, poll, N, tls). The sweep's run of ours at N is scale's too.

    ``windows``: ours again with these long-poll windows (part ``window``, shown with the sweep).
    """
    plan = [{"part": "sweep", "contender": "a", "poll": DEFAULT_WINDOW, "n": n, "tls": False}]
    plan += [{"part": "window", "contender": "a", "poll": w, "n": n, "tls": False} for w in windows]
    plan += [{"part": "sweep", "contender": c, "poll": p, "n": n, "tls": False} for c in "bc" for p in polls]
    plan += [
        {"part": "scale", "contender": "a", "poll": DEFAULT_WINDOW, "n": size, "tls": False} for size in scale
    ]
    tls_poll = 1.0 if 1.0 in polls else polls[0]
    plan += [{"part": "tls", "contender": "a", "poll": DEFAULT_WINDOW, "n": n, "tls": True}]
    plan += [{"part": "tls", "contender": c, "poll": tls_poll, "n": n, "tls": True} for c in "bc"]
    return plan


def row_key(run: dict[str, Any]) -> str:
    return f"{run['n']}/{run['contender']}/{run['poll']:g}/{'tls' if run['tls'] else 'tcp'}"


def run(plan: list[dict[str, Any]], speedup: float, work: Path) -> dict[str, Any]:
    """Every run of ``plan`` once (``full_plan``); identical runs are measured once."""
    work.mkdir(parents=True, exist_ok=True)
    scen = work / "b1-scenario.json"
    scen.write_text(json.dumps(scenario(MIN_SECONDS, MAX_SECONDS)))
    table: dict[str, Any] = {}
    raw: list[dict[str, Any]] = []
    for tls in (False, True):
        runs = [r for r in plan if r["tls"] is tls]
        if not runs:
            continue
        maker = TlsEmulator if tls else Emulator
        with maker(work / ("tls" if tls else "tcp"), scenario=scen, speedup=speedup) as emu:
            for item in runs:
                key = row_key(item)
                if key in table:
                    continue
                log(f"B1 {item['part']}: {key} (load {loadavg()})")
                res = one_run(emu, item["contender"], item["n"], 1000, speedup, item["poll"], work, tls)
                res["load"] = loadavg()
                log(
                    f"   cpu {res['cpu_seconds']:.2f} s, {res['requests']} requests, "
                    f"{res['connections']} connections, p99 {res['latency_p99']:.3f} s, "
                    f"{res['rss_per_wait_kib']:.1f} KiB/wait, failures {res['failures']}"
                )
                raw.append(res)
                table[key] = {m: summary([float(res[m])]) for m in METRICS}
                table[key].update(runs=1, load=res["load"])
                time.sleep(1)  # let TIME_WAIT sockets and the emulator settle between runs
    return {
        "speedup": speedup,
        "durations_virtual": [MIN_SECONDS, MAX_SECONDS],
        "default_window": DEFAULT_WINDOW,
        "plan": [{**item, "key": row_key(item)} for item in plan],
        "contenders": CONTENDERS,
        "table": table,
        "raw": raw,
    }


def main(argv: list[str]) -> None:
    if argv and argv[0] == "worker":
        worker_main(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000, help="N of the sweep and the TLS comparison")
    p.add_argument("--polls", default=",".join(f"{x:g}" for x in SWEEP_POLLS), help="pollers' intervals, s")
    p.add_argument("--scale", default=",".join(map(str, SCALE_SIZES)), help="N of the scale runs")
    p.add_argument("--windows", default="", help="ours with these other long-poll windows, s (part window)")
    p.add_argument("--parts", default="sweep,scale,tls")
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    polls = tuple(float(x) for x in args.polls.split(","))
    scale = tuple(int(x) for x in args.scale.split(",") if x)
    windows = tuple(float(x) for x in args.windows.split(",") if x)
    plan = [r for r in full_plan(args.n, polls, scale, windows) if r["part"] in args.parts.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-b1-") as tmp:
        result = run(plan, args.speedup, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
