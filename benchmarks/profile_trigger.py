"""Profile of the trigger's poll path: N concurrent SmartFlowsExecutionTrigger waits in one loop.

Two views of the same workload (the B1 set-up, contender a):
- cProfile (deterministic): functions by own time and by cumulative time, and own time per package;
- py-spy (sampling, if installed): leaf frames per package, without cProfile's overhead.
The executions are created before the profiled part starts; only the waits are profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.b1_triggerer_fleet import MAX_SECONDS, MIN_SECONDS, POLL_INTERVAL, _wait_one, scenario
from benchmarks.common import ROOT, Emulator, log, raise_nofile, stop_group

PACKAGES = (
    ("airflow_provider_smartflows", "provider (hooks/trigger/models)"),
    ("/aiohttp/", "aiohttp"),
    ("/tenacity/", "tenacity"),
    ("/multidict/", "multidict/yarl"),
    ("/yarl/", "multidict/yarl"),
    ("/airflow/", "airflow"),
    ("/structlog/", "logging"),
    ("/logging/", "logging"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
    ("/ssl.py", "ssl"),
    ("<built-in", "builtins (C)"),
    ("<method", "builtins (C)"),
    ("~", "builtins (C)"),
)


def package_of(filename: str) -> str:
    for needle, name in PACKAGES:
        if needle in filename:
            return name
    return "other"


def _create(base_url: str, key: str, n: int, seed: int, flow: str | None = None) -> list[str]:
    import requests

    rng = random.Random(seed)
    with requests.Session() as s:
        s.headers["X-API-Key"] = key
        ids = []
        for _ in range(n):
            d = rng.randint(MIN_SECONDS, MAX_SECONDS)
            params = {"flowId": flow or f"b1-{d}"}
            resp = s.post(f"{base_url}/api/v1/flows/executions", params=params, timeout=30)
            resp.raise_for_status()
            ids.append(resp.json()["id"])
    return ids


async def _fleet(ids: list[str], poll: float) -> dict[str, Any]:
    events: dict[str, Any] = {}
    await asyncio.gather(*(_wait_one("a", ex_id, poll, events) for ex_id in ids))
    return events


def inner(argv: list[str]) -> None:
    """Runs in a child: create N executions, then wait for them (under cProfile or not)."""
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--poll", type=float, required=True)
    p.add_argument("--cprofile", type=Path, default=None)
    p.add_argument("--ready", type=Path, default=None)
    args = p.parse_args(argv)
    raise_nofile()
    conn = json.loads(os.environ["AIRFLOW_CONN_SMARTFLOWS_BENCH"])
    import logging

    logging.getLogger().handlers.clear()
    logging.getLogger().addHandler(logging.NullHandler())
    # Warm-up wait (imports, first connection lookup), as in B1.
    warm = _create(conn["host"], conn["password"], 1, 0, flow="b1-instant")
    asyncio.run(_fleet(warm, args.poll))
    ids = _create(conn["host"], conn["password"], args.n, 7)
    if args.ready:
        args.ready.write_text("go")
        time.sleep(1.0)  # py-spy attaches meanwhile
    cpu0 = time.process_time()
    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        events = asyncio.run(_fleet(ids, args.poll))
        prof.disable()
        prof.dump_stats(args.cprofile)
    else:
        events = asyncio.run(_fleet(ids, args.poll))
    ok = sum(1 for e in events.values() if e[1] == "success")
    print(json.dumps({"cpu_seconds": time.process_time() - cpu0, "ok": ok, "n": args.n}))


def _env(emu: Emulator, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(work / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SMARTFLOWS_BENCH=json.dumps(emu.connection()),
        PYTHONPATH=str(ROOT),
    )
    return env


def _run_child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc, grace=5)
    if proc.returncode != 0:
        raise RuntimeError(f"profile child failed: {err[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _cprofile_tables(path: Path, top: int) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    rows = []
    per_package: collections.Counter[str] = collections.Counter()
    total = 0.0
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "select.epoll" in name:
            continue  # the loop waiting for I/O: idle, not work
        where = f"{filename.split('site-packages/')[-1].split('/work/main/')[-1]}:{line}({name})"
        rows.append({"function": where, "calls": nc, "own_s": tt, "cum_s": ct})
        per_package[package_of(filename)] += tt
        total += tt
    by_own = sorted(rows, key=lambda r: -r["own_s"])[:top]
    provider = [r for r in rows if "airflow_provider_smartflows" in r["function"]]
    by_cum_provider = sorted(provider, key=lambda r: -r["cum_s"])[:top]
    return {
        "total_own_s": total,
        "by_own": by_own,
        "provider_by_cumulative": by_cum_provider,
        "own_by_package": dict(per_package.most_common()),
    }


def _pyspy_tables(raw: Path) -> dict[str, Any]:
    """Aggregate py-spy's collapsed stacks: leaf frames per package, and frames anywhere in the stack."""
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf_path = frames[-1].rpartition("(")[2]
        leaf[package_of("/" + leaf_path if leaf_path else frames[-1])] += count
        seen = set()
        for frame in frames:
            if "airflow_provider_smartflows" in frame:
                key = frame.split(" (")[0] + " (" + frame.split("/")[-1].split(":")[0]
                if key not in seen:
                    inclusive[key] += count
                    seen.add(key)
    return {
        "samples": total,
        "leaf_by_package": {k: v / total for k, v in leaf.most_common()} if total else {},
        "provider_frames_inclusive": {k: v / total for k, v in inclusive.most_common(12)} if total else {},
    }


