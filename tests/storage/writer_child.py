"""A write in its own process, for what a test cannot do in its own: SIGKILL and RSS.

``python -m tests.storage.writer_child URI --size N [--pause-after M]``
- writes N bytes in 1 MiB chunks (a fresh bytes object per chunk, as a download's iterator gives);
- with ``--pause-after M``: after M bytes, prints "PAUSED" (one line) and waits on stdin forever (the parent
  kills it there: a real upload is in flight, nothing is committed yet);
- else commits and prints one JSON line: size, sha256, the RSS before the write (VmRSS) and the
  peak during it (VmHWM after resetting the peak through /proc/self/clear_refs, so that the
  imports' and set-up's own peak does not hide or inflate the write's).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _chunks(size: int, chunk: int = 1 << 20):
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield bytes([sent // chunk % 251]) * n
        sent += n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("--conn-id", default=None)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--pause-after", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=None)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks when stuck

    from airflow_provider_smartflows.storage import check_destination, object_path, open_atomic
    from tests.storage.stores import setup_from_env

    setup_from_env()
    target = object_path(args.uri, args.conn_id)
    check_destination(target)  # the store's client is set up outside the measured part
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    writer = open_atomic(target, overwrite=True, block_size=args.block_size, metadata={"child": "1"})
    for data in _chunks(args.size):
        writer.write(data)
        if args.pause_after is not None and writer.size >= args.pause_after:
            # One write: a line logged meanwhile by another thread cannot split it from its newline.
            sys.stdout.write("PAUSED\n")
            sys.stdout.flush()
            sys.stdin.read()
            raise SystemExit(3)
    stored = writer.commit(args.size)
    peak = _status("VmHWM")
    print(json.dumps({"size": stored.size, "sha256": stored.sha256, "rss_before": before, "rss_peak": peak}))


if __name__ == "__main__":
    main()
