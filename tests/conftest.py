"""Test-wide set-up: an isolated AIRFLOW_HOME, set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile

import pytest
from packaging.version import Version

# Airflow reads its configuration once, at first import: point it at a throw-away home so tests
# never touch ~/airflow and never load the example DAGs.
if "AIRFLOW_HOME" not in os.environ or not os.environ.get("SMARTFLOWS_TESTS_KEEP_AIRFLOW_HOME"):
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="smartflows-tests-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "airflow_version(min=None, below=None, reason=''): run only on Airflow >= min and < below "
        "(e.g. min='3.3' for the task state store); skipped with the reason on other versions.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with a reason, tests of behaviour that the installed Airflow line does not have."""
    from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION

    installed = Version(AIRFLOW_VERSION).release[:3]
    for item in items:
        for mark in item.iter_markers("airflow_version"):
            low, below = mark.kwargs.get("min"), mark.kwargs.get("below")
            if low and installed < Version(low).release:
                need = f">= {low}"
            elif below and installed >= Version(below).release:
                need = f"< {below}"
            else:
                continue
            why = mark.kwargs.get("reason", "")
            item.add_marker(
                pytest.mark.skip(reason=f"needs Airflow {need}, this is {AIRFLOW_VERSION}: {why}")
            )
