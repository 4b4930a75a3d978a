"""The one place that knows Airflow versions: features that only a newer Airflow has.

Imports go through ``airflow.providers.common.compat`` everywhere; these flags only decide what
to *say* when a feature is missing (a log line), never which module to import.
"""

from __future__ import annotations

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

_BASE: tuple[int, ...] = Version(AIRFLOW_VERSION).release[:3]

# Airflow 3.3 has the task state store (ResumableJobMixin reattaches on retry) and trigger on_kill.
AIRFLOW_V_3_3_PLUS: bool = _BASE >= (3, 3, 0)

__all__ = ["AIRFLOW_VERSION", "AIRFLOW_V_3_3_PLUS"]
