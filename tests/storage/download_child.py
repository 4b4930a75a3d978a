"""A whole download (Smart Flows emulator → store) in its own process, to measure its memory.

``python -m tests.storage.download_child DOCUMENT_ID URI [--conn-id C] [--block-size N]``
Connections come as AIRFLOW_CONN_* variables (the parent's). Prints one JSON line: size, sha256,
the RSS before the download (VmRSS) and the peak during it (VmHWM after resetting it through
/proc/self/clear_refs): the HTTP session and the store's client are set up before the reset, so
the difference is the download's own memory (response buffers, upload blocks).
"""

from __future__ import annotations

import argparse
import json

from tests.storage.writer_child import _status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("document_id")
    parser.add_argument("uri")
    parser.add_argument("--conn-id", default=None)
    parser.add_argument("--block-size", type=int, default=None)
    args = parser.parse_args()

    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from airflow_provider_smartflows.storage import check_destination, object_path
    from tests.storage.stores import setup_from_env

    setup_from_env()
    target = object_path(args.uri, args.conn_id)
    check_destination(target)  # the store's client, outside the measured part
    hook = SmartFlowsHook()
    hook.get_conn()
    hook.list_flows()  # the HTTP session and its connection, outside the measured part
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    result = hook.download_document(
        args.document_id, target, conn_id=args.conn_id, overwrite=True, block_size=args.block_size
    )
    peak = _status("VmHWM")
    print(json.dumps({"size": result.size, "sha256": result.sha256, "rss_before": before, "rss_peak": peak}))


if __name__ == "__main__":
    main()
