"""Run every benchmark and write RESULTS.md plus one PNG chart per benchmark.

``python -m benchmarks.run --out benchmarks``            the full run (``make bench``)
``python -m benchmarks.run --smoke --out DIR``           tiny sizes, about a minute (``make bench-smoke``)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import (
    b1_triggerer_fleet,
    b3_downloads,
    b3_report,
    b4_batch,
    b4_s3,
    b5_small_documents,
    b6_events,
    profile_trigger,
    readme_figures,
)
from benchmarks.b1_report import b1_chart, b1_section
from benchmarks.common import fmt, loadavg, log, machine_info, write_json

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).parent
ANALYSIS = HERE / "analysis.md"

FULL = {
    "b1_plan": b1_triggerer_fleet.full_plan(windows=(300.0,)),
    "b1_speedup": 1.0,
    "profile_speedup": 5.0,
    "b2": {"count": 20, "seconds": 30.0, "repeats": {"deferrable": 3, "poking": 1}},
    "b3": {"sizes": b3_downloads.SIZES, "repeats": 3},
    "b4": {"records": 10_000, "mapped": 400, "max_active": 200, "speedup": 1.0},
    "b5": {"documents": 2000, "concurrencies": b5_small_documents.CONCURRENCIES},
    "b6": b6_events.FULL,
    "profile_n": 1000,
}
SMOKE = {
    "b1_plan": b1_triggerer_fleet.full_plan(n=10, polls=(1.0,), scale=(10, 20)),
    "b1_speedup": 10.0,
    "profile_speedup": 10.0,
    "b2": {"count": 2, "seconds": 2.0, "repeats": {"deferrable": 1, "poking": 1}},
    "b3": {"sizes": {"4 MiB": 4 * 2**20, "1 MiB": 2**20}, "repeats": 1},
    "b4": {"records": 40, "mapped": 4, "max_active": 10, "speedup": 5.0},
    "b5": {"documents": 20, "concurrencies": (4,)},
    # B6 on the services only with BENCH_SMOKE_B6=1 (else its DAGs are parsed, see main()).
    "b6": b6_events.SMOKE,
    "profile_n": 20,
}


def wait_quiet(limit_s: float, threshold: float = 1.0) -> str:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while True:
        one = float(loadavg().split()[0])
        if one < threshold:
            return f"load {loadavg()} (below {threshold} when the run started)"
        if time.monotonic() > deadline:
            return f"load {loadavg()}: never below {threshold} within {limit_s / 60:.0f} min, run anyway"
        log(f"waiting for a quiet machine: load {loadavg()}")
        time.sleep(30)


PARTS = ("b1", "b2", "b3", "b4", "b5", "b6", "profile")


def run_all(
    cfg: dict[str, Any],
    work: Path,
    with_b2: bool,
    parts: tuple[str, ...] = PARTS,
    results: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``parts`` (into ``results`` when resuming); a benchmark that fails is recorded as failed
    and the others still run; ``save`` is called after each."""
    results = results if results is not None else {}
    results.setdefault("loads", {})["start" if parts == PARTS else f"start of {','.join(parts)}"] = loadavg()

    def b2() -> dict[str, Any]:
        if not with_b2:
            return {
                "skipped": (
                    "skipped (BENCH_SMOKE_B2=0): the smoke run only checked that its DAG file parses; "
                    "by default the smoke run starts the services and runs 2 executions of 2 s."
                ),
                "dag_check": check_b2_dags(),
            }
        from benchmarks import b2_worker_slots

        c = cfg["b2"]
        return b2_worker_slots.run(c["count"], c["seconds"], c["repeats"], work / "b2")

    def b6() -> dict[str, Any]:
        if cfg["b6"] is None:
            return {
                "skipped": (
                    "smoke run without BENCH_SMOKE_B6=1: the module imported and its DAG file parsed; "
                    "BENCH_SMOKE_B6=1 runs it on the services with tiny sizes."
                ),
                "dag_check": b6_events.check_dags(),
            }
        return b6_events.run(cfg["b6"], work / "b6")

    steps: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "b1": (
            "B1 triggerer fleet",
            lambda: b1_triggerer_fleet.run(cfg["b1_plan"], cfg["b1_speedup"], work / "b1"),
        ),
        "b2": ("B2 worker slots", b2),
        "b3": (
            "B3 downloads",
            lambda: b3_downloads.run(cfg["b3"]["sizes"], cfg["b3"]["repeats"], work / "b3"),
        ),
        "b4": (
            "B4 batch",
            lambda: b4_batch.run(
                cfg["b4"]["records"],
                cfg["b4"]["mapped"],
                cfg["b4"]["max_active"],
                cfg["b4"]["speedup"],
                work / "b4",
            ),
        ),
        "b5": (
            "B5 small documents",
            lambda: b5_small_documents.run(
                cfg["b5"]["documents"],
                work / "b5",
                concurrencies=tuple(cfg["b5"]["concurrencies"]),
            ),
        ),
        "b6": ("B6 executions started elsewhere → DAG runs", b6),
        "profile": (
            "profile of the trigger's poll path",
            lambda: profile_trigger.run(cfg["profile_n"], cfg["profile_speedup"], work / "profile"),
        ),
    }
    for name in parts:
        label, fn = steps[name]
        log(f"== {label}")
        try:
            results[name] = fn()
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            log(f"{label} failed: {type(exc).__name__}: {exc}")
            results[name] = {"failed": f"{type(exc).__name__}: {str(exc)[-1500:]}", "load": loadavg()}
        results["loads"][f"after {name}"] = loadavg()
        if save is not None:
            save(results)
    results["loads"]["end"] = loadavg()
    return results


