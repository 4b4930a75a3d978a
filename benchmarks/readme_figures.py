"""The README's measured figures, rendered from ``benchmarks/results.json`` (never copied by hand).

The README holds them between ``<!-- figures:start -->`` and ``<!-- figures:end -->``;
``benchmarks.run`` rewrites that block after a run into ``benchmarks/``, and
``tests/test_readme.py`` fails when the block and the results file disagree. By hand::

    python -m benchmarks.readme_figures            # rewrite the README's block
    python -m benchmarks.readme_figures --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results.json"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
TARGET = 0.8  # B5: ours at >= 80 % of the store's own client

B5_CLIENTS = {
    "file": "a plain file write",
    "s3": "boto3 on S3 (moto)",
    "azure": "azure-storage-blob on Azure (Azurite)",
    "gcs": "google-cloud-storage on its emulator",
}


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def _b5(b5: dict[str, Any]) -> str:
    """One sentence: ours / reference per store at each concurrency, the misses named."""
    rows = b5["rows"]
    concurrencies = sorted({row["concurrency"] for row in rows})
    parts, missed = [], []
    for store in b5["stores"]:
        ratios, documents = [], set()
        for concurrency in concurrencies:
            pair = {r["how"]: r for r in rows if r["store"] == store and r["concurrency"] == concurrency}
            if {"ours", "reference"} - pair.keys():
                continue
            ratio = pair["ours"]["docs_per_s"] / pair["reference"]["docs_per_s"]
            ratios.append(_pct(ratio))
            documents.add(pair["ours"]["documents"])
            if ratio < TARGET:
                missed.append(f"{store} x{concurrency}")
        if ratios:
            count = (
                ""
                if documents == {b5["documents"]}
                else f" ({', '.join(map(str, sorted(documents)))} documents)"
            )
            parts.append(f"{' / '.join(ratios)} of {B5_CLIENTS.get(store, store)}{count}")
    requests = sorted(
        {
            f"{r['store_requests_per_doc']:.2f}"
            for r in rows
            if r["how"] == "ours" and r["store_requests_per_doc"] is not None
        },
        key=float,
    )
    per_doc = requests[0] if len(requests) == 1 else f"{requests[0]}-{requests[-1]}"
    verdict = f"missed on {', '.join(missed)}" if missed else "met on every store"
    return (
        f"- **Many small documents to storage (B5)**: {b5['documents']:,} documents of about "
        f"{b5['bytes'] / b5['documents'] / 1000:.0f} KB, {per_doc} store requests per document; at "
        f"concurrency {' / '.join(map(str, concurrencies))} the download operator's path reached "
        f"{'; '.join(parts)}. Target ≥ {_pct(TARGET)}: {verdict}."
    )


B3_STORES = {
    "file": "local file (curl)",
    "s3": "S3 on moto",
    "azure": "Azure on Azurite",
    "gcs": "GCS on its emulator",
}


def _b3(b3: dict[str, Any]) -> str:
    """One sentence: ours / the store's fastest plain client per size, own memory, the misses named."""
    table, labels = b3["table"], list(b3["sizes"])
    parts, missed, rss = [], [], []
    for store in b3["stores"]:
        ratios = []
        for label in labels:
            cells = {
                key.rsplit("/", 1)[1]: cell
                for key, cell in table.items()
                if key.startswith(f"{label}/{store}/")
            }
            others = [cell["mb_per_s"]["median"] for how, cell in cells.items() if how != "ours" and cell]
            ours = cells.get("ours")
            if not ours or not others:
                continue
            ratio = ours["mb_per_s"]["median"] / max(others)
            ratios.append(_pct(ratio))
            if ratio < TARGET:
                missed.append(f"{store} {label}")
            if ours.get("own_rss_mib"):
                rss.append(ours["own_rss_mib"]["median"])
        if ratios:
            parts.append(f"{B3_STORES.get(store, store)} {' / '.join(ratios)}")
    verdict = f"missed on {', '.join(missed)}" if missed else "met on every store"
    return (
        f"- **One big document to storage (B3)**, streamed from the emulator, ours against the store's "
        f"fastest plain client at {' / '.join(labels)}: {'; '.join(parts)}; the download's own memory "
        f"{min(rss):.0f}-{max(rss):.0f} MiB whatever the size. Target ≥ {_pct(TARGET)}: {verdict} "
        "(why, per store: [performance](docs/performance.md))."
    )


def _b6(b6: dict[str, Any]) -> str:
    burst, spread, requests = b6["burst_result"], b6["latency"], b6["requests"]
    one, five = requests["one_watcher"], requests["five_watchers"]
    naive = one["naive_per_hour"]  # measured beside the one watcher, at the same in-flight count
    return (
        f"- **Executions started elsewhere to DAG runs (B6)**, {b6['poll']:g} s poll, real Airflow "
        f"services: finished to asset event median {spread['to_event']['median']:.1f} s "
        f"(p99 {spread['to_event']['p99']:.1f} s), to DAG run queued median "
        f"{spread['to_run_queued']['median']:.1f} s (p99 {spread['to_run_queued']['p99']:.1f} s); "
        f"a burst of {burst['executions']} became {burst['events']} events at "
        f"{burst['events_per_s']:.1f} events/s, {burst['duplicates']} duplicated, {burst['missed']} "
        f"missed; {one['listing_per_hour']:,.0f} listing requests an hour with one watcher, "
        f"{five['listing_per_hour']:,.0f} with five (polling each of {requests['in_flight']} "
        f"executions: {naive:,.0f})."
    )


def render(results: dict[str, Any]) -> str:
    """The block's lines (markers excluded) from results.json's ``results``."""
    lines = [
        "Measured on a 2-core machine (rendered from `benchmarks/results.json`; the method, the",
        "load and every figure: [performance](docs/performance.md)):",
        "",
    ]
    if "table" in results.get("b3", {}):
        lines.append(_b3(results["b3"]))
    lines.append(_b5(results["b5"]) if "b5" in results else "- B5 (many small documents): not run.")
    lines.append(_b6(results["b6"]) if "b6" in results else "- B6 (asset events): not run.")
    return "\n".join(lines)


def block(text: str) -> str:
    """What is between the README's markers now."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def update(readme: Path = README, results_file: Path = RESULTS) -> bool:
    """Rewrite the README's block from the results file; whether it changed."""
    text = readme.read_text()
    wanted = render(json.loads(results_file.read_text())["results"])
    if block(text) == wanted:
        return False
    start, end = text.index(START) + len(START), text.index(END)
    readme.write_text(f"{text[:start]}\n{wanted}\n{text[end:]}")
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the README's block is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = block(README.read_text()) != render(json.loads(RESULTS.read_text())["results"])
        print(
            "README figures: stale, run python -m benchmarks.readme_figures"
            if stale
            else "README figures: ok"
        )
        return 1 if stale else 0
    print("README figures: rewritten" if update() else "README figures: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
