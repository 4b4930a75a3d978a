"""Test-wide set-up: an isolated AIRFLOW_HOME per pytest process (so per xdist worker; set before
anything imports Airflow), the Airflow version marker, the `slow` marker that `make unit` leaves
out, the real-Airflow fixtures of ``tests.support.dag_runs``, and a moto S3 server on loopback.

Shared helpers (processes, waits, the Airflow stack, the ``dag.test()`` harness) live in
``tests/support`` and are imported as ``tests.support.<module>``."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

import pytest
from packaging.version import Version

from tests.support.processes import free_port, serving

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

# Airflow reads its configuration once, at first import: point it at a throw-away home so tests
# never touch ~/airflow and never load the example DAGs. Removed when this process exits.
if not os.environ.get("SMARTFLOWS_TESTS_KEEP_AIRFLOW_HOME"):
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="smartflows-tests-airflow-home-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


# The real-Airflow fixtures (``airflow_db``, ``run_dag``: ``dag.test()`` runs) for every folder.
pytest_plugins = ["tests.support.dag_runs"]

# Fixtures that run real Airflow in-process: a test using them is `slow` whatever its file says.
DAG_RUN_FIXTURES = ("run_dag", "airflow_db")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "airflow_version(min=None, below=None, not_line=None, reason=''): run only on Airflow >= min "
        "and < below and not on the line not_line (e.g. min='3.3' for the task state store, "
        "not_line='3.0'); skipped with the reason on other versions.",
    )
    config.addinivalue_line(
        "markers",
        "slow: left out of `make unit` (`-m 'not slow'`): marked in the test files (a `dag.test()` run, "
        "an `airflow` subprocess, real services, soak, hundreds of MiB, a killed process); tests/conftest.py "
        "adds it to tests marked `system` and to tests that use a DAG-run fixture",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` what cannot be quick whatever its file says (real services, `dag.test()` runs);
    skip, with a reason, tests of behaviour that the installed Airflow line does not have."""
    from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION

    installed = Version(AIRFLOW_VERSION).release[:3]
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.get_closest_marker("system") or any(name in fixtures for name in DAG_RUN_FIXTURES):
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
    """A moto S3 server on 127.0.0.1 in its own process group, stopped by PID (``serving``)."""
    executable = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    if executable is None:
        pytest.skip("moto_server is not installed")
    port = free_port()
    with serving("moto_server", [executable, "-H", "127.0.0.1", "-p", str(port)], port, timeout=30) as url:
        yield url


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
