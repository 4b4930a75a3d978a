"""Fixtures of the reliability and security suite (real-Airflow ones come from tests/dags)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dags"))

from airflow_harness import airflow_db, run_dag

__all__ = ["airflow_db", "run_dag"]
