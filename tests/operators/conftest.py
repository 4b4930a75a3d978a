"""TRANSITIONAL, remove when no test imports ``airflow_harness`` any more: the real-Airflow
harness moved to ``tests.support.dag_runs`` (its fixtures now come from tests/conftest.py), and
test_run_flow_operator.py / test_batch_operator.py, being restructured on other branches, still
say ``from airflow_harness import make_dag``. This alias keeps them importable until they say
``from tests.support.dag_runs import make_dag``."""

from __future__ import annotations

import sys

from tests.support import dag_runs

sys.modules.setdefault("airflow_harness", dag_runs)