def run(n: int, speedup: float, work: Path, top: int = 20) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    scen = work / "profile-scenario.json"
    scen.write_text(json.dumps(scenario(MIN_SECONDS, MAX_SECONDS)))
    poll = POLL_INTERVAL / speedup
    result: dict[str, Any] = {"n": n, "speedup": speedup, "poll_real": poll}
    timeout = MAX_SECONDS / speedup + 300
    with Emulator(work, scenario=scen, speedup=speedup) as emu:
        env = _env(emu, work)
        base = [
            sys.executable,
            "-m",
            "benchmarks.profile_trigger",
            "inner",
            "--n",
            str(n),
            "--poll",
            str(poll),
        ]
        log(f"profile: cProfile of {n} waits")
        prof_path = work / "trigger.prof"
        result["cprofile_run"] = _run_child([*base, "--cprofile", str(prof_path)], env, timeout)
        result["cprofile"] = _cprofile_tables(prof_path, top)
        emu.admin("POST", "/_emulator/reset")
        log(f"profile: run of {n} waits without cProfile, sampled by py-spy from outside")
        pyspy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
        ready = work / "plain.ready"
        raw = work / "pyspy.txt"
        proc = subprocess.Popen(
            [*base, "--ready", str(ready)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        spy = None
        try:
            deadline = time.monotonic() + 120
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if pyspy and ready.exists():
                spy = subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "-o",
                        str(raw),
                        "--pid",
                        str(proc.pid),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            out, err = proc.communicate(timeout=timeout)
            if spy is not None:
                spy_out, _ = spy.communicate(timeout=60)
        finally:
            stop_group(proc, grace=5)
            if spy is not None:
                stop_group(spy, grace=5)
        if proc.returncode != 0:
            raise RuntimeError(f"profile child failed: {err[-3000:]}")
        lines = [line for line in out.splitlines() if line.startswith("{")]
        result["plain_run"] = json.loads(lines[-1])
        if spy is not None and raw.exists():
            result["pyspy"] = _pyspy_tables(raw)
        elif pyspy is None:
            result["pyspy_error"] = "py-spy is not installed (pip install -e '.[bench]')"
        else:
            result["pyspy_error"] = f"py-spy did not record: {spy_out[-500:] if spy else 'child not ready'}"
    return result


def main(argv: list[str]) -> None:
    if argv and argv[0] == "inner":
        inner(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--speedup", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        result = run(args.n, args.speedup, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
