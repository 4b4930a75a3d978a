"""B3's report: the "## B3" section of RESULTS.md and the charts ``b3_<store>.png``, from the
results of :func:`benchmarks.b3_downloads.run`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.b3_downloads import contenders
from benchmarks.common import fmt

if TYPE_CHECKING:
    from pathlib import Path

TARGET_RATIO = 0.8
#: Ours' own RSS bound per store (issue 28: S3 may hold a few 5 MiB parts in flight), else 32 MiB.
TARGET_OWN_RSS_MIB = {"s3": 48.0}
DEFAULT_OWN_RSS_MIB = 32.0


def rss_target(kind: str) -> float:
    """The bound on ours' own RSS for ``kind`` (MiB)."""
    return TARGET_OWN_RSS_MIB.get(kind, DEFAULT_OWN_RSS_MIB)


def _median(cell: dict[str, Any] | None, metric: str) -> float:
    stat = cell.get(metric) if cell else None
    return float(stat["median"]) if stat else float("nan")


def reference(b3: dict[str, Any], label: str, kind: str) -> str | None:
    """The fastest plain client of ``kind`` at ``label`` (median MB/s)."""
    names = [h for h in contenders(kind) if f"{label}/{kind}/{h}" in b3["table"]]
    return max(names, key=lambda h: _median(b3["table"][f"{label}/{kind}/{h}"], "mb_per_s"), default=None)


def section(b3: dict[str, Any]) -> list[str]:
    """The "## B3" section of RESULTS.md."""
    table, labels = b3["table"], list(b3["sizes"])
    load = ", ".join(f"{k}: {v}" for k, v in b3["load"].items())
    out = [
        "## B3: downloads to each store",
        "",
        " ".join(f"![B3 {kind}](b3_{kind}.png)" for kind in b3["stores"]),
        "",
        "One document of each size streamed by the emulator (its own process) over loopback and written to "
        "each store, by ours (`SmartFlowsHook.download_document`) and by the store's plain clients, every "
        "transfer in its own process, interleaved in one run: `file` = local disk (`curl -sS -o FILE`), `s3` = "
        "moto server (`boto3 upload_fileobj` of the HTTP response stream; `s3fs put_file` of a local copy "
        "made beforehand, the put alone timed), `azure` = Azurite (`azure-storage-blob upload_blob` of the "
        "stream), `gcs` = gcp-storage-emulator (`google-cloud-storage upload_from_file` of the stream). "
        "*Own RSS*: the process's peak RSS during the transfer minus its RSS before it (peak reset "
        "through `/proc/self/clear_refs` after imports and set-up). MB = 10^6 bytes; medians (min-max) of "
        f"{b3['repeats']} runs. Every stored object's size (and ours' sha256) was checked. The machine is "
        f"shared (2 cores, other agents working): load averages (1/5/15 min) {load}. Every S3 client "
        "gets a 600 s read timeout: moto joins the parts in memory on completion, which for 1 GiB "
        "outlasts s3fs's default 15 s here (real S3 keeps the connection alive meanwhile). Emulator "
        "artefacts: gcp-storage-emulator appends every resumable chunk by copying the whole upload "
        "received so far (`file_content += content`), so each 8 MiB chunk costs more than the one "
        "before (48 ms for the first eight, 656 ms at 320-384 MiB) and 1 GiB collapses for any client "
        "sending 8 MiB chunks (run with `--gcs-chunk-mib 8`); the SDK sends 100 MiB chunks (64 MiB: "
        "one request), holding a chunk in memory. Azurite stages blocks (`Put Block`) at about "
        "40 MB/s whatever their size or concurrency, against about 200 MB/s for one `Put Blob`, "
        "which the SDK uses up to 64 MiB (holding it all).",
        "",
        "| store | size | how | MB/s | ratio to the store's reference | own RSS MiB | verified |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in b3["stores"]:
        for label in labels:
            ref = reference(b3, label, kind)
            ref_speed = _median(table.get(f"{label}/{kind}/{ref}"), "mb_per_s") if ref else float("nan")
            for how in ["ours", *contenders(kind)]:
                cell = table.get(f"{label}/{kind}/{how}")
                if not cell:
                    continue
                ratio = _median(cell, "mb_per_s") / ref_speed
                rss = fmt(cell["own_rss_mib"], 1) if cell["own_rss_mib"] else "n/a"
                name = f"{how} (reference)" if how == ref else how
                out.append(
                    f"| {kind} | {label} | {name} | {fmt(cell['mb_per_s'], 0)} | {ratio:.2f} | {rss} | {cell['verified']} |"
                )
    out += ["", "Targets (medians):", ""]
    for kind in b3["stores"]:
        for label in labels:
            ref = reference(b3, label, kind)
            ours = table.get(f"{label}/{kind}/ours")
            if ours and ref:
                ratio = _median(ours, "mb_per_s") / _median(table[f"{label}/{kind}/{ref}"], "mb_per_s")
                out.append(
                    f"- {kind}, {label}: ours {ratio:.0%} of {ref} (target ≥ {TARGET_RATIO:.0%}) "
                    f"{_verdict(ratio >= TARGET_RATIO)}"
                )
        rss = [_median(table.get(f"{label}/{kind}/ours"), "own_rss_mib") for label in labels]
        spread = max(rss) - min(rss)
        worst = max(rss)
        out.append(
            f"- {kind}: ours' own RSS {' / '.join(f'{r:.1f}' for r in rss)} MiB for {' / '.join(labels)} "
            f"(target ≤ {rss_target(kind):.0f} MiB {_verdict(worst <= rss_target(kind))}; the same for both "
            f"sizes, within 5 MiB: {spread:.1f} MiB {_verdict(spread <= 5)})"
        )
    out += [f"- {note}" for note in b3["notes"]]
    return [*out, ""]


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def charts(b3: dict[str, Any], out: Path) -> list[str]:
    """``b3_<store>.png`` per store: MB/s per contender and size; ours' own RSS per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = list(b3["sizes"])
    for kind in b3["stores"]:
        hows = ["ours", *contenders(kind)]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        width = 0.8 / len(hows)
        for i, how in enumerate(hows):
            xs = [j + (i - (len(hows) - 1) / 2) * width for j in range(len(labels))]
            for metric, ax in (("mb_per_s", ax1), ("own_rss_mib", ax2)):
                stats = [(b3["table"].get(f"{label}/{kind}/{how}") or {}).get(metric) for label in labels]
                meds = [s["median"] if s else 0 for s in stats]
                err = [
                    [s["median"] - s["min"] if s else 0 for s in stats],
                    [s["max"] - s["median"] if s else 0 for s in stats],
                ]
                ax.bar(xs, meds, width, yerr=err, capsize=3, label=how)
        ax1.set_title("throughput (MB/s, medians, min-max)", fontsize=10)
        ax2.set_title("the transfer's own RSS (MiB)", fontsize=10)
        ax2.axhline(
            rss_target(kind),
            color="red",
            ls="--",
            lw=1,
            label=f"target ≤ {rss_target(kind):.0f} MiB (ours)",
        )
        for ax in (ax1, ax2):
            ax.set_xticks(range(len(labels)), labels)
            ax.legend(fontsize=8)
        fig.suptitle(f"B3 {kind}: one document from the emulator to {kind}, over loopback", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / f"b3_{kind}.png", dpi=110)
        plt.close(fig)
        written.append(f"b3_{kind}.png")
    return written
