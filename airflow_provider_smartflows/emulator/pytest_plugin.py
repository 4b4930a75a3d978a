"""pytest fixtures for testing against the Smart Flows emulator (entry point ``pytest11``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_provider_smartflows.emulator.server import EmulatorServer

if TYPE_CHECKING:
    from collections.abc import Iterator


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smartflows", "Smart Flows emulator")
    group.addoption(
        "--smartflows-speedup",
        type=float,
        default=50.0,
        help="speed-up factor of the emulator fixtures' flows (default 50)",
    )


@pytest.fixture(scope="session")
def smartflows_emulator_session(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    """One emulator for the session, on 127.0.0.1 and a free port."""
    server = EmulatorServer(
        host="127.0.0.1", port=0, speedup=request.config.getoption("--smartflows-speedup")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smartflows_emulator(smartflows_emulator_session: EmulatorServer) -> EmulatorServer:
    """The session emulator, reset (executions, log, faults, flows, speed-up) for this test."""
    smartflows_emulator_session.reset()
    return smartflows_emulator_session


@pytest.fixture
def smartflows_conn(smartflows_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_SMARTFLOWS_DEFAULT`` pointing at the emulator; returns the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_SMARTFLOWS_DEFAULT", smartflows_emulator.connection_json())
    return "smartflows_default"
