"""B1's part of RESULTS.md and its chart: the equal-latency sweep, the scale runs, HTTP vs HTTPS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.common import fmt

if TYPE_CHECKING:
    from pathlib import Path

NAMES = {"a": "(a) ours", "b": "(b) HttpSensorTrigger", "c": "(c) dbt Cloud pattern"}


def _rows(b1: dict[str, Any], part: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(plan item, table row) of one part, in plan order."""
    return [(item, b1["table"][item["key"]]) for item in b1["plan"] if item["part"] == part]


def _med(row: dict[str, Any], metric: str) -> float:
    return float(row[metric]["median"])


def _find(
    b1: dict[str, Any], contender: str, poll: float, n: int, tls: bool = False
) -> dict[str, Any] | None:
    return b1["table"].get(f"{n}/{contender}/{poll:g}/{'tls' if tls else 'tcp'}")


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def b1_section(b1: dict[str, Any]) -> list[str]:
    window = b1["default_window"]
    lo, hi = b1["durations_virtual"]
    out = [
        "## B1: a triggerer's fleet of waits",
        "",
        "![B1](b1_triggerer_fleet.png)",
        "",
        f"N concurrent waits in one asyncio loop process (one task per trigger iterating `trigger.run()`, "
        f"as the triggerer does), each on an execution of one step lasting a uniform random {lo}-{hi} s "
        f"(seeded; emulator speed-up {b1['speedup']:g}, in its own process). Latency = the event's time "
        "minus the execution's completion. Pollers poll every *interval* real seconds; ours long-polls "
        f"with its default window of {window:g} s (the server answers at once when the execution "
        "changes). One run per row; the load averages (1/5/15 min) at the end of each run are in its row.",
        "",
        "Contenders: " + "; ".join(f"({k}) {v}" for k, v in b1["contenders"].items()) + ". (b) and (c) are "
        "in `benchmarks/baselines.py` (what they mirror is in its docstring).",
        "",
    ]
    out += _sweep(b1) + _scale(b1) + _tls(b1)
    return out


