"""Test-wide set-up: an isolated AIRFLOW_HOME (set before anything imports Airflow), the Airflow
version marker, the `slow` marker that `make unit` leaves out, and a moto S3 server on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import pytest
from packaging.version import Version

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

# Airflow reads its configuration once, at first import: point it at a throw-away home so tests
# never touch ~/airflow and never load the example DAGs.
if not os.environ.get("SMARTFLOWS_TESTS_KEEP_AIRFLOW_HOME"):
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="smartflows-tests-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


# What `make unit` (`-m "not slow"`) leaves out, by node id prefix, with why: the quick loop has
# no real Airflow services, soak, benchmark, `airflow` CLI subprocess, transfer of hundreds of MiB,
# killed process or example DAG run (test_dagbag still parses every example; `make test` runs all).
SLOW = {
    "tests/system/": "real Airflow services",
    "tests/reliability/test_soak.py": "soak",
    "tests/test_bench_smoke.py": "benchmark smoke (`make bench-smoke`)",
    "tests/examples/test_cli.py": "`airflow dags test` subprocesses",
    "tests/examples/test_dynamics_records.py": "a DAG run of many mapped tasks",
    "tests/examples/test_retries_and_alerts.py": "a DAG run that waits out real retry delays",
    "tests/hooks/test_connection.py::test_airflow_cli_connections_add_and_test": "`airflow` CLI",
    "tests/test_provider_info.py::test_airflow_providers_list_shows_the_provider": "`airflow` CLI",
    "tests/hooks/test_download.py::test_one_gib_download": "1 GiB download",
    "tests/emulator/test_cli.py::test_one_gib_document": "1 GiB download",
    "tests/examples/test_batch_invoices.py": "a DAG run of many mapped tasks",
    "tests/examples/test_xml_dataset.py": "an example DAG run (S3, data set)",
    "tests/storage/test_atomic_writes.py::test_memory_of_a_256_mib_write_is_bounded": "256 MiB write",
    "tests/storage/test_downloads.py::test_memory_of_a_256_mib_download_is_bounded": "256 MiB download",
    "tests/storage/test_atomic_writes.py::test_sigkill_mid_stream_leaves_nothing": "killed writer process",
    "tests/reliability/test_hostile_input.py::test_operators_refuse_hostile_input_before_any_request": (
        "a DAG run of five failing tasks"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "airflow_version(min=None, below=None, not_line=None, reason=''): run only on Airflow >= min "
        "and < below and not on the line not_line (e.g. min='3.3' for the task state store, "
        "not_line='3.0'); skipped with the reason on other versions.",
    )
    config.addinivalue_line(
        "markers", "slow: left out of `make unit`; applied by tests/conftest.py (SLOW, system tests)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the `slow` tests; skip, with a reason, tests of behaviour that the installed Airflow line
    does not have."""
    from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION

    installed = Version(AIRFLOW_VERSION).release[:3]
    for item in items:
        if item.get_closest_marker("system") or any(item.nodeid.startswith(p) for p in SLOW):
            item.add_marker(pytest.mark.slow)
        for mark in item.iter_markers("airflow_version"):
            low, below = mark.kwargs.get("min"), mark.kwargs.get("below")
            line = mark.kwargs.get("not_line")
            if low and installed < Version(low).release:
                need = f">= {low}"
            elif below and installed >= Version(below).release:
                need = f"< {below}"
            elif line and installed[:2] == Version(line).release[:2]:
                need = f"other than {line}.x"
            else:
                continue
            why = mark.kwargs.get("reason", "")
            item.add_marker(
                pytest.mark.skip(reason=f"needs Airflow {need}, this is {AIRFLOW_VERSION}: {why}")
            )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 in its own process group, stopped by PID."""
    executable = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    if executable is None:
        pytest.skip("moto_server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def moto_bucket(moto_endpoint: str) -> Callable[..., Any]:
    """``with moto_bucket(monkeypatch, conn_id, bucket) as s3:`` an empty bucket on the moto server
    and the Airflow AWS connection ``conn_id`` to it (set in the environment through the patch);
    the bucket and its objects are deleted on exit."""
    import boto3

    @contextlib.contextmanager
    def bucket(patch: pytest.MonkeyPatch, conn_id: str, name: str) -> Iterator[Any]:
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(variable, "testing")
        extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
        connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
        patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        s3 = boto3.client(
            "s3",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=name)
        try:
            yield s3
        finally:
            for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
                s3.delete_object(Bucket=name, Key=item["Key"])
            s3.delete_bucket(Bucket=name)

    return bucket
