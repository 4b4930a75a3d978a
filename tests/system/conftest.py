"""Fixtures of the system test: one emulator and one Airflow stack per module, always stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.airflow_stack import AirflowStack, EmulatorProcess

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

HERE = Path(__file__).parent
DAGS_FOLDER = HERE / "dags"
SCENARIO = HERE / "scenario.json"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """The emulator in its own process at speed-up 1, with the ``system-*`` flows of scenario.json."""
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator"), scenario=SCENARIO, speedup=1.0)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def stack(emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """Scheduler, triggerer, dag-processor and api-server, with the system DAGs and the connection."""
    connection = {"conn_type": "smartflows", "host": emulator.base_url, "password": emulator.api_key}
    airflow = AirflowStack(
        tmp_path_factory.mktemp("airflow-home"),
        DAGS_FOLDER,
        {"AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(connection)},
        extra_logs=[emulator.log_path],
    )
    try:
        airflow.start_all()
        yield airflow
    finally:
        airflow.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Attach the services' log tails to every failure that does not carry them already."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    airflow = getattr(item, "funcargs", {}).get("stack")
    if (
        report.failed
        and isinstance(airflow, AirflowStack)
        and "===== scheduler.log" not in str(report.longrepr)
    ):
        report.sections.append(("Airflow services and emulator (log tails)", airflow.dump()))