def _table(rows: list[tuple[dict[str, Any], dict[str, Any]]], first: str) -> list[str]:
    out = [
        f"| {first} | interval / window s | CPU s | requests | req / wait | TCP connections | RSS / wait KiB "
        "| CPU ms / wait-hour | p50 s | p99 s | failed | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item, t in rows:
        head = NAMES[item["contender"]] if first == "contender" else f"{item['n']:,}"
        out.append(
            f"| {head} | {item['poll']:g} | {fmt(t['cpu_seconds'])} | {fmt(t['requests'], 0)} | "
            f"{fmt(t['requests_per_wait'])} | {fmt(t['connections'], 0)} | {fmt(t['rss_per_wait_kib'], 1)} | "
            f"{fmt(t['cpu_ms_per_wait_hour'], 0)} | {fmt(t['latency_p50'], 3)} | {fmt(t['latency_p99'], 3)} | "
            f"{fmt(t['failures'], 0)} | {t.get('load', '')} |"
        )
    return out


def _sweep(b1: dict[str, Any]) -> list[str]:
    rows = _rows(b1, "sweep") + _rows(b1, "window")
    if not rows:
        return []
    n = rows[0][0]["n"]
    out = [f"### Equal-latency sweep, N = {n:,}", "", *_table(rows, "contender"), ""]
    ours = _find(b1, "a", b1["default_window"], n)
    if ours is None:
        return out
    out += [
        "Targets: at matched or better p99 (≤ 1 s), ours ≤ 1/10 of the 1 s poller's CPU and ≤ 1/20 of its requests.",
        "",
    ]
    p99 = _med(ours, "latency_p99")
    out.append(f"- ours: p99 {p99:.3f} s {verdict(p99 <= 1.0)} (≤ 1 s)")
    for c in "bc":
        one = _find(b1, c, 1.0, n)
        if one is None:
            continue
        cpu = _ratio(_med(ours, "cpu_seconds"), _med(one, "cpu_seconds"))
        req = _ratio(_med(ours, "requests"), _med(one, "requests"))
        out.append(
            f"- vs {NAMES[c]} at 1 s (p99 {_med(one, 'latency_p99'):.3f} s): CPU {cpu:.3f} "
            f"(1/{1 / cpu:.1f}) {verdict(cpu <= 0.1)}, requests {req:.3f} (1/{1 / req:.1f}) {verdict(req <= 0.05)}"
        )
        matched = [
            (item["poll"], t)
            for item, t in rows
            if item["contender"] == c and _med(t, "latency_p99") <= max(p99, 1.0)
        ]
        if matched:
            poll, t = max(matched, key=lambda pair: pair[0])
            out.append(
                f"- the slowest {NAMES[c]} interval with p99 ≤ max(ours, 1 s) is {poll:g} s: ours uses "
                f"{_ratio(_med(ours, 'cpu_seconds'), _med(t, 'cpu_seconds')):.3f} of its CPU and "
                f"{_ratio(_med(ours, 'requests'), _med(t, 'requests')):.3f} of its requests"
            )
    return [*out, ""]


def _scale(b1: dict[str, Any]) -> list[str]:
    rows = _rows(b1, "scale")
    if not rows:
        return []
    out = ["### Scale: ours alone, N waits in one loop process", "", *_table(rows, "N"), ""]
    out += ["Targets: RSS growth per wait ≤ 10 KB (10,000 B) at every N; p99 ≤ 2 s at the largest N.", ""]
    for item, t in rows:
        kb = _med(t, "rss_per_wait_kib") * 1024
        out.append(
            f"- N={item['n']:,}: {kb:,.0f} B per wait {verdict(kb <= 10000)}; p99 {_med(t, 'latency_p99'):.3f} s"
            f"; {_med(t, 'cpu_ms_per_wait_hour'):.0f} ms CPU per wait-hour"
        )
    last = rows[-1][1]
    out.append(
        f"- p99 at N={rows[-1][0]['n']:,}: {_med(last, 'latency_p99'):.3f} s {verdict(_med(last, 'latency_p99') <= 2.0)}"
    )
    return [*out, ""]


def _tls(b1: dict[str, Any]) -> list[str]:
    rows = _rows(b1, "tls")
    if not rows:
        return []
    out = [
        "### HTTPS: the same comparison over TLS (emulator `--tls-cert`, throw-away CA)",
        "",
        *_table(rows, "contender"),
        "",
    ]
    ours = next((t for item, t in rows if item["contender"] == "a"), None)
    for item, t in rows:
        plain = _find(b1, item["contender"], item["poll"], item["n"])
        if plain is not None:
            out.append(
                f"- {NAMES[item['contender']]} at {item['poll']:g} s: CPU over HTTPS / over HTTP = "
                f"{_ratio(_med(t, 'cpu_seconds'), _med(plain, 'cpu_seconds')):.2f}"
            )
        if ours is not None and item["contender"] != "a":
            cpu = _ratio(_med(ours, "cpu_seconds"), _med(t, "cpu_seconds"))
            req = _ratio(_med(ours, "requests"), _med(t, "requests"))
            out.append(
                f"- ours vs {NAMES[item['contender']]} at {item['poll']:g} s over HTTPS: CPU {cpu:.3f} "
                f"{verdict(cpu <= 0.1)} (≤ 1/10), requests {req:.3f} {verdict(req <= 0.05)} (≤ 1/20)"
            )
    return [*out, ""]


def b1_chart(b1: dict[str, Any], out: Path, colors: dict[str, str]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    sweep = _rows(b1, "sweep") + _rows(b1, "window")
    for ax, metric, title in (
        (axes[0][0], "cpu_seconds", "CPU seconds of the loop process"),
        (axes[0][1], "requests", "requests served"),
    ):
        for c in "abc":
            pts = sorted(
                (
                    (_med(t, "latency_p99"), _med(t, metric), item["poll"])
                    for item, t in sweep
                    if item["contender"] == c
                ),
                key=lambda pt: pt[2],
            )
            if not pts:
                continue
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "*-" if c == "a" else "o-",
                color=colors[c],
                label=NAMES[c],
                ms=12 if c == "a" else 6,
            )
            for x, y, poll in pts:
                ax.annotate(f"{poll:g} s", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axvline(1.0, color="red", lw=1, ls="--", label="p99 = 1 s")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)
        ax.set_yscale("log")
        ax.set_xlabel("completion → event latency p99 (s)")
        ax.set_title(f"{title} vs p99, N = {sweep[0][0]['n']:,}" if sweep else title, fontsize=10)
        ax.legend(fontsize=7)
    scale = _rows(b1, "scale")
    ax = axes[1][0]
    if scale:
        ns = [item["n"] for item, _ in scale]
        ax.plot(
            ns,
            [_med(t, "rss_per_wait_kib") * 1.024 for _, t in scale],
            "o-",
            color=colors["a"],
            label="RSS / wait (KB)",
        )
        ax.axhline(10, color="red", lw=1, ls="--", label="target 10 KB / wait")
        ax2 = ax.twinx()
        ax2.plot(
            ns, [_med(t, "latency_p99") for _, t in scale], "s--", color="#5aa05a", label="p99 s (right)"
        )
        ax2.set_ylabel("p99 s")
        ax.set_xscale("log")
        ax.set_xlabel("N waits in one loop process")
        ax.set_title("scale: ours, RSS per wait and p99", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        ax2.legend(fontsize=7, loc="upper right")
    tls = _rows(b1, "tls")
    ax = axes[1][1]
    if tls:
        labels, plain_cpu, tls_cpu = [], [], []
        for item, t in tls:
            plain = _find(b1, item["contender"], item["poll"], item["n"])
            labels.append(f"({item['contender']}) {item['poll']:g} s")
            plain_cpu.append(_med(plain, "cpu_seconds") if plain else 0)
            tls_cpu.append(_med(t, "cpu_seconds"))
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], plain_cpu, 0.4, color="#8a8a8a", label="HTTP")
        ax.bar([x + 0.2 for x in xs], tls_cpu, 0.4, color="#2a7ab0", label="HTTPS")
        ax.set_xticks(list(xs), labels)
        ax.set_yscale("log")
        ax.set_title(f"CPU seconds, HTTP vs HTTPS, N = {tls[0][0]['n']:,}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(
        "B1: waits in one event loop — (a) SmartFlowsExecutionTrigger, (b) HttpSensorTrigger, (c) dbt Cloud pattern",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "b1_triggerer_fleet.png", dpi=110)
    plt.close(fig)