def check_b2_dags() -> str:
    """Parse the B2 DAG file (no services): both DAGs present, no import errors."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(HERE / "b2_dags"))
    if bag.import_errors:
        raise RuntimeError(f"B2 DAG import errors: {bag.import_errors}")
    missing = {"bench_slots_deferrable", "bench_slots_poking"} - set(bag.dag_ids)
    if missing:
        raise RuntimeError(f"B2 DAGs missing: {missing}")
    return f"parsed: {', '.join(sorted(bag.dag_ids))}"


# --- charts ------------------------------------------------------------------------------------------


def charts(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colors = {"a": "#2a7ab0", "b": "#d08a2c", "c": "#8a8a8a"}

    failed = [name for name in PARTS if "failed" in results.get(name, {"failed": "not run"})]
    for name, png in (
        ("b1", "b1_triggerer_fleet.png"),
        ("b2", "b2_worker_slots.png"),
        ("b3", "b3_file.png"),
        ("b4", "b4_batch.png"),
        ("profile", "profile_trigger.png"),
    ):
        if name in failed:
            fig, ax = plt.subplots(figsize=(6, 2))
            ax.text(0.5, 0.5, f"{name} failed in this run: see RESULTS.md", ha="center", va="center")
            ax.set_axis_off()
            fig.savefig(out / png, dpi=80)
            plt.close(fig)
            written.append(png)
    if "b1" not in failed:
        b1_chart(results["b1"], out, colors)
        written.append("b1_triggerer_fleet.png")

    # B2
    b2 = results["b2"] if "b2" not in failed else {"skipped": "failed"}
    fig, ax = plt.subplots(figsize=(6, 4))
    if "table" in b2:
        modes = ["deferrable", "poking"]
        meds = [b2["table"][m]["median"] for m in modes]
        errs = [
            [b2["table"][m]["median"] - b2["table"][m]["min"] for m in modes],
            [b2["table"][m]["max"] - b2["table"][m]["median"] for m in modes],
        ]
        ax.bar(
            ["deferrable=True", "deferrable=False"], meds, yerr=errs, capsize=4, color=["#2a7ab0", "#8a8a8a"]
        )
        ax.axhline(1.5 * b2["seconds"], color="red", ls="--", lw=1, label="target: 1.5 x one execution")
        ax.set_ylabel("trigger → last success (s)")
        ax.set_title(f"B2: {b2['count']} executions of {b2['seconds']:g} s, parallelism 2", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "B2 skipped:\n" + b2["skipped"][:80] + "…", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out / "b2_worker_slots.png", dpi=110)
    plt.close(fig)
    written.append("b2_worker_slots.png")

    if "b3" not in failed:
        written += b3_report.charts(results["b3"], out)
    if "b4" not in failed:
        written += b4_batch.charts(results["b4"], out)

    if "profile" in failed:
        return written
    # Profile
    prof = results["profile"]
    fig, ax = plt.subplots(figsize=(7, 4))
    own = prof["cprofile"]["own_by_package"]
    names = list(own)[:10][::-1]
    ax.barh(names, [own[n] for n in names], color="#2a7ab0")
    ax.set_xlabel("own CPU seconds under cProfile (idle epoll wait excluded)")
    ax.set_title(f"Trigger poll path: {prof['n']} waits, own time per package", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "profile_trigger.png", dpi=110)
    plt.close(fig)
    written.append("profile_trigger.png")
    return written


# --- RESULTS.md ----------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(results: dict[str, Any], meta: dict[str, Any], charts_written: list[str]) -> str:
    m = meta["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py`; every figure below was measured in one run, on this machine.",
        "Each figure is the median of the runs with min-max in parentheses (one run: the value alone).",
        "",
        f"- Command: `{meta['command']}`"
        + (" (**smoke mode: tiny sizes, not results**)" if meta["smoke"] else ""),
        f"- Date: {m['date']}; run took {meta['duration_min']:.1f} min",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"open files hard limit {m['nofile_hard']}",
        f"- Versions: Python {m['python']}, Airflow {m['airflow']}, aiohttp {m['aiohttp']}, curl {m['curl']}",
        f"- Load: {meta['quiet']}; load averages (1/5/15 min) during the run: "
        + ", ".join(f"{k}: {v}" for k, v in results["loads"].items()),
        "- Everything on 127.0.0.1; the emulator always runs in its own process (own process group).",
    ]
    for rerun in meta.get("reruns", []):
        lines.append(
            f"- Re-run on {rerun['machine']['date']} (`--only {','.join(rerun['parts'])} --merge`): "
            f"{', '.join(rerun['parts'])}; {rerun['quiet']}"
        )
    lines.append("")
    sections = (
        ("b1", "## B1: a triggerer's fleet of waits", b1_section),
        ("b2", "## B2: worker slots (real Airflow services)", b2_section),
        ("b3", "## B3: downloads to each store", b3_report.section),
        ("b4", "## B4: a batch from one task against mapped task instances", b4_batch.section),
        ("b5", "## B5: many small documents to each store", b5_small_documents.section),
        ("b6", b6_events.HEADING, b6_events.section),
        ("profile", "## Profile of the trigger's poll path", profile_section),
    )
    for name, heading, section in sections:
        part = results.get(name, {"failed": "not run"})
        if "failed" in part:
            lines += [
                heading,
                "",
                f"**Failed in this run** (load {part.get('load', '?')}): `{part['failed']}`",
                "",
            ]
        else:
            lines += section(part)
            if name == "b4" and "b4_s3" in results:  # its sub-section (`b4_batch --store s3`)
                lines += b4_s3.section(results["b4_s3"])
    if ANALYSIS.exists() and not meta["smoke"]:
        lines += ["", ANALYSIS.read_text().strip(), ""]
    lines += reproduce_section()
    return "\n".join(lines) + "\n"


def b2_section(b2: dict[str, Any]) -> list[str]:
    out = ["## B2: worker slots (real Airflow services)", "", "![B2](b2_worker_slots.png)", ""]
    if "table" not in b2:
        return [*out, f"Skipped: {b2['skipped']} DAG check: {b2.get('dag_check', 'n/a')}.", ""]
    d, p = b2["table"]["deferrable"], b2["table"]["poking"]
    one = b2["seconds"]
    out += [
        f"{b2['count']} executions of {one:g} s (one DAG run, mapped `SmartFlowsRunFlowOperator`, "
        f"`poll_interval=10`), scheduler + triggerer + dag-processor + api-server of "
        f"`tests/system/stack.py` (LocalExecutor, parallelism {b2['parallelism']}, SQLite). Wall time from "
        "the REST call that triggers the DAG run to the `end_date` of the last successful task. Runs: "
        f"deferrable {b2['repeats']['deferrable']}, deferrable=False {b2['repeats']['poking']} "
        "(it occupies the two slots for ten rounds; one run is what the time allowed).",
        "",
        "| mode | wall time s | ÷ one execution |",
        "|---|---|---|",
        f"| deferrable=True | {fmt(d)} | {d['median'] / one:.2f} |",
        f"| deferrable=False | {fmt(p)} | {p['median'] / one:.2f} |",
        "",
        f"Ratio deferrable=False / deferrable = {ratio(p['median'], d['median']):.2f}. "
        f"Target deferrable ≤ 1.5 x one execution ({1.5 * one:g} s): {d['median']:.1f} s "
        f"{verdict(d['median'] <= 1.5 * one)}.",
        "",
    ]
    for fail in b2.get("failed_runs", []):
        out += [f"- A {fail['mode']} DAG run failed and was replaced by another run: {fail['failed']}.", ""]
    return out


def profile_section(prof: dict[str, Any]) -> list[str]:
    c = prof["cprofile"]
    plain = prof.get("plain_run", {})
    out = [
        "## Profile of the trigger's poll path",
        "",
        "![profile](profile_trigger.png)",
        "",
        f"{prof['n']} concurrent `SmartFlowsExecutionTrigger` waits (B1 set-up, speed-up {prof['speedup']:g}, "
        f"long-poll {prof['poll_real']:g} s), executions created before the profiled part, one warm-up wait "
        f"first. CPU of the waits: {plain.get('cpu_seconds', float('nan')):.2f} s without a profiler, "
        f"{prof['cprofile_run'].get('cpu_seconds', float('nan')):.2f} s under cProfile.",
        "",
        "cProfile, own time per package (idle `epoll.poll` excluded):",
        "",
        "| package | own s | share |",
        "|---|---|---|",
    ]
    total = sum(c["own_by_package"].values()) or 1
    for name, sec in list(c["own_by_package"].items())[:10]:
        out.append(f"| {name} | {sec:.3f} | {sec / total:.0%} |")
    out += [
        "",
        "Top functions by own time:",
        "",
        "| function | calls | own s | cumulative s |",
        "|---|---|---|---|",
    ]
    for r in c["by_own"][:15]:
        out.append(f"| `{r['function']}` | {r['calls']} | {r['own_s']:.3f} | {r['cum_s']:.3f} |")
    out += [
        "",
        "Provider functions by cumulative time:",
        "",
        "| function | calls | own s | cumulative s |",
        "|---|---|---|---|",
    ]
    for r in c["provider_by_cumulative"][:12]:
        out.append(f"| `{r['function']}` | {r['calls']} | {r['own_s']:.3f} | {r['cum_s']:.3f} |")
    if "pyspy" in prof:
        ps = prof["pyspy"]
        out += [
            "",
            f"py-spy (sampling at 200 Hz from outside, no cProfile; {ps['samples']} samples of non-idle "
            "stacks): leaf frames per package: "
            + ", ".join(f"{k} {v:.0%}" for k, v in ps["leaf_by_package"].items())
            + ". Provider frames anywhere in the stack: "
            + ", ".join(
                f"`{k.split(' (')[0]}` {v:.0%}" for k, v in list(ps["provider_frames_inclusive"].items())[:8]
            )
            + ".",
        ]
    else:
        out += ["", f"py-spy: {prof.get('pyspy_error', 'not run')}."]
    out.append("")
    return out


def reproduce_section() -> list[str]:
    return [
        "## How to reproduce",
        "",
        "```",
        "make bench         # installs .[dev,bench] once, waits up to 20 min for a 1-min load below 1.0,",
        "                   # runs B1-B6 and the profile (about 70 min), writes benchmarks/RESULTS.md + PNGs",
        "python -m benchmarks.run --out benchmarks --only b3 --merge   # re-run some parts into results.json",
        "make bench-smoke   # tiny sizes (B2: 2 executions of 2 s), about 2 min; writes to BENCH_SMOKE_OUT",
        "                   # (default /tmp/smartflows-bench-smoke); BENCH_SMOKE_B2=0 skips B2's services,",
        "                   # BENCH_SMOKE_B6=1 runs B6 on the services (else its DAGs are parsed only)",
        "```",
        "Single benchmarks (JSON to stdout or `--out FILE`):",
        "```",
        "nice -n 0 .venv/bin/python -m benchmarks.b1_triggerer_fleet   # sweep, scale and TLS; --parts sweep,scale,tls",
        ".venv/bin/python -m benchmarks.b2_worker_slots --count 20 --seconds 30 --deferrable-runs 3 --poking-runs 1",
        ".venv/bin/python -m benchmarks.b3_downloads --repeats 3",
        ".venv/bin/python -m benchmarks.b4_batch --records 10000 --mapped 400 --max-active 200 --speedup 1",
        ".venv/bin/python -m benchmarks.b5_small_documents --documents 2000 --results benchmarks/RESULTS.md",
        ".venv/bin/python -m benchmarks.b6_events --out /tmp/b6.json --results benchmarks/RESULTS.md",
        ".venv/bin/python -m benchmarks.profile_trigger --n 1000 --speedup 5",
        "```",
        "Files: `common.py` (emulator process, statistics, machine facts), `baselines.py` (contenders b and c), "
        "`b2_dags/`, `b4_dags/` and `b6_dags/` (the DAGs of B2, B4 and B6), `analysis.md` (the hand-written reading of the last full run, included above), "
        "`results.json` (every raw figure of the last run).",
        "",
        "Rules kept: every server on 127.0.0.1; every subprocess in its own process group, stopped by PID; "
        "B1 raises the open-files soft limit to the hard limit in the loop process and the emulator.",
    ]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wait-quiet", type=float, default=0, help="seconds to wait for load < 1.0 first")
    p.add_argument(
        "--report-only", action="store_true", help="re-render RESULTS.md and charts from OUT/results.json"
    )
    p.add_argument("--only", default=",".join(PARTS), help="benchmarks to run (b1,b2,b3,b4,b5,b6,profile)")
    p.add_argument("--merge", action="store_true", help="replace only these parts in OUT/results.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        saved = json.loads((args.out / "results.json").read_text())
        written = charts(saved["results"], args.out)
        (args.out / "RESULTS.md").write_text(report(saved["results"], saved["meta"], written))
        return
    cfg = SMOKE if args.smoke else FULL
    with_b2 = not args.smoke or os.environ.get("BENCH_SMOKE_B2", "1") != "0"
    if args.smoke and os.environ.get("BENCH_SMOKE_B6") != "1":
        cfg = {**cfg, "b6": None}
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else f"not waited for; load {loadavg()} at start"
    start = time.time()
    meta = {
        "machine": machine_info(),
        "command": os.environ.get("BENCH_COMMAND") or "python -m benchmarks.run " + shlex.join(argv),
        "smoke": args.smoke,
        "quiet": quiet,
    }
    parts = tuple(args.only.split(","))
    previous: dict[str, Any] | None = None
    if args.merge:
        saved = json.loads((args.out / "results.json").read_text())
        previous = saved["results"]
        meta = {**saved["meta"], "reruns": [*saved["meta"].get("reruns", []), {**meta, "parts": parts}]}

    def save(partial: dict[str, Any]) -> None:
        write_json(
            args.out / "results.json",
            {
                "meta": meta if args.merge else {**meta, "duration_min": (time.time() - start) / 60},
                "results": partial,
            },
        )

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        results = run_all(cfg, Path(tmp), with_b2, parts, previous, save)
    save(results)
    meta = json.loads((args.out / "results.json").read_text())["meta"]
    written = charts(results, args.out)
    (args.out / "RESULTS.md").write_text(report(results, meta, written))
    log(f"wrote {args.out / 'RESULTS.md'} and {', '.join(written)}")
    if args.out.resolve() == readme_figures.RESULTS.parent and readme_figures.update():
        log(f"rewrote the measured figures of {readme_figures.README} from results.json")


if __name__ == "__main__":
    main(sys.argv[1:])
