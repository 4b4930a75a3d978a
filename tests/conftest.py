"""Test-wide set-up: an isolated AIRFLOW_HOME, set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration once, at first import: point it at a throw-away home so tests
# never touch ~/airflow and never load the example DAGs.
if "AIRFLOW_HOME" not in os.environ or not os.environ.get("SMARTFLOWS_TESTS_KEEP_AIRFLOW_HOME"):
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="smartflows-tests-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
