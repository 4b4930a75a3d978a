"""Moved to ``tests.support.airflow_stack`` (the Airflow stack shared by tests/system,
tests/deployment and the benchmarks); this module re-exports it for older imports."""

from __future__ import annotations

from tests.support.airflow_stack import (
    ADMIN,
    API,
    SERVICES,
    TERMINAL_TI_STATES,
    AirflowStack,
    EmulatorProcess,
    descendants,
    parent_pid,
    write_json,
)
from tests.support.processes import free_port, stop_group

__all__ = [
    "ADMIN",
    "API",
    "SERVICES",
    "TERMINAL_TI_STATES",
    "AirflowStack",
    "EmulatorProcess",
    "descendants",
    "free_port",
    "parent_pid",
    "stop_group",
    "write_json",
]
